//! The analytics rollup stays exact under the engine's own writes: after enrollments,
//! completions, skips, trigger events, a whole-flow skip, an experiment and a version
//! migration, the cells appended incrementally equal the cells rebuilt from the rows, and
//! funnel and flowStats answer the same before compaction, after it and after a rebuild,
//! with the counts a hand count of the rows gives.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::both;
use crate::common::TestApp;

both!(incremental_rollup_equals_a_rebuild_from_the_rows, a_window_inside_one_day_reads_the_rows);

fn flow(version_steps: Value) -> Value {
    json!({ "key": "roll", "title": "Rollup", "steps": version_steps })
}

fn v1() -> Value {
    flow(json!([
        { "key": "a", "title": "A", "points": 3 },
        { "key": "b", "title": "B", "dependsOn": ["a"] },
        { "key": "c", "title": "C", "required": false, "trigger": { "event": "c.done" } },
        { "key": "d", "title": "D", "required": false }
    ]))
}

fn v2() -> Value {
    flow(json!([
        { "key": "a", "title": "A", "points": 3 },
        { "key": "e", "title": "E", "required": false },
        { "key": "b", "title": "B", "dependsOn": ["a"] }
    ]))
}

/// Every cell, summed over counts and deltas, without zeros.
async fn cells(app: &TestApp) -> BTreeMap<String, i64> {
    let sql = "SELECT flow_id, start_day, variant, step_key, measure, bucket, CAST(SUM(n) AS BIGINT) AS n FROM (
                 SELECT flow_id, start_day, variant, step_key, measure, bucket, n FROM rollup_counts
                 UNION ALL
                 SELECT flow_id, start_day, variant, step_key, measure, bucket, n FROM rollup_deltas) c
               GROUP BY flow_id, start_day, variant, step_key, measure, bucket";
    let rows = app.db.query_all_raw(Statement::from_string(app.db.get_database_backend(), sql)).await.unwrap();
    rows.iter()
        .map(|r| {
            let key = format!(
                "{}/{}/{}/{}/{}/{}",
                r.try_get_by::<i64, _>("flow_id").unwrap(),
                r.try_get_by::<i32, _>("start_day").unwrap(),
                r.try_get_by::<String, _>("variant").unwrap(),
                r.try_get_by::<String, _>("step_key").unwrap(),
                r.try_get_by::<String, _>("measure").unwrap(),
                r.try_get_by::<i32, _>("bucket").unwrap(),
            );
            (key, r.try_get_by::<i64, _>("n").unwrap())
        })
        .filter(|(_, n)| *n != 0)
        .collect()
}

const FUNNEL: &str =
    "query($f: String!, $since: DateTime, $until: DateTime) { funnel(flowKey: $f, since: $since, until: $until) {
    enrolled steps { stepKey applied reached completed skipped medianHours p90Hours } } }";
const STATS: &str =
    "query($f: String!, $since: DateTime, $until: DateTime) { flowStats(flowKey: $f, since: $since, until: $until) {
    enrolled inProgress completed skipped medianHoursToComplete p90HoursToComplete
    byVersion { version enrolled completed medianHoursToComplete p90HoursToComplete }
    byVariant { variant enrolled completed medianHoursToComplete p90HoursToComplete } } }";

async fn reports(app: &TestApp, window: Value) -> (Value, Value) {
    let mut variables = json!({ "f": "roll" });
    variables.as_object_mut().unwrap().extend(window.as_object().unwrap().clone());
    let funnel = app.ok(&app.admin(), FUNNEL, variables.clone()).await["funnel"].clone();
    let stats = app.ok(&app.admin(), STATS, variables).await["flowStats"].clone();
    (funnel, stats)
}

async fn activity(app: &TestApp) {
    app.publish(v1()).await;
    let create = "mutation($k: String!, $f: String!, $v: [VariantInput!]!) { createExperiment(key: $k, flowKey: $f, variants: $v) { key } }";
    let variants =
        json!([{ "name": "control", "version": 1, "weight": 1 }, { "name": "same", "version": 1, "weight": 1 }]);
    app.ok(&app.admin(), create, json!({ "k": "x", "f": "roll", "v": variants })).await;
    app.ok(&app.admin(), "mutation { startExperiment(key: \"x\") { key } }", json!({})).await;
    for u in ["u1", "u2", "u3", "u4", "u5", "u6"] {
        app.start_as(u, "roll").await;
    }
    for (u, step) in [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u3", "a"), ("u3", "b"), ("u4", "d")] {
        app.complete_as(u, "roll", step).await;
    }
    let skip = "mutation($f: String!, $k: String!) { skipStep(flowKey: $f, stepKey: $k) { status } }";
    app.ok(&app.user("u2"), skip, json!({ "f": "roll", "k": "d" })).await;
    app.track_event("ev-1", "u2", "c.done", json!({})).await;
    app.track_event("ev-1", "u2", "c.done", json!({})).await; // a duplicate counts nothing
    app.track_event("ev-2", "u7", "c.done", json!({})).await; // not enrolled: nothing
    let skip_flow = "mutation($f: String!) { skipOnboarding(flowKey: $f) { status } }";
    app.ok(&app.user("u5"), skip_flow, json!({ "f": "roll" })).await;
    // Stop the experiment so the new version takes newcomers, then move v1 to v2.
    app.ok(&app.admin(), "mutation { stopExperiment(key: \"x\") { key } }", json!({})).await;
    app.publish(v2()).await;
    let migrate =
        "mutation { migrateEnrollments(flowKey: \"roll\", fromVersion: 1, toVersion: 2, dryRun: false) { moved } }";
    app.ok(&app.admin(), migrate, json!({})).await;
    app.start_as("u8", "roll").await;
    app.complete_as("u8", "roll", "a").await;
    app.complete_as("u8", "roll", "e").await;
}

