//! The product's rules, pure: flow definitions and their validation, the condition
//! language, applicability, dependency gating, progress and completion. Nothing here
//! touches a database, the network or the clock: callers pass `now` in.

pub mod changes;
pub mod condition;
pub mod experiments;
pub mod flow;
pub mod flow_diff;
pub mod limits;
pub mod nudges;
pub mod owner;
pub mod progress;
pub mod rollup;
pub mod stats;
pub mod text;
pub mod triggers;
pub mod validation;
pub mod versions;
pub mod webhooks;

pub use changes::{DomainEvent, DomainEventKind};
pub use condition::{Condition, Facts, Op, Path};
pub use flow::{FlowDefinition, FlowScope, FlowStatus, StepDefinition, Trigger};
pub use limits::Limits;
pub use owner::Owner;
pub use progress::{
    Command, Enrollment, EnrollmentStatus, Outcome, ProgressError, ProgressView, Source, StepState, StepStatus,
    StepView,
};
pub use text::LocalizedText;
pub use triggers::EventFact;
pub use validation::{Problem, parse_flow, validate_flow};

#[cfg(test)]
mod fuzz_tests;
