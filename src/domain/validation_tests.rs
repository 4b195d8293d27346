use super::*;
use crate::domain::Limits;

use serde_json::json;

// Golden tests for `parse_flow`. Passing inputs are compared with the exact definition
// they must produce; failing inputs with the exact list of (path, code) pairs, so a new,
// missing or moved problem fails the test. Objects with several keys are written with
// their keys in sorted order, so the expected order of problems holds whether or not
// serde_json keeps insertion order.

/// A flow around the given steps, with a valid key and title.
fn flow_json(steps: Value) -> Value {
    json!({"key": "onboarding", "title": "Onboarding", "steps": steps})
}

fn parse_ok(raw: &Value) -> FlowDefinition {
    parse_flow(raw).unwrap_or_else(|problems| panic!("expected a valid flow, got {problems:#?}"))
}

fn problems(raw: &Value) -> Vec<Problem> {
    match parse_flow(raw) {
        Ok(flow) => panic!("expected problems, but the flow parsed: {flow:#?}"),
        Err(problems) => problems,
    }
}

/// The (path, code) pairs reported for `raw`, in the order they are reported.
fn codes_of(raw: &Value) -> Vec<(String, &'static str)> {
    problems(raw).into_iter().map(|p| (p.path, p.code)).collect()
}

fn pairs(expected: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    expected.iter().map(|(path, code)| (path.to_string(), *code)).collect()
}

