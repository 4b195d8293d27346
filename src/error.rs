//! Errors as clients see them: a stable `extensions.code` from one documented list and a
//! message. Internal failures are logged in full and reach clients censored, with a
//! reference to find the log line.

use std::fmt;

use async_graphql::ErrorExtensions;
use serde_json::Value;

use crate::domain::{ProgressError, validation::Problem};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    NotFound,
    ValidationFailed,
    StepLocked,
    StepNotApplicable,
    StepNotSkippable,
    Conflict,
    /// Too many requests from one caller (HTTP 429 with Retry-After).
    RateLimited,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::ValidationFailed => "VALIDATION_FAILED",
            ErrorCode::StepLocked => "STEP_LOCKED",
            ErrorCode::StepNotApplicable => "STEP_NOT_APPLICABLE",
            ErrorCode::StepNotSkippable => "STEP_NOT_SKIPPABLE",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

#[derive(Debug)]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
    /// Extra fields for `extensions`, e.g. `blockedBy` or `problems`.
    pub details: Vec<(&'static str, Value)>,
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError { code, message: message.into(), details: Vec::new() }
    }

    pub fn with(mut self, name: &'static str, value: Value) -> Self {
        self.details.push((name, value));
        self
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    /// Logs the cause with a reference and returns an error that carries only the reference.
    pub fn internal(cause: impl fmt::Display) -> Self {
        let reference = uuid::Uuid::new_v4();
        tracing::error!(%reference, error = %cause, "internal error");
        Self::new(ErrorCode::Internal, format!("internal error (reference {reference})"))
    }

    pub fn invalid_definition(problems: Vec<Problem>) -> Self {
        let count = problems.len();
        Self::invalid(format!("the flow definition has {count} problem{}", if count == 1 { "" } else { "s" }))
            .with("problems", serde_json::to_value(problems).unwrap_or(Value::Null))
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        AppError::internal(format!("database: {e}"))
    }
}

impl From<ProgressError> for AppError {
    fn from(e: ProgressError) -> Self {
        let message = e.to_string();
        match e {
            ProgressError::StepNotFound(_) => AppError::not_found(message),
            ProgressError::StepNotApplicable(_) => AppError::new(ErrorCode::StepNotApplicable, message),
            ProgressError::StepNotSkippable(_) => AppError::new(ErrorCode::StepNotSkippable, message),
            ProgressError::StepAlreadyCompleted(_) | ProgressError::FlowAlreadyCompleted => {
                AppError::new(ErrorCode::Conflict, message)
            }
            ProgressError::StepLocked { blocked_by, .. } => {
                AppError::new(ErrorCode::StepLocked, message).with("blockedBy", Value::from(blocked_by))
            }
        }
    }
}

impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.message.clone()).extend_with(|_, ext| {
            ext.set("code", self.code.as_str());
            for (name, value) in &self.details {
                if let Ok(v) = async_graphql::Value::from_json(value.clone()) {
                    ext.set(*name, v);
                }
            }
        })
    }
}

// AppError deliberately does not implement Display: async-graphql converts every Display
// type into an error without extensions, which would silently drop the code.
impl From<AppError> for async_graphql::Error {
    fn from(e: AppError) -> Self {
        e.extend()
    }
}
