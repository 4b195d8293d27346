//! Every error code a client can get, with its `extensions.code`, and what a failure
//! leaves behind: nothing.

use jsonwebtoken::Algorithm;
use onramp::auth::Role;
use serde_json::{Value, json};

use crate::both;
use crate::common::{
    STATUS_FIELDS, TEST_SECRET, TestApp, complete_mutation, sample_flow, sign_hmac, skip_mutation, status_query,
    unix_now,
};

both!(
    unauthenticated_without_a_valid_token,
    forbidden_outside_the_callers_role,
    not_found_flows_steps_and_versions,
    validation_failed_on_bad_input,
    step_locked_lists_what_blocks_it,
    step_not_applicable,
    step_not_skippable,
    conflict_on_undoing_completion,
    internal_errors_are_censored,
    failed_mutations_lose_nothing,
    nul_characters_are_bad_input_everywhere,
);

const PUBLISH: &str = "mutation($d: JSON!) { publishFlow(definition: $d) { key version } }";
const FLOWS: &str = "{ flows { key version status } }";
const SET_ATTRIBUTES: &str =
    "mutation($s: ID!, $a: JSON!) { setSubjectAttributes(subjectId: $s, attributes: $a) { id attributes } }";

/// a and b are independent; c waits for both.
fn gated_flow() -> Value {
    json!({
        "key": "gate",
        "title": "Gated",
        "steps": [
            { "key": "a", "title": "A", "points": 1 },
            { "key": "b", "title": "B", "points": 2 },
            { "key": "c", "title": "C", "dependsOn": ["a", "b"], "points": 4 }
        ]
    })
}

fn message(error: &Value) -> &str {
    error["message"].as_str().unwrap_or_else(|| panic!("no message in {error:#}"))
}