#[track_caller]
fn assert_problems(raw: &Value, expected: &[(&str, &'static str)]) {
    assert_eq!(codes_of(raw), pairs(expected), "problems for {raw:#}");
}

/// The one problem `raw` has, checked by path and code, for its message to be inspected.
#[track_caller]
fn single_problem(raw: &Value, path: &str, code: &'static str) -> Problem {
    let found = problems(raw);
    assert_eq!(found.len(), 1, "expected exactly one problem, got {found:#?}");
    let problem = found.into_iter().next().expect("one problem");
    assert_eq!((problem.path.as_str(), problem.code), (path, code), "{problem}");
    problem
}

fn attr(path: &str) -> Path {
    Path::parse(path).expect("a valid test path")
}

fn compare(path: Path, op: Op, value: Value) -> Condition {
    Condition::Compare { path, op, value }
}

/// A bare step with every field defaulted.
fn bare_step(key: &str, title: &str) -> StepDefinition {
    StepDefinition {
        key: key.into(),
        title: title.into(),
        description: None,
        required: true,
        skippable: false,
        condition: None,
        depends_on: vec![],
        trigger: None,
        points: 0,
    }
}

// ---------------------------------------------------------------------------------------
// Valid definitions
// ---------------------------------------------------------------------------------------

fn complete_flow_json() -> Value {
    json!({
        "key": "team-onboarding",
        "title": "Get your team started",
        "description": "Everything a new workspace needs",
        "scope": "USER",
        "steps": [
            {"key": "profile", "title": "Complete your profile"},
            {
                "key": "role",
                "title": "Tell us your role",
                "description": "So we can tailor the rest",
                "required": false,
                "points": 5
            },
            {
                "key": "invite",
                "title": "Invite your team",
                "condition": {"plan": "team"},
                "dependsOn": ["profile"],
                "trigger": {"event": "member.invited", "where": {"attr": "count", "op": "gte", "value": 1}},
                "points": 20
            },
            {
                "key": "api_key",
                "title": "Create an API key",
                "required": false,
                "skippable": false,
                "condition": {"all": [
                    {"attr": "steps.role.metadata.role", "op": "eq", "value": "developer"},
                    {"not": {"attr": "steps.role.status", "op": "in", "value": ["SKIPPED"]}},
                    {"any": [
                        {"attr": "company.size", "op": "gt", "value": 10},
                        {"attr": "beta", "op": "exists"}
                    ]}
                ]},
                "dependsOn": ["role", "profile"],
                "trigger": {"event": "api_key.created"}
            }
        ]
    })
}

fn complete_flow_expected() -> FlowDefinition {
    FlowDefinition {
        key: "team-onboarding".into(),
        title: "Get your team started".into(),
        description: Some("Everything a new workspace needs".into()),
        default_locale: None,
        scope: FlowScope::User,
        audience: None,
        steps: vec![
            bare_step("profile", "Complete your profile"),
            StepDefinition {
                description: Some("So we can tailor the rest".into()),
                required: false,
                skippable: true,
                points: 5,
                ..bare_step("role", "Tell us your role")
            },
            StepDefinition {
                condition: Some(compare(attr("plan"), Op::Eq, json!("team"))),
                depends_on: vec!["profile".into()],
                trigger: Some(Trigger {
                    event: "member.invited".into(),
                    when: Some(compare(attr("count"), Op::Gte, json!(1))),
                }),
                points: 20,
                ..bare_step("invite", "Invite your team")
            },
            StepDefinition {
                required: false,
                skippable: false,
                condition: Some(Condition::All(vec![
                    compare(Path::StepMetadata("role".into(), vec!["role".into()]), Op::Eq, json!("developer")),
                    Condition::Not(Box::new(compare(Path::StepStatus("role".into()), Op::In, json!(["SKIPPED"])))),
                    Condition::Any(vec![
                        compare(attr("company.size"), Op::Gt, json!(10)),
                        compare(attr("beta"), Op::Exists, json!(true)),
                    ]),
                ])),
                depends_on: vec!["role".into(), "profile".into()],
                trigger: Some(Trigger { event: "api_key.created".into(), when: None }),
                ..bare_step("api_key", "Create an API key")
            },
        ],
        nudges: Default::default(),
    }
}

#[test]
fn complete_valid_flow_parses_to_the_expected_definition() {
    assert_eq!(parse_ok(&complete_flow_json()), complete_flow_expected());
}

#[test]
fn omitted_fields_take_their_defaults() {
    let flow = parse_ok(&json!({
        "key": "minimal",
        "title": "Minimal",
        "steps": [
            {"key": "a", "title": "A"},
            {"key": "b", "title": "B", "required": false},
            {"key": "c", "title": "C", "required": false, "skippable": false},
            {"key": "d", "title": "D", "required": true, "skippable": false}
        ]
    }));
    assert_eq!(flow.description, None);
    assert_eq!(flow.scope, FlowScope::User, "scope defaults to USER");
    // required defaults to true; skippable defaults to !required; points to 0.
    assert_eq!(flow.steps[0], bare_step("a", "A"));
    assert_eq!(flow.steps[1], StepDefinition { required: false, skippable: true, ..bare_step("b", "B") });
    assert_eq!(flow.steps[2], StepDefinition { required: false, skippable: false, ..bare_step("c", "C") });
    assert_eq!(flow.steps[3], bare_step("d", "D"));
}

#[test]
fn explicit_nulls_mean_the_field_is_absent() {
    let flow = parse_ok(&json!({
        "key": "nulls",
        "title": "Nulls",
        "description": null,
        "scope": null,
        "steps": [{
            "key": "a",
            "title": "A",
            "description": null,
            "required": null,
            "skippable": null,
            "condition": null,
            "dependsOn": null,
            "trigger": null,
            "points": null
        }]
    }));
    assert_eq!(flow.scope, FlowScope::User);
    assert_eq!(flow.steps, vec![bare_step("a", "A")]);
}

#[test]
fn shorthand_condition_becomes_an_eq_comparison() {
    let flow = parse_ok(&flow_json(json!([{"key": "a", "title": "A", "condition": {"plan": "team"}}])));
    assert_eq!(
        flow.steps[0].condition,
        Some(Condition::Compare { path: Path::Attribute(vec!["plan".into()]), op: Op::Eq, value: json!("team") })
    );
}

#[test]
fn shorthand_with_several_attributes_becomes_all_of_eq_comparisons() {
    let flow = parse_ok(&flow_json(json!([
        {"key": "a", "title": "A", "condition": {"company.size": 10, "plan": "team", "trial": false}}
    ])));
    assert_eq!(
        flow.steps[0].condition,
        Some(Condition::All(vec![
            compare(attr("company.size"), Op::Eq, json!(10)),
            compare(attr("plan"), Op::Eq, json!("team")),
            compare(attr("trial"), Op::Eq, json!(false)),
        ]))
    );
}

#[test]
fn shorthand_may_compare_an_earlier_step_status() {
    let flow = parse_ok(&flow_json(json!([
        {"key": "a", "title": "A", "required": false},
        {"key": "b", "title": "B", "condition": {"steps.a.status": "SKIPPED"}}
    ])));
    assert_eq!(flow.steps[1].condition, Some(compare(Path::StepStatus("a".into()), Op::Eq, json!("SKIPPED"))));
}

#[test]
fn canonical_json_reparses_to_an_equal_definition() {
    let flow = parse_ok(&complete_flow_json());
    let canonical = flow.to_json();
    let reparsed = parse_ok(&canonical);
    assert_eq!(reparsed, flow);
    // And the canonical form is a fixed point.
    assert_eq!(reparsed.to_json(), canonical);
}

#[test]
fn canonical_json_spells_out_defaults_and_expands_shorthands() {
    let flow = parse_ok(&json!({
        "key": "short",
        "title": "Short",
        "steps": [
            {"key": "a", "title": "A", "condition": {"plan": "team"}},
            {"key": "b", "title": "B", "required": false, "condition": {"attr": "beta", "op": "exists"}}
        ]
    }));
    assert_eq!(
        flow.to_json(),
        json!({
            "key": "short",
            "title": "Short",
            "scope": "USER",
            "steps": [
                {
                    "key": "a",
                    "title": "A",
                    "required": true,
                    "skippable": false,
                    "condition": {"attr": "plan", "op": "eq", "value": "team"},
                    "dependsOn": [],
                    "points": 0
                },
                {
                    "key": "b",
                    "title": "B",
                    "required": false,
                    "skippable": true,
                    "condition": {"attr": "beta", "op": "exists", "value": true},
                    "dependsOn": [],
                    "points": 0
                }
            ]
        })
    );
}

#[test]
fn every_operator_accepts_its_value_types() {
    let cases = [
        json!({"attr": "plan", "op": "eq", "value": "team"}),
        json!({"attr": "tags", "op": "eq", "value": ["a", "b"]}),
        json!({"attr": "plan", "op": "ne", "value": {"nested": true}}),
        json!({"attr": "plan", "op": "in", "value": ["team", "pro"]}),
        json!({"attr": "plan", "op": "in", "value": []}),
        json!({"attr": "plan", "op": "not_in", "value": ["free"]}),
        json!({"attr": "size", "op": "gt", "value": 10}),
        json!({"attr": "size", "op": "gte", "value": 1.5}),
        json!({"attr": "signup", "op": "lt", "value": "2026-01-01"}),
        json!({"attr": "signup", "op": "lte", "value": "2026-01-01"}),
        json!({"attr": "beta", "op": "exists", "value": false}),
        json!({"attr": "beta", "op": "exists"}),
        json!({"attr": "tags", "op": "contains", "value": "beta"}),
        json!({"attr": "ids", "op": "contains", "value": 7}),
        json!({"attr": "flags", "op": "contains", "value": true}),
    ];
    for condition in cases {
        let raw = flow_json(json!([{"key": "a", "title": "A", "condition": condition.clone()}]));
        let flow = parse_flow(&raw).unwrap_or_else(|p| panic!("{condition} should be valid, got {p:#?}"));
        assert!(flow.steps[0].condition.is_some());
    }
}

#[test]
fn dependencies_are_kept_in_order_without_repeats() {
    let flow = parse_ok(&flow_json(json!([
        {"key": "a", "title": "A"},
        {"key": "b", "title": "B"},
        {"key": "c", "title": "C", "dependsOn": ["b", "a", "b"]}
    ])));
    assert_eq!(flow.steps[2].depends_on, vec!["b".to_string(), "a".to_string()]);
}

#[test]
fn key_syntax_accepts_identifiers_up_to_64_characters() {
    let longest = format!("k{}", "x".repeat(63));
    for key in ["a", "Z9", "api_key", "step-2", longest.as_str()] {
        let flow = parse_ok(&json!({"key": key, "title": "T", "steps": [{"key": key, "title": "S"}]}));
        assert_eq!(flow.key, key);
        assert_eq!(flow.steps[0].key, key);
    }
}

#[test]
fn a_condition_may_read_answers_of_any_earlier_step() {
    let flow = parse_ok(&flow_json(json!([
        {"key": "a", "title": "A"},
        {"key": "b", "title": "B"},
        {"key": "c", "title": "C", "condition": {"any": [
            {"attr": "steps.a.status", "op": "eq", "value": "COMPLETED"},
            {"attr": "steps.b.metadata.team.size", "op": "gte", "value": 3}
        ]}}
    ])));
    assert_eq!(
        flow.steps[2].condition,
        Some(Condition::Any(vec![
            compare(Path::StepStatus("a".into()), Op::Eq, json!("COMPLETED")),
            compare(Path::StepMetadata("b".into(), vec!["team".into(), "size".into()]), Op::Gte, json!(3)),
        ]))
    );
}

// ---------------------------------------------------------------------------------------
// Trigger `where` conditions read event properties
// ---------------------------------------------------------------------------------------

#[test]
fn trigger_where_paths_are_event_properties_not_answer_references() {
    // In a step condition `steps.x.status` would be an answer reference to an unknown step
    // with an invalid status value; in a trigger it is just a property of the event.
    let flow = parse_ok(&flow_json(json!([{
        "key": "a",
        "title": "A",
        "trigger": {"event": "import.finished", "where": {"all": [
            {"steps.x.status": "done"},
            {"attr": "steps.a.metadata", "op": "gt", "value": 3},
            {"attr": "steps", "op": "exists"}
        ]}}
    }])));
    let trigger = flow.steps[0].trigger.as_ref().expect("a trigger");
    let props = |parts: &[&str]| Path::Attribute(parts.iter().map(|p| p.to_string()).collect());
    assert_eq!(
        trigger.when,
        Some(Condition::All(vec![
            compare(props(&["steps", "x", "status"]), Op::Eq, json!("done")),
            compare(props(&["steps", "a", "metadata"]), Op::Gt, json!(3)),
            compare(props(&["steps"]), Op::Exists, json!(true)),
        ]))
    );
    // The canonical form of event-property paths re-parses the same.
    assert_eq!(parse_ok(&flow.to_json()), flow);
}

#[test]
fn trigger_where_paths_still_need_non_empty_segments() {
    let raw = flow_json(json!([{
        "key": "a",
        "title": "A",
        "trigger": {"event": "e", "where": {"all": [{"a..b": 1}, {"attr": "", "op": "eq", "value": 1}]}}
    }]));
    assert_problems(
        &raw,
        &[
            ("$.steps[0].trigger.where.all[0].a..b", INVALID_PATH),
            ("$.steps[0].trigger.where.all[1].attr", INVALID_PATH),
        ],
    );
    assert_eq!(problems(&raw)[0].message, "`a..b` is not a property path");
}

// ---------------------------------------------------------------------------------------
// The definition's own shape
// ---------------------------------------------------------------------------------------

#[test]
fn a_definition_that_is_not_an_object_is_rejected_whole() {
    for raw in [json!([]), json!("onboarding"), json!(null), json!(42)] {
        let problem = single_problem(&raw, "$", INVALID_DEFINITION);
        assert_eq!(problem.message, "a flow definition is a JSON object");
    }
}

#[test]
fn missing_key_title_and_steps_are_all_reported() {
    assert_problems(&json!({}), &[("$.key", MISSING_FIELD), ("$.title", MISSING_FIELD), ("$.steps", MISSING_FIELD)]);
    let found = problems(&json!({}));
    assert_eq!(found[0].message, "`key` is required");
    assert_eq!(found[2].message, "a flow needs a `steps` array");
}

#[test]
fn blank_strings_count_as_missing_and_wrong_types_are_reported() {
    assert_problems(
        &json!({"description": 3, "key": 7, "scope": true, "steps": {"a": 1}, "title": "  "}),
        &[
            ("$.key", WRONG_TYPE),
            ("$.title", MISSING_FIELD),
            ("$.description", WRONG_TYPE),
            ("$.scope", WRONG_TYPE),
            ("$.steps", WRONG_TYPE),
        ],
    );
}

#[test]
fn a_flow_without_steps_is_empty() {
    let problem = single_problem(&flow_json(json!([])), "$.steps", EMPTY_FLOW);
    assert_eq!(problem.message, "a flow needs at least one step");
}

#[test]
fn a_step_must_be_an_object_with_a_key_and_a_title() {
    assert_problems(
        &flow_json(json!([
            "a",
            {"title": "no key"},
            {"key": "c"},
            {"key": 3, "title": ["t"]},
            {"key": "e", "title": ""}
        ])),
        &[
            ("$.steps[0]", WRONG_TYPE),
            ("$.steps[1].key", MISSING_FIELD),
            ("$.steps[2].title", MISSING_FIELD),
            ("$.steps[3].key", WRONG_TYPE),
            ("$.steps[3].title", WRONG_TYPE),
            ("$.steps[4].title", MISSING_FIELD),
        ],
    );
}

#[test]
fn step_fields_of_the_wrong_type_are_reported() {
    assert_problems(
        &flow_json(json!([{
            "dependsOn": "a",
            "description": false,
            "key": "a",
            "points": "ten",
            "required": "yes",
            "skippable": 0,
            "title": "A"
        }])),
        &[
            ("$.steps[0].description", WRONG_TYPE),
            ("$.steps[0].required", WRONG_TYPE),
            ("$.steps[0].skippable", WRONG_TYPE),
            ("$.steps[0].points", WRONG_TYPE),
            ("$.steps[0].dependsOn", WRONG_TYPE),
        ],
    );
}

#[test]
fn unknown_fields_are_reported_at_every_level() {
    // A typo such as `depends_on` must not silently drop the dependency.
    let raw = json!({
        "key": "onboarding",
        "title": "Onboarding",
        "version": 2,
        "steps": [
            {"key": "a", "title": "A"},
            {"depends_on": ["a"], "key": "b", "title": "B"},
            {"key": "c", "title": "C", "trigger": {"event": "e", "properties": {}}},
            {"key": "d", "title": "D", "condition": {"attr": "plan", "op": "eq", "value": "team", "values": ["pro"]}}
        ]
    });
    assert_problems(
        &raw,
        &[
            ("$.version", UNKNOWN_FIELD),
            ("$.steps[1].depends_on", UNKNOWN_FIELD),
            ("$.steps[2].trigger.properties", UNKNOWN_FIELD),
            ("$.steps[3].condition.values", UNKNOWN_FIELD),
        ],
    );
    assert_eq!(
        problems(&raw)[1].message,
        "unknown field `depends_on`; known fields: key, title, description, required, skippable, condition, dependsOn, trigger, points"
    );
}

#[test]
fn workspace_scope_is_accepted() {
    let raw = json!({"key": "k", "title": "T", "scope": "WORKSPACE", "steps": [{"key": "a", "title": "A"}]});
    let flow = parse_flow(&raw).expect("a workspace-scoped flow is valid");
    assert_eq!(flow.scope, FlowScope::Workspace);
    let user = parse_flow(&json!({"key": "k", "title": "T", "steps": [{"key": "a", "title": "A"}]})).unwrap();
    assert_eq!(user.scope, FlowScope::User, "USER is the default");
}

#[test]
fn an_unknown_scope_name_is_the_wrong_type() {
    let raw = json!({"key": "k", "title": "T", "scope": "user", "steps": [{"key": "a", "title": "A"}]});
    let problem = single_problem(&raw, "$.scope", WRONG_TYPE);
    assert_eq!(problem.message, "scope is USER or WORKSPACE, not `user`");
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

#[test]
fn invalid_flow_and_step_keys_are_reported() {
    let too_long = format!("k{}", "x".repeat(64));
    assert_problems(
        &json!({
            "key": "1st-flow",
            "title": "T",
            "steps": [
                {"key": "has space", "title": "A"},
                {"key": "-dash", "title": "B"},
                {"key": "_under", "title": "C"},
                {"key": "dotted.key", "title": "D"},
                {"key": "émoji", "title": "E"},
                {"key": too_long, "title": "F"},
                {"key": "fine", "title": "G"}
            ]
        }),
        &[
            ("$.key", INVALID_KEY),
            ("$.steps[0].key", INVALID_KEY),
            ("$.steps[1].key", INVALID_KEY),
            ("$.steps[2].key", INVALID_KEY),
            ("$.steps[3].key", INVALID_KEY),
            ("$.steps[4].key", INVALID_KEY),
            ("$.steps[5].key", INVALID_KEY),
        ],
    );
    let problem = single_problem(
        &json!({"key": "1st", "title": "T", "steps": [{"key": "a", "title": "A"}]}),
        "$.key",
        INVALID_KEY,
    );
    assert_eq!(
        problem.message,
        "`1st` is not a valid key: start with a letter, then letters, digits, `_` or `-`, at most 64 characters"
    );
}

#[test]
fn duplicate_step_keys_are_reported_at_each_later_occurrence() {
    let raw = flow_json(json!([
        {"key": "a", "title": "A"},
        {"key": "b", "title": "B"},
        {"key": "a", "title": "A again"},
        {"key": "a", "title": "A thrice"}
    ]));
    assert_problems(&raw, &[("$.steps[2].key", DUPLICATE_STEP_KEY), ("$.steps[3].key", DUPLICATE_STEP_KEY)]);
    assert_eq!(problems(&raw)[1].message, "step key `a` is already used by $.steps[0]");
}

// ---------------------------------------------------------------------------------------
// Dependencies
// ---------------------------------------------------------------------------------------

#[test]
fn a_dependency_on_an_unknown_step_is_reported() {
    let raw = flow_json(json!([
        {"key": "a", "title": "A"},
        {"key": "b", "title": "B", "dependsOn": ["a", "ghost", 7]}
    ]));
    assert_problems(&raw, &[("$.steps[1].dependsOn[1]", UNKNOWN_DEPENDENCY), ("$.steps[1].dependsOn[2]", WRONG_TYPE)]);
    assert_eq!(problems(&raw)[0].message, "no step has the key `ghost`");
}

#[test]
fn a_dependency_on_a_later_step_is_a_forward_dependency() {
    let raw = flow_json(json!([
        {"key": "a", "title": "A", "dependsOn": ["b"]},
        {"key": "b", "title": "B"}
    ]));
    let problem = single_problem(&raw, "$.steps[0].dependsOn[0]", FORWARD_DEPENDENCY);
    assert_eq!(
        problem.message,
        "`b` is shown after this step (at $.steps[1]): a step can only depend on steps before it"
    );
}

#[test]
fn a_step_depending_on_itself_is_a_cycle_of_one() {
    let raw = flow_json(json!([
        {"key": "a", "title": "A"},
        {"key": "b", "title": "B", "dependsOn": ["a", "b"]}
    ]));
    // Not a forward dependency: the step is not after itself.
    let problem = single_problem(&raw, "$.steps[1].dependsOn", DEPENDENCY_CYCLE);
    assert_eq!(problem.message, "dependency cycle: b -> b");
}

#[test]
fn a_two_step_cycle_is_reported_with_its_forward_edge() {
    // Every cycle of two or more steps has an edge pointing forward in display order, so
    // both problems are reported: the forward edge where it is written, and the cycle
    // at its first step, named in dependency order.
    let raw = flow_json(json!([
        {"key": "a", "title": "A", "dependsOn": ["b"]},
        {"key": "b", "title": "B", "dependsOn": ["a"]}
    ]));
    assert_problems(
        &raw,
        &[("$.steps[0].dependsOn[0]", FORWARD_DEPENDENCY), ("$.steps[0].dependsOn", DEPENDENCY_CYCLE)],
    );
    assert_eq!(problems(&raw)[1].message, "dependency cycle: a -> b -> a");
}

#[test]
fn a_three_step_cycle_is_reported_once_with_its_forward_edge() {
    // a needs c, c needs b, b needs a: only a -> c points forward.
    let raw = flow_json(json!([
        {"key": "a", "title": "A", "dependsOn": ["c"]},
        {"key": "b", "title": "B", "dependsOn": ["a"]},
        {"key": "c", "title": "C", "dependsOn": ["b"]},
        {"key": "d", "title": "D", "dependsOn": ["c"]}
    ]));
    assert_problems(
        &raw,
        &[("$.steps[0].dependsOn[0]", FORWARD_DEPENDENCY), ("$.steps[0].dependsOn", DEPENDENCY_CYCLE)],
    );
    assert_eq!(problems(&raw)[1].message, "dependency cycle: a -> c -> b -> a");
}

#[test]
fn a_cycle_through_a_repeated_dependency_is_reported_once() {
    let raw = flow_json(json!([
        {"key": "a", "title": "A", "dependsOn": ["b", "b"]},
        {"key": "b", "title": "B", "dependsOn": ["a", "a"]}
    ]));
    assert_problems(
        &raw,
        &[
            ("$.steps[0].dependsOn[0]", FORWARD_DEPENDENCY),
            ("$.steps[0].dependsOn[1]", FORWARD_DEPENDENCY),
            ("$.steps[0].dependsOn", DEPENDENCY_CYCLE),
        ],
    );
}

#[test]
fn a_cycle_is_reported_even_when_its_steps_have_other_problems() {
    // The cycle stage reads the dependency graph as written, so an author sees the cycle
    // in the same round as a broken field on one of its steps.
    let raw = flow_json(json!([
        {"dependsOn": ["b"], "key": "a", "points": -1, "title": "A"},
        {"key": "b", "title": "B", "dependsOn": ["a"]}
    ]));
    assert_problems(
        &raw,
        &[
            ("$.steps[0].points", NEGATIVE_POINTS),
            ("$.steps[0].dependsOn[0]", FORWARD_DEPENDENCY),
            ("$.steps[0].dependsOn", DEPENDENCY_CYCLE),
        ],
    );
}

#[test]
fn a_diamond_of_dependencies_is_not_a_cycle() {
    let flow = parse_ok(&flow_json(json!([
        {"key": "a", "title": "A"},
        {"key": "b", "title": "B", "dependsOn": ["a"]},
        {"key": "c", "title": "C", "dependsOn": ["a"]},
        {"key": "d", "title": "D", "dependsOn": ["b", "c", "a"]}
    ])));
    assert_eq!(flow.steps[3].depends_on, vec!["b".to_string(), "c".to_string(), "a".to_string()]);
}

// ---------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------

/// A flow whose steps each carry one of `conditions`, after a first step `a` whose
/// answers they may read.
fn flow_with_conditions(conditions: &[Value]) -> Value {
    let mut steps = vec![json!({"key": "a", "title": "A"})];
    for (i, condition) in conditions.iter().enumerate() {
        steps.push(json!({"key": format!("s{}", i + 1), "title": "S", "condition": condition}));
    }
    flow_json(Value::Array(steps))
}

#[test]
fn an_unknown_operator_is_reported_with_the_valid_ones() {
    let raw = flow_with_conditions(&[json!({"attr": "plan", "op": "equals", "value": "team"})]);
    let problem = single_problem(&raw, "$.steps[1].condition.op", UNKNOWN_OPERATOR);
    assert_eq!(
        problem.message,
        "unknown operator `equals`; use one of eq, ne, in, not_in, gt, gte, lt, lte, exists, contains"
    );
}

#[test]
fn each_operator_rejects_values_of_the_wrong_type() {
    let raw = flow_with_conditions(&[
        json!({"attr": "plan", "op": "in", "value": "team"}),
        json!({"attr": "plan", "op": "not_in", "value": 3}),
        json!({"attr": "size", "op": "gt", "value": true}),
        json!({"attr": "size", "op": "gte", "value": null}),
        json!({"attr": "size", "op": "lt", "value": [1]}),
        json!({"attr": "size", "op": "lte", "value": {"n": 1}}),
        json!({"attr": "beta", "op": "exists", "value": "yes"}),
        json!({"attr": "beta", "op": "exists", "value": null}),
        json!({"attr": "tags", "op": "contains", "value": ["a"]}),
        json!({"attr": "tags", "op": "contains", "value": {"a": 1}}),
        json!({"attr": "plan", "op": "eq"}),
        json!({"attr": "plan", "op": "in"}),
    ]);
    let paths: Vec<String> = (1..=12).map(|i| format!("$.steps[{i}].condition.value")).collect();
    let expected: Vec<(&str, &'static str)> = paths.iter().map(|p| (p.as_str(), WRONG_VALUE_TYPE)).collect();
    assert_problems(&raw, &expected);
    let messages: Vec<String> = problems(&raw).into_iter().map(|p| p.message).collect();
    assert_eq!(messages[0], "`in` takes an array of values");
    assert_eq!(messages[2], "`gt` compares with a number or a string");
    assert_eq!(messages[6], "`exists` takes true or false");
    assert_eq!(messages[8], "`contains` looks for a string, number or boolean");
    assert_eq!(messages[10], "`eq` needs a `value`");
}

#[test]
fn a_comparison_needs_an_attr_and_an_op_of_the_right_types() {
    assert_problems(
        &flow_with_conditions(&[
            json!({"op": "eq", "value": 1}),
            json!({"attr": "plan", "value": 1}),
            json!({"attr": 3, "op": "eq", "value": 1}),
            json!({"attr": "plan", "op": ["eq"], "value": 1}),
        ]),
        &[
            ("$.steps[1].condition.attr", MISSING_FIELD),
            ("$.steps[2].condition.op", MISSING_FIELD),
            ("$.steps[3].condition.attr", WRONG_TYPE),
            ("$.steps[4].condition.op", WRONG_TYPE),
        ],
    );
}

#[test]
fn malformed_conditions_are_reported_where_they_are_written() {
    assert_problems(
        &flow_with_conditions(&[
            json!("plan == team"),
            json!({}),
            json!({"all": {"plan": "team"}}),
            json!({"all": [{"plan": "team"}], "plan": "pro"}),
            json!({"any": [{"plan": "team"}, 3, {}]}),
            json!({"not": [{"plan": "team"}]}),
            json!({"not": {"plan": "team"}, "size": 3}),
            json!({"plan": ["team", "pro"]}),
            json!({"all": [{"any": [{"not": {}}]}]}),
        ]),
        &[
            ("$.steps[1].condition", INVALID_CONDITION),
            ("$.steps[2].condition", INVALID_CONDITION),
            ("$.steps[3].condition.all", INVALID_CONDITION),
            ("$.steps[4].condition.plan", INVALID_CONDITION),
            ("$.steps[5].condition.any[1]", INVALID_CONDITION),
            ("$.steps[5].condition.any[2]", INVALID_CONDITION),
            ("$.steps[6].condition.not", INVALID_CONDITION),
            ("$.steps[7].condition.size", INVALID_CONDITION),
            ("$.steps[8].condition.plan", WRONG_VALUE_TYPE),
            ("$.steps[9].condition.all[0].any[0].not", INVALID_CONDITION),
        ],
    );
}

#[test]
fn malformed_condition_messages_say_what_is_wrong() {
    let raw = flow_with_conditions(&[
        json!({}),
        json!({"all": {"plan": "team"}}),
        json!({"all": [{"plan": "team"}], "plan": "pro"}),
    ]);
    let messages: Vec<String> = problems(&raw).into_iter().map(|p| p.message).collect();
    assert_eq!(
        messages,
        vec![
            "a condition cannot be empty".to_string(),
            "`all` takes an array of conditions".to_string(),
            "`all` cannot be combined with `plan` in one object".to_string(),
        ]
    );
}

#[test]
fn invalid_paths_are_reported() {
    let raw = flow_with_conditions(&[
        json!({"attr": "", "op": "eq", "value": 1}),
        json!({"attr": "company..size", "op": "eq", "value": 1}),
        json!({"attr": "steps.a", "op": "eq", "value": 1}),
        json!({"attr": "steps.a.metadata", "op": "exists"}),
        json!({"attr": "steps.a.title", "op": "eq", "value": "A"}),
        json!({".plan": "team"}),
    ]);
    assert_problems(
        &raw,
        &[
            ("$.steps[1].condition.attr", INVALID_PATH),
            ("$.steps[2].condition.attr", INVALID_PATH),
            ("$.steps[3].condition.attr", INVALID_PATH),
            ("$.steps[4].condition.attr", INVALID_PATH),
            ("$.steps[5].condition.attr", INVALID_PATH),
            ("$.steps[6].condition..plan", INVALID_PATH),
        ],
    );
    let messages: Vec<String> = problems(&raw).into_iter().map(|p| p.message).collect();
    assert_eq!(messages[0], "a path cannot be empty");
    assert_eq!(messages[1], "`company..size` has an empty segment");
    assert_eq!(
        messages[2],
        "`steps.a` is not an answer path: use `steps.<key>.status` or `steps.<key>.metadata.<field>`"
    );
}

#[test]
fn answer_references_must_name_an_earlier_step() {
    let raw = flow_json(json!([
        {"key": "a", "title": "A"},
        {"key": "b", "title": "B", "condition": {"attr": "steps.ghost.status", "op": "eq", "value": "COMPLETED"}},
        {"key": "c", "title": "C", "condition": {"attr": "steps.d.metadata.role", "op": "eq", "value": "dev"}},
        {"key": "d", "title": "D", "condition": {"steps.d.status": "PENDING"}}
    ]));
    assert_problems(
        &raw,
        &[
            ("$.steps[1].condition.attr", UNKNOWN_ANSWER_REFERENCE),
            ("$.steps[2].condition.attr", UNKNOWN_ANSWER_REFERENCE),
            ("$.steps[3].condition.steps.d.status", UNKNOWN_ANSWER_REFERENCE),
        ],
    );
    let messages: Vec<String> = problems(&raw).into_iter().map(|p| p.message).collect();
    assert_eq!(
        messages,
        vec![
            "no step has the key `ghost`".to_string(),
            "`d` is shown after this step (at $.steps[3]): conditions read earlier answers only".to_string(),
            "a step's condition cannot read its own answer".to_string(),
        ]
    );
}

#[test]
fn step_status_comparisons_only_accept_the_four_status_names() {
    let raw = flow_with_conditions(&[
        json!({"steps.a.status": "complete"}),
        json!({"attr": "steps.a.status", "op": "eq", "value": "completed"}),
        json!({"attr": "steps.a.status", "op": "in", "value": ["COMPLETED", "done", 3]}),
        json!({"attr": "steps.a.status", "op": "not_in", "value": ["FINISHED"]}),
        json!({"attr": "steps.a.status", "op": "gt", "value": "PENDING"}),
        json!({"attr": "steps.a.status", "op": "contains", "value": "COMP"}),
    ]);
    assert_problems(
        &raw,
        &[
            ("$.steps[1].condition.steps.a.status", WRONG_VALUE_TYPE),
            ("$.steps[2].condition.value", WRONG_VALUE_TYPE),
            ("$.steps[3].condition.value", WRONG_VALUE_TYPE),
            ("$.steps[4].condition.value", WRONG_VALUE_TYPE),
            ("$.steps[5].condition.value", WRONG_VALUE_TYPE),
            ("$.steps[6].condition.value", WRONG_VALUE_TYPE),
        ],
    );
    let messages: Vec<String> = problems(&raw).into_iter().map(|p| p.message).collect();
    assert_eq!(messages[2], "\"done\", 3 is not a step status: use PENDING, IN_PROGRESS, COMPLETED or SKIPPED");
    assert_eq!(messages[4], "a step status is compared with eq, ne, in or not_in, not `gt`");
}

#[test]
fn step_status_comparisons_accept_every_status_name() {
    let flow = parse_ok(&flow_with_conditions(&[
        json!({"attr": "steps.a.status", "op": "in", "value": ["PENDING", "IN_PROGRESS", "COMPLETED", "SKIPPED"]}),
        json!({"attr": "steps.a.status", "op": "ne", "value": "SKIPPED"}),
        json!({"attr": "steps.a.status", "op": "exists"}),
    ]));
    assert_eq!(flow.steps.len(), 4);
}

// ---------------------------------------------------------------------------------------
// Step rules: skippable, points, triggers
// ---------------------------------------------------------------------------------------

#[test]
fn a_required_step_cannot_be_skippable() {
    let raw = flow_json(json!([
        {"key": "a", "title": "A", "skippable": true},
        {"key": "b", "title": "B", "required": true, "skippable": true},
        {"key": "c", "title": "C", "required": false, "skippable": true}
    ]));
    assert_problems(
        &raw,
        &[("$.steps[0].skippable", REQUIRED_STEP_SKIPPABLE), ("$.steps[1].skippable", REQUIRED_STEP_SKIPPABLE)],
    );
    assert!(problems(&raw)[0].message.starts_with("a required step cannot be skippable"));
}

#[test]
fn points_must_be_a_non_negative_whole_number() {
    assert_problems(
        &flow_json(json!([
            {"key": "a", "title": "A", "points": -5},
            {"key": "b", "title": "B", "points": 1.5},
            {"key": "c", "title": "C", "points": "10"},
            {"key": "d", "title": "D", "points": 0},
            {"key": "e", "title": "E", "points": 100}
        ])),
        &[("$.steps[0].points", NEGATIVE_POINTS), ("$.steps[1].points", WRONG_TYPE), ("$.steps[2].points", WRONG_TYPE)],
    );
}

#[test]
fn a_trigger_names_its_event() {
    let raw = flow_json(json!([
        {"key": "a", "title": "A", "trigger": {"where": {"plan": "team"}}},
        {"key": "b", "title": "B", "trigger": {"event": "  "}},
        {"key": "c", "title": "C", "trigger": {"event": 42}},
        {"key": "d", "title": "D", "trigger": "signup"},
        {"key": "e", "title": "E", "trigger": {"event": "x".repeat(256)}},
        {"key": "f", "title": "F", "trigger": {"event": "x".repeat(255)}}
    ]));
    assert_problems(
        &raw,
        &[
            ("$.steps[0].trigger.event", MISSING_FIELD),
            ("$.steps[1].trigger.event", INVALID_TRIGGER),
            ("$.steps[2].trigger.event", WRONG_TYPE),
            ("$.steps[3].trigger", INVALID_TRIGGER),
            ("$.steps[4].trigger.event", INVALID_TRIGGER),
        ],
    );
    assert_eq!(problems(&raw)[0].message, "a trigger names the event that completes the step");
}

#[test]
fn a_trigger_where_condition_is_validated() {
    assert_problems(
        &flow_json(json!([
            {"key": "a", "title": "A", "trigger": {"event": "e", "where": {"attr": "n", "op": "between", "value": [1, 2]}}},
            {"key": "b", "title": "B", "trigger": {"event": "e", "where": {}}}
        ])),
        &[("$.steps[0].trigger.where.op", UNKNOWN_OPERATOR), ("$.steps[1].trigger.where", INVALID_CONDITION)],
    );
}

// ---------------------------------------------------------------------------------------
// Reporting everything at once
// ---------------------------------------------------------------------------------------

#[test]
fn every_problem_in_a_definition_is_reported_in_one_round() {
    let raw = json!({
        "key": "Bad Key",
        "title": "Many problems",
        "scope": "WORKSPACE",
        "steps": [
            {"key": "welcome", "title": "Welcome", "skippable": true},
            {"key": "profile", "title": "Profile", "dependsOn": ["nowhere"], "points": -10},
            {"key": "profile", "title": "Profile again"},
            {"key": "team", "title": "Team", "condition": {"attr": "plan", "op": "like", "value": "t%"}},
            {"key": "invite", "title": "Invite", "depends_on": ["team"], "trigger": {"where": {"n": 1}}},
            {"key": "role", "title": "Role", "condition": {"steps.later.status": "COMPLETED"}},
            {"key": "later", "title": "Later", "condition": {"attr": "steps.welcome.status", "op": "eq", "value": "DONE"}}
        ]
    });
    assert_problems(
        &raw,
        &[
            ("$.key", INVALID_KEY),
            ("$.steps[2].key", DUPLICATE_STEP_KEY),
            ("$.steps[0].skippable", REQUIRED_STEP_SKIPPABLE),
            ("$.steps[1].points", NEGATIVE_POINTS),
            ("$.steps[1].dependsOn[0]", UNKNOWN_DEPENDENCY),
            ("$.steps[3].condition.op", UNKNOWN_OPERATOR),
            ("$.steps[4].depends_on", UNKNOWN_FIELD),
            ("$.steps[4].trigger.event", MISSING_FIELD),
            ("$.steps[5].condition.steps.later.status", UNKNOWN_ANSWER_REFERENCE),
            ("$.steps[6].condition.value", WRONG_VALUE_TYPE),
        ],
    );
}

#[test]
fn problems_display_as_path_code_and_message() {
    let problem = single_problem(&flow_json(json!([])), "$.steps", EMPTY_FLOW);
    assert_eq!(problem.to_string(), "$.steps EMPTY_FLOW: a flow needs at least one step");
}

#[test]
fn comparing_with_null_is_refused_in_favour_of_exists() {
    let raw = json!({"key": "f", "title": "F", "steps": [
        {"key": "a", "title": "A", "condition": {"plan": null}},
        {"key": "b", "title": "B", "condition": {"attr": "plan", "op": "ne", "value": null}}
    ]});
    assert_eq!(
        codes_of(&raw),
        vec![
            ("$.steps[0].condition.plan".to_string(), WRONG_VALUE_TYPE),
            ("$.steps[1].condition.value".to_string(), WRONG_VALUE_TYPE),
        ]
    );
}

#[test]
fn an_audience_reads_attributes_only_and_round_trips() {
    let raw = json!({"key": "admins", "title": "Admins", "audience": {"role": "admin"},
        "steps": [{"key": "billing", "title": "Set up billing"}]});
    let flow = parse_ok(&raw);
    assert!(flow.admits(&json!({"role": "admin"})));
    assert!(!flow.admits(&json!({"role": "member"})));
    assert!(!flow.admits(&json!({})));
    assert_eq!(parse_ok(&flow.to_json()), flow);
    assert!(parse_ok(&flow_json(json!([{"key": "a", "title": "A"}]))).admits(&json!({})), "no audience: everyone");

    let bad = json!({"key": "f", "title": "F", "audience": {"attr": "steps.a.status", "op": "eq", "value": "COMPLETED"},
        "steps": [{"key": "a", "title": "A"}]});
    assert_problems(&bad, &[("$.audience.attr", UNKNOWN_ANSWER_REFERENCE)]);
    assert_problems(
        &json!({"key": "f", "title": "F", "audience": {"attr": "role", "op": "is"}, "steps": [{"key": "a", "title": "A"}]}),
        &[("$.audience.op", UNKNOWN_OPERATOR)],
    );
}

// Product limits: checked by `validate_flow` (what comes in), never by `parse_flow`
// (what is read back), so lowering a limit keeps stored flows readable.

fn limited_codes(raw: &Value, limits: &Limits) -> Vec<(String, &'static str)> {
    match validate_flow(raw, limits) {
        Ok(flow) => panic!("expected problems, but the flow parsed: {flow:#?}"),
        Err(problems) => problems.into_iter().map(|p| (p.path, p.code)).collect(),
    }
}

fn steps_of(n: usize) -> Value {
    Value::Array((0..n).map(|i| json!({"key": format!("s{i}"), "title": "S"})).collect())
}

#[test]
fn too_many_steps_are_refused_before_they_are_looked_at() {
    let limits = Limits { steps_per_flow: 3, ..Limits::default() };
    assert!(validate_flow(&flow_json(steps_of(3)), &limits).is_ok());
    // Step 4 has a bad key too: it is not reported, nothing past the count is checked.
    let mut raw = flow_json(steps_of(4));
    raw["steps"][3]["key"] = json!("4 bad");
    assert_eq!(limited_codes(&raw, &limits), pairs(&[("$.steps", TOO_MANY_STEPS)]));
    assert!(parse_flow(&flow_json(steps_of(4))).is_ok(), "read back without limits");
}

#[test]
fn too_many_dependencies_are_refused() {
    let limits = Limits { depends_on_per_step: 2, ..Limits::default() };
    let mut steps = steps_of(4);
    steps[3]["dependsOn"] = json!(["s0", "s1"]);
    assert!(validate_flow(&flow_json(steps.clone()), &limits).is_ok());
    steps[3]["dependsOn"] = json!(["s0", "s1", "s2"]);
    assert_eq!(
        limited_codes(&flow_json(steps.clone()), &limits),
        pairs(&[("$.steps[3].dependsOn", TOO_MANY_DEPENDENCIES)])
    );
    assert!(parse_flow(&flow_json(steps)).is_ok());
}

#[test]
fn points_per_step_are_bounded() {
    let limits = Limits::default();
    let mut steps = steps_of(2);
    steps[0]["points"] = json!(limits.points_per_step);
    steps[1]["points"] = json!(limits.points_per_step);
    assert!(validate_flow(&flow_json(steps.clone()), &limits).is_ok());
    // Two steps of 2^62 points once made a negative total.
    steps[0]["points"] = json!(1i64 << 62);
    steps[1]["points"] = json!(limits.points_per_step + 1);
    assert_eq!(
        limited_codes(&flow_json(steps), &limits),
        pairs(&[("$.steps[0].points", TOO_MANY_POINTS), ("$.steps[1].points", TOO_MANY_POINTS)])
    );
}

/// `{"not": {"not": ... {"attr": "plan", "op": "exists"}}}` of the given depth.
fn nested_not(depth: usize) -> Value {
    let mut c = json!({"attr": "plan", "op": "exists"});
    for _ in 1..depth {
        c = json!({ "not": c });
    }
    c
}

#[test]
fn condition_depth_is_bounded_wherever_a_condition_is_written() {
    let limits = Limits::default();
    let ok = nested_not(limits.condition_depth);
    let deep = nested_not(limits.condition_depth + 1);
    let raw = |c: &Value| {
        json!({"key": "f", "title": "F", "audience": c, "steps": [
            {"key": "a", "title": "A", "condition": c, "trigger": {"event": "e", "where": c}}
        ]})
    };
    assert!(validate_flow(&raw(&ok), &limits).is_ok());
    assert_eq!(
        limited_codes(&raw(&deep), &limits),
        pairs(&[
            ("$.audience", CONDITION_TOO_DEEP),
            ("$.steps[0].condition", CONDITION_TOO_DEEP),
            ("$.steps[0].trigger.where", CONDITION_TOO_DEEP),
        ])
    );
    assert!(parse_flow(&raw(&deep)).is_ok(), "read back without limits");
    // `all` nests one level per combinator too.
    let limits = Limits { condition_depth: 4, ..limits };
    let mut c = json!({"plan": "team"});
    for _ in 1..limits.condition_depth {
        c = json!({ "all": [c] });
    }
    assert!(validate_flow(&raw(&c), &limits).is_ok());
    let c = json!({ "all": [c] });
    assert_eq!(limited_codes(&raw(&c), &limits)[0].1, CONDITION_TOO_DEEP);
}

#[test]
fn condition_nodes_are_bounded_and_shorthands_count_each_comparison() {
    let limits = Limits { condition_nodes: 10, ..Limits::default() };
    let raw = |c: Value| json!({"key": "f", "title": "F", "steps": [{"key": "a", "title": "A", "condition": c}]});
    let leaves =
        |n: usize| -> Vec<Value> { (0..n).map(|i| json!({"attr": format!("a{i}"), "op": "exists"})).collect() };
    // all + 9 comparisons: 10 nodes.
    assert!(validate_flow(&raw(json!({ "all": leaves(9) })), &limits).is_ok());
    assert_eq!(
        limited_codes(&raw(json!({ "any": leaves(10) })), &limits),
        pairs(&[("$.steps[0].condition", CONDITION_TOO_LARGE)])
    );
    // The shorthand {a0: 1, ..., a9: 1} is all over ten comparisons: 11 nodes.
    let shorthand: Map<String, Value> = (0..10).map(|i| (format!("a{i}"), json!(1))).collect();
    assert_eq!(limited_codes(&raw(Value::Object(shorthand)), &limits)[0].1, CONDITION_TOO_LARGE);
}

#[test]
fn definitions_too_deep_or_too_large_are_refused_before_parsing() {
    let limits = Limits { definition_bytes: 200, ..Limits::default() };
    let mut raw = flow_json(steps_of(1));
    assert!(validate_flow(&raw, &limits).is_ok());
    raw["description"] = json!("x".repeat(200));
    assert_eq!(limited_codes(&raw, &limits), pairs(&[("$", DEFINITION_TOO_LARGE)]));
    let mut deep = json!(1);
    for _ in 0..=Limits::default().json_depth {
        deep = json!([deep]);
    }
    let raw = json!({"key": "f", "title": "F", "steps": [{"key": "a", "title": "A", "condition": {"x": {"y": deep}}}]});
    assert_eq!(limited_codes(&raw, &Limits::default()), pairs(&[("$", DEFINITION_TOO_DEEP)]));
    let nul = json!({"key": "f", "title": "F\u{0}", "steps": [{"key": "a", "title": "A"}]});
    assert_eq!(limited_codes(&nul, &Limits::default()), pairs(&[("$", INVALID_DEFINITION)]));
}

/// A chain of 50,000 steps, each depending on the one before: cycle detection once
/// recursed once per step (a stack overflow) and every step built the set of the steps
/// before it (quadratic). Without limits (as when read back) it now parses.
#[test]
fn a_long_dependency_chain_parses_without_recursion() {
    let n = 50_000;
    let steps: Vec<Value> = (0..n)
        .map(|i| {
            let mut s = json!({"key": format!("s{i}"), "title": "S"});
            if i > 0 {
                s["dependsOn"] = json!([format!("s{}", i - 1)]);
                s["condition"] = json!({ format!("steps.s{}.status", i - 1): "COMPLETED" });
            }
            s
        })
        .collect();
    let flow = parse_flow(&flow_json(Value::Array(steps.clone()))).expect("valid");
    assert_eq!(flow.steps.len(), n);
    // A cycle closing the whole chain is still found.
    let mut cyclic = steps;
    cyclic[0]["dependsOn"] = json!([format!("s{}", n - 1)]);
    let codes = codes_of(&flow_json(Value::Array(cyclic)));
    assert!(
        codes.contains(&("$.steps[0].dependsOn".to_string(), DEPENDENCY_CYCLE)),
        "{:?}",
        &codes[..codes.len().min(5)]
    );
}

#[test]
fn problems_never_echo_more_than_a_hundred_characters_of_input() {
    let long = "k".repeat(10_000);
    let raw = json!({"key": long, "title": "F", "scope": long, "steps": [
        {"key": long, "title": "A", "dependsOn": [long], long.clone(): 1,
         "condition": {"attr": format!("steps.{long}.status"), "op": long}}
    ]});
    let problems = problems(&raw);
    assert!(!problems.is_empty());
    for p in problems {
        assert!(p.message.len() < 400, "{} bytes: {}", p.message.len(), &p.message[..200]);
        assert!(p.path.len() < 400, "{}", p.path.len());
    }
}
