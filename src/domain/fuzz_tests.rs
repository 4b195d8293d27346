//! Fuzz-style property tests: random JSON and random or mutated flow definitions through
//! validation, condition parsing and evaluation, applicability and the progress rules.
//! Nothing may panic, whatever the input; what validates must round-trip through its
//! canonical form. Cases: proptest's default (256 per test) in CI, more with
//! PROPTEST_CASES (e.g. 100000) when hunting.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

use super::condition::Facts;
use super::limits::Limits;
use super::progress::{self, Command, Enrollment, Source, StepState, StepStatus};
use super::triggers::{self, EventFact};
use super::validation::{parse_condition_for_tests, parse_flow, validate_flow};

/// Numbers across the whole range: extremes, zero, tiny and huge floats.
pub(crate) fn number() -> impl Strategy<Value = Value> {
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
            json!(1.5),
        ]),
    ]
}

/// Strings: any Unicode (control characters, astral planes) except NUL, which no input
/// may carry; plus words that mean something to the condition language.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| s.replace('\0', "")),
        "\\PC{0,12}",
        prop::sample::select(vec![
            "",
            "all",
            "any",
            "not",
            "attr",
            "op",
            "value",
            "eq",
            "in",
            "exists",
            "steps",
            "steps.a.status",
            "steps.a.metadata.x",
            "plan",
            "COMPLETED",
            "PENDING",
            "a",
            "b",
            "key",
            "title",
            "dependsOn",
            "trigger",
            "where",
            "event",
            "points",
            "required",
            "skippable",
            "condition",
            "scope",
            "WORKSPACE",
            "a.b",
            "..",
        ])
        .prop_map(String::from),
    ]
}

/// Any JSON value, at most `depth` levels deep, empty containers included.
pub(crate) fn json_value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), number(), text().prop_map(Value::String)];
    leaf.prop_recursive(depth, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A value nested exactly `depth` levels (a chain of arrays and objects) around a leaf.
pub(crate) fn chain(depth: usize, leaf: Value) -> Value {
    let mut v = leaf;
    for i in 0..depth {
        v = if i % 2 == 0 { Value::Array(vec![v]) } else { json!({ "k": v }) };
    }
    v
}

/// Conditions as authors write them, valid or nearly so.
fn condition(keys: Vec<String>) -> impl Strategy<Value = Value> {
    let path = prop_oneof![
        text(),
        prop::sample::select(keys.clone()).prop_map(|k| format!("steps.{k}.status")),
        prop::sample::select(keys).prop_map(|k| format!("steps.{k}.metadata.x")),
    ];
    let op =
        prop::sample::select(vec!["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "contains", "nope"]);
    let status = prop::sample::select(vec!["COMPLETED", "PENDING", "IN_PROGRESS", "SKIPPED"]).prop_map(Value::from);
    let value = prop_oneof![json_value(2), status.clone(), prop::collection::vec(status, 0..3).prop_map(Value::Array)];
    let compare =
        (path.clone(), op, value).prop_map(|(attr, op, value)| json!({ "attr": attr, "op": op, "value": value }));
    let shorthand =
        prop::collection::vec((path, json_value(0)), 1..3).prop_map(|kv| Value::Object(kv.into_iter().collect()));
    prop_oneof![compare, shorthand].prop_recursive(5, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|c| json!({ "all": c })),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|c| json!({ "any": c })),
            inner.prop_map(|c| json!({ "not": c })),
        ]
    })
}

/// Flow definitions: mostly valid shapes with random conditions, dependencies,
/// triggers and points.
fn definition() -> impl Strategy<Value = Value> {
    (1usize..8).prop_flat_map(|n| {
        let keys: Vec<String> = (0..n).map(|i| ["a", "b", "c", "d", "e", "f", "g", "h"][i].to_string()).collect();
        let step = (
            prop::option::of(condition(keys.clone())),
            prop::collection::vec(prop::sample::select(keys.clone()), 0..3),
            prop::option::of((prop::sample::select(vec!["e1", "e2"]), prop::option::of(condition(vec!["a".into()])))),
            prop_oneof![Just(json!(0)), Just(json!(5)), number()],
            any::<(bool, bool)>(),
        );
        (
            prop::collection::vec(step, n..=n),
            prop::option::of(condition(vec!["a".into()])),
            prop::sample::select(vec!["USER", "WORKSPACE"]),
            text(),
        )
            .prop_map(move |(steps, audience, scope, title)| {
                let steps: Vec<Value> = steps
                    .into_iter()
                    .enumerate()
                    .map(|(i, (condition, deps, trigger, points, (required, skippable)))| {
                        let mut s = json!({ "key": keys[i], "title": format!("{title} {i}"), "dependsOn": deps,
                            "points": points, "required": required, "skippable": skippable && !required });
                        if let Some(c) = condition {
                            s["condition"] = c;
                        }
                        if let Some((event, when)) = trigger {
                            s["trigger"] = json!({ "event": event });
                            if let Some(w) = when {
                                s["trigger"]["where"] = w;
                            }
                        }
                        s
                    })
                    .collect();
                let mut flow = json!({ "key": "f", "title": "F", "scope": scope, "steps": steps });
                if let Some(a) = audience {
                    flow["audience"] = a;
                }
                flow
            })
    })
}

