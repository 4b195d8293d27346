//! `onramp demo-data`: the generated population has seed 002's mix, its rows are the ones
//! the engine writes (the server reads them back as the same progress), runs are
//! deterministic, experiments assign variants by the engine's hash, and nudges are logged
//! and scheduled as the scheduler would have, with a lift `nudgeResults` shows.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use onramp::clock::Clock;
use onramp::demo_data::{self, Options};
use onramp::domain::experiments::{Variant, assign};
use onramp::domain::nudges::{Caps, following, in_holdout, schedule_for};
use onramp::nudges::NudgeSettings;
use onramp::persistence::enrollments;
use onramp::persistence::flows::FlowStore;
use onramp::service::demo_flow_definition;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::both;
use crate::common::TestApp;

both!(
    generated_population_has_the_seeded_mix_and_consistent_rows,
    same_seed_gives_identical_data,
    the_server_reads_generated_subjects_as_generated,
    running_experiments_assign_variants_by_the_engine_hash,
    unknown_flows_and_reused_seeds_are_refused,
    nudges_are_logged_and_scheduled_as_the_scheduler_would_have,
);

mod a_scheduler_started_afterwards_goes_on_from_the_log {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let app = crate::common::TestApp::sqlite_with_nudges(super::scheduler(), None).await;
        super::a_scheduler_started_afterwards_goes_on_from_the_log(app).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let app = crate::common::TestApp::postgres_with_nudges(super::scheduler(), None).await;
        super::a_scheduler_started_afterwards_goes_on_from_the_log(app).await;
    }
}

const REQUIRED: &str = "('verify_email', 'invite_teammate', 'connect_integration')";

fn until() -> DateTime<Utc> {
    "2026-03-01T00:00:00Z".parse().expect("until")
}

/// Small batches, so a run of a few hundred users spans several transactions.
fn options(users: u64) -> Options {
    let mut options = Options::new(users, "new_user");
    options.until = until();
    options.batch = 300;
    options
}

async fn run(app: &TestApp, options: &Options) -> demo_data::Summary {
    let mut reports = Vec::new();
    let summary = demo_data::generate(&app.db, options, |p| reports.push(p.done)).await.expect("demo-data");
    assert_eq!(reports.last().copied(), Some(options.users), "progress reaches the total");
    assert!(reports.windows(2).all(|w| w[0] < w[1]), "progress only grows: {reports:?}");
    summary
}

/// The JSON attribute `plan` of subject `s`, in the backend's dialect.
fn plan(app: &TestApp) -> &'static str {
    if app.is_postgres() { "s.attributes->>'plan'" } else { "json_extract(s.attributes, '$.plan')" }
}

async fn share(app: &TestApp, sql: &str, total: i64) -> f64 {
    app.count(sql).await as f64 / total as f64
}

/// A time column compared with a bound time: how many rows match.
async fn count_at(app: &TestApp, sql: &str, at: DateTime<Utc>) -> i64 {
    let sql = if app.is_postgres() { sql.replace('?', "$1") } else { sql.to_string() };
    let statement = Statement::from_sql_and_values(app.db.get_database_backend(), sql, [at.into()]);
    let row = app.db.query_one_raw(statement).await.expect("query").expect("row");
    row.try_get_by_index::<i64>(0).expect("count")
}

