//! The nudges scenario: the scheduler at 1,000,000 enrollments with nudge rules. The
//! scheduler is a background loop of each instance, not an API, so it runs here, in this
//! process, as `nudges::spawn_scheduler` runs it (ticks back to back while batches are
//! full), on a clock the bench sets.
//!
//! The population is demo-data's, in a flow of its own (`bench_nudges`: the demo flow's
//! steps and rules, plus a 30-day win-back rule, so that moving the clock a month ahead
//! finds a large share of the enrollments due at once). demo-data schedules and logs each
//! subject's nudges along its timeline, as the write path and the scheduler would have.
//!
//! - idle: the clock just before the earliest due time; nothing is due, and each tick is
//!   the scheduler's one indexed probe. Target: under 5 ms.
//! - due: the clock at the `--nudge-due`th due time, so that many nudges are due at once;
//!   timed from the first tick to the last, with one scheduler, then (on the next as many)
//!   with as many racing as an instance runs by default (`--nudge-schedulers` picks
//!   others). Target: at least 5,000/s.
//!
//! Every run measures the same work: the schedule as demo-data left it is kept aside once
//! (`bench_nudge_baseline`), and each run starts from it, without the log and outbox rows
//! earlier runs added (the scheduler writes nothing else: enrollments are only read).
//!
//! Quiet hours are off, so every nudge meets the whole send path (log, outbox row, in-app
//! announcement) rather than a cheaper wait; the fatigue budget is the default one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use onramp::clock::Clock;
use onramp::nudges::NudgeSettings;
use onramp::service::Onramp;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::Args;
use crate::load::Measured;
use crate::scenarios::{Row, analyze, count, measured};
use crate::server::Server;

pub const FLOW: &str = "bench_nudges";
const IDLE_TICKS: usize = 1_000;
const IDLE_TARGET: Duration = Duration::from_millis(5);
const DUE_TARGET: f64 = 5_000.0;

/// The demo flow, renamed, with a rule that comes due for every enrollment left in
/// progress a month after its last activity.
fn definition() -> Value {
    let mut d = onramp::service::demo_flow_definition();
    d["key"] = json!(FLOW);
    d["title"] = json!("Bench: nudges");
    if let Some(rules) = d["nudges"]["rules"].as_array_mut() {
        rules.push(json!({
            "key": "win_back",
            "trigger": {"kind": "abandoned", "after": "30d"},
            "title": "We miss you",
            "message": "Your workspace is waiting for you.",
            "channel": "webhook",
            "holdoutPercent": 10
        }));
    }
    d
}

async fn run_sql(db: &DatabaseConnection, sql: &str) -> anyhow::Result<()> {
    db.execute_unprepared(sql).await.with_context(|| sql.to_string())?;
    Ok(())
}

/// Keeps the schedule aside as it is now (and where the log and outbox end), when `fresh`
/// or when nothing is kept yet; else puts back what was kept.
async fn baseline(args: &Args, db: &DatabaseConnection, fresh: bool) -> anyhow::Result<()> {
    let kept = count(db, "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'bench_nudge_baseline'").await? > 0;
    if fresh || !kept {
        run_sql(db, "DROP TABLE IF EXISTS bench_nudge_baseline").await?;
        run_sql(db, "CREATE TABLE bench_nudge_baseline AS SELECT * FROM nudge_schedule").await?;
        run_sql(db, "DROP TABLE IF EXISTS bench_nudge_marks").await?;
        run_sql(
            db,
            "CREATE TABLE bench_nudge_marks AS SELECT (SELECT COALESCE(MAX(id), 0) FROM nudge_log) AS log_id, \
             (SELECT COALESCE(MAX(id), 0) FROM outbox) AS outbox_id",
        )
        .await?;
    } else {
        eprintln!("bench: nudges: putting the schedule back as demo-data left it");
        run_sql(db, "DELETE FROM nudge_log WHERE id > (SELECT log_id FROM bench_nudge_marks)").await?;
        run_sql(
            db,
            "DELETE FROM outbox o WHERE o.kind = 'nudge_due' AND o.id > (SELECT outbox_id FROM bench_nudge_marks) \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.outbox_id = o.id)",
        )
        .await?;
        run_sql(db, "TRUNCATE nudge_schedule").await?;
        run_sql(db, "INSERT INTO nudge_schedule SELECT * FROM bench_nudge_baseline").await?;
    }
    analyze(args).await
}

