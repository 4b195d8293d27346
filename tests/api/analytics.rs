//! Analytics: funnel, flowStats, experimentResults, stepImpact and timeSeries over a small
//! hand-built data set (rows inserted directly, fixed timestamps), every number worked out
//! by hand in the comments and checked on both backends. PostgreSQL also runs seed 000's
//! reference funnel SQL on the same data and must agree with the funnel.
//!
//! Rows written behind the engine's back are what a bulk load writes, so after each insert
//! the analytics rollup is rebuilt from the rows (`rollup::rebuild`), as after an upgrade.
//! tests/api/rollup.rs checks that the engine's own writes keep it exact incrementally.

use chrono::{DateTime, Duration, TimeZone, Utc};
use sea_orm::{ConnectionTrait, Statement, Value as DbValue};
use serde_json::{Value, json};

use crate::both;
use crate::common::TestApp;

both!(
    funnel_counts_steps_in_definition_order,
    funnel_filters_by_version_variant_and_window,
    flow_stats_break_down_by_version_and_variant,
    experiment_results_compare_variants_with_the_control,
    small_experiments_carry_a_warning,
    step_impact_splits_the_cohort_by_retention,
    time_series_fills_every_bucket,
    analytics_errors,
);

// ---------------------------------------------------------------------------------------
// Data set "onb": two versions, an experiment, seven enrollments.
//
// T = 2026-03-02T00:00:00Z, a Monday.
// v1 steps: a "Verify your email", b "Complete your profile" (needs a),
//           c "Invite your team" (optional, plan team), d "Take the tour" (optional)
// v2 steps: a, e "Connect an integration" (optional), b (needs a)   -- newest: a, e, b
//
// enrollment  ver  status       started          ends                 variant
// E1 (u1)     1    COMPLETED    T                completed T+10h      control
// E2 (u2)     1    IN_PROGRESS  T+1d                                  control
// E3 (u3)     1    SKIPPED      T+2d             skipped T+2d+5h      -
// E4 (u4)     1    COMPLETED    T+3d             completed +4h        -
// E5 (u5)     2    COMPLETED    T+3d+12h         completed +6h        treat
// E6 (u6)     2    IN_PROGRESS  T+4d+250ms                            treat
// E7 (u7)     2    COMPLETED    T+10d            completed +8h        -
//
// step rows (status, available?, hours from start to completion):
// E1: a C +1h      b C +3h      d SKIPPED            (c: no row, does not apply)
// E2: a C +2h      b PENDING available   c PENDING available   d PENDING available
// E3: a PENDING available   b PENDING not available   d PENDING available
// E4: a C +1h      b C +4h      c C +2h      d PENDING available
// E5: a C +2h      e C +5h      b C +6h
// E6: a C +3h      e SKIPPED    b PENDING available
// E7: a C +1h      e PENDING available   b C +8h
// ---------------------------------------------------------------------------------------

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
}

fn hours(n: i64) -> Duration {
    Duration::hours(n)
}

fn days(n: i64) -> Duration {
    Duration::days(n)
}

async fn exec(app: &TestApp, sql: &str, values: Vec<DbValue>) {
    let statement = Statement::from_sql_and_values(app.db.get_database_backend(), sql, values);
    let head: String = sql.chars().take(120).collect();
    app.db.execute_raw(statement).await.unwrap_or_else(|e| panic!("`{head}...`: {e}"));
}

/// Inserts rows into a table in one statement.
async fn insert(app: &TestApp, table: &str, columns: &[&str], rows: Vec<Vec<DbValue>>) {
    let mut values = Vec::new();
    let mut tuples = Vec::new();
    for row in rows {
        assert_eq!(row.len(), columns.len());
        let mut marks = Vec::new();
        for value in row {
            values.push(value);
            marks.push(format!("${}", values.len()));
        }
        tuples.push(format!("({})", marks.join(", ")));
    }
    let sql = format!("INSERT INTO {table} ({}) VALUES {}", columns.join(", "), tuples.join(", "));
    exec(app, &sql, values).await;
}

fn v(value: impl Into<DbValue>) -> DbValue {
    value.into()
}

async fn flow_id(app: &TestApp, key: &str, version: i64) -> i64 {
    app.count(&format!("SELECT id FROM flows WHERE key = '{key}' AND version = {version}")).await
}

async fn subjects(app: &TestApp, subjects: &[(i64, &str)]) {
    let rows = subjects.iter().map(|(id, key)| vec![v(*id), v(*key), v(json!({})), v(t0()), v(t0())]).collect();
    insert(app, "subjects", &["id", "external_id", "attributes", "created_at", "updated_at"], rows).await;
}

/// An enrollment; `ends` is completed_at for COMPLETED and skipped_at for SKIPPED.
struct Enrollment<'a> {
    id: i64,
    subject: i64,
    flow_id: i64,
    flow_key: &'a str,
    status: &'a str,
    started: DateTime<Utc>,
    ends: Option<DateTime<Utc>>,
    experiment: Option<&'a str>,
    variant: Option<&'a str>,
}

