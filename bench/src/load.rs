//! A closed-loop load generator: `workers` tasks each issue one operation after another
//! for a fixed time; every latency is kept, so percentiles are exact.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub operations: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Sorted.
    pub latencies: Vec<Duration>,
    /// Units of work per operation (events per batch); 1 otherwise.
    pub units_per_op: u64,
}

impl Measured {
    pub fn throughput(&self) -> f64 {
        (self.operations * self.units_per_op) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }
}

/// Runs `op(worker, iteration)` from `workers` tasks for `duration`. An operation
/// returning Err counts as an error (its latency is not kept).
pub async fn run<F, Fut>(workers: usize, duration: Duration, op: F) -> Measured
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match op(w, i).await {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(e) => {
                            if errors == 0 {
                                eprintln!("bench: worker {w}: {e:#}");
                            }
                            errors += 1;
                        }
                    }
                    i += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut measured = Measured { units_per_op: 1, ..Default::default() };
    for task in tasks {
        if let Ok((latencies, errors)) = task.await {
            measured.operations += latencies.len() as u64;
            measured.errors += errors;
            measured.latencies.extend(latencies);
        }
    }
    measured.elapsed = started.elapsed();
    measured.latencies.sort_unstable();
    measured
}

/// CPU seconds (user + system) used so far by a process, from /proc (Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// Resident memory of a process in bytes, from /proc (Linux).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