/// At least `args.nudge_users` enrollments in the bench flow, topped up with demo-data;
/// whether it had to be.
async fn population(args: &Args, db: &DatabaseConnection) -> anyhow::Result<(i64, bool)> {
    let engine = Onramp::new(db.clone());
    let flows = onramp::persistence::flows::FlowStore::default();
    if flows.latest_active(db, FLOW).await?.is_none() {
        engine.publish_flow(definition()).await.map_err(|e| anyhow::anyhow!("publishing {FLOW}: {}", e.message))?;
    }
    let sql = format!("SELECT COUNT(*) FROM enrollments WHERE flow_key = '{FLOW}'");
    let have = count(db, &sql).await? as u64;
    if have < args.nudge_users {
        let mut options = onramp::demo_data::Options::new(args.nudge_users - have, FLOW);
        options.seed = 2_000_000 + have;
        eprintln!("bench: demo-data: {} more users in {FLOW} (seed {})", args.nudge_users - have, options.seed);
        let mut last = Instant::now();
        onramp::demo_data::generate(db, &options, |p| {
            if last.elapsed() > Duration::from_secs(10) {
                eprintln!("bench: demo-data {}/{}", p.done, p.total);
                last = Instant::now();
            }
        })
        .await?;
    }
    Ok((count(db, &sql).await?, have < args.nudge_users))
}

async fn time_at(db: &DatabaseConnection, sql: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql.to_string())).await?;
    Ok(row.map(|r| r.try_get_by_index::<DateTime<Utc>>(0)).transpose()?)
}

/// The due time of the `n`th row due next, from `after` on.
async fn nth_due(db: &DatabaseConnection, after: DateTime<Utc>, n: u64) -> anyhow::Result<Option<DateTime<Utc>>> {
    let sql = format!(
        "SELECT due_at FROM nudge_schedule WHERE due_at IS NOT NULL AND due_at > '{}' ORDER BY due_at OFFSET {} LIMIT 1",
        after.to_rfc3339(),
        n.saturating_sub(1)
    );
    time_at(db, &sql).await
}

/// An engine (an instance's worth: its own pool) on the bench clock.
async fn engine(args: &Args, clock: &Clock) -> anyhow::Result<Arc<Onramp>> {
    let db = onramp::persistence::connect(&args.database_url, 4).await?;
    let settings = NudgeSettings { quiet_hours: None, clock: clock.clone(), ..NudgeSettings::default() };
    Ok(Arc::new(Onramp::new(db).with_nudges(settings)))
}

/// What the scheduler loop does until nothing is due: (rows decided, latency per tick).
async fn drain(engine: Arc<Onramp>) -> anyhow::Result<(u64, Vec<Duration>)> {
    let (mut decided, mut ticks) = (0, Vec::new());
    loop {
        let started = Instant::now();
        let report = engine.nudge_tick().await.map_err(|e| anyhow::anyhow!("tick: {}", e.message))?;
        ticks.push(started.elapsed());
        decided += report.claimed as u64;
        if report.claimed == 0 {
            return Ok((decided, ticks));
        }
    }
}

/// The log's outcomes from `since` on, for the notes.
async fn outcomes(db: &DatabaseConnection, since: DateTime<Utc>) -> anyhow::Result<String> {
    let sql = format!(
        "SELECT outcome, COUNT(*) FROM nudge_log WHERE at >= '{}' GROUP BY outcome ORDER BY outcome",
        since.to_rfc3339()
    );
    let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await?;
    let parts: Vec<String> = rows
        .iter()
        .map(|r| Ok(format!("{} {}", r.try_get_by_index::<String>(0)?.to_lowercase(), r.try_get_by_index::<i64>(1)?)))
        .collect::<Result<_, sea_orm::DbErr>>()?;
    Ok(parts.join(", "))
}

