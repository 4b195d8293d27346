//! A/B experiments between flow versions: the lifecycle and its errors, assignment by the
//! documented hash (computed here independently), exposures recorded once and sticky
//! across weight changes, a declared winner, a stopped experiment, and an audience flow
//! entered under an experiment by an event or an attribute change.

use futures_util::future::join_all;
use onramp::auth::Role;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::both;
use crate::common::{TestApp, completed_steps};

both!(
    lifecycle_and_its_errors,
    new_subjects_get_the_variant_of_the_documented_hash,
    one_subject_one_variant_one_exposure_and_a_pinned_enrollment,
    concurrent_first_reads_record_one_exposure,
    new_weights_change_only_subjects_not_yet_exposed,
    a_declared_winner_serves_its_version_to_new_subjects,
    a_stopped_experiment_serves_the_newest_version_and_exposes_nobody,
    an_audience_flow_is_entered_under_the_assigned_variant,
    the_latest_decision_on_a_flow_wins,
    only_the_audience_is_exposed,
    deprecated_versions_take_no_new_subjects,
    the_enrollment_event_names_the_experiment_that_chose_the_version,
);

const EXPERIMENT_FIELDS: &str = "key flowKey state winner variants { name version weight exposures }";
const STATUS: &str = "query($f: String!, $s: ID) { status(flowKey: $f, subjectId: $s) { flowKey status version variant revision steps { key } } }";
const COMPLETE: &str = "mutation($f: String!, $k: String!, $s: ID) { completeStep(flowKey: $f, stepKey: $k, subjectId: $s) \
                        { status version variant steps { key status } } }";

/// The 50/50 split of the README's example.
const HALVES: [(&str, u64); 2] = [("control", 50), ("shorter", 50)];

/// v1 has three steps; v2 ("shorter") drops `profile`. Both start with `verify_email`.
fn long_flow(key: &str) -> Value {
    json!({
        "key": key,
        "title": "Welcome",
        "steps": [
            { "key": "verify_email", "title": "Verify your email", "points": 10 },
            { "key": "profile", "title": "Complete your profile", "dependsOn": ["verify_email"] },
            { "key": "tour", "title": "Take the tour", "required": false }
        ]
    })
}

fn short_flow(key: &str) -> Value {
    json!({
        "key": key,
        "title": "Welcome",
        "steps": [
            { "key": "verify_email", "title": "Verify your email", "points": 10 },
            { "key": "tour", "title": "Take the tour", "required": false }
        ]
    })
}

/// Publishes v1 (long) and v2 (short) of a flow.
async fn two_versions(app: &TestApp, key: &str) {
    assert_eq!(app.publish(long_flow(key)).await["version"], 1);
    assert_eq!(app.publish(short_flow(key)).await["version"], 2);
}

/// control → v1, shorter → v2, 50/50.
fn halves() -> Value {
    json!([
        { "name": "control", "version": 1, "weight": 50 },
        { "name": "shorter", "version": 2, "weight": 50 }
    ])
}

/// The documented assignment, computed independently of the crate: SHA-256 of
/// `"<key>:<subject>"`, first 8 bytes big-endian, modulo the total weight, consecutive
/// ranges in variant order.
fn expected_variant<'a>(key: &str, subject: &str, variants: &[(&'a str, u64)]) -> &'a str {
    let digest = Sha256::digest(format!("{key}:{subject}").as_bytes());
    let first: [u8; 8] = digest[..8].try_into().expect("8 bytes");
    let total: u64 = variants.iter().map(|(_, w)| w).sum();
    let mut point = u64::from_be_bytes(first) % total;
    for (name, weight) in variants {
        if point < *weight {
            return name;
        }
        point -= weight;
    }
    unreachable!("the point is below the total weight")
}

/// The first `<prefix>-<n>` subject the hash sends to `variant`.
fn subject_assigned_to(key: &str, variants: &[(&str, u64)], variant: &str, prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|s| expected_variant(key, s, variants) == variant)
        .unwrap_or_else(|| panic!("no subject for {variant}"))
}

fn version_of(variant: &str) -> i64 {
    match variant {
        "control" => 1,
        "shorter" => 2,
        other => panic!("unknown variant {other}"),
    }
}

fn step_keys(status: &Value) -> Vec<&str> {
    status["steps"].as_array().expect("steps").iter().map(|s| s["key"].as_str().expect("key")).collect()
}