async fn unauthenticated_without_a_valid_token(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let query = status_query();
    let vars = json!({ "f": "welcome" });
    let now = unix_now();

    // A well-formed token from the harness secret passes, so each refusal below is the
    // token's fault and not the query's.
    let good = sign_hmac(&json!({ "sub": "alice", "exp": now + 600 }), Algorithm::HS256, TEST_SECRET);
    assert_eq!(app.ok(&good, &query, vars.clone()).await["status"]["status"], "NOT_STARTED");

    let anonymous = app.error(None, &query, vars.clone()).await;
    assert_eq!(anonymous["extensions"]["code"], "UNAUTHENTICATED");
    assert!(message(&anonymous).contains("Authorization"), "{anonymous:#}");

    let bad_tokens = [
        ("garbage", "not-a-jwt".to_string()),
        ("expired", sign_hmac(&json!({ "sub": "alice", "exp": now - 3600 }), Algorithm::HS256, TEST_SECRET)),
        (
            "other secret",
            sign_hmac(&json!({ "sub": "alice", "exp": now + 600 }), Algorithm::HS256, "some-other-secret"),
        ),
        ("HS384, HS256 pinned", sign_hmac(&json!({ "sub": "alice", "exp": now + 600 }), Algorithm::HS384, TEST_SECRET)),
        ("no exp", sign_hmac(&json!({ "sub": "alice", "role": "admin" }), Algorithm::HS256, TEST_SECRET)),
        ("no sub", sign_hmac(&json!({ "exp": now + 600 }), Algorithm::HS256, TEST_SECRET)),
        ("empty sub", sign_hmac(&json!({ "sub": "", "exp": now + 600 }), Algorithm::HS256, TEST_SECRET)),
        (
            "unknown role",
            sign_hmac(&json!({ "sub": "alice", "exp": now + 600, "role": "root" }), Algorithm::HS256, TEST_SECRET),
        ),
    ];
    for (case, token) in &bad_tokens {
        let error = app.error(Some(token), &query, vars.clone()).await;
        assert_eq!(error["extensions"]["code"], "UNAUTHENTICATED", "{case}: {error:#}");
        assert!(message(&error).starts_with("invalid token"), "{case}: {error:#}");
    }

    // An Authorization header that is not text at all.
    let response: Value = app
        .client
        .post(app.url("/graphql"))
        .header(reqwest::header::AUTHORIZATION, reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap())
        .json(&json!({ "query": query, "variables": vars }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(response["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{response:#}");

    // Mutations are refused before anything is written.
    for (_, token) in &bad_tokens {
        let code = app.code(Some(token), &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;
        assert_eq!(code, "UNAUTHENTICATED");
    }
    let code = app.code(None, &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;
    assert_eq!(code, "UNAUTHENTICATED");
    let code = app.code(None, PUBLISH, json!({ "d": sample_flow("other") })).await;
    assert_eq!(code, "UNAUTHENTICATED");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 1);
}

async fn forbidden_outside_the_callers_role(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");

    // A user reads and changes only its own progress.
    let own = app.ok(&alice, &status_query(), json!({ "f": "welcome", "s": "alice" })).await;
    assert_eq!(own["status"]["status"], "NOT_STARTED");
    let error = app.error(Some(&alice), &status_query(), json!({ "f": "welcome", "s": "bob" })).await;
    assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{error:#}");
    let code =
        app.code(Some(&alice), &complete_mutation(), json!({ "f": "welcome", "k": "verify_email", "s": "bob" })).await;
    assert_eq!(code, "FORBIDDEN");
    let code =
        app.code(Some(&alice), "query($s: ID) { onboardings(subjectId: $s) { flowKey } }", json!({ "s": "bob" })).await;
    assert_eq!(code, "FORBIDDEN");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0, "a refused mutation writes nothing");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0, "a refused mutation writes nothing");

    // Admin operations.
    let user_refusals = [
        (PUBLISH, json!({ "d": sample_flow("other") })),
        (FLOWS, json!({})),
        ("{ flow(key: \"welcome\") { version } }", json!({})),
        ("query($d: JSON!) { validateFlow(definition: $d) { code } }", json!({ "d": sample_flow("x") })),
        ("mutation { deprecateFlow(key: \"welcome\", version: 1) { status } }", json!({})),
        (SET_ATTRIBUTES, json!({ "s": "alice", "a": { "plan": "team" } })),
    ];
    for (query, vars) in &user_refusals {
        let error = app.error(Some(&alice), query, vars.clone()).await;
        assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{query}: {error:#}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 1);
    let flows = app.ok(&app.admin(), FLOWS, json!({})).await;
    assert_eq!(flows["flows"], json!([{ "key": "welcome", "version": 1, "status": "ACTIVE" }]), "not deprecated");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0, "attributes were not set");

    // A backend (service role) sets attributes and acts on any subject, but does not
    // manage flows.
    let service = app.token("crm-sync", Role::Service);
    let set = app.ok(&service, SET_ATTRIBUTES, json!({ "s": "bob", "a": { "plan": "team" } })).await;
    assert_eq!(set["setSubjectAttributes"], json!({ "id": "bob", "attributes": { "plan": "team" } }));
    let bob = app.ok(&service, &status_query(), json!({ "f": "welcome", "s": "bob" })).await;
    assert_eq!(bob["status"]["totalCount"], 4, "invite applies to bob on the team plan");
    let done = app.ok(&service, &complete_mutation(), json!({ "f": "welcome", "k": "verify_email", "s": "bob" })).await;
    assert_eq!(done["completeStep"]["steps"][0]["status"], "COMPLETED");
    assert_eq!(done["completeStep"]["steps"][0]["source"], "ADMIN", "a backend's change is not the user's");
    let code = app.code(Some(&service), PUBLISH, json!({ "d": sample_flow("other") })).await;
    assert_eq!(code, "FORBIDDEN");
    let code = app.code(Some(&service), FLOWS, json!({})).await;
    assert_eq!(code, "FORBIDDEN");
    let bob_sees = app.ok(&app.user("bob"), &status_query(), json!({ "f": "welcome" })).await;
    assert_eq!(bob_sees["status"]["points"], 10);
}

async fn not_found_flows_steps_and_versions(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");

    let error = app.error(Some(&alice), &status_query(), json!({ "f": "nope" })).await;
    assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{error:#}");
    assert!(message(&error).contains("nope"), "{error:#}");
    let code = app.code(Some(&alice), "query { nextStep(flowKey: \"nope\") { key } }", json!({})).await;
    assert_eq!(code, "NOT_FOUND");
    let code = app.code(Some(&alice), &complete_mutation(), json!({ "f": "nope", "k": "verify_email" })).await;
    assert_eq!(code, "NOT_FOUND");
    let code = app.code(Some(&alice), "mutation { startOnboarding(flowKey: \"nope\") { status } }", json!({})).await;
    assert_eq!(code, "NOT_FOUND");

    let error = app.error(Some(&alice), &complete_mutation(), json!({ "f": "welcome", "k": "no_such_step" })).await;
    assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{error:#}");
    assert!(message(&error).contains("no_such_step"), "{error:#}");
    let code = app.code(Some(&alice), &skip_mutation(), json!({ "f": "welcome", "k": "no_such_step" })).await;
    assert_eq!(code, "NOT_FOUND");
    let code = app
        .code(
            Some(&alice),
            "mutation { startStep(flowKey: \"welcome\", stepKey: \"no_such_step\") { status } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0, "failed first mutations enroll nobody");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0);

    let admin = app.admin();
    let deprecate = "mutation($k: String!, $v: Int!) { deprecateFlow(key: $k, version: $v) { status } }";
    let error = app.error(Some(&admin), deprecate, json!({ "k": "welcome", "v": 2 })).await;
    assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{error:#}");
    let code = app.code(Some(&admin), deprecate, json!({ "k": "nope", "v": 1 })).await;
    assert_eq!(code, "NOT_FOUND");
    let flows = app.ok(&admin, FLOWS, json!({})).await;
    assert_eq!(flows["flows"], json!([{ "key": "welcome", "version": 1, "status": "ACTIVE" }]));
}

async fn validation_failed_on_bad_input(app: TestApp) {
    let admin = app.admin();
    let invalid = json!({
        "key": "1-bad key",
        "title": "",
        "colour": "blue",
        "steps": [
            { "key": "a", "title": "A", "dependsOn": ["missing"] },
            { "key": "a", "title": "Again", "points": -5 },
            { "key": "b", "title": "B", "required": true, "skippable": true },
            { "key": "c", "title": "C", "condition": { "attr": "plan", "op": "like", "value": "x" } }
        ]
    });
    let error = app.error(Some(&admin), PUBLISH, json!({ "d": invalid })).await;
    assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED", "{error:#}");
    let problems = error["extensions"]["problems"].as_array().unwrap_or_else(|| panic!("no problems in {error:#}"));
    let mut found: Vec<(String, String)> = problems
        .iter()
        .map(|p| {
            assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()), "every problem explains itself: {p:#}");
            (p["path"].as_str().unwrap().to_string(), p["code"].as_str().unwrap().to_string())
        })
        .collect();
    found.sort();
    let mut expected: Vec<(String, String)> = [
        ("$.colour", "UNKNOWN_FIELD"),
        ("$.key", "INVALID_KEY"),
        ("$.title", "MISSING_FIELD"),
        ("$.steps[0].dependsOn[0]", "UNKNOWN_DEPENDENCY"),
        ("$.steps[1].key", "DUPLICATE_STEP_KEY"),
        ("$.steps[1].points", "NEGATIVE_POINTS"),
        ("$.steps[2].skippable", "REQUIRED_STEP_SKIPPABLE"),
        ("$.steps[3].condition.op", "UNKNOWN_OPERATOR"),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    expected.sort();
    assert_eq!(found, expected, "every problem at once: {error:#}");
    assert!(message(&error).contains(&format!("{} problems", expected.len())), "{error:#}");
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0, "an invalid definition is not stored");

    let not_an_object = app.error(Some(&admin), PUBLISH, json!({ "d": [1, 2] })).await;
    assert_eq!(not_an_object["extensions"]["code"], "VALIDATION_FAILED");
    let problems = &not_an_object["extensions"]["problems"];
    assert_eq!(problems.as_array().map(Vec::len), Some(1), "{not_an_object:#}");
    assert_eq!(problems[0]["path"], "$");
    assert_eq!(problems[0]["code"], "INVALID_DEFINITION");
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0);

    // Metadata is a JSON object or nothing.
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    for metadata in [json!([1, 2]), json!("verified"), json!(42), json!(true)] {
        let error = app
            .error(Some(&alice), &complete_mutation(), json!({ "f": "welcome", "k": "verify_email", "m": metadata }))
            .await;
        assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED", "{metadata}: {error:#}");
        assert!(message(&error).contains("metadata"), "{error:#}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0);
    let long_reason = "x".repeat(501);
    let code = app.code(Some(&alice), &skip_mutation(), json!({ "f": "welcome", "k": "tour", "r": long_reason })).await;
    assert_eq!(code, "VALIDATION_FAILED");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0);

    // Attributes are a JSON object.
    for attributes in [json!(["team"]), json!("team"), json!(null)] {
        let error = app.error(Some(&admin), SET_ATTRIBUTES, json!({ "s": "alice", "a": attributes })).await;
        assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED", "{attributes}: {error:#}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0);

    // Errors raised by GraphQL itself, before any resolver runs, carry the code too.
    let requests = [
        ("malformed", "{ status(flowKey: ".to_string(), json!({})),
        ("unknown field", "{ status(flowKey: \"welcome\") { nope } }".to_string(), json!({})),
        ("missing variable", status_query(), json!({})),
        ("wrong variable type", status_query(), json!({ "f": 12 })),
        ("missing argument", format!("{{ status {{ {STATUS_FIELDS} }} }}"), json!({})),
    ];
    for (case, query, vars) in requests {
        let error = app.error(Some(&alice), &query, vars).await;
        assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED", "{case}: {error:#}");
    }
}

async fn step_locked_lists_what_blocks_it(app: TestApp) {
    app.publish(gated_flow()).await;
    let alice = app.user("alice");
    let error = app.error(Some(&alice), &complete_mutation(), json!({ "f": "gate", "k": "c" })).await;
    assert_eq!(error["extensions"]["code"], "STEP_LOCKED", "{error:#}");
    assert_eq!(error["extensions"]["blockedBy"], json!(["a", "b"]));

    app.ok(&alice, &complete_mutation(), json!({ "f": "gate", "k": "a" })).await;
    let error = app.error(Some(&alice), &complete_mutation(), json!({ "f": "gate", "k": "c" })).await;
    assert_eq!(error["extensions"]["code"], "STEP_LOCKED", "{error:#}");
    assert_eq!(error["extensions"]["blockedBy"], json!(["b"]));
    let error = app
        .error(Some(&alice), "mutation { startStep(flowKey: \"gate\", stepKey: \"c\") { status } }", json!({}))
        .await;
    assert_eq!(error["extensions"]["code"], "STEP_LOCKED", "{error:#}");
    assert_eq!(error["extensions"]["blockedBy"], json!(["b"]));

    app.ok(&alice, &complete_mutation(), json!({ "f": "gate", "k": "b" })).await;
    let done = app.ok(&alice, &complete_mutation(), json!({ "f": "gate", "k": "c" })).await;
    assert_eq!(done["completeStep"]["status"], "COMPLETED");
    assert_eq!(done["completeStep"]["points"], 7);
}

async fn step_not_applicable(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    let error = app.error(Some(&alice), &complete_mutation(), json!({ "f": "welcome", "k": "invite" })).await;
    assert_eq!(error["extensions"]["code"], "STEP_NOT_APPLICABLE", "{error:#}");
    let code = app.code(Some(&alice), &skip_mutation(), json!({ "f": "welcome", "k": "invite" })).await;
    assert_eq!(code, "STEP_NOT_APPLICABLE");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0);

    app.set_attributes("alice", json!({ "plan": "team" })).await;
    let done = app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "invite" })).await;
    let invite = &done["completeStep"]["steps"][2];
    assert_eq!(invite["status"], "COMPLETED", "{done:#}");
}

async fn step_not_skippable(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    let error = app.error(Some(&alice), &skip_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;
    assert_eq!(error["extensions"]["code"], "STEP_NOT_SKIPPABLE", "{error:#}");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0);

    // The optional step can be skipped; the required one still cannot.
    let skipped = app.ok(&alice, &skip_mutation(), json!({ "f": "welcome", "k": "tour" })).await;
    assert_eq!(skipped["skipStep"]["steps"][2]["status"], "SKIPPED");
    let code = app.code(Some(&alice), &skip_mutation(), json!({ "f": "welcome", "k": "profile" })).await;
    assert_eq!(code, "STEP_NOT_SKIPPABLE");
    let status = app.ok(&alice, &status_query(), json!({ "f": "welcome" })).await;
    assert_eq!(status["status"]["steps"][1]["status"], "PENDING");
}

async fn conflict_on_undoing_completion(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "tour" })).await;
    let error = app.error(Some(&alice), &skip_mutation(), json!({ "f": "welcome", "k": "tour" })).await;
    assert_eq!(error["extensions"]["code"], "CONFLICT", "{error:#}");
    let status = app.ok(&alice, &status_query(), json!({ "f": "welcome" })).await;
    assert_eq!(status["status"]["steps"][2]["status"], "COMPLETED");

    app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;
    let done = app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "profile" })).await;
    assert_eq!(done["completeStep"]["status"], "COMPLETED");
    let error =
        app.error(Some(&alice), "mutation { skipOnboarding(flowKey: \"welcome\") { status } }", json!({})).await;
    assert_eq!(error["extensions"]["code"], "CONFLICT", "{error:#}");
    let after = app.ok(&alice, &status_query(), json!({ "f": "welcome" })).await;
    assert_eq!(after["status"]["status"], "COMPLETED");
    assert_eq!(after["status"]["revision"], done["completeStep"]["revision"]);
    assert_eq!(after["status"]["skippedAt"], Value::Null);
}

async fn internal_errors_are_censored(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;

    use sea_orm::ConnectionTrait;
    let drop = if app.is_postgres() { "DROP TABLE step_progress CASCADE" } else { "DROP TABLE step_progress" };
    app.db.execute_unprepared(drop).await.expect("drop step_progress");

    let error = app.error(Some(&alice), &status_query(), json!({ "f": "welcome" })).await;
    assert_eq!(error["extensions"]["code"], "INTERNAL", "{error:#}");
    let text = error.to_string().to_lowercase();
    for leak in ["step_progress", "sql", "table", "relation", "select", "database", "no such"] {
        assert!(!text.contains(leak), "the error leaks `{leak}`: {error:#}");
    }
    let message = message(&error);
    let reference = message
        .split("reference ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no reference in `{message}`"));
    assert!(uuid::Uuid::parse_str(reference).is_ok(), "the reference is a UUID: `{message}`");

    // Each failure gets its own reference.
    let again = app.error(Some(&alice), &complete_mutation(), json!({ "f": "welcome", "k": "profile" })).await;
    assert_eq!(again["extensions"]["code"], "INTERNAL", "{again:#}");
    assert!(!again.to_string().to_lowercase().contains("step_progress"), "{again:#}");
    assert_ne!(again["message"], error["message"]);
}

