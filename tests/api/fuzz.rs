//! Random and mutated GraphQL documents through the nesting pre-scan and the schema's
//! parse and validation: nothing panics or overflows, and every document nested past
//! the limit is refused before the parser sees it. `PROPTEST_CASES` sets how many
//! documents are tried (default 256, a few seconds in a debug build).

use std::sync::atomic::{AtomicU64, Ordering};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute};
use async_graphql::{Request, Response};
use onramp::config::ServerLimits;
use onramp::graphql::edge::{EdgeGuard, check_nesting};
use onramp::graphql::schema_builder;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::common::STATUS_FIELDS;

/// Stops each request after validation: the schema has no database, and parsing and
/// validating are what a hostile document attacks.
struct NoExecution;

impl ExtensionFactory for NoExecution {
    fn create(&self) -> std::sync::Arc<dyn Extension> {
        std::sync::Arc::new(NoExecution)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for NoExecution {
    async fn execute(&self, _: &ExtensionContext<'_>, _: Option<&str>, _: NextExecute<'_>) -> Response {
        Response::new(async_graphql::Value::Null)
    }
}

fn seeds() -> Vec<String> {
    vec![
        format!("query($f: String!, $s: ID) {{ status(flowKey: $f, subjectId: $s) {{ {STATUS_FIELDS} }} }}"),
        "mutation($d: JSON!) { publishFlow(definition: $d) { key version status } }".into(),
        "{ points { total entries { amount reason awardedAt } } onboardings { flowKey status } }".into(),
        "subscription { onboardingProgress(flowKey: \"welcome\") { status steps { key } } }".into(),
        "{ __schema { types { name fields { name args { name } } } } }".into(),
        "query Q { ...F } fragment F on Query { flows { key steps { key } } }".into(),
        "{ a(s: \"\"\"block \\\"\"\" [[[ string\"\"\", t: \"esc\\\"aped [\", l: [1, {a: [2]}]) # [[[ comment\n }"
            .into(),
        "{ __typename @include(if: [[[[true]]]]) @skip(if: {a: {b: (c)}}) }".into(),
    ]
}

/// A seed with random edits: characters that matter to the lexer inserted, spans cut
/// or repeated.
fn mutated() -> impl Strategy<Value = String> {
    let edit = (
        0usize..10_000,
        0usize..4,
        prop::sample::select(vec![
            "[", "]", "{", "}", "(", ")", "\"", "\"\"\"", "\\", "#", "\n", "$", "@", "...", "é", "\u{0}", " ",
        ]),
        1usize..300,
    );
    (prop::sample::select(seeds()), prop::collection::vec(edit, 1..8)).prop_map(|(seed, edits)| {
        let mut text: Vec<char> = seed.chars().collect();
        for (at, kind, token, count) in edits {
            let at = at % (text.len() + 1);
            match kind {
                0 => text.splice(at..at, token.repeat(count).chars()).for_each(drop),
                1 => text.truncate(at),
                2 => {
                    let span: Vec<char> = text[at..].iter().take(count).copied().collect();
                    text.splice(at..at, span).for_each(drop);
                }
                _ => text.splice(at..(at + count).min(text.len()), std::iter::empty()).for_each(drop),
            }
        }
        text.into_iter().collect()
    })
}

/// Brackets nested `depth` deep, closed or not, optionally inside a string or comment.
fn deep() -> impl Strategy<Value = (String, usize)> {
    let opener = prop::sample::select(vec!["[", "{", "(", "{a:", "{ a ", "[{a:("]);
    (opener, 1usize..20_000, any::<bool>(), 0usize..3).prop_map(|(open, depth, closed, wrap)| {
        let closer: String = open
            .chars()
            .rev()
            .filter_map(|c| match c {
                '[' => Some(']'),
                '{' => Some('}'),
                '(' => Some(')'),
                _ => None,
            })
            .collect();
        let body = format!("{}true{}", open.repeat(depth), if closed { closer.repeat(depth) } else { String::new() });
        let nesting = depth * open.chars().filter(|c| "[{(".contains(*c)).count();
        match wrap {
            // The document's own `{` and the argument list's `(` nest too.
            0 => (format!("{{ __typename @include(if: {body}) }}"), nesting + 2),
            1 => (format!("{{ a(s: \"{body}\") }}"), 0),
            _ => (format!("{{ a # {body}\n }}"), 0),
        }
    })
}

fn document() -> impl Strategy<Value = (String, Option<usize>)> {
    prop_oneof![
        any::<String>().prop_map(|s| (s, None)),
        prop::collection::vec(any::<u8>(), 0..2_000).prop_map(|b| (String::from_utf8_lossy(&b).into_owned(), None)),
        "[\\[\\]{}()\"#\\\\a-z:@$. \n]{0,3000}".prop_map(|s| (s, None)),
        mutated().prop_map(|s| (s, None)),
        deep().prop_map(|(s, nesting)| (s, Some(nesting))),
    ]
}

#[test]
fn random_documents_never_panic_and_deep_ones_never_reach_the_parser() {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    let limits = ServerLimits::default();
    let schema = schema_builder()
        .extension(EdgeGuard { max_nesting: limits.query_nesting, introspection: false, admin_introspection: false })
        .extension(NoExecution)
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let tried = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    runner
        .run(&document(), |(text, nesting)| {
            let n = tried.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(10_000) {
                eprintln!("fuzz: {n} documents so far");
            }
            let scanned = check_nesting(&text, limits.query_nesting);
            if let Some(nesting) = nesting {
                prop_assert_eq!(scanned.is_err(), nesting > limits.query_nesting, "nesting {}", nesting);
            }
            let response = runtime.block_on(schema.execute(Request::new(text.clone())));
            if scanned.is_err() {
                refused.fetch_add(1, Ordering::Relaxed);
                prop_assert!(response.errors[0].message.contains("deeper than"), "{:?}", response.errors);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "fuzz: {} documents tried, {} refused by the nesting pre-scan",
        tried.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
}