fn exposures_of(experiment: &Value, variant: &str) -> i64 {
    experiment["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .find(|v| v["name"] == variant)
        .unwrap_or_else(|| panic!("no variant {variant} in {experiment:#}"))["exposures"]
        .as_i64()
        .expect("exposures")
}

async fn create(app: &TestApp, key: &str, flow: &str, variants: Value) -> Value {
    let query = format!(
        "mutation($k: String!, $f: String!, $v: [VariantInput!]!) {{ createExperiment(key: $k, flowKey: $f, variants: $v) {{ {EXPERIMENT_FIELDS} }} }}"
    );
    app.ok(&app.admin(), &query, json!({ "k": key, "f": flow, "v": variants })).await["createExperiment"].clone()
}

async fn create_code(app: &TestApp, key: &str, flow: &str, variants: Value) -> String {
    let query = "mutation($k: String!, $f: String!, $v: [VariantInput!]!) { createExperiment(key: $k, flowKey: $f, variants: $v) { key } }";
    app.code(Some(&app.admin()), query, json!({ "k": key, "f": flow, "v": variants })).await
}

/// `startExperiment`, `stopExperiment`: the mutation's name and the key.
fn transition(mutation: &str) -> String {
    format!("mutation($k: String!) {{ {mutation}(key: $k) {{ {EXPERIMENT_FIELDS} }} }}")
}

async fn start(app: &TestApp, key: &str) -> Value {
    app.ok(&app.admin(), &transition("startExperiment"), json!({ "k": key })).await["startExperiment"].clone()
}

async fn stop(app: &TestApp, key: &str) -> Value {
    app.ok(&app.admin(), &transition("stopExperiment"), json!({ "k": key })).await["stopExperiment"].clone()
}

fn declare_mutation() -> String {
    format!("mutation($k: String!, $v: String!) {{ declareWinner(key: $k, variant: $v) {{ {EXPERIMENT_FIELDS} }} }}")
}

fn weights_mutation() -> String {
    format!(
        "mutation($k: String!, $w: [VariantWeightInput!]!) {{ setExperimentWeights(key: $k, weights: $w) {{ {EXPERIMENT_FIELDS} }} }}"
    )
}

fn experiment_query() -> String {
    format!("query($k: String!) {{ experiment(key: $k) {{ {EXPERIMENT_FIELDS} }} }}")
}

async fn experiment(app: &TestApp, key: &str) -> Value {
    app.ok(&app.admin(), &experiment_query(), json!({ "k": key })).await["experiment"].clone()
}

/// A subject's status, read by a backend on its behalf.
async fn status(app: &TestApp, flow: &str, subject: &str) -> Value {
    app.ok(&app.service(), STATUS, json!({ "f": flow, "s": subject })).await["status"].clone()
}

/// A step completed by the subject itself.
async fn complete(app: &TestApp, flow: &str, subject: &str, step: &str) -> Value {
    app.ok(&app.user(subject), COMPLETE, json!({ "f": flow, "k": step })).await["completeStep"].clone()
}

async fn exposure_rows(app: &TestApp) -> i64 {
    app.count("SELECT COUNT(*) FROM exposures").await
}

async fn exposures_for(app: &TestApp, subject: &str) -> i64 {
    app.count(&format!("SELECT COUNT(*) FROM exposures WHERE subject_id = '{subject}'")).await
}

/// The variant the exposures table holds for a subject.
async fn exposed_variant(app: &TestApp, subject: &str) -> String {
    app.text(&format!("SELECT variant FROM exposures WHERE subject_id = '{subject}'")).await
}

/// The stored enrollment of a subject in a flow: (version of its flow row, variant or "",
/// experiment key or "").
async fn enrollment(app: &TestApp, subject: &str, flow: &str) -> (i64, String, String) {
    let from = format!(
        "FROM enrollments e JOIN flows f ON f.id = e.flow_id JOIN subjects s ON s.id = e.subject_id \
         WHERE s.external_id = '{subject}' AND e.flow_key = '{flow}'"
    );
    (
        app.count(&format!("SELECT CAST(f.version AS BIGINT) {from}")).await,
        app.text(&format!("SELECT COALESCE(e.variant, '') {from}")).await,
        app.text(&format!("SELECT COALESCE(e.experiment_key, '') {from}")).await,
    )
}

async fn lifecycle_and_its_errors(app: TestApp) {
    two_versions(&app, "new_user").await;
    let created = create(&app, "shorter-onboarding", "new_user", halves()).await;
    assert_eq!(
        created,
        json!({
            "key": "shorter-onboarding", "flowKey": "new_user", "state": "DRAFT", "winner": null,
            "variants": [
                { "name": "control", "version": 1, "weight": 50, "exposures": 0 },
                { "name": "shorter", "version": 2, "weight": 50, "exposures": 0 }
            ]
        })
    );
    assert_eq!(experiment(&app, "shorter-onboarding").await, created);

    // A draft assigns nobody: the newest active version, no variant, no exposure.
    let draft = status(&app, "new_user", "early").await;
    assert_eq!((draft["version"].clone(), draft["variant"].clone()), (json!(2), Value::Null));
    assert_eq!(exposure_rows(&app).await, 0);

    // Bad variant sets.
    let one = json!([{ "name": "control", "version": 1, "weight": 50 }]);
    assert_eq!(create_code(&app, "one", "new_user", one).await, "VALIDATION_FAILED");
    let duplicate = json!([
        { "name": "control", "version": 1, "weight": 50 },
        { "name": "control", "version": 2, "weight": 50 }
    ]);
    assert_eq!(create_code(&app, "dup", "new_user", duplicate).await, "VALIDATION_FAILED");
    let unknown_version = json!([
        { "name": "control", "version": 1, "weight": 50 },
        { "name": "longer", "version": 3, "weight": 50 }
    ]);
    assert_eq!(create_code(&app, "unknown", "new_user", unknown_version).await, "VALIDATION_FAILED");
    let weightless = json!([
        { "name": "control", "version": 1, "weight": 0 },
        { "name": "shorter", "version": 2, "weight": 0 }
    ]);
    assert_eq!(create_code(&app, "weightless", "new_user", weightless).await, "VALIDATION_FAILED");
    let bad_name = json!([
        { "name": "control", "version": 1, "weight": 1 },
        { "name": "not a key", "version": 2, "weight": 1 }
    ]);
    assert_eq!(create_code(&app, "bad-name", "new_user", bad_name).await, "VALIDATION_FAILED");
    assert_eq!(create_code(&app, "bad key", "new_user", halves()).await, "VALIDATION_FAILED");
    let negative = json!([
        { "name": "control", "version": 1, "weight": -1 },
        { "name": "shorter", "version": 2, "weight": 2 }
    ]);
    assert_eq!(create_code(&app, "negative", "new_user", negative).await, "VALIDATION_FAILED");
    assert_eq!(create_code(&app, "shorter-onboarding", "new_user", halves()).await, "CONFLICT");
    assert_eq!(app.count("SELECT COUNT(*) FROM experiments").await, 1, "a rejected createExperiment stores nothing");
    assert_eq!(app.count("SELECT COUNT(*) FROM experiment_variants").await, 2);

    // Start; a second experiment on the same flow cannot run beside it.
    let running = start(&app, "shorter-onboarding").await;
    assert_eq!(running["state"], "RUNNING");
    assert_eq!(running["winner"], Value::Null);
    assert_eq!(experiment(&app, "shorter-onboarding").await["state"], "RUNNING");
    let admin = app.admin();
    let start_q = transition("startExperiment");
    assert_eq!(app.code(Some(&admin), &start_q, json!({ "k": "shorter-onboarding" })).await, "CONFLICT");
    let rival = json!([
        { "name": "a", "version": 2, "weight": 1 },
        { "name": "b", "version": 1, "weight": 1 }
    ]);
    assert_eq!(create(&app, "rival", "new_user", rival).await["state"], "DRAFT", "creating is allowed");
    assert_eq!(app.code(Some(&admin), &start_q, json!({ "k": "rival" })).await, "CONFLICT");
    assert_eq!(experiment(&app, "rival").await["state"], "DRAFT", "a refused start changes nothing");

    // Stop; stopping twice is a conflict; the rival may run now.
    assert_eq!(stop(&app, "shorter-onboarding").await["state"], "STOPPED");
    let stop_q = transition("stopExperiment");
    assert_eq!(app.code(Some(&admin), &stop_q, json!({ "k": "shorter-onboarding" })).await, "CONFLICT");
    assert_eq!(app.code(Some(&admin), &stop_q, json!({ "k": "rival" })).await, "CONFLICT", "a draft is not running");
    assert_eq!(start(&app, "rival").await["state"], "RUNNING");
    assert_eq!(app.code(Some(&admin), &start_q, json!({ "k": "shorter-onboarding" })).await, "CONFLICT");

    // Winners: an unknown variant is NOT_FOUND, and nothing changes.
    let declare = declare_mutation();
    let unknown = json!({ "k": "shorter-onboarding", "v": "longest" });
    assert_eq!(app.code(Some(&admin), &declare, unknown).await, "NOT_FOUND");
    let after = experiment(&app, "shorter-onboarding").await;
    assert_eq!((after["state"].clone(), after["winner"].clone()), (json!("STOPPED"), Value::Null));
    let done = app.ok(&admin, &declare, json!({ "k": "shorter-onboarding", "v": "shorter" })).await;
    assert_eq!(done["declareWinner"]["state"], "COMPLETED");
    assert_eq!(done["declareWinner"]["winner"], "shorter");
    assert_eq!(
        app.code(Some(&admin), &declare, json!({ "k": "shorter-onboarding", "v": "control" })).await,
        "CONFLICT",
        "a winner is declared once"
    );
    assert_eq!(experiment(&app, "shorter-onboarding").await["winner"], "shorter");

    // Unknown experiments.
    let nobody = json!({ "k": "nope" });
    assert_eq!(app.code(Some(&admin), &experiment_query(), nobody.clone()).await, "NOT_FOUND");
    assert_eq!(app.code(Some(&admin), &start_q, nobody.clone()).await, "NOT_FOUND");
    assert_eq!(app.code(Some(&admin), &stop_q, nobody).await, "NOT_FOUND");
    assert_eq!(app.code(Some(&admin), &declare, json!({ "k": "nope", "v": "control" })).await, "NOT_FOUND");

    // Admin only: users and backends are refused, anonymous callers too.
    for token in [app.user("alice"), app.service()] {
        let t = Some(token.as_str());
        let create_q = "mutation($v: [VariantInput!]!) { createExperiment(key: \"mine\", flowKey: \"new_user\", variants: $v) { key } }";
        assert_eq!(app.code(t, create_q, json!({ "v": halves() })).await, "FORBIDDEN");
        assert_eq!(app.code(t, &start_q, json!({ "k": "rival" })).await, "FORBIDDEN");
        assert_eq!(app.code(t, &stop_q, json!({ "k": "rival" })).await, "FORBIDDEN");
        assert_eq!(app.code(t, &declare, json!({ "k": "rival", "v": "a" })).await, "FORBIDDEN");
        let weights = json!({ "k": "rival", "w": [{ "name": "a", "weight": 0 }] });
        assert_eq!(app.code(t, &weights_mutation(), weights).await, "FORBIDDEN");
        assert_eq!(app.code(t, &experiment_query(), json!({ "k": "rival" })).await, "FORBIDDEN");
    }
    assert_eq!(app.code(None, &experiment_query(), json!({ "k": "rival" })).await, "UNAUTHENTICATED");
    let rival = experiment(&app, "rival").await;
    assert_eq!(rival["state"], "RUNNING", "refused calls change nothing");
    assert_eq!(rival["variants"][0]["weight"], 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM experiments").await, 2);
}

async fn new_subjects_get_the_variant_of_the_documented_hash(app: TestApp) {
    two_versions(&app, "new_user").await;
    create(&app, "shorter-onboarding", "new_user", halves()).await;
    start(&app, "shorter-onboarding").await;

    let mut counts = [0i64; 2];
    for i in 0..40 {
        let subject = format!("user-{i}");
        let variant = expected_variant("shorter-onboarding", &subject, &HALVES);
        let got = status(&app, "new_user", &subject).await;
        assert_eq!(got["status"], "NOT_STARTED");
        assert_eq!(got["revision"], 0);
        assert_eq!(got["variant"], variant, "{subject}");
        assert_eq!(got["version"], version_of(variant), "{subject}");
        let steps =
            if variant == "control" { vec!["verify_email", "profile", "tour"] } else { vec!["verify_email", "tour"] };
        assert_eq!(step_keys(&got), steps, "{subject} sees the steps of its variant's version");
        counts[usize::from(variant == "shorter")] += 1;
        assert_eq!(exposed_variant(&app, &subject).await, variant, "{subject} is exposed to its variant");
    }
    assert!(counts[0] > 0 && counts[1] > 0, "both variants occur: {counts:?}");

    // Every read was a first exposure; none enrolled anybody.
    assert_eq!(exposure_rows(&app).await, 40);
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0, "reading enrolls nobody");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0, "reading creates no subject");
    let report = experiment(&app, "shorter-onboarding").await;
    assert_eq!(exposures_of(&report, "control"), counts[0]);
    assert_eq!(exposures_of(&report, "shorter"), counts[1]);

    // Reading again exposes nobody twice and assigns the same.
    for i in 0..40 {
        let subject = format!("user-{i}");
        assert_eq!(
            status(&app, "new_user", &subject).await["variant"],
            expected_variant("shorter-onboarding", &subject, &HALVES)
        );
    }
    assert_eq!(exposure_rows(&app).await, 40);
    assert_eq!(experiment(&app, "shorter-onboarding").await, report);
}