pub async fn nudges(args: &Args, server: &Server) -> anyhow::Result<Vec<Row>> {
    let db = onramp::persistence::connect(&args.database_url, 4).await?;
    let (enrollments, topped_up) = population(args, &db).await?;
    baseline(args, &db, topped_up).await?;
    let scheduled = count(&db, "SELECT COUNT(*) FROM nudge_schedule WHERE due_at IS NOT NULL").await?;
    let Some(earliest) = time_at(&db, "SELECT MIN(due_at) FROM nudge_schedule WHERE due_at IS NOT NULL").await? else {
        bail!("nothing is scheduled: the {FLOW} population has no pending nudges");
    };
    let clock = Clock::adjustable();
    let mut rows = Vec::new();

    // Idle: just before anything is due.
    clock.set(earliest - chrono::Duration::seconds(5));
    let idle_engine = engine(args, &clock).await?;
    let ticks = if args.smoke { 50 } else { IDLE_TICKS };
    let (idle, cores) = measured(server, async {
        let started = Instant::now();
        let (mut latencies, mut errors) = (Vec::with_capacity(ticks), 0);
        for _ in 0..ticks {
            let t = Instant::now();
            match idle_engine.nudge_tick().await {
                Ok(r) if r.claimed == 0 => latencies.push(t.elapsed()),
                _ => errors += 1,
            }
        }
        latencies.sort();
        Measured { operations: ticks as u64, errors, elapsed: started.elapsed(), latencies, units_per_op: 1 }
    })
    .await;
    let p99 = idle.percentile(99.0);
    rows.push(Row {
        name: "nudges: idle tick".into(),
        unit: "ticks/s",
        notes: format!(
            "{enrollments} enrollments in {FLOW}, {scheduled} (enrollment, rule) rows scheduled, none due; {ticks} ticks one \
             after another; target p99 < {} ms: {}",
            IDLE_TARGET.as_millis(),
            if p99 < IDLE_TARGET { "met" } else { "MISSED" }
        ),
        ok: idle.errors == 0,
        server: idle,
        floor: None,
        cores,
    });

    // Due: one scheduler, then the default number racing, each on the next `nudge_due` rows.
    let mut after = earliest - chrono::Duration::seconds(5);
    for &instances in &args.nudge_schedulers {
        let Some(at) = nth_due(&db, after, args.nudge_due).await? else {
            bail!("fewer than {} nudges left to come due: top up with a larger --nudge-users", args.nudge_due);
        };
        clock.set(at);
        let due = count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM nudge_schedule WHERE due_at IS NOT NULL AND due_at <= '{}'",
                at.to_rfc3339()
            ),
        )
        .await?;
        let mut engines = Vec::new();
        for _ in 0..instances {
            engines.push(engine(args, &clock).await?);
        }
        let (run, cores) = measured(server, async {
            let started = Instant::now();
            let results = futures_util::future::join_all(engines.iter().map(|e| drain(e.clone()))).await;
            let elapsed = started.elapsed();
            let (mut decided, mut latencies, mut errors) = (0, Vec::new(), 0);
            for r in results {
                match r {
                    Ok((n, ticks)) => {
                        decided += n;
                        latencies.extend(ticks);
                    }
                    Err(e) => {
                        eprintln!("bench: nudges: {e}");
                        errors += 1;
                    }
                }
            }
            latencies.sort();
            Measured { operations: decided, errors, elapsed, latencies, units_per_op: 1 }
        })
        .await;
        let left = count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM nudge_schedule WHERE due_at IS NOT NULL AND due_at <= '{}'",
                at.to_rfc3339()
            ),
        )
        .await?;
        let rate = run.throughput();
        rows.push(Row {
            name: format!("nudges: {} due, {instances} scheduler{}", due, if instances > 1 { "s" } else { "" }),
            unit: "nudges/s",
            notes: format!(
                "clock at the {}th due time; {} decided in {:.1} s, {left} left due; p50/p99 are per tick (batch 500); \
                 outcomes: {}; target >= {DUE_TARGET:.0}/s: {}",
                args.nudge_due,
                run.operations,
                run.elapsed.as_secs_f64(),
                outcomes(&db, at).await.context("outcomes")?,
                if rate >= DUE_TARGET { "met" } else { "MISSED" }
            ),
            ok: run.errors == 0 && left == 0,
            server: run,
            floor: None,
            cores,
        });
        after = at;
    }
    Ok(rows)
}