async fn incremental_rollup_equals_a_rebuild_from_the_rows(app: TestApp) {
    activity(&app).await;
    let incremental = cells(&app).await;
    assert!(!incremental.is_empty());
    let everything = json!({});
    let before = reports(&app, everything.clone()).await;

    // Hand counts over the rows: every step row is "applied", completed rows are counted.
    let applied = app.count("SELECT COUNT(*) FROM step_progress").await;
    let completed = app.count("SELECT COUNT(*) FROM step_progress WHERE status = 'COMPLETED'").await;
    let funnel_applied: i64 =
        before.0["steps"].as_array().unwrap().iter().map(|s| s["applied"].as_i64().unwrap()).sum();
    let funnel_completed: i64 =
        before.0["steps"].as_array().unwrap().iter().map(|s| s["completed"].as_i64().unwrap()).sum();
    // The funnel lists v2's steps (a, e, b): rows of v1's c and d are counted under no step.
    let other = app.count("SELECT COUNT(*) FROM step_progress WHERE step_key IN ('c', 'd')").await;
    let other_completed =
        app.count("SELECT COUNT(*) FROM step_progress WHERE step_key IN ('c', 'd') AND status = 'COMPLETED'").await;
    assert_eq!(funnel_applied, applied - other);
    assert_eq!(funnel_completed, completed - other_completed);
    assert_eq!(before.0["enrolled"], json!(app.count("SELECT COUNT(*) FROM enrollments").await));
    let stats = &before.1;
    assert_eq!(stats["enrolled"], json!(7));
    assert_eq!(stats["skipped"], json!(1));
    assert_eq!(
        stats["completed"],
        json!(app.count("SELECT COUNT(*) FROM enrollments WHERE status = 'COMPLETED'").await)
    );
    // The migration moved cells with the rows: each version counts what the rows say.
    for (i, version) in [1, 2].into_iter().enumerate() {
        let on = app
            .count(&format!(
                "SELECT COUNT(*) FROM enrollments en JOIN flows f ON f.id = en.flow_id WHERE f.version = {version}"
            ))
            .await;
        assert_eq!(before.1["byVersion"][i]["enrolled"], json!(on), "{}", before.1);
    }
    assert!(before.1["byVersion"][1]["enrolled"].as_i64().unwrap() >= 5, "{}", before.1);
    assert!(stats["medianHoursToComplete"].is_number(), "{stats}");

    onramp::persistence::rollup::compact_all(&app.db).await.unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM rollup_deltas").await, 0);
    assert_eq!(cells(&app).await, incremental, "compaction changed a sum");
    assert_eq!(reports(&app, everything.clone()).await, before);

    onramp::persistence::rollup::rebuild(&app.db).await.unwrap();
    assert_eq!(cells(&app).await, incremental, "the incremental cells differ from a rebuild from the rows");
    assert_eq!(reports(&app, everything).await, before);
}

/// A window shorter than a day is read from the rows alone; one of whole days around it is
/// answered by the rollup alone. Both hold every enrollment, so both report the same.
async fn a_window_inside_one_day_reads_the_rows(app: TestApp) {
    let start = chrono::Utc::now() - chrono::Duration::seconds(1);
    activity(&app).await;
    let midnight = start.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let days = json!({ "since": midnight - chrono::Duration::days(1), "until": midnight + chrono::Duration::days(2) });
    let rows = json!({ "since": start, "until": chrono::Utc::now() + chrono::Duration::minutes(5) });
    let (a, b) = (reports(&app, days).await, reports(&app, rows).await);
    assert_eq!(a.0["steps"], b.0["steps"]);
    assert_eq!(a.1, b.1);
    assert_eq!(a.1["enrolled"], json!(7));
}