async fn one_subject_one_variant_one_exposure_and_a_pinned_enrollment(app: TestApp) {
    two_versions(&app, "new_user").await;
    create(&app, "shorter-onboarding", "new_user", halves()).await;
    start(&app, "shorter-onboarding").await;

    for wanted in ["control", "shorter"] {
        let subject = subject_assigned_to("shorter-onboarding", &HALVES, wanted, wanted);
        // Two devices: two different tokens for the same subject.
        let laptop = app.user(&subject);
        let phone = app.keys.mint(&subject, Role::User, 7200).expect("mint");
        assert_ne!(laptop, phone);
        let on_laptop = app.ok(&laptop, STATUS, json!({ "f": "new_user" })).await["status"].clone();
        let on_phone = app.ok(&phone, STATUS, json!({ "f": "new_user" })).await["status"].clone();
        assert_eq!(on_laptop["variant"], wanted);
        assert_eq!(on_laptop["version"], version_of(wanted));
        assert_eq!(on_phone, on_laptop, "the same assignment on every device");
        assert_eq!(exposures_for(&app, &subject).await, 1, "two reads, one exposure");

        // Enrolling pins the version of the variant and stores the variant.
        let enrolled =
            app.ok(&phone, COMPLETE, json!({ "f": "new_user", "k": "verify_email" })).await["completeStep"].clone();
        // v2's only required step is verify_email.
        let progress = if wanted == "shorter" { "COMPLETED" } else { "IN_PROGRESS" };
        assert_eq!(enrolled["status"], progress);
        assert_eq!(enrolled["version"], version_of(wanted));
        assert_eq!(enrolled["variant"], wanted);
        assert_eq!(
            enrollment(&app, &subject, "new_user").await,
            (version_of(wanted), wanted.to_string(), "shorter-onboarding".to_string())
        );
        assert_eq!(exposures_for(&app, &subject).await, 1, "enrolling after a read exposes nobody twice");
        let later = app.ok(&laptop, STATUS, json!({ "f": "new_user" })).await["status"].clone();
        assert_eq!((later["status"].clone(), later["variant"].clone()), (json!(progress), json!(wanted)));
        assert_eq!(later["version"], version_of(wanted));
        assert_eq!(exposures_for(&app, &subject).await, 1, "reading an enrollment exposes nobody again");
    }

    // A subject enrolling with no read before is exposed by the enrollment itself, once.
    let direct = "direct-entry";
    let variant = expected_variant("shorter-onboarding", direct, &HALVES);
    let enrolled = complete(&app, "new_user", direct, "verify_email").await;
    assert_eq!(
        (enrolled["version"].clone(), enrolled["variant"].clone()),
        (json!(version_of(variant)), json!(variant))
    );
    complete(&app, "new_user", direct, "tour").await;
    assert_eq!(exposures_for(&app, direct).await, 1);
    assert_eq!(exposed_variant(&app, direct).await, variant);
    assert_eq!(enrollment(&app, direct, "new_user").await.1, variant);

    // The report adds up: one exposure per subject, under its variant.
    let report = experiment(&app, "shorter-onboarding").await;
    let direct_control = i64::from(variant == "control");
    assert_eq!(exposures_of(&report, "control"), 1 + direct_control);
    assert_eq!(exposures_of(&report, "shorter"), 2 - direct_control);
    assert_eq!(exposure_rows(&app).await, 3);
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments WHERE experiment_key = 'shorter-onboarding'").await, 3);
}