async fn generated_population_has_the_seeded_mix_and_consistent_rows(app: TestApp) {
    let n = 1000;
    let summary = run(&app, &options(n)).await;
    assert_eq!(summary.users, n);
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects WHERE external_id LIKE 'demo-42-%'").await, 1000);
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 1000);
    assert_eq!(app.count("SELECT COUNT(*) FROM flows WHERE key = 'new_user'").await, 1, "the demo flow was published");

    // Seed 002's mix: 60% completed, 20% in progress, 10% not started, 10% skipped.
    let completed = share(&app, "SELECT COUNT(*) FROM enrollments WHERE status = 'COMPLETED'", 1000).await;
    let skipped = share(&app, "SELECT COUNT(*) FROM enrollments WHERE status = 'SKIPPED'", 1000).await;
    let untouched = "SELECT COUNT(*) FROM enrollments e WHERE e.status = 'IN_PROGRESS' AND NOT EXISTS \
        (SELECT 1 FROM step_progress p WHERE p.enrollment_id = e.id AND (p.status <> 'PENDING' OR p.started_at IS NOT NULL))";
    let not_started = share(&app, untouched, 1000).await;
    let in_progress =
        share(&app, "SELECT COUNT(*) FROM enrollments WHERE status = 'IN_PROGRESS'", 1000).await - not_started;
    assert!((completed - 0.6).abs() < 0.05, "completed {completed}");
    assert!((in_progress - 0.2).abs() < 0.04, "in progress {in_progress}");
    assert!((not_started - 0.1).abs() < 0.03, "not started {not_started}");
    assert!((skipped - 0.1).abs() < 0.03, "skipped {skipped}");
    assert_eq!(summary.completed as f64 / 1000.0, completed, "the summary counts what was written");
    assert_eq!(summary.not_started as f64 / 1000.0, not_started);
    assert_eq!(summary.skipped as f64 / 1000.0, skipped);
    // In progress "at various steps": some stopped before each required step after the first.
    let stopped_later = "SELECT COUNT(*) FROM enrollments e WHERE e.status = 'IN_PROGRESS' AND EXISTS \
        (SELECT 1 FROM step_progress p WHERE p.enrollment_id = e.id AND p.step_key = 'verify_email' AND p.status = 'COMPLETED')";
    assert!(app.count(stopped_later).await > 50, "some in-progress subjects are past the first step");

    // A row for every step that applies, and none for a step that does not.
    let plan = plan(&app);
    let wrong_rows = format!(
        "SELECT COUNT(*) FROM enrollments e JOIN subjects s ON s.id = e.subject_id \
         WHERE (SELECT COUNT(*) FROM step_progress p WHERE p.enrollment_id = e.id) \
         <> CASE WHEN {plan} = 'team' THEN 4 ELSE 3 END"
    );
    assert_eq!(app.count(&wrong_rows).await, 0, "one row per applicable step");
    let invites_off_plan = format!(
        "SELECT COUNT(*) FROM step_progress p JOIN enrollments e ON e.id = p.enrollment_id \
         JOIN subjects s ON s.id = e.subject_id WHERE p.step_key = 'invite_teammate' AND {plan} <> 'team'"
    );
    assert_eq!(app.count(&invites_off_plan).await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress").await as u64, summary.step_rows);

    // Reached: the first step from enrollment on; the others exactly when verify_email was
    // finished, and never after they were acted on.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM step_progress p JOIN enrollments e ON e.id = p.enrollment_id \
             WHERE p.step_key = 'verify_email' AND (p.available_at IS NULL OR p.available_at <> e.started_at)"
        )
        .await,
        0
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM step_progress p JOIN step_progress v ON v.enrollment_id = p.enrollment_id \
             AND v.step_key = 'verify_email' WHERE p.step_key <> 'verify_email' AND \
             (CASE WHEN v.status = 'COMPLETED' THEN p.available_at IS NULL OR p.available_at <> v.completed_at \
              ELSE p.available_at IS NOT NULL END)"
        )
        .await,
        0,
        "a dependent step is reached when its dependency completes"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM step_progress WHERE (status <> 'PENDING' OR started_at IS NOT NULL) \
             AND (available_at IS NULL OR available_at > COALESCE(started_at, completed_at, skipped_at))"
        )
        .await,
        0,
        "every step acted on was reached first"
    );

    // Completed enrollments: completed after they started, every required step completed,
    // at the moment the last one was.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM enrollments WHERE status = 'COMPLETED' \
             AND (completed_at IS NULL OR completed_at < started_at OR skipped_at IS NOT NULL)"
        )
        .await,
        0
    );
    let required_open = format!(
        "SELECT COUNT(*) FROM enrollments e JOIN step_progress p ON p.enrollment_id = e.id \
         WHERE e.status = 'COMPLETED' AND p.step_key IN {REQUIRED} AND p.status <> 'COMPLETED'"
    );
    assert_eq!(app.count(&required_open).await, 0, "completed means every required step completed");
    let completion_time = format!(
        "SELECT COUNT(*) FROM enrollments e WHERE e.status = 'COMPLETED' AND e.completed_at <> \
         (SELECT MAX(p.completed_at) FROM step_progress p WHERE p.enrollment_id = e.id AND p.step_key IN {REQUIRED})"
    );
    assert_eq!(app.count(&completion_time).await, 0, "completion is when the last required step completed");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments WHERE status = 'SKIPPED' AND skipped_at IS NULL").await, 0);
    assert!(
        app.count("SELECT COUNT(*) FROM step_progress WHERE status = 'SKIPPED' AND step_key = 'add_profile_photo'")
            .await
            > 20,
        "some optional steps are skipped"
    );

    // Points: the enrollment's total is its ledger's sum; one award per completed step.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM enrollments e WHERE e.points <> \
             (SELECT COALESCE(SUM(l.amount), 0) FROM points_ledger l WHERE l.enrollment_id = e.id)"
        )
        .await,
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM points_ledger").await,
        app.count("SELECT COUNT(*) FROM step_progress WHERE status = 'COMPLETED'").await,
        "every demo step has points"
    );
    assert!(app.count("SELECT COUNT(*) FROM enrollments WHERE points > 0").await > 500);

    // Triggered steps were completed by their event, sent by the subject at that moment.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM step_progress p JOIN enrollments e ON e.id = p.enrollment_id \
             JOIN subjects s ON s.id = e.subject_id WHERE p.status = 'COMPLETED' AND (p.source <> 'EVENT' \
             OR p.completed_by <> s.external_id OR NOT EXISTS (SELECT 1 FROM events ev WHERE ev.event_id = p.event_id \
             AND ev.subject_id = s.id AND ev.occurred_at = p.completed_at))"
        )
        .await,
        0
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await as u64, summary.events());

    // Times: enrollments within the eight weeks, nothing after `until`.
    let from = until() - Duration::weeks(8);
    assert_eq!(count_at(&app, "SELECT COUNT(*) FROM enrollments WHERE started_at < ?", from).await, 0);
    assert_eq!(count_at(&app, "SELECT COUNT(*) FROM events WHERE occurred_at > ?", until()).await, 0);
    assert_eq!(count_at(&app, "SELECT COUNT(*) FROM enrollments WHERE last_activity_at > ?", until()).await, 0);
    assert_eq!(count_at(&app, "SELECT COUNT(*) FROM step_progress WHERE updated_at > ?", until()).await, 0);
    let recent =
        count_at(&app, "SELECT COUNT(*) FROM enrollments WHERE started_at > ?", until() - Duration::weeks(4)).await;
    assert!(recent > 550, "more recent enrollments are more likely: {recent} of 1000 in the last half");

    // Retention: subjects who completed the key step are much more often active later.
    let active = |photo: &str| {
        format!(
            "SELECT COUNT(*) FROM enrollments e JOIN step_progress p ON p.enrollment_id = e.id \
             AND p.step_key = 'add_profile_photo' WHERE p.status {photo} 'COMPLETED' AND EXISTS \
             (SELECT 1 FROM events ev WHERE ev.subject_id = e.subject_id AND ev.name = 'app.session')"
        )
    };
    let with = |photo: &str| {
        format!(
            "SELECT COUNT(*) FROM step_progress p WHERE p.step_key = 'add_profile_photo' AND p.status {photo} 'COMPLETED'"
        )
    };
    let retained_with = share(&app, &active("="), app.count(&with("=")).await).await;
    let retained_without = share(&app, &active("<>"), app.count(&with("<>")).await).await;
    assert_eq!(summary.key_step, "add_profile_photo");
    assert!(
        retained_with > retained_without + 0.2,
        "the key step drives activity: {retained_with} vs {retained_without}"
    );
}

