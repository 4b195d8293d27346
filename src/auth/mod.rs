//! Who is calling: JWT verification, claims and roles. The same `Principal` serves HTTP
//! requests (Authorization header) and websocket connections (connection_init payload).

mod keys;

pub use keys::{JwtKeys, KeyError};

use crate::error::{AppError, AppResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    User,
    Service,
    Admin,
}

impl Role {
    pub fn parse(name: &str) -> Option<Role> {
        match name.to_ascii_lowercase().as_str() {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

/// A verified caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    /// Seconds since the epoch at which the token expires.
    pub expires_at: u64,
}

/// What the transport found: no credentials, a verified principal, or a bad token.
#[derive(Clone, Debug)]
pub enum Auth {
    Anonymous,
    Verified(Principal),
    Rejected(String),
}

impl Auth {
    pub fn principal(&self) -> AppResult<&Principal> {
        match self {
            Auth::Verified(p) => Ok(p),
            Auth::Anonymous => Err(AppError::unauthenticated("send `Authorization: Bearer <JWT>`")),
            Auth::Rejected(why) => Err(AppError::unauthenticated(format!("invalid token: {why}"))),
        }
    }
}

impl Principal {
    /// The subject a request acts on. Only admin and service callers may name another
    /// subject; a user reads and changes only its own progress.
    pub fn target(&self, subject_id: Option<&str>) -> AppResult<String> {
        match subject_id {
            None => Ok(self.subject.clone()),
            Some(id) if id == self.subject => Ok(id.to_string()),
            Some(_) if self.role >= Role::Service => Ok(subject_id.unwrap_or_default().to_string()),
            Some(_) => Err(AppError::forbidden("only admin and service callers may pass subjectId")),
        }
    }

    pub fn require(&self, allowed: &[Role]) -> AppResult<()> {
        if allowed.contains(&self.role) {
            Ok(())
        } else {
            let names: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
            Err(AppError::forbidden(format!("this needs the {} role", names.join(" or "))))
        }
    }
}