async fn concurrent_first_reads_record_one_exposure(app: TestApp) {
    two_versions(&app, "new_user").await;
    create(&app, "shorter-onboarding", "new_user", halves()).await;
    start(&app, "shorter-onboarding").await;
    let subject = "racer";
    let variant = expected_variant("shorter-onboarding", subject, &HALVES);
    let reads = (0..8).map(|_| status(&app, "new_user", subject));
    let writes = (0..4).map(|_| complete(&app, "new_user", subject, "verify_email"));
    let (reads, writes) = tokio::join!(join_all(reads), join_all(writes));
    for got in reads.iter().chain(writes.iter()) {
        assert_eq!(got["variant"], variant);
        assert_eq!(got["version"], version_of(variant));
    }
    assert_eq!(exposures_for(&app, subject).await, 1);
    assert_eq!(exposed_variant(&app, subject).await, variant);
    assert_eq!(enrollment(&app, subject, "new_user").await.1, variant);
}

async fn new_weights_change_only_subjects_not_yet_exposed(app: TestApp) {
    two_versions(&app, "new_user").await;
    create(&app, "shorter-onboarding", "new_user", halves()).await;
    start(&app, "shorter-onboarding").await;
    let key = "shorter-onboarding";

    // One subject of each variant is exposed by a read, under 50/50.
    let exposed_control = subject_assigned_to(key, &HALVES, "control", "seen");
    let exposed_shorter = subject_assigned_to(key, &HALVES, "shorter", "seen");
    assert_eq!(status(&app, "new_user", &exposed_control).await["variant"], "control");
    assert_eq!(status(&app, "new_user", &exposed_shorter).await["variant"], "shorter");

    // Everything new goes to `shorter` now.
    let admin = app.admin();
    let all_shorter =
        json!({ "k": key, "w": [{ "name": "control", "weight": 0 }, { "name": "shorter", "weight": 100 }] });
    let changed = app.ok(&admin, &weights_mutation(), all_shorter).await["setExperimentWeights"].clone();
    assert_eq!(changed["state"], "RUNNING");
    assert_eq!(changed["variants"][0], json!({ "name": "control", "version": 1, "weight": 0, "exposures": 1 }));
    assert_eq!(changed["variants"][1], json!({ "name": "shorter", "version": 2, "weight": 100, "exposures": 1 }));

    // The exposed subject keeps its variant: in a read and when it enrolls.
    let again = status(&app, "new_user", &exposed_control).await;
    assert_eq!((again["variant"].clone(), again["version"].clone()), (json!("control"), json!(1)));
    let enrolled = complete(&app, "new_user", &exposed_control, "verify_email").await;
    assert_eq!((enrolled["variant"].clone(), enrolled["version"].clone()), (json!("control"), json!(1)));
    assert_eq!(enrollment(&app, &exposed_control, "new_user").await, (1, "control".into(), key.into()));
    assert_eq!(exposures_for(&app, &exposed_control).await, 1);
    assert_eq!(exposed_variant(&app, &exposed_control).await, "control");

    // Never-exposed subjects all get `shorter`, including those the old split sent to control.
    let mut formerly_control = 0;
    for i in 0..20 {
        let subject = format!("fresh-{i}");
        formerly_control += i32::from(expected_variant(key, &subject, &HALVES) == "control");
        let got = if i % 2 == 0 {
            status(&app, "new_user", &subject).await
        } else {
            complete(&app, "new_user", &subject, "verify_email").await
        };
        assert_eq!((got["variant"].clone(), got["version"].clone()), (json!("shorter"), json!(2)), "{subject}");
    }
    assert!(formerly_control > 0, "some fresh subjects were control under the old weights");
    let report = experiment(&app, key).await;
    assert_eq!(exposures_of(&report, "control"), 1);
    assert_eq!(exposures_of(&report, "shorter"), 21);

    // Uneven weights follow the hash over the new total, in variant order.
    let quarter = json!({ "k": key, "w": [{ "name": "control", "weight": 1 }, { "name": "shorter", "weight": 3 }] });
    app.ok(&admin, &weights_mutation(), quarter).await;
    let mut seen = [false; 2];
    for i in 0..24 {
        let subject = format!("quarter-{i}");
        let variant = expected_variant(key, &subject, &[("control", 1), ("shorter", 3)]);
        seen[usize::from(variant == "shorter")] = true;
        assert_eq!(status(&app, "new_user", &subject).await["variant"], variant, "{subject}");
    }
    assert_eq!(seen, [true, true]);
    // The subject exposed to shorter long ago is still shorter; the control one still control.
    assert_eq!(status(&app, "new_user", &exposed_shorter).await["variant"], "shorter");
    assert_eq!(complete(&app, "new_user", &exposed_shorter, "verify_email").await["version"], 2);

    // Bad weights: unknown variant, nobody left with a weight; refused calls change nothing.
    let unknown = json!({ "k": key, "w": [{ "name": "longest", "weight": 5 }] });
    assert_eq!(app.code(Some(&admin), &weights_mutation(), unknown).await, "NOT_FOUND");
    let none = json!({ "k": key, "w": [{ "name": "control", "weight": 0 }, { "name": "shorter", "weight": 0 }] });
    assert_eq!(app.code(Some(&admin), &weights_mutation(), none).await, "VALIDATION_FAILED");
    let missing = json!({ "k": "nope", "w": [{ "name": "control", "weight": 1 }] });
    assert_eq!(app.code(Some(&admin), &weights_mutation(), missing).await, "NOT_FOUND");
    let weights: Vec<Value> =
        experiment(&app, key).await["variants"].as_array().unwrap().iter().map(|v| v["weight"].clone()).collect();
    assert_eq!(weights, [json!(1), json!(3)]);
}

