//! Property test: every value the engine accepts reads back unchanged. Random JSON up to
//! the depth limit (Unicode, extreme numbers, empty containers) written as step metadata,
//! subject attributes and inside flow definitions, through the API, then read back, on
//! both databases. Cases: 24 per backend, more with PROPTEST_CASES.

use onramp::domain::Limits;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Number, Value, json};

use crate::both;
use crate::common::{TestApp, complete_mutation};

both!(accepted_values_read_back_unchanged);

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        prop::sample::select(vec![
            json!(0),
            json!(-0.0),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(f64::MAX),
            json!(f64::MIN),
            json!(f64::MIN_POSITIVE),
            json!(5e-324),
            json!(1e15),
            json!(1e16),
            json!(0.1),
        ]),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>().prop_map(|s| s.replace('\0', "")), "\\PC{0,8}", Just(String::new())]
}

fn value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), number(), text().prop_map(Value::String)];
    leaf.prop_recursive(depth, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// `leaf` nested in a chain of arrays and objects `depth` levels deep.
fn chain(depth: usize, leaf: Value) -> Value {
    let mut v = leaf;
    for i in 0..depth {
        v = if i % 2 == 0 { Value::Array(vec![v]) } else { json!({ "k": v }) };
    }
    v
}

fn depth_of(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// JSON equality where a number is its value: PostgreSQL's jsonb keeps numbers as
/// decimals, so a float written `1e16` reads back as the integer 10000000000000000.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || (x.as_f64() == y.as_f64() && (x.is_f64() || y.is_f64())),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[track_caller]
fn assert_same(written: &Value, read: &Value, what: &str) {
    assert!(same(written, read), "{what} changed in storage:\nwritten {written}\nread    {read}");
}

async fn accepted_values_read_back_unchanged(app: TestApp) {
    let limits = Limits::default();
    let cases: u32 = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24);
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    // A random value, and a chain taking it to the deepest a slot admits.
    let strategy = (value(6), 0usize..=limits.json_depth, text());
    let admin = app.admin();
    let attrs = "mutation($s: ID!, $a: JSON!) { setSubjectAttributes(subjectId: $s, attributes: $a, merge: false) { attributes } }";
    let merge_nothing = "mutation($s: ID!) { setSubjectAttributes(subjectId: $s, attributes: {}) { attributes } }";
    for case in 0..cases {
        let (random, extra, title) = strategy.new_tree(&mut runner).expect("a case").current();
        let subject = format!("subject-{case}");
        // Attributes and metadata are objects holding the value: one level for the object.
        let room = limits.json_depth - 1;
        let nested = chain(extra.min(room.saturating_sub(depth_of(&random))), random.clone());
        for v in [&random, &nested] {
            assert!(depth_of(v) < limits.json_depth);
            // A top-level null removes an attribute (documented); deeper nulls are kept.
            let v = if v.is_null() { &json!("null") } else { v };
            let attributes = json!({ "v": v, "": title });
            let written = app.ok(&admin, attrs, json!({ "s": subject, "a": attributes })).await;
            assert_same(&attributes, &written["setSubjectAttributes"]["attributes"], "attributes as written");
            // Merging nothing in returns what is stored.
            let read = app.ok(&admin, merge_nothing, json!({ "s": subject })).await;
            assert_same(&attributes, &read["setSubjectAttributes"]["attributes"], "attributes");
        }

        // A flow whose title, description and condition value carry the value; the
        // condition value sits four levels down ($, steps, step, condition).
        let in_condition = chain(extra.min((limits.json_depth - 5).saturating_sub(depth_of(&random))), random.clone());
        let key = format!("flow{case}");
        let compared = if in_condition.is_null() { json!(0) } else { in_condition };
        let definition = json!({
            "key": key,
            "title": if title.trim().is_empty() { "T".to_string() } else { title.clone() },
            "description": title,
            "steps": [
                { "key": "a", "title": "A", "condition": { "attr": "other", "op": "ne", "value": compared } },
                { "key": "b", "title": "B", "dependsOn": ["a"], "points": limits.points_per_step }
            ]
        });
        let published = app
            .ok(
                &admin,
                "mutation($d: JSON!) { publishFlow(definition: $d) { definition } }",
                json!({ "d": definition }),
            )
            .await;
        let stored = published["publishFlow"]["definition"].clone();
        assert_same(&compared, &stored["steps"][0]["condition"]["value"], "a condition value");
        assert_eq!(stored["description"], definition["description"]);
        let read = app.ok(&admin, "query($k: String!) { flow(key: $k) { definition } }", json!({ "k": key })).await;
        assert_same(&stored, &read["flow"]["definition"], "the definition");

        // Metadata of a completed step, read back in the status.
        let metadata = json!({ "v": nested, "t": title });
        let user = app.user(&subject);
        let done = app.ok(&user, &complete_mutation(), json!({ "f": key, "k": "a", "m": metadata })).await;
        assert_same(&metadata, &done["completeStep"]["steps"][0]["metadata"], "metadata as written");
        let status = app.status_of(&subject, &key).await;
        assert_same(&metadata, &status["steps"][0]["metadata"], "metadata");
    }
}
