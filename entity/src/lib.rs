//! SeaORM entities for onramp's tables. Tables only: the GraphQL types live in the server,
//! because the API is not the table. Status columns hold the upper-case names of the
//! domain's enums (see `onramp::domain`); the persistence layer maps them.

pub mod enrollment;
pub mod event;
pub mod experiment;
pub mod experiment_variant;
pub mod exposure;
pub mod flow;
pub mod outbox;
pub mod points_entry;
pub mod step_progress;
pub mod subject;
pub mod webhook_attempt;
pub mod webhook_delivery;
pub mod webhook_endpoint;