async fn a_declared_winner_serves_its_version_to_new_subjects(app: TestApp) {
    two_versions(&app, "new_user").await;
    let key = "shorter-onboarding";
    create(&app, key, "new_user", halves()).await;
    start(&app, key).await;
    let early_control = subject_assigned_to(key, &HALVES, "control", "early");
    let early_shorter = subject_assigned_to(key, &HALVES, "shorter", "early");
    assert_eq!(complete(&app, "new_user", &early_control, "verify_email").await["version"], 1);
    assert_eq!(complete(&app, "new_user", &early_shorter, "verify_email").await["version"], 2);

    let admin = app.admin();
    let won = app.ok(&admin, &declare_mutation(), json!({ "k": key, "v": "shorter" })).await["declareWinner"].clone();
    assert_eq!((won["state"].clone(), won["winner"].clone()), (json!("COMPLETED"), json!("shorter")));
    let report = experiment(&app, key).await;
    assert_eq!(report["winner"], "shorter");
    assert_eq!((exposures_of(&report, "control"), exposures_of(&report, "shorter")), (1, 1));

    // Every new subject gets v2 under `shorter`, whatever its hash says; the experiment
    // is over, so serving the winner's version is no exposure.
    let mut formerly_control = 0;
    for i in 0..16 {
        let subject = format!("late-{i}");
        formerly_control += i32::from(expected_variant(key, &subject, &HALVES) == "control");
        let read = status(&app, "new_user", &subject).await;
        assert_eq!((read["variant"].clone(), read["version"].clone()), (json!("shorter"), json!(2)), "{subject}");
        assert_eq!(step_keys(&read), ["verify_email", "tour"]);
        if i % 2 == 0 {
            let enrolled = complete(&app, "new_user", &subject, "verify_email").await;
            assert_eq!((enrolled["variant"].clone(), enrolled["version"].clone()), (json!("shorter"), json!(2)));
            assert_eq!(enrollment(&app, &subject, "new_user").await, (2, "shorter".into(), key.into()));
        }
    }
    assert!(formerly_control > 0);
    assert_eq!(exposure_rows(&app).await, 2, "no exposure after the winner is declared");
    assert_eq!(experiment(&app, key).await, report);

    // Those enrolled before keep their version and variant.
    let kept = status(&app, "new_user", &early_control).await;
    assert_eq!((kept["variant"].clone(), kept["version"].clone()), (json!("control"), json!(1)));
    assert_eq!(step_keys(&kept), ["verify_email", "profile", "tour"]);
    let next = complete(&app, "new_user", &early_control, "profile").await;
    assert_eq!((next["version"].clone(), next["status"].clone()), (json!(1), json!("COMPLETED")));
    assert_eq!(enrollment(&app, &early_control, "new_user").await, (1, "control".into(), key.into()));
    assert_eq!(status(&app, "new_user", &early_shorter).await["version"], 2);

    // A newer version does not displace the winner for new subjects.
    assert_eq!(app.publish(long_flow("new_user")).await["version"], 3);
    let newest = status(&app, "new_user", "after-v3").await;
    assert_eq!((newest["variant"].clone(), newest["version"].clone()), (json!("shorter"), json!(2)));
}