async fn failed_mutations_lose_nothing(app: TestApp) {
    app.publish(gated_flow()).await;

    // A failed first mutation enrolls nobody, and creates no subject either.
    let bob = app.user("bob");
    let code = app.code(Some(&bob), &complete_mutation(), json!({ "f": "gate", "k": "c" })).await;
    assert_eq!(code, "STEP_LOCKED");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0);
    let bob_status = app.ok(&bob, &status_query(), json!({ "f": "gate" })).await;
    assert_eq!(bob_status["status"]["status"], "NOT_STARTED");
    assert_eq!(bob_status["status"]["revision"], 0);

    // A failed later mutation keeps what was saved before it.
    let alice = app.user("alice");
    let saved = app
        .ok(&alice, &complete_mutation(), json!({ "f": "gate", "k": "a", "m": { "answer": 42 } }))
        .await["completeStep"]
        .clone();
    assert_eq!(saved["points"], 1);
    assert_eq!(saved["revision"], 2);
    for (query, vars) in [
        (complete_mutation(), json!({ "f": "gate", "k": "c", "m": { "answer": 1 } })),
        (skip_mutation(), json!({ "f": "gate", "k": "b" })),
        (complete_mutation(), json!({ "f": "gate", "k": "a", "m": "not an object" })),
        (complete_mutation(), json!({ "f": "gate", "k": "zzz" })),
    ] {
        app.error(Some(&alice), &query, vars).await;
        let now = app.ok(&alice, &status_query(), json!({ "f": "gate" })).await["status"].clone();
        assert_eq!(now, saved, "a failed mutation changes nothing");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 1);
    // One row per applicable step since enrollment; only the completed one was acted on.
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress").await, 3);
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE status <> 'PENDING'").await, 1);
    // a and b were reached at enrollment; c waits for both.
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE available_at IS NOT NULL").await, 2);
    assert_eq!(app.count("SELECT revision FROM enrollments").await, 2);
    assert_eq!(app.count("SELECT points FROM enrollments").await, 1);
}

/// PostgreSQL cannot store NUL; on every backend it is bad input, never an internal error.
async fn nul_characters_are_bad_input_everywhere(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    let admin = app.admin();
    let metadata = json!({ "note": "a\u{0}b" });
    let code = app
        .code(Some(&alice), &complete_mutation(), json!({ "f": "welcome", "k": "verify_email", "m": metadata }))
        .await;
    assert_eq!(code, "VALIDATION_FAILED");
    let code = app
        .code(
            Some(&admin),
            "mutation($a: JSON!) { setSubjectAttributes(subjectId: \"alice\", attributes: $a) { attributes } }",
            json!({ "a": { "plan\u{0}": "team" } }),
        )
        .await;
    assert_eq!(code, "VALIDATION_FAILED");
    let mut definition = sample_flow("other");
    definition["title"] = json!("Wel\u{0}come");
    assert_eq!(app.code(Some(&admin), PUBLISH, json!({ "d": definition })).await, "VALIDATION_FAILED");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0, "nothing was written");
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 1);
}