async fn enrollments(app: &TestApp, list: &[Enrollment<'_>]) {
    let rows = list
        .iter()
        .map(|e| {
            let completed = if e.status == "COMPLETED" { e.ends } else { None };
            let skipped = if e.status == "SKIPPED" { e.ends } else { None };
            vec![
                v(e.id),
                v(e.subject),
                v(e.flow_id),
                v(e.flow_key),
                v(e.status),
                v(e.started),
                v(completed),
                v(skipped),
                v(e.ends.unwrap_or(e.started)),
                v(e.experiment.map(str::to_string)),
                v(e.variant.map(str::to_string)),
            ]
        })
        .collect();
    insert(
        app,
        "enrollments",
        &[
            "id",
            "subject_id",
            "flow_id",
            "flow_key",
            "status",
            "started_at",
            "completed_at",
            "skipped_at",
            "last_activity_at",
            "experiment_key",
            "variant",
        ],
        rows,
    )
    .await;
    rebuild(app).await;
}

async fn rebuild(app: &TestApp) {
    onramp::persistence::rollup::rebuild(&app.db).await.expect("rebuilding the rollup");
}

/// A step row: (enrollment, step, status, available_at, completed_at or skipped_at).
type StepRow<'a> = (i64, &'a str, &'a str, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

async fn steps(app: &TestApp, list: &[StepRow<'_>]) {
    let rows = list
        .iter()
        .map(|(enrollment, key, status, available, ends)| {
            let completed = if *status == "COMPLETED" { *ends } else { None };
            let skipped = if *status == "SKIPPED" { *ends } else { None };
            let updated = ends.or(*available).unwrap_or(t0());
            vec![
                v(*enrollment),
                v(*key),
                v(*status),
                v(*available),
                v(completed),
                v(skipped),
                v("USER"),
                v(updated),
                v(*available),
            ]
        })
        .collect();
    insert(
        app,
        "step_progress",
        &[
            "enrollment_id",
            "step_key",
            "status",
            "started_at",
            "completed_at",
            "skipped_at",
            "source",
            "updated_at",
            "available_at",
        ],
        rows,
    )
    .await;
    rebuild(app).await;
}

/// Publishes the two versions of "onb" and inserts E1..E7 with their steps.
async fn seed_onb(app: &TestApp) {
    let a = json!({ "key": "a", "title": "Verify your email" });
    let b = json!({ "key": "b", "title": "Complete your profile", "dependsOn": ["a"] });
    app.publish(json!({ "key": "onb", "title": "Onboarding", "steps": [
        a, b,
        { "key": "c", "title": "Invite your team", "required": false, "condition": { "plan": "team" } },
        { "key": "d", "title": "Take the tour", "required": false }
    ]}))
    .await;
    app.publish(json!({ "key": "onb", "title": "Onboarding", "steps": [
        a, { "key": "e", "title": "Connect an integration", "required": false }, b
    ]}))
    .await;
    let (v1, v2) = (flow_id(app, "onb", 1).await, flow_id(app, "onb", 2).await);
    subjects(app, &[(1, "u1"), (2, "u2"), (3, "u3"), (4, "u4"), (5, "u5"), (6, "u6"), (7, "u7"), (9, "u9")]).await;
    let t = t0();
    let s = [
        t,
        t + days(1),
        t + days(2),
        t + days(3),
        t + days(3) + hours(12),
        t + days(4) + Duration::milliseconds(250),
        t + days(10),
    ];
    let e = |id: i64, flow_id, status, ends: Option<Duration>, variant: Option<&'static str>| Enrollment {
        id,
        subject: id,
        flow_id,
        flow_key: "onb",
        status,
        started: s[id as usize - 1],
        ends: ends.map(|d| s[id as usize - 1] + d),
        experiment: variant.map(|_| "exp"),
        variant,
    };
    enrollments(
        app,
        &[
            e(1, v1, "COMPLETED", Some(hours(10)), Some("control")),
            e(2, v1, "IN_PROGRESS", None, Some("control")),
            e(3, v1, "SKIPPED", Some(hours(5)), None),
            e(4, v1, "COMPLETED", Some(hours(4)), None),
            e(5, v2, "COMPLETED", Some(hours(6)), Some("treat")),
            e(6, v2, "IN_PROGRESS", None, Some("treat")),
            e(7, v2, "COMPLETED", Some(hours(8)), None),
        ],
    )
    .await;
    // (enrollment, step, status, available after start, done after start)
    let at = |n: i64, h: i64| Some(s[n as usize - 1] + hours(h));
    let done = |n: i64, key, h| (n, key, "COMPLETED", Some(s[n as usize - 1]), at(n, h));
    let pending = |n: i64, key| (n, key, "PENDING", Some(s[n as usize - 1]), None);
    steps(
        app,
        &[
            done(1, "a", 1),
            (1, "b", "COMPLETED", at(1, 1), at(1, 3)),
            (1, "d", "SKIPPED", at(1, 0), Some(s[0] + Duration::minutes(30))),
            done(2, "a", 2),
            (2, "b", "PENDING", at(2, 2), None),
            pending(2, "c"),
            pending(2, "d"),
            pending(3, "a"),
            (3, "b", "PENDING", None, None),
            pending(3, "d"),
            done(4, "a", 1),
            (4, "b", "COMPLETED", at(4, 1), at(4, 4)),
            done(4, "c", 2),
            pending(4, "d"),
            done(5, "a", 2),
            done(5, "e", 5),
            (5, "b", "COMPLETED", at(5, 2), at(5, 6)),
            done(6, "a", 3),
            (6, "e", "SKIPPED", at(6, 0), at(6, 3)),
            (6, "b", "PENDING", at(6, 3), None),
            done(7, "a", 1),
            pending(7, "e"),
            (7, "b", "COMPLETED", at(7, 1), at(7, 8)),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------

/// A float field: null when `expected` is None, else within 1e-9.
fn num(actual: &Value, expected: Option<f64>, what: &str) {
    match expected {
        None => assert!(actual.is_null(), "{what}: expected null, got {actual}"),
        Some(e) => {
            let a = actual.as_f64().unwrap_or_else(|| panic!("{what}: expected {e}, got {actual}"));
            assert!((a - e).abs() <= 1e-9, "{what}: expected {e}, got {a}");
        }
    }
}

fn time(actual: &Value) -> Option<DateTime<Utc>> {
    actual.as_str().map(|s| s.parse().unwrap_or_else(|e| panic!("`{s}` is not a DateTime: {e}")))
}

const FUNNEL: &str = "query($f: String!, $v: Int, $var: String, $s: DateTime, $u: DateTime) {
    funnel(flowKey: $f, version: $v, variant: $var, since: $s, until: $u) {
        flowKey version variant since until stepsVersion enrolled
        steps { stepKey title position required applied reached completed skipped conversion
                dropOff dropOffRate medianHours p90Hours } } }";

/// What one funnel step must show.
struct Step {
    key: &'static str,
    title: &'static str,
    required: bool,
    /// applied, reached, completed, skipped
    counts: [i64; 4],
    conversion: Option<f64>,
    drop_off: (i64, Option<f64>),
    /// median and p90 hours
    hours: (Option<f64>, Option<f64>),
}

fn check_steps(funnel: &Value, expected: &[Step]) {
    let steps = funnel["steps"].as_array().expect("steps");
    let keys: Vec<&str> = steps.iter().map(|s| s["stepKey"].as_str().unwrap()).collect();
    let expected_keys: Vec<&str> = expected.iter().map(|s| s.key).collect();
    assert_eq!(keys, expected_keys, "step order");
    for (i, (step, want)) in steps.iter().zip(expected).enumerate() {
        let what = |field: &str| format!("step {} {field}", want.key);
        assert_eq!(step["title"], want.title, "{}", what("title"));
        assert_eq!(step["position"], i as i64 + 1, "{}", what("position"));
        assert_eq!(step["required"], want.required, "{}", what("required"));
        let counts = [&step["applied"], &step["reached"], &step["completed"], &step["skipped"]];
        let counts: Vec<i64> = counts.iter().map(|c| c.as_i64().expect("count")).collect();
        assert_eq!(counts, want.counts, "{} (applied, reached, completed, skipped)", what("counts"));
        num(&step["conversion"], want.conversion, &what("conversion"));
        assert_eq!(step["dropOff"], want.drop_off.0, "{}", what("dropOff"));
        num(&step["dropOffRate"], want.drop_off.1, &what("dropOffRate"));
        num(&step["medianHours"], want.hours.0, &what("medianHours"));
        num(&step["p90Hours"], want.hours.1, &what("p90Hours"));
    }
}

async fn funnel(app: &TestApp, variables: Value) -> Value {
    app.ok(&app.admin(), FUNNEL, variables).await["funnel"].clone()
}

// ---------------------------------------------------------------------------------------
// funnel
// ---------------------------------------------------------------------------------------

async fn funnel_counts_steps_in_definition_order(app: TestApp) {
    seed_onb(&app).await;
    let f = funnel(&app, json!({ "f": "onb" })).await;
    assert_eq!(f["flowKey"], "onb");
    assert!(f["version"].is_null() && f["variant"].is_null() && f["since"].is_null() && f["until"].is_null());
    // No version asked: the newest version's steps (v2: a, e, b), every version's enrollments.
    assert_eq!(f["stepsVersion"], 2);
    assert_eq!(f["enrolled"], 7);
    check_steps(
        &f,
        &[
            // a: all 7 have a row, all available; 6 completed (E3 did not). Drop-off 7 − 6.
            // Hours [1, 2, 1, 2, 3, 1] sorted [1, 1, 1, 2, 2, 3]: even count, the median at
            // position 2.5 is 1 + 0.5·(2 − 1) = 1.5; p90 at position 4.5 is 2 + 0.5·1 = 2.5.
            Step {
                key: "a",
                title: "Verify your email",
                required: true,
                counts: [7, 7, 6, 0],
                conversion: Some(6.0 / 7.0),
                drop_off: (1, Some(1.0 / 7.0)),
                hours: (Some(1.5), Some(2.5)),
            },
            // e applies to the v2 enrollments only (E5 completed, E6 skipped, E7 pending).
            // Drop-off from a's 6 completed: 5, 5/6.
            Step {
                key: "e",
                title: "Connect an integration",
                required: false,
                counts: [3, 3, 1, 1],
                conversion: Some(1.0 / 3.0),
                drop_off: (5, Some(5.0 / 6.0)),
                hours: (Some(5.0), Some(5.0)),
            },
            // b: 7 rows, E3's never became available (a is pending): reached 6. Completed by
            // E1, E4, E5, E7 = 4. Drop-off from e's 1 completed: 1 − 4 = −3, rate −3.
            // Hours [3, 4, 6, 8]: median 5 (position 1.5); p90 at 2.7: 6 + 0.7·2 = 7.4.
            Step {
                key: "b",
                title: "Complete your profile",
                required: true,
                counts: [7, 6, 4, 0],
                conversion: Some(4.0 / 6.0),
                drop_off: (-3, Some(-3.0)),
                hours: (Some(5.0), Some(7.4)),
            },
        ],
    );
}

async fn funnel_filters_by_version_variant_and_window(app: TestApp) {
    seed_onb(&app).await;

    // Version 1: its steps in its order (c and d, which v2 dropped, come back), E1..E4 only.
    let f = funnel(&app, json!({ "f": "onb", "v": 1 })).await;
    assert_eq!(
        (f["version"].clone(), f["stepsVersion"].clone(), f["enrolled"].clone()),
        (json!(1), json!(1), json!(4))
    );
    check_steps(
        &f,
        &[
            // Hours [1, 2, 1] sorted [1, 1, 2]: odd count, the median is the middle value 1;
            // p90 at position 1.8: 1 + 0.8·(2 − 1) = 1.8.
            Step {
                key: "a",
                title: "Verify your email",
                required: true,
                counts: [4, 4, 3, 0],
                conversion: Some(0.75),
                drop_off: (1, Some(0.25)),
                hours: (Some(1.0), Some(1.8)),
            },
            // E3's b is not available. Hours [3, 4]: median 3.5, p90 3 + 0.9 = 3.9.
            Step {
                key: "b",
                title: "Complete your profile",
                required: true,
                counts: [4, 3, 2, 0],
                conversion: Some(2.0 / 3.0),
                drop_off: (1, Some(1.0 / 3.0)),
                hours: (Some(3.5), Some(3.9)),
            },
            // c applied to E2 and E4 only (no row for E1 and E3).
            Step {
                key: "c",
                title: "Invite your team",
                required: false,
                counts: [2, 2, 1, 0],
                conversion: Some(0.5),
                drop_off: (1, Some(0.5)),
                hours: (Some(2.0), Some(2.0)),
            },
            // d: skipped by E1, completed by nobody: conversion 0, no times.
            Step {
                key: "d",
                title: "Take the tour",
                required: false,
                counts: [4, 4, 0, 1],
                conversion: Some(0.0),
                drop_off: (1, Some(1.0)),
                hours: (None, None),
            },
        ],
    );

    // Variant control: E1 and E2 (both v1), shown with the newest version's steps.
    let f = funnel(&app, json!({ "f": "onb", "var": "control" })).await;
    assert_eq!(
        (f["variant"].clone(), f["stepsVersion"].clone(), f["enrolled"].clone()),
        (json!("control"), json!(2), json!(2))
    );
    check_steps(
        &f,
        &[
            // Hours [1, 2]: median 1.5, p90 1.9.
            Step {
                key: "a",
                title: "Verify your email",
                required: true,
                counts: [2, 2, 2, 0],
                conversion: Some(1.0),
                drop_off: (0, Some(0.0)),
                hours: (Some(1.5), Some(1.9)),
            },
            // e does not exist in v1: nothing reached it, so no conversion.
            Step {
                key: "e",
                title: "Connect an integration",
                required: false,
                counts: [0, 0, 0, 0],
                conversion: None,
                drop_off: (2, Some(1.0)),
                hours: (None, None),
            },
            // The step before completed 0: drop-off 0 − 1 = −1 and no rate.
            Step {
                key: "b",
                title: "Complete your profile",
                required: true,
                counts: [2, 2, 1, 0],
                conversion: Some(0.5),
                drop_off: (-1, None),
                hours: (Some(3.0), Some(3.0)),
            },
        ],
    );

    // Window [T+1d, T+4d+250ms): E2 (exactly at since: in), E3, E4, E5; E6 starts exactly
    // at until: out.
    let since = t0() + days(1);
    let until = t0() + days(4) + Duration::milliseconds(250);
    let f = funnel(&app, json!({ "f": "onb", "s": since, "u": until })).await;
    assert_eq!(time(&f["since"]), Some(since));
    assert_eq!(time(&f["until"]), Some(until));
    assert_eq!(f["enrolled"], 4);
    check_steps(
        &f,
        &[
            // Hours [2 (E2), 1 (E4), 2 (E5)] sorted [1, 2, 2]: median 2, p90 2 + 0.8·0 = 2.
            Step {
                key: "a",
                title: "Verify your email",
                required: true,
                counts: [4, 4, 3, 0],
                conversion: Some(0.75),
                drop_off: (1, Some(0.25)),
                hours: (Some(2.0), Some(2.0)),
            },
            Step {
                key: "e",
                title: "Connect an integration",
                required: false,
                counts: [1, 1, 1, 0],
                conversion: Some(1.0),
                drop_off: (2, Some(2.0 / 3.0)),
                hours: (Some(5.0), Some(5.0)),
            },
            // Hours [4 (E4), 6 (E5)]: median 5, p90 5.8.
            Step {
                key: "b",
                title: "Complete your profile",
                required: true,
                counts: [4, 3, 2, 0],
                conversion: Some(2.0 / 3.0),
                drop_off: (-1, Some(-1.0)),
                hours: (Some(5.0), Some(5.8)),
            },
        ],
    );

    // Only a lower bound: E6 (T+4d+250ms) and E7 (T+10d).
    let f = funnel(&app, json!({ "f": "onb", "s": t0() + days(4) })).await;
    assert_eq!(f["enrolled"], 2);
    assert!(f["until"].is_null());
    // Only an upper bound, exclusive: E1 (T) alone.
    let f = funnel(&app, json!({ "f": "onb", "u": t0() + days(1) })).await;
    assert_eq!(f["enrolled"], 1);
    // A window with nobody in it: zeros and nulls, every step still listed.
    let f = funnel(&app, json!({ "f": "onb", "s": t0() + days(20), "u": t0() + days(21) })).await;
    assert_eq!(f["enrolled"], 0);
    for step in f["steps"].as_array().unwrap() {
        assert_eq!((step["applied"].clone(), step["dropOff"].clone()), (json!(0), json!(0)));
        assert!(step["conversion"].is_null() && step["dropOffRate"].is_null() && step["medianHours"].is_null());
    }
}

// ---------------------------------------------------------------------------------------
// flowStats
// ---------------------------------------------------------------------------------------

const FLOW_STATS: &str = "query($f: String!, $v: Int, $var: String, $s: DateTime, $u: DateTime) {
    flowStats(flowKey: $f, version: $v, variant: $var, since: $s, until: $u) {
        flowKey version variant since until
        enrolled inProgress completed skipped completionRate medianHoursToComplete p90HoursToComplete
        byVersion { version variant enrolled inProgress completed skipped completionRate
                    medianHoursToComplete p90HoursToComplete }
        byVariant { version variant enrolled inProgress completed skipped completionRate
                    medianHoursToComplete p90HoursToComplete } } }";

/// (version, variant, [enrolled, in progress, completed, skipped], rate, median, p90)
type Group = (Option<i64>, Option<&'static str>, [i64; 4], Option<f64>, Option<f64>, Option<f64>);

fn check_group(actual: &Value, expected: &Group, what: &str) {
    let (version, variant, ..) = expected;
    assert_eq!(actual["version"], json!(version), "{what} version");
    assert_eq!(actual["variant"], json!(variant), "{what} variant");
    check_outcomes(actual, expected, what);
}

/// The counts, rate and times of a group (or of the totals, whose version and variant
/// fields echo the filter instead).
fn check_outcomes(actual: &Value, expected: &Group, what: &str) {
    let (_, _, counts, rate, median, p90) = expected;
    let fields = ["enrolled", "inProgress", "completed", "skipped"];
    let got: Vec<i64> = fields.iter().map(|f| actual[*f].as_i64().expect("count")).collect();
    assert_eq!(got, counts, "{what} (enrolled, inProgress, completed, skipped)");
    num(&actual["completionRate"], *rate, &format!("{what} completionRate"));
    num(&actual["medianHoursToComplete"], *median, &format!("{what} medianHoursToComplete"));
    num(&actual["p90HoursToComplete"], *p90, &format!("{what} p90HoursToComplete"));
}

fn check_stats(stats: &Value, totals: Group, by_version: &[Group], by_variant: &[Group]) {
    check_outcomes(stats, &totals, "totals");
    let versions = stats["byVersion"].as_array().expect("byVersion");
    assert_eq!(versions.len(), by_version.len(), "byVersion: {versions:?}");
    for (i, (actual, expected)) in versions.iter().zip(by_version).enumerate() {
        check_group(actual, expected, &format!("byVersion[{i}]"));
    }
    let variants = stats["byVariant"].as_array().expect("byVariant");
    assert_eq!(variants.len(), by_variant.len(), "byVariant: {variants:?}");
    for (i, (actual, expected)) in variants.iter().zip(by_variant).enumerate() {
        check_group(actual, expected, &format!("byVariant[{i}]"));
    }
}

async fn flow_stats_break_down_by_version_and_variant(app: TestApp) {
    seed_onb(&app).await;
    let admin = app.admin();

    // Everything. Hours to complete: E1 10, E4 4, E5 6, E7 8 → [4, 6, 8, 10]: median 7,
    // p90 at position 2.7: 8 + 0.7·2 = 9.4.
    let s = app.ok(&admin, FLOW_STATS, json!({ "f": "onb" })).await["flowStats"].clone();
    assert_eq!(s["flowKey"], "onb");
    assert!(s["version"].is_null() && s["variant"].is_null() && s["since"].is_null() && s["until"].is_null());
    check_stats(
        &s,
        (None, None, [7, 2, 4, 1], Some(4.0 / 7.0), Some(7.0), Some(9.4)),
        &[
            // v1: E1..E4. Hours [4, 10]: median 7, p90 4 + 0.9·6 = 9.4.
            (Some(1), None, [4, 1, 2, 1], Some(0.5), Some(7.0), Some(9.4)),
            // v2: E5..E7. Hours [6, 8]: median 7, p90 6 + 0.9·2 = 7.8.
            (Some(2), None, [3, 1, 2, 0], Some(2.0 / 3.0), Some(7.0), Some(7.8)),
        ],
        &[
            // Outside any experiment first: E3, E4, E7. Hours [4, 8]: median 6, p90 7.6.
            (None, None, [3, 0, 2, 1], Some(2.0 / 3.0), Some(6.0), Some(7.6)),
            (None, Some("control"), [2, 1, 1, 0], Some(0.5), Some(10.0), Some(10.0)),
            (None, Some("treat"), [2, 1, 1, 0], Some(0.5), Some(6.0), Some(6.0)),
        ],
    );

    // Window [T+1d, T+4d+250ms): E2, E3, E4, E5. Hours [4, 6]: median 5, p90 5.8.
    let since = t0() + days(1);
    let until = t0() + days(4) + Duration::milliseconds(250);
    let s = app.ok(&admin, FLOW_STATS, json!({ "f": "onb", "s": since, "u": until })).await["flowStats"].clone();
    assert_eq!((time(&s["since"]), time(&s["until"])), (Some(since), Some(until)));
    check_stats(
        &s,
        (None, None, [4, 1, 2, 1], Some(0.5), Some(5.0), Some(5.8)),
        &[
            (Some(1), None, [3, 1, 1, 1], Some(1.0 / 3.0), Some(4.0), Some(4.0)),
            (Some(2), None, [1, 0, 1, 0], Some(1.0), Some(6.0), Some(6.0)),
        ],
        &[
            (None, None, [2, 0, 1, 1], Some(0.5), Some(4.0), Some(4.0)),
            // E2 alone, not completed: rate 0, no times.
            (None, Some("control"), [1, 1, 0, 0], Some(0.0), None, None),
            (None, Some("treat"), [1, 0, 1, 0], Some(1.0), Some(6.0), Some(6.0)),
        ],
    );

    // Version 2 and variant treat: E5 and E6; the breakdowns hold only that version/variant.
    let s = app.ok(&admin, FLOW_STATS, json!({ "f": "onb", "v": 2, "var": "treat" })).await["flowStats"].clone();
    assert_eq!((s["version"].clone(), s["variant"].clone()), (json!(2), json!("treat")));
    check_stats(
        &s,
        (None, None, [2, 1, 1, 0], Some(0.5), Some(6.0), Some(6.0)),
        &[(Some(2), None, [2, 1, 1, 0], Some(0.5), Some(6.0), Some(6.0))],
        &[(None, Some("treat"), [2, 1, 1, 0], Some(0.5), Some(6.0), Some(6.0))],
    );

    // Nobody in the window: every version still listed with zeros, no variants, no rates.
    let s = app
        .ok(&admin, FLOW_STATS, json!({ "f": "onb", "s": t0() + days(20), "u": t0() + days(21) }))
        .await["flowStats"]
        .clone();
    check_stats(
        &s,
        (None, None, [0, 0, 0, 0], None, None, None),
        &[(Some(1), None, [0, 0, 0, 0], None, None, None), (Some(2), None, [0, 0, 0, 0], None, None, None)],
        &[],
    );
}

// ---------------------------------------------------------------------------------------
// experimentResults
// ---------------------------------------------------------------------------------------

const EXPERIMENT_RESULTS: &str = "query($k: String!) { experimentResults(key: $k) {
    key flowKey state winner
    variants { name version control exposures completions completionRate confidenceInterval { low high }
               absoluteLift relativeLift pValue warning } } }";

async fn experiment(
    app: &TestApp,
    id: i64,
    key: &str,
    flow_key: &str,
    state: &str,
    winner: Option<&str>,
    variants: &[(&str, i32)],
) {
    insert(
        app,
        "experiments",
        &["id", "key", "flow_key", "state", "winner", "created_at", "started_at"],
        vec![vec![v(id), v(key), v(flow_key), v(state), v(winner.map(str::to_string)), v(t0()), v(t0())]],
    )
    .await;
    let rows = variants.iter().map(|(name, version)| vec![v(id), v(*name), v(*version), v(50)]).collect();
    insert(app, "experiment_variants", &["experiment_id", "name", "version", "weight"], rows).await;
}

async fn exposures(app: &TestApp, experiment: i64, list: &[(String, &str)]) {
    let rows =
        list.iter().map(|(subject, variant)| vec![v(experiment), v(*variant), v(subject.clone()), v(t0())]).collect();
    insert(app, "exposures", &["experiment_id", "variant", "subject_id", "exposed_at"], rows).await;
}

/// (name, version, control, exposures, completions, rate, interval, absolute, relative, p, warning)
type VariantRow =
    (&'static str, i64, bool, i64, i64, f64, (f64, f64), Option<f64>, Option<f64>, Option<f64>, Option<String>);

fn check_variants(results: &Value, expected: &[VariantRow]) {
    let variants = results["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), expected.len());
    for (actual, want) in variants.iter().zip(expected) {
        let (name, version, control, exposures, completions, rate, (low, high), absolute, relative, p, warning) = want;
        let what = |field: &str| format!("variant {name} {field}");
        assert_eq!(actual["name"], *name);
        assert_eq!(actual["version"], *version, "{}", what("version"));
        assert_eq!(actual["control"], *control, "{}", what("control"));
        assert_eq!(actual["exposures"], *exposures, "{}", what("exposures"));
        assert_eq!(actual["completions"], *completions, "{}", what("completions"));
        num(&actual["completionRate"], Some(*rate), &what("completionRate"));
        num(&actual["confidenceInterval"]["low"], Some(*low), &what("interval low"));
        num(&actual["confidenceInterval"]["high"], Some(*high), &what("interval high"));
        num(&actual["absoluteLift"], *absolute, &what("absoluteLift"));
        num(&actual["relativeLift"], *relative, &what("relativeLift"));
        num(&actual["pValue"], *p, &what("pValue"));
        assert_eq!(actual["warning"].as_str(), warning.as_deref(), "{}", what("warning"));
    }
}

async fn experiment_results_compare_variants_with_the_control(app: TestApp) {
    // Flow "big", one version; experiment "big-test" with three variants.
    app.publish(json!({ "key": "big", "title": "Big", "steps": [{ "key": "go", "title": "Go" }] })).await;
    let flow = flow_id(&app, "big", 1).await;
    experiment(&app, 10, "big-test", "big", "COMPLETED", Some("treat"), &[("control", 1), ("treat", 1), ("tiny", 1)])
        .await;
    // control: c0..c118 exposed; c0..c29 completed, c30..c99 in progress, c100..c118 never
    // enrolled (no subject row at all); plus u1, who completed another flow but not this one.
    //   → 120 exposures, 30 completions.
    // treat: t0..t129 exposed; t0..t51 completed → 130 exposures, 52 completions.
    // tiny: s0..s19 exposed; s0..s1 completed → 20 exposures, 2 completions.
    let mut people: Vec<(i64, String)> = Vec::new();
    let mut list: Vec<Enrollment> = Vec::new();
    let mut exposed: Vec<(String, &str)> = Vec::new();
    let groups: [(&str, &str, i64, i64, i64); 3] =
        [("c", "control", 119, 100, 30), ("t", "treat", 130, 130, 52), ("s", "tiny", 20, 20, 2)];
    for (g, (prefix, variant, exposures_n, enrolled_n, completed_n)) in groups.iter().enumerate() {
        for n in 0..*exposures_n {
            let key = format!("{prefix}{n}");
            exposed.push((key.clone(), variant));
            if n < *enrolled_n {
                let id = 1000 * (g as i64 + 1) + n;
                people.push((id, key));
                list.push(Enrollment {
                    id,
                    subject: id,
                    flow_id: flow,
                    flow_key: "big",
                    status: if n < *completed_n { "COMPLETED" } else { "IN_PROGRESS" },
                    started: t0(),
                    ends: (n < *completed_n).then(|| t0() + hours(1)),
                    experiment: Some("big-test"),
                    variant: Some(variant),
                });
            }
        }
    }
    exposed.push(("u1".into(), "control"));
    people.push((1, "u1".into()));
    let refs: Vec<(i64, &str)> = people.iter().map(|(id, key)| (*id, key.as_str())).collect();
    subjects(&app, &refs).await;
    enrollments(&app, &list).await;
    app.publish(json!({ "key": "other", "title": "Other", "steps": [{ "key": "go", "title": "Go" }] })).await;
    let other = flow_id(&app, "other", 1).await;
    enrollments(
        &app,
        &[Enrollment {
            id: 1,
            subject: 1,
            flow_id: other,
            flow_key: "other",
            status: "COMPLETED",
            started: t0(),
            ends: Some(t0() + hours(1)),
            experiment: None,
            variant: None,
        }],
    )
    .await;
    exposures(&app, 10, &exposed).await;

    let r = app.ok(&app.admin(), EXPERIMENT_RESULTS, json!({ "k": "big-test" })).await["experimentResults"].clone();
    assert_eq!(r["key"], "big-test");
    assert_eq!(r["flowKey"], "big");
    assert_eq!(r["state"], "COMPLETED");
    assert_eq!(r["winner"], "treat");
    // Worked out with Python (math.erfc for the normal tail), z = 1.959963984540054:
    //   Wilson: centre (p + z²/2n) / (1 + z²/n) ± z·sqrt(p(1−p)/n + z²/4n²) / (1 + z²/n)
    //   treat vs control: pooled 82/250 = 0.328, se = sqrt(0.328·0.672·(1/120 + 1/130)),
    //     z = (0.4 − 0.25) / se = 2.5238410249387275, p = erfc(|z|/√2) = 0.01160804097586298
    //   tiny vs control: pooled 32/140, z = −1.4790199457749038, p = 0.1391349840681842
    check_variants(
        &r,
        &[
            ("control", 1, true, 120, 30, 0.25, (0.18109821656809566, 0.33441136664125615), None, None, None, None),
            (
                "treat",
                1,
                false,
                130,
                52,
                0.4,
                (0.3198243104508396, 0.4859160017880467),
                Some(0.15),
                Some(0.6),
                Some(0.01160804097586298),
                None,
            ),
            (
                "tiny",
                1,
                false,
                20,
                2,
                0.1,
                (0.027866481213768224, 0.3010336452284873),
                Some(-0.15),
                Some(-0.6),
                Some(0.1391349840681842),
                Some(
                    "Too little data to conclude: variant `tiny` has 20 exposures, fewer than 100; \
                     variant `tiny` has 2 completions, fewer than 10."
                        .to_string(),
                ),
            ),
        ],
    );
}

async fn small_experiments_carry_a_warning(app: TestApp) {
    seed_onb(&app).await;
    // Experiment "exp" on onb: control → v1, treat → v2. Exposed: u1 (E1 completed), u2 (E2
    // in progress), u9 (never enrolled) to control; u5 (E5 completed), u6 (E6 in progress)
    // to treat. Control 1/3, treat 1/2.
    experiment(&app, 20, "exp", "onb", "STOPPED", None, &[("control", 1), ("treat", 2)]).await;
    let list: Vec<(String, &str)> =
        [("u1", "control"), ("u2", "control"), ("u9", "control"), ("u5", "treat"), ("u6", "treat")]
            .iter()
            .map(|(s, v)| (s.to_string(), *v))
            .collect();
    exposures(&app, 20, &list).await;

    let r = app.ok(&app.admin(), EXPERIMENT_RESULTS, json!({ "k": "exp" })).await["experimentResults"].clone();
    assert_eq!((r["state"].clone(), r["winner"].clone()), (json!("STOPPED"), Value::Null));
    // pooled 2/5 = 0.4, se = sqrt(0.4·0.6·(1/3 + 1/2)) = sqrt(0.2), z = (1/2 − 1/3)/se =
    // 0.372677996249965, p = 0.7093881150142263 (Python).
    let control_reasons = "control `control` has 3 exposures, fewer than 100; \
                           control `control` has 1 completion, fewer than 10; \
                           control `control` has 2 exposures without completion, fewer than 10";
    let control_warning = format!("Too little data to conclude: {control_reasons}.");
    let treat_warning = format!(
        "Too little data to conclude: {control_reasons}; variant `treat` has 2 exposures, fewer than 100; \
         variant `treat` has 1 completion, fewer than 10; variant `treat` has 1 exposure without completion, fewer than 10."
    );
    check_variants(
        &r,
        &[
            (
                "control",
                1,
                true,
                3,
                1,
                1.0 / 3.0,
                (0.06149194472039621, 0.7923403991979522),
                None,
                None,
                None,
                Some(control_warning),
            ),
            (
                "treat",
                2,
                false,
                2,
                1,
                0.5,
                (0.09453120573423074, 0.9054687942657693),
                Some(1.0 / 6.0),
                Some(0.5),
                Some(0.7093881150142263),
                Some(treat_warning),
            ),
        ],
    );

    // An experiment nobody was exposed to yet: no rates, no interval, no test; a warning.
    experiment(&app, 21, "fresh", "onb", "DRAFT", None, &[("control", 1), ("treat", 2)]).await;
    let r = app.ok(&app.admin(), EXPERIMENT_RESULTS, json!({ "k": "fresh" })).await["experimentResults"].clone();
    for variant in r["variants"].as_array().unwrap() {
        assert_eq!((variant["exposures"].clone(), variant["completions"].clone()), (json!(0), json!(0)));
        for field in ["completionRate", "confidenceInterval", "absoluteLift", "relativeLift", "pValue"] {
            assert!(variant[field].is_null(), "{field} of {variant}");
        }
        assert!(variant["warning"].as_str().unwrap().contains("has 0 exposures, fewer than 100"));
    }
}

// ---------------------------------------------------------------------------------------
// stepImpact
// ---------------------------------------------------------------------------------------

const STEP_IMPACT: &str = "query($f: String!, $d: Int!) { stepImpact(flowKey: $f, retentionDays: $d) {
    flowKey retentionDays cohortStartedBefore cohort retained retentionRate
    steps { stepKey title position completionRate completers completerRetentionRate nonCompleters
            nonCompleterRetentionRate lift } } }";

async fn step_impact_splits_the_cohort_by_retention(app: TestApp) {
    // Flow "ret": x, y, z (z applies to nobody here). Retention: 7 days.
    app.publish(json!({ "key": "ret", "title": "Retention", "steps": [
        { "key": "x", "title": "Connect" },
        { "key": "y", "title": "Invite" },
        { "key": "z", "title": "Photo", "required": false, "condition": { "plan": "team" } }
    ]}))
    .await;
    let flow = flow_id(&app, "ret", 1).await;
    subjects(&app, &[(101, "r1"), (102, "r2"), (103, "r3"), (104, "r4"), (105, "workspace:acme"), (106, "r6")]).await;
    let s = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
    let ms = Duration::milliseconds;
    let recent = Utc::now() - days(1);
    // R1 started S+250ms: an event exactly 7 days later (to the millisecond): retained.
    // R2 started S+1h: its latest event 1 µs before S+1h+7d: not retained.
    // R3 started S: an event 30 days later: retained.
    // R4 started S+500ms: an event 6 days later only: not retained.
    // R5, the workspace acme, started S: a member's event sent with workspaceId acme 8 days
    //   later: retained.
    // R6 started yesterday: too recent to tell, not in the cohort.
    let e = |id: i64, started: DateTime<Utc>| Enrollment {
        id,
        subject: id,
        flow_id: flow,
        flow_key: "ret",
        status: "IN_PROGRESS",
        started,
        ends: None,
        experiment: None,
        variant: None,
    };
    enrollments(
        &app,
        &[e(101, s + ms(250)), e(102, s + hours(1)), e(103, s), e(104, s + ms(500)), e(105, s), e(106, recent)],
    )
    .await;
    // Completed x: R1, R2, R4, R5 (and R6, outside the cohort). Completed y: R1, R5;
    // R4 skipped y. Nobody has a row for z.
    let done = |n: i64, key| (n, key, "COMPLETED", Some(s), Some(s + hours(1)));
    let pending = |n: i64, key| (n, key, "PENDING", Some(s), None);
    steps(
        &app,
        &[
            done(101, "x"),
            done(101, "y"),
            done(102, "x"),
            pending(102, "y"),
            pending(103, "x"),
            pending(103, "y"),
            done(104, "x"),
            (104, "y", "SKIPPED", Some(s), Some(s + hours(2))),
            done(105, "x"),
            done(105, "y"),
            (106, "x", "COMPLETED", Some(recent), Some(recent + hours(1))),
        ],
    )
    .await;
    let events: Vec<(&str, i64, Option<i64>, DateTime<Utc>)> = vec![
        ("r1-late", 101, None, s + ms(250) + days(7)),
        ("r2-early", 102, None, s + days(2)),
        ("r2-almost", 102, None, s + hours(1) + days(7) - Duration::microseconds(1)),
        ("r3-late", 103, None, s + days(30)),
        ("r4-early", 104, None, s + days(6)),
        ("acme-late", 106, Some(105), s + days(8)),
    ];
    let rows = events
        .into_iter()
        .map(|(id, subject, workspace, at)| {
            vec![v(id), v(subject), v("ping"), v(json!({})), v(at), v(at), v(workspace)]
        })
        .collect();
    insert(
        &app,
        "events",
        &["event_id", "subject_id", "name", "properties", "occurred_at", "received_at", "workspace_id"],
        rows,
    )
    .await;

    let before = Utc::now() - days(7);
    let r = app.ok(&app.admin(), STEP_IMPACT, json!({ "f": "ret", "d": 7 })).await["stepImpact"].clone();
    let after = Utc::now() - days(7);
    assert_eq!((r["flowKey"].clone(), r["retentionDays"].clone()), (json!("ret"), json!(7)));
    let cutoff = time(&r["cohortStartedBefore"]).unwrap();
    assert!(before - Duration::seconds(1) <= cutoff && cutoff <= after, "{cutoff} is not now − 7 days");
    // Cohort R1..R5; retained R1, R3, R5.
    assert_eq!((r["cohort"].clone(), r["retained"].clone()), (json!(5), json!(3)));
    num(&r["retentionRate"], Some(0.6), "retentionRate");
    // (key, title, completion rate, completers, their rate, non-completers, their rate, lift)
    type Row = (&'static str, &'static str, f64, i64, Option<f64>, i64, Option<f64>, Option<f64>);
    let expected: [Row; 3] = [
        // x: completers R1, R2, R4, R5 (retained R1, R5: 2/4); non-completer R3 (1/1).
        ("x", "Connect", 0.8, 4, Some(0.5), 1, Some(1.0), Some(-0.5)),
        // y: completers R1, R5 (2/2); non-completers R2, R3, R4 (R3: 1/3).
        ("y", "Invite", 0.4, 2, Some(1.0), 3, Some(1.0 / 3.0), Some(2.0 / 3.0)),
        // z: no completers: no rate, no lift; everyone else 3/5.
        ("z", "Photo", 0.0, 0, None, 5, Some(0.6), None),
    ];
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for (i, (step, (key, title, completion, completers, c_rate, non, n_rate, lift))) in
        steps.iter().zip(expected).enumerate()
    {
        assert_eq!((step["stepKey"].clone(), step["title"].clone()), (json!(key), json!(title)));
        assert_eq!(step["position"], i as i64 + 1);
        num(&step["completionRate"], Some(completion), &format!("{key} completionRate"));
        assert_eq!(step["completers"], completers, "{key} completers");
        num(&step["completerRetentionRate"], c_rate, &format!("{key} completerRetentionRate"));
        assert_eq!(step["nonCompleters"], non, "{key} nonCompleters");
        num(&step["nonCompleterRetentionRate"], n_rate, &format!("{key} nonCompleterRetentionRate"));
        num(&step["lift"], lift, &format!("{key} lift"));
    }

    // A horizon longer than anyone's tenure: nobody is in the cohort yet.
    let days_since = (Utc::now() - s).num_days() as i32 + 1;
    let r = app.ok(&app.admin(), STEP_IMPACT, json!({ "f": "ret", "d": days_since })).await["stepImpact"].clone();
    assert_eq!((r["cohort"].clone(), r["retained"].clone()), (json!(0), json!(0)));
    assert!(r["retentionRate"].is_null());
    assert!(r["steps"].as_array().unwrap().iter().all(|s| s["completionRate"].is_null() && s["lift"].is_null()));
}

// ---------------------------------------------------------------------------------------
// timeSeries
// ---------------------------------------------------------------------------------------

const TIME_SERIES: &str = "query($f: String!, $b: TimeBucket!, $s: DateTime!, $u: DateTime!) {
    timeSeries(flowKey: $f, bucket: $b, since: $s, until: $u) { start end starts completions } }";