async fn a_stopped_experiment_serves_the_newest_version_and_exposes_nobody(app: TestApp) {
    // Two flows, an experiment on each: stopping one leaves the other running.
    two_versions(&app, "new_user").await;
    two_versions(&app, "tour_flow").await;
    create(&app, "on-new-user", "new_user", halves()).await;
    create(&app, "on-tour", "tour_flow", halves()).await;
    start(&app, "on-new-user").await;
    start(&app, "on-tour").await;

    let enrolled_control = subject_assigned_to("on-tour", &HALVES, "control", "before");
    assert_eq!(complete(&app, "tour_flow", &enrolled_control, "verify_email").await["variant"], "control");
    let read_only = subject_assigned_to("on-tour", &HALVES, "shorter", "before");
    assert_eq!(status(&app, "tour_flow", &read_only).await["variant"], "shorter");

    assert_eq!(stop(&app, "on-tour").await["state"], "STOPPED");
    let before = exposure_rows(&app).await;
    assert_eq!(before, 2);
    let report_before = experiment(&app, "on-tour").await;

    // New subjects: the newest active version, no variant, no exposure, even those the
    // hash would send to control.
    let mut formerly_control = 0;
    for i in 0..12 {
        let subject = format!("after-{i}");
        formerly_control += i32::from(expected_variant("on-tour", &subject, &HALVES) == "control");
        let read = status(&app, "tour_flow", &subject).await;
        assert_eq!((read["variant"].clone(), read["version"].clone()), (Value::Null, json!(2)), "{subject}");
        if i % 3 == 0 {
            let enrolled = complete(&app, "tour_flow", &subject, "verify_email").await;
            assert_eq!((enrolled["variant"].clone(), enrolled["version"].clone()), (Value::Null, json!(2)));
            assert_eq!(enrollment(&app, &subject, "tour_flow").await, (2, String::new(), String::new()));
        }
    }
    assert!(formerly_control > 0);
    assert_eq!(exposure_rows(&app).await, before, "a stopped experiment records no exposure");
    assert_eq!(experiment(&app, "on-tour").await, report_before);

    // The enrolled subject keeps its version and variant.
    let kept = status(&app, "tour_flow", &enrolled_control).await;
    assert_eq!((kept["variant"].clone(), kept["version"].clone()), (json!("control"), json!(1)));
    assert_eq!(enrollment(&app, &enrolled_control, "tour_flow").await, (1, "control".into(), "on-tour".into()));

    // The other flow's experiment still runs.
    let other = "other-subject";
    let variant = expected_variant("on-new-user", other, &HALVES);
    assert_eq!(status(&app, "new_user", other).await["variant"], variant);
    assert_eq!(exposure_rows(&app).await, before + 1);
    assert_eq!(experiment(&app, "on-new-user").await["state"], "RUNNING");

    // Started again, it assigns by the hash once more.
    assert_eq!(start(&app, "on-tour").await["state"], "RUNNING");
    let again = "restarted";
    let variant = expected_variant("on-tour", again, &HALVES);
    assert_eq!(status(&app, "tour_flow", again).await["variant"], variant);
}

