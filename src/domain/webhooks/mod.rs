//! Webhook rules, pure: what an event looks like on the wire, how it is signed, which
//! addresses may receive it, and what happens after each attempt. The dispatcher
//! (`crate::webhooks`) carries them out, passing `now` in.

pub mod address;
pub mod endpoint;
pub mod events;
pub mod outcome;
pub mod retry;
pub mod signing;

pub use address::{AddressPolicy, check_ip, check_url};
pub use endpoint::{EndpointLimits, signing_secrets};
pub use events::{EventType, OutboxEvent, Subscription, render_body, render_payload};
pub use outcome::{AttemptResult, Decision, DeliveryPolicy, DeliveryStatus, EndpointChange, decide};
pub use retry::RetrySchedule;
pub use signing::{Secret, SignError};
