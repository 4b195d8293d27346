//! The schema's own guard at the edge, run for every operation whatever its transport
//! (HTTP or a websocket subscribe): the bracket-nesting pre-scan that protects the parser,
//! and who may introspect.
//!
//! async-graphql's parser (pest) recurses once per nested list, object or selection set
//! before any depth check of its own runs: a few KiB of `[[[[…` overflow a worker thread's
//! stack and abort the process. The pre-scan counts nesting on the raw text in one flat
//! pass, so nothing recursive ever sees a document that is too deep.

use std::any::TypeId;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Data, Request, ServerError, ServerResult, Variables};

use crate::auth::{Auth, Role};
use crate::error::ErrorCode;

#[derive(Clone, Debug)]
pub struct EdgeGuard {
    /// Deepest nesting of `[`, `{` and `(` in a document.
    pub max_nesting: usize,
    /// Introspection for every caller (development).
    pub introspection: bool,
    /// Introspection for admin callers (production, when configured).
    pub admin_introspection: bool,
}

impl ExtensionFactory for EdgeGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

/// The caller, from the request's data (HTTP) or the connection's (websocket).
fn auth<'a>(request: &'a Request, session: &'a Data) -> Option<&'a Auth> {
    [&request.data, session].into_iter().find_map(|data| data.get(&TypeId::of::<Auth>())?.downcast_ref::<Auth>())
}

