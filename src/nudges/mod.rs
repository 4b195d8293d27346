//! The nudge scheduler, the background side of nudges: one loop per instance that runs
//! `Onramp::nudge_tick` whenever something may be due. The rules are `domain::nudges`; the
//! use cases (tick, in-app reads, log, results) are in `service::nudges`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::domain::nudges::{Caps, QuietHours};
use crate::service::Onramp;

/// Ticks at once per PostgreSQL instance by default. On the bench's 2 vCPU with a million
/// enrollments, 50,000 due nudges went at 2,841/s with one, 5,376/s with two, 7,576/s with
/// three and 8,065/s with four (BENCHMARKS.md): four is past the knee and holds four of
/// the pool's connections (16 by default) only while a backlog drains.
pub const DEFAULT_WORKERS: usize = 4;

/// Everything about nudges that configuration decides.
#[derive(Clone, Debug)]
pub struct NudgeSettings {
    /// The fatigue budget per subject, across all flows.
    pub caps: Caps,
    /// No nudge goes out in this daily window of the subject's local time; None: any time.
    pub quiet_hours: Option<QuietHours>,
    /// Due rows claimed per transaction.
    pub batch: u64,
    /// Ticks this instance runs at once on PostgreSQL (claims skip each other's rows, as
    /// two instances' do). One tick spends most of its time waiting: on each statement in
    /// turn, on pages read into the buffer cache, on its commit's WAL flush; so more ticks
    /// than database cores still pay (see `DEFAULT_WORKERS`). SQLite has one writer, so
    /// one there.
    pub workers: usize,
    /// How often the scheduler looks for due nudges. An idle look is one indexed query.
    pub poll_interval: Duration,
    /// The engine's time: progress writes and the scheduler read it, so tests move both.
    pub clock: Clock,
}

impl Default for NudgeSettings {
    fn default() -> Self {
        NudgeSettings {
            caps: Caps::default(),
            quiet_hours: QuietHours::parse("21:00-08:00").ok(),
            batch: 500,
            workers: DEFAULT_WORKERS,
            poll_interval: Duration::from_secs(5),
            clock: Clock::system(),
        }
    }
}

/// Stops the scheduler; dropping it stops it too.
pub struct SchedulerHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SchedulerHandle {
    /// Lets the ticks in flight finish (each is one transaction), then returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the nudge scheduler ended abnormally");
            }
        }
    }
}

/// Starts the scheduler of this engine: its workers (see `NudgeSettings::workers`).
pub fn spawn_scheduler(onramp: Arc<Onramp>) -> SchedulerHandle {
    let (stop, stopped) = watch::channel(false);
    let workers = if crate::persistence::is_postgres(onramp.db()) { onramp.nudge_settings().workers.max(1) } else { 1 };
    let tasks = (0..workers).map(|_| tokio::spawn(worker(onramp.clone(), stopped.clone()))).collect();
    SchedulerHandle { stop, tasks }
}

/// One loop of ticks: at once again after a full batch, else after the poll interval.
async fn worker(onramp: Arc<Onramp>, mut stopped: watch::Receiver<bool>) {
    let poll = onramp.nudge_settings().poll_interval;
    loop {
        if *stopped.borrow() {
            break;
        }
        let full = match onramp.nudge_tick().await {
            Ok(report) => report.full,
            Err(e) => {
                tracing::warn!(error = %e.message, "a nudge tick failed");
                false
            }
        };
        if full {
            // A full batch: there is likely more now.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            changed = stopped.changed() => if changed.is_err() { break },
        }
    }
}