/// Every generated row in a stable order, without row ids (they depend on the database).
async fn fingerprint(app: &TestApp) -> Vec<String> {
    let mut rows = app
        .rows(
            "SELECT s.external_id || ' ' || CAST(s.attributes AS TEXT) || ' ' || e.status || ' ' || \
             CAST(e.started_at AS TEXT) || ' ' || COALESCE(CAST(e.completed_at AS TEXT), '-') || ' ' || \
             COALESCE(CAST(e.skipped_at AS TEXT), '-') || ' ' || CAST(e.last_activity_at AS TEXT) || ' ' || \
             CAST(e.points AS TEXT) || ' ' || CAST(e.revision AS TEXT) \
             FROM subjects s JOIN enrollments e ON e.subject_id = s.id ORDER BY s.external_id",
        )
        .await;
    rows.extend(
        app.rows(
            "SELECT s.external_id || ' ' || p.step_key || ' ' || p.status || ' ' || p.source || ' ' || \
             COALESCE(CAST(p.started_at AS TEXT), '-') || ' ' || COALESCE(CAST(p.completed_at AS TEXT), '-') || ' ' || \
             COALESCE(CAST(p.skipped_at AS TEXT), '-') || ' ' || COALESCE(p.skip_reason, '-') || ' ' || \
             COALESCE(CAST(p.metadata AS TEXT), '-') || ' ' || CAST(p.updated_at AS TEXT) || ' ' || \
             COALESCE(p.event_id, '-') || ' ' || COALESCE(p.completed_by, '-') || ' ' || \
             COALESCE(CAST(p.available_at AS TEXT), '-') \
             FROM step_progress p JOIN enrollments e ON e.id = p.enrollment_id JOIN subjects s ON s.id = e.subject_id \
             ORDER BY s.external_id, p.step_key",
        )
        .await,
    );
    rows.extend(
        app.rows(
            "SELECT ev.event_id || ' ' || s.external_id || ' ' || ev.name || ' ' || CAST(ev.properties AS TEXT) || ' ' || \
             CAST(ev.occurred_at AS TEXT) FROM events ev JOIN subjects s ON s.id = ev.subject_id ORDER BY ev.event_id",
        )
        .await,
    );
    rows.extend(
        app.rows(
            "SELECT s.external_id || ' ' || l.reason || ' ' || CAST(l.amount AS TEXT) || ' ' || CAST(l.created_at AS TEXT) \
             FROM points_ledger l JOIN subjects s ON s.id = l.subject_id ORDER BY s.external_id, l.reason",
        )
        .await,
    );
    rows.extend(
        app.rows(
            "SELECT s.external_id || ' ' || l.rule_key || ' ' || CAST(l.anchor_at AS TEXT) || ' ' || \
             CAST(l.number AS TEXT) || ' ' || l.outcome || ' ' || CAST(l.at AS TEXT) \
             FROM nudge_log l JOIN subjects s ON s.id = l.subject_id ORDER BY s.external_id, l.rule_key, l.at",
        )
        .await,
    );
    rows.extend(
        app.rows(
            "SELECT s.external_id || ' ' || n.rule_key || ' ' || COALESCE(CAST(n.anchor_at AS TEXT), '-') || ' ' || \
             CAST(n.number AS TEXT) || ' ' || COALESCE(CAST(n.due_at AS TEXT), '-') \
             FROM nudge_schedule n JOIN subjects s ON s.id = n.subject_id ORDER BY s.external_id, n.rule_key",
        )
        .await,
    );
    rows
}