/// (start, starts, completions) per bucket, the start as an offset from T in days.
fn check_series(series: &Value, width: i64, expected: &[(i64, i64, i64)]) {
    let buckets = series.as_array().expect("buckets");
    assert_eq!(buckets.len(), expected.len(), "{series:#}");
    for (bucket, (day, starts, completions)) in buckets.iter().zip(expected) {
        assert_eq!(time(&bucket["start"]), Some(t0() + days(*day)), "{bucket}");
        assert_eq!(time(&bucket["end"]), Some(t0() + days(day + width)), "{bucket}");
        assert_eq!(
            (bucket["starts"].clone(), bucket["completions"].clone()),
            (json!(starts), json!(completions)),
            "{bucket}"
        );
    }
}

async fn time_series_fills_every_bucket(app: TestApp) {
    seed_onb(&app).await;
    let admin = app.admin();
    // Days T+1 .. T+5: starts E2 (d1), E3 (d2), E4 and E5 (d3), E6 (d4), nothing on d5.
    // Completions in the window: E4 (T+3d+4h) and E5 (T+3d+18h); E1's (T+10h) is before it.
    let s =
        app.ok(&admin, TIME_SERIES, json!({ "f": "onb", "b": "DAY", "s": t0() + days(1), "u": t0() + days(6) })).await;
    check_series(&s["timeSeries"], 1, &[(1, 1, 0), (2, 1, 0), (3, 2, 2), (4, 1, 0), (5, 0, 0)]);

    // Weeks from Wednesday T+2d to T+15d: the weeks of Monday T, T+7d and T+14d. Only what
    // happened in the window counts: E2 (T+1d) does not, E3..E6 do; E7 (T+10d) in week 2.
    let s = app
        .ok(&admin, TIME_SERIES, json!({ "f": "onb", "b": "WEEK", "s": t0() + days(2), "u": t0() + days(15) }))
        .await;
    check_series(&s["timeSeries"], 7, &[(0, 4, 2), (7, 1, 1), (14, 0, 0)]);

    // A window inside one day: one bucket, the day's midnight to the next.
    let s = app
        .ok(&admin, TIME_SERIES, json!({ "f": "onb", "b": "DAY", "s": t0() + hours(9), "u": t0() + hours(11) }))
        .await;
    check_series(&s["timeSeries"], 1, &[(0, 0, 1)]);

    // Exactly 1000 daily buckets is allowed; 1001 is refused.
    let s = app.ok(&admin, TIME_SERIES, json!({ "f": "onb", "b": "DAY", "s": t0(), "u": t0() + days(1000) })).await;
    assert_eq!(s["timeSeries"].as_array().unwrap().len(), 1000);
    let code =
        app.code(Some(&admin), TIME_SERIES, json!({ "f": "onb", "b": "DAY", "s": t0(), "u": t0() + days(1001) })).await;
    assert_eq!(code, "VALIDATION_FAILED");
}