/// Replaces the value at a random place in `v` (chosen by `pick`) with `with`.
fn mutate(v: &mut Value, mut pick: usize, with: Value) {
    let mut here = v;
    loop {
        let len = match here {
            Value::Array(items) => items.len(),
            Value::Object(map) => map.len(),
            _ => 0,
        };
        if len == 0 || pick.is_multiple_of(4) {
            *here = with;
            return;
        }
        let i = pick % len;
        pick /= 4;
        here = match here {
            Value::Array(items) => &mut items[i],
            Value::Object(map) => match map.values_mut().nth(i) {
                Some(next) => next,
                None => return,
            },
            _ => return,
        };
    }
}

/// Exercises everything downstream of a parsed flow: applicability and the progress
/// view, each command on each step, triggers from an event. Must not panic.
fn exercise(raw: &Value, attributes: &Value, properties: &Value, answer: &Value) {
    let now = Utc.timestamp_opt(1_700_000_000, 0).single().unwrap_or_default();
    for result in [parse_flow(raw), validate_flow(raw, &Limits::default()), validate_flow(raw, &tiny_limits())] {
        let Ok(flow) = result else { continue };
        // What validates round-trips through the canonical stored form.
        let canonical = flow.to_json();
        assert_eq!(parse_flow(&canonical).as_ref(), Ok(&flow), "canonical form of {raw}");
        let _ = flow.admits(attributes);
        let mut steps: BTreeMap<String, StepState> = BTreeMap::new();
        for (i, s) in flow.steps.iter().enumerate() {
            let status =
                [StepStatus::Completed, StepStatus::Pending, StepStatus::Skipped, StepStatus::InProgress][i % 4];
            let mut state = StepState::new(status, Source::User);
            state.metadata = Some(json!({ "x": answer }));
            steps.insert(s.key.clone(), state);
        }
        let view = progress::view(&flow, attributes, &steps);
        let _ = view.next();
        let mut enrollment = Enrollment::new(now);
        for s in &flow.steps {
            for command in [
                Command::StartStep { step: s.key.clone() },
                Command::CompleteStep { step: s.key.clone(), metadata: Some(json!({ "x": answer })) },
                Command::SkipStep { step: s.key.clone(), reason: None },
            ] {
                let _ = progress::apply(&flow, attributes, &mut enrollment, command, Source::User, now);
            }
        }
        let _ = progress::apply(&flow, attributes, &mut enrollment, Command::SkipFlow, Source::User, now);
        let mut fresh = Enrollment::new(now);
        let events: Vec<EventFact> = ["e1", "e2"]
            .iter()
            .map(|name| EventFact {
                id: format!("id-{name}"),
                name: name.to_string(),
                properties: properties.clone(),
                occurred_at: now,
                actor: Some("u".into()),
            })
            .collect();
        let outcome = triggers::settle(&flow, attributes, &mut fresh, &events, now);
        assert!(outcome.points_awarded >= 0, "points never go negative");
        assert!(fresh.points >= 0);
    }
}

fn tiny_limits() -> Limits {
    Limits {
        json_depth: 6,
        definition_bytes: 2_000,
        steps_per_flow: 3,
        depends_on_per_step: 1,
        condition_nodes: 4,
        condition_depth: 2,
        points_per_step: 10,
        ..Limits::default()
    }
}

proptest! {
    #[test]
    fn random_json_never_panics_validation(raw in json_value(8)) {
        let _ = parse_flow(&raw);
        let _ = validate_flow(&raw, &Limits::default());
        let _ = validate_flow(&raw, &tiny_limits());
        let _ = parse_condition_for_tests(&raw);
        let _ = super::limits::check_json("x", &raw, 32, 1024);
    }

    #[test]
    fn random_and_mutated_definitions_never_panic(
        raw in definition(),
        mutations in prop::collection::vec((any::<usize>(), json_value(3)), 0..3),
        attributes in json_value(4),
        properties in json_value(3),
        answer in json_value(2),
    ) {
        exercise(&raw, &attributes, &properties, &answer);
        let mut mutated = raw;
        for (pick, with) in mutations {
            mutate(&mut mutated, pick, with);
        }
        exercise(&mutated, &attributes, &properties, &answer);
    }

    #[test]
    fn random_conditions_parse_and_evaluate_without_panic(
        raw in condition(vec!["a".into(), "b".into()]),
        attributes in json_value(4),
        answer in json_value(3),
    ) {
        if let Ok(c) = parse_condition_for_tests(&raw) {
            let mut answers = BTreeMap::new();
            let mut state = StepState::new(StepStatus::Completed, Source::User);
            state.metadata = Some(json!({ "x": answer }));
            answers.insert("a".to_string(), state);
            let facts = Facts { attributes: &attributes, answers: &answers };
            let _ = c.evaluate(&facts);
            // Its canonical form parses back to the same condition.
            prop_assert_eq!(parse_condition_for_tests(&c.to_json()), Ok(c));
        }
    }

    /// Deep input, up to well past every limit, is refused without recursion trouble.
    #[test]
    fn deep_input_is_refused_not_overflowed(depth in 0usize..120, leaf in number()) {
        let deep = chain(depth, leaf);
        let raw = json!({ "key": "f", "title": "F", "audience": deep, "steps": [
            { "key": "a", "title": "A", "condition": { "not": deep }, "trigger": { "event": "e", "where": deep } }
        ]});
        let _ = parse_flow(&raw);
        let accepted = validate_flow(&raw, &Limits::default()).is_ok();
        prop_assert!(!accepted || depth < 32);
        let _ = parse_condition_for_tests(&deep);
        let mut obj = Map::new();
        obj.insert("x".into(), deep);
        // The object is one level, the chain `depth` more.
        prop_assert_eq!(Limits::default().check_attributes(&Value::Object(obj)).is_ok(), depth < 32);
    }
}