impl EdgeGuard {
    fn may_introspect(&self, auth: Option<&Auth>) -> bool {
        self.introspection
            || (self.admin_introspection && matches!(auth, Some(Auth::Verified(p)) if p.role == Role::Admin))
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for EdgeGuard {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = if self.may_introspect(auth(&request, ctx.session_data)) {
            request
        } else {
            request.disable_introspection()
        };
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        check_nesting(query, self.max_nesting)?;
        let document = next.run(ctx, query, variables).await?;
        // A disabled introspection field would only answer null; say why instead.
        if !self.may_introspect(ctx.data_opt::<Auth>()) && introspects(&document) {
            return Err(refusal(ErrorCode::Forbidden, "introspection is disabled".to_string()));
        }
        Ok(document)
    }
}

fn refusal(code: ErrorCode, message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    error.extensions.get_or_insert_with(Default::default).set("code", code.as_str());
    error
}

/// Whether the document selects `__schema` or `__type` anywhere (its depth is bounded by
/// the nesting pre-scan).
fn introspects(document: &ExecutableDocument) -> bool {
    fn selects(set: &SelectionSet) -> bool {
        set.items.iter().any(|selection| match &selection.node {
            Selection::Field(field) => {
                matches!(field.node.name.node.as_str(), "__schema" | "__type")
                    || selects(&field.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => selects(&fragment.node.selection_set.node),
            Selection::FragmentSpread(_) => false,
        })
    }
    document.operations.iter().any(|(_, operation)| selects(&operation.node.selection_set.node))
        || document.fragments.values().any(|fragment| selects(&fragment.node.selection_set.node))
}

/// Refuses a document whose brackets, braces or parentheses nest deeper than `max`,
/// counting only those outside strings, block strings and comments.
pub fn check_nesting(document: &str, max: usize) -> ServerResult<()> {
    match nesting_exceeds(document.as_bytes(), max) {
        false => Ok(()),
        true => Err(refusal(
            ErrorCode::ValidationFailed,
            format!("the document nests brackets, braces or parentheses deeper than {max}"),
        )),
    }
}

/// One pass over the bytes; stops at the first byte past the limit. Unbalanced closers
/// are left for the parser to report.
fn nesting_exceeds(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'#' => {
                while i < text.len() && text[i] != b'\n' && text[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if text[i..].starts_with(b"\"\"\"") => {
                // A block string ends at the next `"""` not escaped as `\"""`.
                i += 3;
                while i < text.len() && !text[i..].starts_with(b"\"\"\"") {
                    i += if text[i..].starts_with(b"\\\"\"\"") { 4 } else { 1 };
                }
                i += 2;
            }
            b'"' => {
                // A string ends at an unescaped quote or at the end of the line.
                i += 1;
                while i < text.len() && text[i] != b'"' && text[i] != b'\n' && text[i] != b'\r' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' | b'(' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
        format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn counts_every_kind_of_bracket() {
        assert!(!nesting_exceeds(nested("[", "1", "]", 64).as_bytes(), 64));
        assert!(nesting_exceeds(nested("[", "1", "]", 65).as_bytes(), 64));
        assert!(nesting_exceeds(nested("{a:", "1", "}", 65).as_bytes(), 64));
        assert!(nesting_exceeds(nested("{ a ", "", "}", 65).as_bytes(), 64));
        assert!(nesting_exceeds(b"{ a(x: [{b: (", 4));
        // Depth is the nesting, not the count: siblings do not add up.
        assert!(!nesting_exceeds("[1] ".repeat(10_000).as_bytes(), 1));
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let deep = "[".repeat(100);
        for text in [
            format!("{{ a(s: \"{deep}\") }}"),
            format!("{{ a(s: \"\\\"{deep}\") }}"),
            format!("{{ a(s: \"\"\"{deep}\\\"\"\"{deep}\"\"\") }}"),
            format!("{{ a # {deep}\n }}"),
        ] {
            assert!(!nesting_exceeds(text.as_bytes(), 4), "{text}");
        }
        // After the string or comment ends, brackets count again.
        assert!(nesting_exceeds(format!("\"{deep}\"\n{deep}").as_bytes(), 4));
        assert!(nesting_exceeds(format!("# {deep}\n{deep}").as_bytes(), 4));
        // A string cut off by a line end does not hide what follows.
        assert!(nesting_exceeds(format!("\"open\n{deep}").as_bytes(), 4));
    }

    mod policy {
        use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

        use super::super::*;
        use crate::auth::Principal;

        struct Query;

        #[Object]
        impl Query {
            async fn hello(&self) -> &str {
                "hi"
            }
        }

        fn caller(role: Role) -> Auth {
            Auth::Verified(Principal { subject: "x".into(), role, expires_at: u64::MAX, workspaces: vec![] })
        }

        async fn introspect(guard: EdgeGuard, auth: Auth) -> Result<(), String> {
            let schema = Schema::build(Query, EmptyMutation, EmptySubscription).extension(guard).finish();
            for query in [
                "{ __schema { queryType { name } } }",
                "{ ...F } fragment F on Query { __type(name: \"Query\") { name } }",
            ] {
                let response = schema.execute(Request::new(query).data(auth.clone())).await;
                if let Some(error) = response.errors.first() {
                    return Err(error.message.clone());
                }
                assert!(!response.data.to_string().contains("null"), "{}", response.data);
            }
            Ok(())
        }

        #[tokio::test]
        async fn development_introspects_production_only_for_configured_admins() {
            let guard =
                |introspection, admin_introspection| EdgeGuard { max_nesting: 64, introspection, admin_introspection };
            for auth in [Auth::Anonymous, caller(Role::User), caller(Role::Admin)] {
                assert_eq!(introspect(guard(true, false), auth.clone()).await, Ok(()), "development: {auth:?}");
                let refused = introspect(guard(false, false), auth.clone()).await;
                assert_eq!(refused, Err("introspection is disabled".into()), "production: {auth:?}");
            }
            assert_eq!(introspect(guard(false, true), caller(Role::Admin)).await, Ok(()));
            for auth in [Auth::Anonymous, caller(Role::User), caller(Role::Service)] {
                assert!(introspect(guard(false, true), auth.clone()).await.is_err(), "{auth:?}");
            }
        }
    }

    #[test]
    fn the_refusal_carries_a_code_and_no_input() {
        let error = check_nesting(&"[".repeat(10_000), 64).unwrap_err();
        assert!(error.message.len() < 100, "{}", error.message);
        let code = error.extensions.as_ref().and_then(|e| e.get("code")).cloned();
        assert_eq!(code, Some(async_graphql::Value::from("VALIDATION_FAILED")));
    }
}
