//! `onramp demo-data`: the generated population has seed 002's mix, its rows are the ones
//! the engine writes (the server reads them back as the same progress), runs are
//! deterministic, and experiments assign variants by the engine's hash.

use chrono::{DateTime, Duration, Utc};
use onramp::demo_data::{self, Options};
use onramp::domain::experiments::{Variant, assign};
use onramp::service::demo_flow_definition;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

use crate::both;
use crate::common::TestApp;

both!(
    generated_population_has_the_seeded_mix_and_consistent_rows,
    same_seed_gives_identical_data,
    the_server_reads_generated_subjects_as_generated,
    running_experiments_assign_variants_by_the_engine_hash,
    unknown_flows_and_reused_seeds_are_refused,
);

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

    let output = command(&["demo-data", "--users", "5", "--flow", "missing"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "an unknown flow fails");
    assert!(stderr.contains("no active flow with key `missing`"), "{stderr}");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
