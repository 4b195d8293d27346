//! Parsed GraphQL documents, cached by query text.
//!
//! Clients send the same few operations (generated from schema.graphql) again and again,
//! and parsing one costs the server more than the database reads a status makes
//! (BENCHMARKS.md). A document depends on its text alone, so a cached one is the one the
//! parser would return. Validation still runs on every request: it checks the variables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};

/// Far more distinct operations than a client set sends; when a caller sends ever-new
/// texts the cache starts over rather than grow.
const MAX_DOCUMENTS: usize = 1024;
/// Operations larger than this are parsed every time (a flow definition travels in
/// variables, so real operations are small).
const MAX_QUERY_BYTES: usize = 16 * 1024;

#[derive(Clone, Default)]
pub struct ParsedQueries(Arc<Mutex<HashMap<String, ExecutableDocument>>>);

impl ExtensionFactory for ParsedQueries {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ParsedQueries {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(document) = self.0.lock().ok().and_then(|cache| cache.get(query).cloned()) {
            return Ok(document);
        }
        let document = next.run(ctx, query, variables).await?;
        if query.len() <= MAX_QUERY_BYTES
            && let Ok(mut cache) = self.0.lock()
        {
            if cache.len() >= MAX_DOCUMENTS {
                cache.clear();
            }
            cache.insert(query.to_string(), document.clone());
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    struct Query;

    #[Object]
    impl Query {
        async fn echo(&self, text: String) -> String {
            text
        }
    }

    #[tokio::test]
    async fn a_cached_document_answers_like_a_fresh_parse_and_errors_are_not_cached() {
        let cache = ParsedQueries::default();
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription).extension(cache.clone()).finish();
        let query = "query($t: String!) { echo(text: $t) }";
        for text in ["one", "two"] {
            let request =
                async_graphql::Request::new(query).variables(Variables::from_json(serde_json::json!({ "t": text })));
            let response = schema.execute(request).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            assert_eq!(response.data.into_json().unwrap(), serde_json::json!({ "echo": text }));
        }
        assert_eq!(cache.0.lock().unwrap().len(), 1, "parsed once, reused");
        // A cached document is still validated against each request's variables.
        let bad = schema.execute(async_graphql::Request::new(query)).await;
        assert!(!bad.errors.is_empty());
        let broken = schema.execute(async_graphql::Request::new("{ echo(")).await;
        assert!(!broken.errors.is_empty());
        assert_eq!(cache.0.lock().unwrap().len(), 1, "a parse error is not cached");
    }
}