// ---------------------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------------------

async fn analytics_errors(app: TestApp) {
    seed_onb(&app).await;
    experiment(&app, 20, "exp", "onb", "RUNNING", None, &[("control", 1), ("treat", 2)]).await;
    let admin = app.admin();
    let window =
        |s: DateTime<Utc>, u: DateTime<Utc>| json!({ "f": "onb", "b": "DAY", "s": s, "u": u, "d": 7, "k": "exp" });
    let ok = window(t0(), t0() + days(1));
    let all = [FUNNEL, FLOW_STATS, STEP_IMPACT, TIME_SERIES, EXPERIMENT_RESULTS];

    // Admin only: users and backends are refused.
    for query in all {
        for token in [app.user("u1"), app.service()] {
            assert_eq!(app.code(Some(&token), query, ok.clone()).await, "FORBIDDEN", "{query}");
        }
        assert_eq!(app.code(None, query, ok.clone()).await, "UNAUTHENTICATED", "{query}");
        app.ok(&admin, query, ok.clone()).await;
    }

    // Unknown flow, version or experiment.
    let mut unknown = ok.clone();
    unknown["f"] = json!("nope");
    unknown["k"] = json!("nope");
    for query in all {
        assert_eq!(app.code(Some(&admin), query, unknown.clone()).await, "NOT_FOUND", "{query}");
    }
    let mut version = ok.clone();
    version["v"] = json!(9);
    for query in [FUNNEL, FLOW_STATS] {
        assert_eq!(app.code(Some(&admin), query, version.clone()).await, "NOT_FOUND", "{query}");
    }

    // An empty or reversed window.
    for (s, u) in [(t0(), t0()), (t0() + days(1), t0())] {
        for query in [FUNNEL, FLOW_STATS, TIME_SERIES] {
            assert_eq!(app.code(Some(&admin), query, window(s, u)).await, "VALIDATION_FAILED", "{query}");
        }
    }
    // A retention horizon out of range.
    for d in [0, -1, 3651] {
        let mut bad = ok.clone();
        bad["d"] = json!(d);
        assert_eq!(app.code(Some(&admin), STEP_IMPACT, bad).await, "VALIDATION_FAILED", "retentionDays {d}");
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: seed 000's reference funnel query agrees with the funnel
// ---------------------------------------------------------------------------------------

/// Seed 000's "Drop-Off Analytics Query", adapted to this schema: a step is reached by the
/// enrollments that have a row for it (it applied), completed when that row is COMPLETED,
/// and the average time runs from the enrollment's start.
const REFERENCE_FUNNEL: &str = "
    SELECT sp.step_key,
           COUNT(DISTINCT en.subject_id) AS users_reached,
           COUNT(DISTINCT CASE WHEN sp.status = 'COMPLETED' THEN en.subject_id END) AS users_completed,
           ROUND(100.0 * COUNT(DISTINCT CASE WHEN sp.status = 'COMPLETED' THEN en.subject_id END)
                 / NULLIF(COUNT(DISTINCT en.subject_id), 0), 1) AS completion_pct,
           AVG(EXTRACT(EPOCH FROM (sp.completed_at - en.started_at)) / 3600)::float8 AS avg_hours_to_complete
    FROM flows f
    JOIN enrollments en ON en.flow_id = f.id
    JOIN step_progress sp ON sp.enrollment_id = en.id
    WHERE f.key = 'onb' AND en.started_at >= $1 AND en.started_at < $2
    GROUP BY sp.step_key
    ORDER BY sp.step_key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_funnel_sql_agrees_on_postgres() {
    let app = TestApp::postgres().await;
    seed_onb(&app).await;
    for (since, until) in [(t0(), t0() + days(30)), (t0() + days(1), t0() + days(4) + Duration::milliseconds(250))] {
        let statement =
            Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, REFERENCE_FUNNEL, [v(since), v(until)]);
        let rows = app.db.query_all_raw(statement).await.expect("reference query");
        let f = funnel(&app, json!({ "f": "onb", "s": since, "u": until })).await;
        let mut compared = 0;
        for row in rows {
            let key: String = row.try_get_by("step_key").unwrap();
            let reached: i64 = row.try_get_by("users_reached").unwrap();
            let completed: i64 = row.try_get_by("users_completed").unwrap();
            let avg: Option<f64> = row.try_get_by("avg_hours_to_complete").unwrap();
            // Steps v2 dropped (c, d) are not in the funnel of the newest version.
            let Some(step) = f["steps"].as_array().unwrap().iter().find(|s| s["stepKey"] == key.as_str()) else {
                assert!(["c", "d"].contains(&key.as_str()), "{key} missing from the funnel");
                continue;
            };
            assert_eq!(step["applied"], reached, "{key} applied vs users_reached");
            assert_eq!(step["completed"], completed, "{key} completed vs users_completed");
            compared += 1;
            // The averages, by hand: all enrollments a [1,2,1,2,3,1] → 10/6, e [5], b [3,4,6,8]
            // → 21/4; in the window a [2,1,2] → 5/3, e [5], b [4,6] → 5.
            let expected = match (since == t0(), key.as_str()) {
                (true, "a") => 10.0 / 6.0,
                (true, "e") | (false, "e") => 5.0,
                (true, "b") => 21.0 / 4.0,
                (false, "a") => 5.0 / 3.0,
                (false, "b") => 5.0,
                _ => unreachable!(),
            };
            num(&json!(avg), Some(expected), &format!("{key} avg hours"));
        }
        assert_eq!(compared, 3);
    }
}