/// For admins only; `configure_billing` is completed by an event in both versions.
fn admin_flow(short: bool) -> Value {
    let mut steps = vec![
        json!({ "key": "configure_billing", "title": "Configure billing", "trigger": { "event": "billing.configured" } }),
    ];
    if !short {
        steps.push(json!({ "key": "invite_admins", "title": "Invite other admins" }));
    }
    json!({ "key": "admin_setup", "title": "Set up your workspace", "audience": { "role": "admin" }, "steps": steps })
}

async fn an_audience_flow_is_entered_under_the_assigned_variant(app: TestApp) {
    // Admitted before the flow exists: nothing to enroll into yet.
    app.set_attributes("early-admin", json!({ "role": "admin" })).await;
    app.set_attributes("member", json!({ "role": "member" })).await;
    assert_eq!(app.publish(admin_flow(false)).await["version"], 1);
    assert_eq!(app.publish(admin_flow(true)).await["version"], 2);
    let key = "admin-setup-test";
    create(&app, key, "admin_setup", halves()).await;
    start(&app, key).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0);

    // An event for the admitted subject enrolls it into its variant's version, exposes it
    // once, and completes the triggered step there.
    let variant = expected_variant(key, "early-admin", &HALVES);
    let result = app.track_event("evt-1", "early-admin", "billing.configured", json!({})).await;
    assert_eq!(result["status"], "NEW");
    assert_eq!(
        completed_steps(&result),
        [("admin_setup".to_string(), version_of(variant), "configure_billing".to_string())]
    );
    assert_eq!(enrollment(&app, "early-admin", "admin_setup").await, (version_of(variant), variant.into(), key.into()));
    assert_eq!(exposures_for(&app, "early-admin").await, 1);
    assert_eq!(exposed_variant(&app, "early-admin").await, variant);
    let read = status(&app, "admin_setup", "early-admin").await;
    assert_eq!((read["variant"].clone(), read["version"].clone()), (json!(variant), json!(version_of(variant))));
    assert_eq!(read["status"], if variant == "shorter" { "COMPLETED" } else { "IN_PROGRESS" });
    app.track_event("evt-2", "early-admin", "billing.configured", json!({ "again": true })).await;
    assert_eq!(exposures_for(&app, "early-admin").await, 1, "later events expose nobody again");

    // An event for a subject outside the audience enrolls and exposes nothing.
    let result = app.track_event("evt-3", "member", "billing.configured", json!({})).await;
    assert_eq!((result["status"].clone(), result["completed"].clone()), (json!("NEW"), json!([])));
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM enrollments e JOIN subjects s ON s.id = e.subject_id WHERE s.external_id = 'member'"
        )
        .await,
        0
    );
    assert_eq!(exposures_for(&app, "member").await, 0);

    // Attributes alone enroll a subject into its variant, for one of each variant.
    for wanted in ["control", "shorter"] {
        let subject = subject_assigned_to(key, &HALVES, wanted, "promoted");
        app.set_attributes(&subject, json!({ "role": "admin" })).await;
        assert_eq!(enrollment(&app, &subject, "admin_setup").await, (version_of(wanted), wanted.into(), key.into()));
        assert_eq!(exposures_for(&app, &subject).await, 1);
        assert_eq!(exposed_variant(&app, &subject).await, wanted);
        // Its stored-later event completes the step in that version.
        let result = app.track_event(&format!("evt-{subject}"), &subject, "billing.configured", json!({})).await;
        assert_eq!(
            completed_steps(&result),
            [("admin_setup".to_string(), version_of(wanted), "configure_billing".to_string())]
        );
        assert_eq!(exposures_for(&app, &subject).await, 1);
    }

    // The report counts each enrolled admin once.
    let report = experiment(&app, key).await;
    assert_eq!(exposures_of(&report, "control") + exposures_of(&report, "shorter"), 3);
    assert_eq!(exposures_of(&report, variant), 2);
}