async fn same_seed_gives_identical_data(app: TestApp) {
    let other = if app.is_postgres() { TestApp::postgres().await } else { TestApp::sqlite().await };
    // Other data first in one of them: the run appends, and only ids may differ.
    other.publish(demo_flow_definition()).await;
    other.complete_as("someone-else", "new_user", "verify_email").await;
    let mut first = options(400);
    first.batch = 150;
    let mut second = options(400);
    second.batch = 400;
    let a = run(&app, &first).await;
    let b = run(&other, &second).await;
    assert_eq!(
        (a.completed, a.in_progress, a.not_started, a.skipped),
        (b.completed, b.in_progress, b.not_started, b.skipped)
    );
    assert_eq!((a.step_rows, a.trigger_events, a.activity_events), (b.step_rows, b.trigger_events, b.activity_events));
    assert_eq!(
        (a.nudges_sent, a.nudges_held_out, a.nudges_suppressed),
        (b.nudges_sent, b.nudges_held_out, b.nudges_suppressed)
    );
    assert!(a.nudges_sent > 0, "the demo flow's nudges are part of the data");
    let fa = fingerprint(&app).await;
    let mut fb = fingerprint(&other).await;
    fb.retain(|row| !row.contains("someone-else"));
    assert!(fa.len() > 2000, "{} rows", fa.len());
    assert_eq!(fa, fb, "the same seed, users and until give the same rows");

    // Another seed gives other subjects and other data.
    let mut third = options(400);
    third.seed = 7;
    run(&app, &third).await;
    let differ = "SELECT COUNT(*) FROM subjects WHERE external_id LIKE 'demo-7-%'";
    assert_eq!(app.count(differ).await, 400);
    let fc: Vec<String> = fingerprint(&app).await.into_iter().filter(|r| r.contains("demo-7-")).collect();
    let renamed: Vec<String> = fc.iter().map(|r| r.replace("demo-7-", "demo-42-")).collect();
    assert_ne!(renamed, fa, "another seed gives another population");
}

async fn the_server_reads_generated_subjects_as_generated(app: TestApp) {
    run(&app, &options(60)).await;
    let mut statuses = std::collections::BTreeSet::new();
    for i in 0..60 {
        let subject = format!("demo-42-{i}");
        let status = app
            .ok(
                &app.admin(),
                "query($f: String!, $s: ID) { status(flowKey: $f, subjectId: $s) { status percentComplete points \
                 revision completedCount totalCount steps { key status } } }",
                json!({ "f": "new_user", "s": subject }),
            )
            .await["status"]
            .clone();
        let id = format!(
            "(SELECT e.id FROM enrollments e JOIN subjects s ON s.id = e.subject_id WHERE s.external_id = '{subject}')"
        );
        let stored_status = app.rows(&format!("SELECT status FROM enrollments WHERE id = {id}")).await;
        assert_eq!(status["status"], stored_status[0], "{subject}");
        let required = app
            .count(&format!("SELECT COUNT(*) FROM step_progress WHERE enrollment_id = {id} AND step_key IN {REQUIRED}"))
            .await;
        let done = app
            .count(&format!(
                "SELECT COUNT(*) FROM step_progress WHERE enrollment_id = {id} AND step_key IN {REQUIRED} AND status = 'COMPLETED'"
            ))
            .await;
        assert_eq!(status["percentComplete"], done * 100 / required, "{subject}: {status:#}");
        assert_eq!(status["points"], app.count(&format!("SELECT points FROM enrollments WHERE id = {id}")).await);
        assert_eq!(status["revision"], app.count(&format!("SELECT revision FROM enrollments WHERE id = {id}")).await);
        let steps = app
            .rows(&format!(
                "SELECT step_key || ' ' || status FROM step_progress WHERE enrollment_id = {id} ORDER BY step_key"
            ))
            .await;
        let mut served: Vec<String> = status["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| format!("{} {}", s["key"].as_str().expect("key"), s["status"].as_str().expect("status")))
            .collect();
        served.sort();
        assert_eq!(served, steps, "{subject}");
        statuses.insert(status["status"].as_str().expect("status").to_string());
    }
    assert_eq!(statuses.len(), 3, "the sample covers every status: {statuses:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 60, "reading enrolled nobody new");
}

async fn running_experiments_assign_variants_by_the_engine_hash(app: TestApp) {
    let v1 = demo_flow_definition();
    let mut v2 = v1.clone();
    v2["steps"].as_array_mut().expect("steps").remove(1); // no profile photo step
    app.publish(v1).await;
    app.publish(v2).await;
    let admin = app.admin();
    app.ok(
        &admin,
        "mutation($v: [VariantInput!]!) { createExperiment(key: \"shorter-onboarding\", flowKey: \"new_user\", variants: $v) { key } }",
        json!({ "v": [{ "name": "control", "version": 1, "weight": 30 }, { "name": "shorter", "version": 2, "weight": 70 }] }),
    )
    .await;
    app.ok(&admin, "mutation { startExperiment(key: \"shorter-onboarding\") { key } }", json!({})).await;

    let summary = run(&app, &options(500)).await;
    assert_eq!(summary.exposures, 500);
    assert_eq!(summary.versions, vec![1, 2]);
    let variants = [
        Variant { name: "control".into(), version: 1, weight: 30 },
        Variant { name: "shorter".into(), version: 2, weight: 70 },
    ];
    let rows = app
        .rows(
            "SELECT s.external_id || ' ' || e.experiment_key || ' ' || e.variant || ' ' || CAST(f.version AS TEXT) \
             FROM subjects s JOIN enrollments e ON e.subject_id = s.id JOIN flows f ON f.id = e.flow_id",
        )
        .await;
    assert_eq!(rows.len(), 500);
    let mut shorter = 0;
    for row in rows {
        let parts: Vec<&str> = row.split(' ').collect();
        let expected = assign("shorter-onboarding", parts[0], &variants).expect("a variant");
        assert_eq!(parts[1..], ["shorter-onboarding", expected.name.as_str(), &expected.version.to_string()], "{row}");
        shorter += usize::from(expected.name == "shorter");
    }
    assert!((300..400).contains(&shorter), "weights 30/70: {shorter} of 500 on shorter");

    // One exposure per subject, under its variant, when it enrolled.
    assert_eq!(app.count("SELECT COUNT(*) FROM exposures").await, 500);
    assert_eq!(app.count("SELECT COUNT(DISTINCT subject_id) FROM exposures").await, 500);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM exposures x JOIN subjects s ON s.external_id = x.subject_id \
             JOIN enrollments e ON e.subject_id = s.id JOIN experiments ex ON ex.id = x.experiment_id \
             WHERE ex.key = 'shorter-onboarding' AND x.variant = e.variant AND x.exposed_at = e.started_at"
        )
        .await,
        500
    );
    // The shorter version has no photo step: its subjects have no row for it.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM step_progress p JOIN enrollments e ON e.id = p.enrollment_id \
             WHERE e.variant = 'shorter' AND p.step_key = 'add_profile_photo'"
        )
        .await,
        0
    );
    // The server's experiment report counts the same exposures.
    let report =
        app.ok(&admin, "{ experiment(key: \"shorter-onboarding\") { variants { name exposures } } }", json!({})).await;
    let exposures: i64 = report["experiment"]["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| v["exposures"].as_i64().expect("exposures"))
        .sum();
    assert_eq!(exposures, 500);
}

