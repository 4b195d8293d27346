//! Who is calling: JWT verification, claims and roles. The same `Principal` serves HTTP
//! requests (Authorization header) and websocket connections (connection_init payload).

pub mod jwks;
mod keys;

pub use jwks::{Jwks, JwksSettings};
pub use keys::{JwtKeys, KeyError, MIN_SECRET_BYTES};

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
    /// The workspaces the token says the subject is a member of.
    pub workspaces: Vec<String>,
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

    /// The workspace a request acts in: the one named, which a user must be a member of,
    /// or else the token's only workspace. None when there is no single choice; a
    /// workspace-scoped flow then refuses the request.
    pub fn workspace(&self, workspace_id: Option<&str>) -> AppResult<Option<String>> {
        match workspace_id {
            Some(id) if self.role >= Role::Service || self.workspaces.iter().any(|w| w == id) => {
                Ok(Some(id.to_string()))
            }
            Some(id) => Err(AppError::forbidden(format!("the token is not a member of workspace `{id}`"))),
            None => Ok(match self.workspaces.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, workspaces: &[&str]) -> Principal {
        Principal {
            subject: "alice".into(),
            role,
            expires_at: 0,
            workspaces: workspaces.iter().map(|w| w.to_string()).collect(),
        }
    }

    #[test]
    fn a_user_acts_only_in_workspaces_its_token_lists() {
        let member = principal(Role::User, &["acme", "globex"]);
        assert_eq!(member.workspace(Some("globex")).unwrap().as_deref(), Some("globex"));
        assert!(member.workspace(Some("initech")).is_err());
        assert_eq!(member.workspace(None).unwrap(), None, "two workspaces: none is implied");
        let single = principal(Role::User, &["acme"]);
        assert_eq!(single.workspace(None).unwrap().as_deref(), Some("acme"), "the only one is implied");
        assert_eq!(principal(Role::User, &[]).workspace(None).unwrap(), None);
    }

    #[test]
    fn service_and_admin_callers_may_name_any_workspace() {
        for role in [Role::Service, Role::Admin] {
            assert_eq!(principal(role, &[]).workspace(Some("initech")).unwrap().as_deref(), Some("initech"));
        }
    }
}