/// A later experiment's stop is not undone by an earlier experiment's winner.
async fn the_latest_decision_on_a_flow_wins(app: TestApp) {
    two_versions(&app, "new_user").await;
    create(&app, "first", "new_user", halves()).await;
    start(&app, "first").await;
    app.ok(&app.admin(), &declare_mutation(), json!({ "k": "first", "v": "control" })).await;
    assert_eq!(status(&app, "new_user", "after-winner").await["version"], 1, "the winner serves v1");
    create(&app, "second", "new_user", halves()).await;
    start(&app, "second").await;
    stop(&app, "second").await;
    let fresh = status(&app, "new_user", "after-stop").await;
    assert_eq!(fresh["version"], 2, "a stop means the newest active version, not an older winner");
    assert!(fresh["variant"].is_null());
}

/// Serving a flow to a subject outside its audience is no exposure.
async fn only_the_audience_is_exposed(app: TestApp) {
    app.publish(admin_flow(false)).await;
    app.publish(admin_flow(true)).await;
    create(&app, "admins", "admin_setup", halves()).await;
    start(&app, "admins").await;
    app.set_attributes("member", json!({ "role": "member" })).await;
    status(&app, "admin_setup", "member").await;
    assert_eq!(exposures_for(&app, "member").await, 0);
    app.set_attributes("boss", json!({ "role": "admin" })).await;
    status(&app, "admin_setup", "boss").await;
    assert_eq!(exposures_for(&app, "boss").await, 1);
}

/// Deprecated versions take no new enrollments, experiment or not.
async fn deprecated_versions_take_no_new_subjects(app: TestApp) {
    two_versions(&app, "new_user").await;
    app.publish(long_flow("new_user")).await; // v3
    create(
        &app,
        "exp",
        "new_user",
        json!([{ "name": "old", "version": 1, "weight": 1 }, { "name": "new", "version": 3, "weight": 0 }]),
    )
    .await;
    start(&app, "exp").await;
    assert_eq!(status(&app, "new_user", "early").await["version"], 1, "everyone goes to v1 while it is active");
    app.ok(&app.admin(), "mutation { deprecateFlow(key: \"new_user\", version: 1) { status } }", json!({})).await;
    let late = status(&app, "new_user", "late").await;
    assert_eq!(late["version"], 3, "v1 is deprecated: the newest active version instead");
    assert!(late["variant"].is_null());
    assert_eq!(exposures_for(&app, "late").await, 0);
    let code = create_code(
        &app,
        "exp2",
        "new_user",
        json!([{ "name": "a", "version": 1, "weight": 1 }, { "name": "b", "version": 2, "weight": 1 }]),
    )
    .await;
    assert_eq!(code, "VALIDATION_FAILED", "a deprecated version cannot be a variant");
}

/// `onboarding_started` (the `onboarding.started` webhook) says which experiment and variant
/// chose the version entered; an enrollment no experiment chose says nothing of one.
async fn the_enrollment_event_names_the_experiment_that_chose_the_version(app: TestApp) {
    two_versions(&app, "new_user").await;
    app.publish(long_flow("plain")).await;
    create(&app, "shorter-onboarding", "new_user", halves()).await;
    start(&app, "shorter-onboarding").await;
    let subject = subject_assigned_to("shorter-onboarding", &HALVES, "shorter", "ev");
    complete(&app, "new_user", &subject, "verify_email").await;
    complete(&app, "plain", &subject, "verify_email").await;
    let payload = |flow: &str| {
        let sql = format!(
            "SELECT CAST(payload AS TEXT) FROM outbox WHERE kind = 'onboarding_started' AND subject_id = '{subject}' \
             AND flow_key = '{flow}'"
        );
        let app = &app;
        async move { serde_json::from_str::<Value>(&app.text(&sql).await).expect("JSON") }
    };
    assert_eq!(
        payload("new_user").await,
        json!({ "revision": 1, "experiment": { "key": "shorter-onboarding", "variant": "shorter" } })
    );
    assert_eq!(
        app.count(&format!(
            "SELECT CAST(flow_version AS BIGINT) FROM outbox WHERE kind = 'onboarding_started' AND flow_key = 'new_user' \
             AND subject_id = '{subject}'"
        ))
        .await,
        2,
        "the version the variant serves"
    );
    assert_eq!(payload("plain").await, json!({ "revision": 1 }));
}