async fn unknown_flows_and_reused_seeds_are_refused(app: TestApp) {
    let mut unknown = options(10);
    unknown.flow = "no_such_flow".into();
    let error = demo_data::generate(&app.db, &unknown, |_| {}).await.expect_err("unknown flow");
    assert!(error.to_string().contains("no active flow with key `no_such_flow`"), "{error:#}");
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0, "only new_user is published on demand");

    run(&app, &options(10)).await;
    let error = demo_data::generate(&app.db, &options(10), |_| {}).await.expect_err("reused seed");
    assert!(error.to_string().contains("already exist"), "{error:#}");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 10, "a refused run writes nothing");

    let mut key_step = options(10);
    key_step.seed = 9;
    key_step.key_step = Some("nope".into());
    let error = demo_data::generate(&app.db, &key_step, |_| {}).await.expect_err("unknown key step");
    assert!(error.to_string().contains("has no step `nope`"), "{error:#}");
}

/// The command itself, as a user runs it: progress on stderr, a summary on stdout, and a
/// failing exit status for an unknown flow.
#[test]
fn the_command_reports_progress_and_fails_on_unknown_flows() {
    let path = std::env::temp_dir().join(format!("onramp-demo-data-{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let command = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_onramp"))
            .args(args)
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run onramp")
    };
    let output = command(&["demo-data", "--users", "200", "--flow", "new_user", "--batch", "64"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("demo-data: 200/200 users ("), "progress on stderr: {stderr}");
    assert!(stdout.contains("demo-data: 200 users in flow new_user (v1)"), "summary on stdout: {stdout}");
    assert!(stdout.contains("COMPLETED") && stdout.contains("SKIPPED"), "{stdout}");
    assert!(stdout.contains("  nudges: ") && stdout.contains(" sent, ") && stdout.contains(" held out"), "{stdout}");

    let output = command(&["demo-data", "--users", "5", "--flow", "missing"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "an unknown flow fails");
    assert!(stderr.contains("no active flow with key `missing`"), "{stderr}");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// One `nudge_log` row.
#[derive(Debug)]
struct Logged {
    id: i64,
    occurrence: String,
    subject: String,
    enrollment_id: i64,
    flow_version: i32,
    rule_key: String,
    anchor: DateTime<Utc>,
    number: i32,
    outcome: String,
    channel: String,
    title: String,
    message: String,
    at: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

async fn nudge_log(app: &TestApp) -> Vec<Logged> {
    let sql = "SELECT l.id, l.occurrence, s.external_id, l.enrollment_id, l.flow_version, l.rule_key, l.anchor_at, \
               l.number, l.outcome, l.channel, l.title, l.message, l.at, l.until FROM nudge_log l \
               JOIN subjects s ON s.id = l.subject_id ORDER BY l.id";
    let statement = Statement::from_string(app.db.get_database_backend(), sql.to_string());
    let rows = app.db.query_all_raw(statement).await.expect("nudge log");
    rows.iter()
        .map(|r| Logged {
            id: r.try_get_by_index(0).unwrap(),
            occurrence: r.try_get_by_index(1).unwrap(),
            subject: r.try_get_by_index(2).unwrap(),
            enrollment_id: r.try_get_by_index(3).unwrap(),
            flow_version: r.try_get_by_index(4).unwrap(),
            rule_key: r.try_get_by_index(5).unwrap(),
            anchor: r.try_get_by_index(6).unwrap(),
            number: r.try_get_by_index(7).unwrap(),
            outcome: r.try_get_by_index(8).unwrap(),
            channel: r.try_get_by_index(9).unwrap(),
            title: r.try_get_by_index(10).unwrap(),
            message: r.try_get_by_index(11).unwrap(),
            at: r.try_get_by_index(12).unwrap(),
            until: r.try_get_by_index(13).unwrap(),
        })
        .collect()
}

/// `nudge_schedule`: (enrollment, rule) -> ((subject, anchor, number, due), waiting).
type Schedule = HashMap<(i64, String), ((i64, Option<DateTime<Utc>>, i32, Option<DateTime<Utc>>), bool)>;

async fn nudge_schedule(app: &TestApp) -> Schedule {
    let sql = "SELECT enrollment_id, rule_key, subject_id, anchor_at, number, due_at, waiting FROM nudge_schedule";
    let statement = Statement::from_string(app.db.get_database_backend(), sql.to_string());
    let rows = app.db.query_all_raw(statement).await.expect("nudge schedule");
    rows.iter()
        .map(|r| {
            (
                (r.try_get_by_index(0).unwrap(), r.try_get_by_index(1).unwrap()),
                (
                    (
                        r.try_get_by_index(2).unwrap(),
                        r.try_get_by_index(3).unwrap(),
                        r.try_get_by_index(4).unwrap(),
                        r.try_get_by_index(5).unwrap(),
                    ),
                    r.try_get_by_index(6).unwrap(),
                ),
            )
        })
        .collect()
}

/// A few thousand users: every rule comes due for hundreds of them, so the held-out
/// share and the lift are more than noise.
async fn nudges_are_logged_and_scheduled_as_the_scheduler_would_have(app: TestApp) {
    let mut options = options(3000);
    options.batch = 1000;
    let summary = run(&app, &options).await;
    let flow = FlowStore::default().latest_active(&app.db, "new_user").await.expect("flow").expect("new_user");
    let rules = &flow.definition.nudges.rules;
    assert_eq!(rules.len(), 3, "the demo flow has nudge rules");

    // The log: the scheduler's outcomes, occurrence keys and texts, nothing after `until`,
    // and held out exactly when the rule's holdout hash says so.
    let log = nudge_log(&app).await;
    let count = |outcome: &str| log.iter().filter(|l| l.outcome == outcome).count() as u64;
    assert_eq!(
        (count("SENT"), count("HELD_OUT"), count("SUPPRESSED_BY_CAP"), count("CANCELLED_BY_PROGRESS")),
        (summary.nudges_sent, summary.nudges_held_out, summary.nudges_suppressed, summary.nudges_cancelled)
    );
    assert_eq!(
        log.len() as u64,
        summary.nudges_sent + summary.nudges_held_out + summary.nudges_suppressed + summary.nudges_cancelled
    );
    assert!(summary.nudges_sent > 500 && summary.nudges_held_out > 100, "{summary:?}");
    let occurrences: HashSet<&str> = log.iter().map(|l| l.occurrence.as_str()).collect();
    assert_eq!(occurrences.len(), log.len(), "no occurrence twice");
    for l in &log {
        let rule = rules.iter().find(|r| r.key == l.rule_key).unwrap_or_else(|| panic!("no rule {l:?}"));
        // A wait is logged apart from the occurrence's outcome, once per reason.
        let suffix = if l.outcome == "SUPPRESSED_BY_CAP" { ":cap" } else { "" };
        let key = format!("{}:{}:{}:{}{suffix}", l.enrollment_id, l.rule_key, l.anchor.timestamp_micros(), l.number);
        assert_eq!(l.occurrence, key, "the scheduler's occurrence key");
        assert_eq!(l.until.is_some(), l.outcome == "SUPPRESSED_BY_CAP", "{l:?}");
        assert_eq!(
            (l.channel.as_str(), l.title.as_str(), l.message.as_str(), l.flow_version),
            (rule.channel.name(), rule.title.resolve(None, "en"), rule.message.resolve(None, "en"), 1)
        );
        assert!(l.anchor < l.at && l.at <= until(), "{l:?}");
        let held_out = in_holdout("new_user", &rule.key, &l.subject, rule.holdout_percent);
        assert_eq!(l.outcome == "HELD_OUT", held_out, "{l:?}");
        assert!(
            ["SENT", "HELD_OUT", "SUPPRESSED_BY_CAP", "CANCELLED_BY_PROGRESS"].contains(&l.outcome.as_str()),
            "{l:?}"
        );
    }
    // Per rule, the enrollments it came due for are held out in about its share.
    let mut first: HashMap<(&str, i64), &Logged> = HashMap::new();
    for l in &log {
        first.entry((l.rule_key.as_str(), l.enrollment_id)).or_insert(l);
    }
    // A wait ends in the occurrence sent, or cancelled by progress.
    for wait in log.iter().filter(|l| l.outcome == "SUPPRESSED_BY_CAP") {
        let ended = log.iter().any(|l| {
            (l.enrollment_id, &l.rule_key, l.anchor, l.number)
                == (wait.enrollment_id, &wait.rule_key, wait.anchor, wait.number)
                && ["SENT", "CANCELLED_BY_PROGRESS"].contains(&l.outcome.as_str())
                && Some(l.at) == wait.until
        });
        assert!(ended || wait.until > Some(until()), "a wait that never ended: {wait:?}");
    }
    for rule in rules {
        let due: Vec<&&Logged> = first.iter().filter(|((r, _), _)| *r == rule.key).map(|(_, l)| l).collect();
        let held_out = due.iter().filter(|l| l.outcome == "HELD_OUT").count() as f64;
        let share = held_out / due.len() as f64;
        assert!(due.len() > 200, "{}: due for {} enrollments", rule.key, due.len());
        assert!((share - 0.2).abs() < 0.06, "{}: {share} held out, {}% asked", rule.key, rule.holdout_percent);
    }

    // The schedule: for enrollments in progress only, one row per rule, at what the write
    // path stored after the enrollment's last change (`schedule_for`), moved on by the
    // scheduler past every occurrence due by `until`.
    let schedule = nudge_schedule(&app).await;
    assert_eq!(schedule.len() as u64, summary.nudge_schedule_rows);
    let in_progress: Vec<i64> = app
        .rows("SELECT CAST(id AS TEXT) FROM enrollments WHERE status = 'IN_PROGRESS'")
        .await
        .iter()
        .map(|id| id.parse().expect("id"))
        .collect();
    assert_eq!(schedule.len(), in_progress.len() * rules.len(), "rows for enrollments in progress only");
    let attributes: HashMap<i64, Value> = app
        .rows("SELECT CAST(id AS TEXT) || ' ' || CAST(attributes AS TEXT) FROM subjects")
        .await
        .iter()
        .map(|row| {
            let (id, json) = row.split_once(' ').expect("id and attributes");
            (id.parse().expect("id"), serde_json::from_str(json).expect("attributes"))
        })
        .collect();
    let records = enrollments::by_ids(&app.db, in_progress, false).await.expect("enrollments");
    let mut pending = 0;
    for record in &records {
        let attributes = &attributes[&record.subject_id];
        for (rule_key, first_due) in schedule_for(&flow.definition, attributes, &record.state) {
            let rule = flow.definition.nudges.rule(rule_key).expect("rule");
            let (stored, waiting) =
                schedule.get(&(record.id, rule_key.to_string())).unwrap_or_else(|| panic!("{record:?}"));
            if *waiting {
                // Held back by the budget past `until`: the row keeps the occurrence that
                // waits, as the log says, due when the wait ends.
                let wait = log
                    .iter()
                    .rfind(|l| {
                        l.enrollment_id == record.id && l.rule_key == rule_key && l.outcome == "SUPPRESSED_BY_CAP"
                    })
                    .unwrap_or_else(|| panic!("a waiting row with no wait logged: {stored:?}"));
                assert_eq!(*stored, (record.subject_id, Some(wait.anchor), wait.number, wait.until));
                assert!(wait.until > Some(until()));
                pending += 1;
                continue;
            }
            let expected = match first_due {
                None => (record.subject_id, None, 1, None),
                Some(mut due) => loop {
                    if due.at > until() {
                        break (record.subject_id, Some(due.anchor), due.number as i32, Some(due.at));
                    }
                    match following(rule, &due) {
                        Some(next) => due = next,
                        None => break (record.subject_id, Some(due.anchor), due.number as i32, None),
                    }
                },
            };
            assert_eq!(*stored, expected, "{} {rule_key}", record.id);
            pending += usize::from(stored.3.is_some());
        }
    }
    assert!(pending > 50, "{pending} nudges are due after `until`");

    // Results: every rule has both groups, and the nudged complete more often.
    let query = "query($f: String!) { nudgeResults(flowKey: $f, windowHours: 168) { ruleKey holdoutPercent \
                 sent { enrollments completed completionRate } heldOut { enrollments completed completionRate } \
                 lift pValue } }";
    let results = app.ok(&app.admin(), query, json!({"f": "new_user"})).await;
    let results = results["nudgeResults"].as_array().expect("results");
    assert_eq!(results.len(), rules.len());
    for r in results {
        let rule = r["ruleKey"].as_str().expect("rule key");
        // Intention to treat: each enrollment the rule came due for, once, in the group its
        // subject's hash puts it in, whatever the scheduler then did.
        let percent = rules.iter().find(|x| x.key == rule).expect("rule").holdout_percent;
        let group = |held_out: bool| {
            log.iter()
                .filter(|l| l.rule_key == rule && in_holdout("new_user", rule, &l.subject, percent) == held_out)
                .map(|l| l.enrollment_id)
                .collect::<HashSet<_>>()
                .len() as i64
        };
        let (sent, held_out) = (&r["sent"], &r["heldOut"]);
        println!(
            "nudgeResults {rule}: sent {}/{} ({:.3}), held out {}/{} ({:.3}), lift {:.3}, p {:.4}",
            sent["completed"],
            sent["enrollments"],
            sent["completionRate"].as_f64().unwrap_or(f64::NAN),
            held_out["completed"],
            held_out["enrollments"],
            held_out["completionRate"].as_f64().unwrap_or(f64::NAN),
            r["lift"].as_f64().unwrap_or(f64::NAN),
            r["pValue"].as_f64().unwrap_or(f64::NAN),
        );
        assert_eq!(r["holdoutPercent"], 20);
        assert_eq!(
            (sent["enrollments"].as_i64(), held_out["enrollments"].as_i64()),
            (Some(group(false)), Some(group(true)))
        );
        assert!(group(false) > 0 && group(true) > 0);
        assert!(
            sent["completionRate"].as_f64().expect("rate") > held_out["completionRate"].as_f64().expect("rate"),
            "{r:#}"
        );
    }
}

/// The server's scheduler with the default budget, no quiet hours and a clock the test moves.
fn scheduler() -> NudgeSettings {
    NudgeSettings {
        caps: Caps::default(),
        quiet_hours: None,
        poll_interval: std::time::Duration::from_millis(20),
        clock: Clock::adjustable(),
        ..NudgeSettings::default()
    }
}

/// Demo data up to an hour ago, then the server's own scheduler: it takes each pending
/// occurrence where the data left it, and none it takes is one the log already has.
async fn a_scheduler_started_afterwards_goes_on_from_the_log(app: TestApp) {
    let clock = app.nudges.as_ref().expect("a scheduler").clock.clone();
    let mut options = Options::new(400, "new_user");
    options.until = clock.now().trunc_subsecs(0) - Duration::hours(1);
    options.batch = 200;
    let summary = run(&app, &options).await;
    assert!(summary.nudges_sent > 0);
    // The scheduler runs all along: what it decides is after `until`, demo-data's is not.
    let demo: Vec<Logged> = nudge_log(&app).await.into_iter().filter(|l| l.at <= options.until).collect();
    assert_eq!(demo.len() as u64, summary.nudges_sent + summary.nudges_held_out + summary.nudges_suppressed);
    crate::nudges::settle(&app).await;

    // No row waits for an occurrence the log has (one statement: one snapshot of both).
    let logged_already = "SELECT COUNT(*) FROM nudge_schedule s JOIN nudge_log l ON l.enrollment_id = s.enrollment_id \
                          AND l.rule_key = s.rule_key AND l.anchor_at = s.anchor_at AND l.number = s.number \
                          WHERE s.due_at IS NOT NULL";
    assert_eq!(app.count(logged_already).await, 0);

    // Four days on, a day at a time (no rule repeats within a day, so no catch-up skips
    // one): every occurrence pending now is decided and logged as a new entry.
    let before = app.count("SELECT COALESCE(MAX(id), 0) FROM nudge_log").await;
    let horizon = clock.now() + Duration::days(4);
    let pending: Vec<String> = nudge_schedule(&app)
        .await
        .into_iter()
        .filter_map(|((enrollment, rule), ((_, anchor, number, due), _))| {
            let (anchor, due) = (anchor?, due?);
            (due <= horizon).then(|| format!("{enrollment}:{rule}:{}:{number}", anchor.timestamp_micros()))
        })
        .collect();
    assert!(pending.len() > 5, "{} occurrences come due in the next four days", pending.len());
    for _ in 0..4 {
        clock.advance(std::time::Duration::from_secs(24 * 3600));
        crate::nudges::settle(&app).await;
    }
    let log = nudge_log(&app).await;
    let kept: HashMap<i64, (&str, &str)> =
        log.iter().map(|l| (l.id, (l.occurrence.as_str(), l.outcome.as_str()))).collect();
    for d in &demo {
        assert_eq!(
            kept.get(&d.id),
            Some(&(d.occurrence.as_str(), d.outcome.as_str())),
            "demo entries stay as they were"
        );
    }
    let new: HashMap<&str, &Logged> =
        log.iter().filter(|l| l.id > before).map(|l| (l.occurrence.as_str(), l)).collect();
    for occurrence in &pending {
        assert!(new.contains_key(occurrence.as_str()), "{occurrence} was not taken up: {:#?}", new.keys());
    }
    // Every send of the scheduler is a new entry, with its webhook when the channel has one.
    let since_demo = log.iter().filter(|l| l.at > options.until);
    let webhooks = since_demo.filter(|l| l.outcome == "SENT" && l.channel != "in_app").count() as i64;
    assert!(new.values().any(|l| l.outcome == "SENT"), "the scheduler sent nudges");
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'nudge_due'").await, webhooks);
}
