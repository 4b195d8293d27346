//! onramp: a self-hosted onboarding engine.
pub mod domain;
