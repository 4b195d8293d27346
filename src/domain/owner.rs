//! Whose progress a flow keeps: a user's own (USER scope) or a workspace's, shared by its
//! members (WORKSPACE scope). Both are stored as subjects, so enrollments, the points
//! ledger, experiment exposures and live updates work the same for either; the subject
//! key tells them apart.

use super::flow::FlowScope;
use super::limits::Limits;

/// Reserved at the start of subject keys for workspaces. A user id cannot start with it,
/// or that user would read and change the workspace's progress as its own.
pub const WORKSPACE_PREFIX: &str = "workspace:";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    User(String),
    Workspace(String),
}

impl Owner {
    /// A user, refused when its id is empty, longer than the id limit (a token's `sub`
    /// included: every user is built here) or has the workspace prefix.
    pub fn user(id: &str, limits: &Limits) -> Result<Owner, String> {
        limits.check_id("a subject id", id)?;
        if id.starts_with(WORKSPACE_PREFIX) {
            return Err(format!("a subject id cannot start with `{WORKSPACE_PREFIX}`: it is reserved for workspaces"));
        }
        Ok(Owner::User(id.to_string()))
    }

    pub fn workspace(id: &str, limits: &Limits) -> Result<Owner, String> {
        limits.check_id("a workspace id", id)?;
        Ok(Owner::Workspace(id.to_string()))
    }

    /// The owner of a stored subject key.
    pub fn from_key(key: &str) -> Owner {
        match key.strip_prefix(WORKSPACE_PREFIX) {
            Some(id) => Owner::Workspace(id.to_string()),
            None => Owner::User(key.to_string()),
        }
    }

    /// The subject key it is stored and announced under.
    pub fn key(&self) -> String {
        match self {
            Owner::User(id) => id.clone(),
            Owner::Workspace(id) => format!("{WORKSPACE_PREFIX}{id}"),
        }
    }

    /// The id callers know it by (a user id or a workspace id): what experiments hash.
    pub fn id(&self) -> &str {
        match self {
            Owner::User(id) | Owner::Workspace(id) => id,
        }
    }

    /// The flows it can be enrolled in.
    pub fn scope(&self) -> FlowScope {
        match self {
            Owner::User(_) => FlowScope::User,
            Owner::Workspace(_) => FlowScope::Workspace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_collide() {
        let user = Owner::user("acme", &Limits::default()).unwrap();
        let workspace = Owner::workspace("acme", &Limits::default()).unwrap();
        assert_ne!(user.key(), workspace.key());
        assert_eq!(Owner::from_key(&user.key()), user);
        assert_eq!(Owner::from_key(&workspace.key()), workspace);
        assert_eq!(workspace.key(), "workspace:acme");
        assert_eq!(workspace.id(), "acme");
        assert_eq!(workspace.scope(), FlowScope::Workspace);
        assert_eq!(user.scope(), FlowScope::User);
    }

    #[test]
    fn a_user_id_cannot_pose_as_a_workspace() {
        let limits = Limits::default();
        assert!(Owner::user("workspace:acme", &limits).is_err());
        assert!(Owner::user("", &limits).is_err());
        assert!(Owner::workspace("", &limits).is_err());
        // A workspace id may itself contain the prefix: its key is still unambiguous.
        let odd = Owner::workspace("workspace:x", &limits).unwrap();
        assert_eq!(Owner::from_key(&odd.key()), odd);
    }

    #[test]
    fn ids_are_bounded_by_the_id_limit() {
        let limits = Limits { id_bytes: 8, ..Limits::default() };
        assert!(Owner::user("12345678", &limits).is_ok());
        assert!(Owner::workspace("12345678", &limits).is_ok());
        let err = Owner::user("123456789", &limits).unwrap_err();
        assert!(err.contains("at most 8"), "{err}");
        assert!(Owner::workspace("123456789", &limits).is_err());
    }
}
