//! onramp-bench: measures onramp against its own floor in the same run. Each scenario runs
//! twice at the same concurrency: through the server (HTTP, JWT, GraphQL) and as the floor,
//! the same database work issued directly. The ratio of the two is what holds on a noisy
//! shared machine; absolute numbers move with the machine.
//!
//!     cargo run --release -p onramp-bench -- --scenario all
//!
//! It starts the release server against PostgreSQL itself (or targets `--server-url`),
//! prepares data with demo-data, and prints one table.

mod abuse;
mod client;
mod load;
mod nudges;
mod scenarios;
mod server;
mod webhooks;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Status,
    Complete,
    Events,
    Subscribers,
    Analytics,
    /// Ordinary users' status latency while one abusive user floods the server.
    Abuse,
    /// Webhook deliveries to a receiver on loopback: live latency and backlog throughput.
    Webhooks,
    /// The nudge scheduler at a million enrollments: an idle tick, and a backlog due at once.
    Nudges,
    All,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Load benchmark: onramp against its own floor, in the same run")]
pub struct Args {
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// The PostgreSQL database to fill and measure (created when missing).
    #[arg(long, env = "BENCH_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/onramp_bench")]
    pub database_url: String,
    /// Target a running server instead of starting one (it must use this database and
    /// the bench's JWT secret).
    #[arg(long)]
    pub server_url: Option<String>,
    /// Concurrent clients for status, complete and events (and floor connections).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Database connections of the server and of the floor.
    #[arg(long, default_value_t = 16)]
    pub pool: u32,
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Demo-data users the status scenario reads.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Steps of the flow the complete scenario completes (each a fresh completion).
    #[arg(long, default_value_t = 10)]
    pub complete_steps: u64,
    /// Enrolled users the events scenario sends events for.
    #[arg(long, default_value_t = 20_000)]
    pub event_users: usize,
    /// Steps, each with its own trigger event, of the flow the events scenario completes.
    #[arg(long, default_value_t = 10)]
    pub event_steps: usize,
    /// Live subscriptions in the subscribers scenario.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Completions per second while subscribers listen.
    #[arg(long, default_value_t = 200)]
    pub push_rate: u64,
    /// Enrollments the analytics scenario needs (topped up with demo-data).
    #[arg(long, default_value_t = 1_000_000)]
    pub analytics_users: u64,
    /// Users the webhooks scenario sends events for (rate × seconds must fit in users ×
    /// event-steps: every event completes a step of its own).
    #[arg(long, default_value_t = 5_000)]
    pub hook_users: usize,
    /// Events per second in the webhooks scenario's live phase.
    #[arg(long, default_value_t = 1_000)]
    pub hook_rate: u64,
    /// Enrollments (with nudge rules) the nudges scenario needs (topped up with demo-data).
    #[arg(long, default_value_t = 1_000_000)]
    pub nudge_users: u64,
    /// Nudges due at once in each of the nudges scenario's backlog phases.
    #[arg(long, default_value_t = 100_000)]
    pub nudge_due: u64,
    /// Scheduler loops racing in each backlog phase, one phase per number (each on the
    /// next `--nudge-due` rows): one, then what `ONRAMP_NUDGE_WORKERS` does by default.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, onramp::nudges::DEFAULT_WORKERS])]
    pub nudge_schedulers: Vec<usize>,
    /// The abuse scenario's attacks (all when not given): aliases, nesting, oversized,
    /// flood, subscribe-flood. One at a time tells which one hurts.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub attacks: Vec<abuse::Attack>,
    /// A few seconds of everything with small numbers, so the harness cannot rot (CI).
    #[arg(long)]
    pub smoke: bool,
}

impl Args {
    fn phase(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    fn wants(&self, s: Scenario) -> bool {
        self.scenario == Scenario::All || self.scenario == s
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.seconds = 2;
        args.users = args.users.min(300);
        args.event_users = args.event_users.min(200);
        args.subscribers = args.subscribers.min(300);
        args.analytics_users = args.analytics_users.min(2_000);
        args.concurrency = args.concurrency.min(8);
        args.push_rate = args.push_rate.min(100);
        args.hook_users = args.hook_users.min(200);
        args.hook_rate = args.hook_rate.min(100);
        args.nudge_users = args.nudge_users.min(2_000);
        args.nudge_due = args.nudge_due.min(100);
    }
    raise_file_limit();
    scenarios::ensure_database(&args.database_url).await.context("preparing the bench database")?;
    let server = match &args.server_url {
        Some(url) => server::Server { url: url.clone(), child: None },
        None => server::Server::start(&args.database_url, args.pool).await?,
    };
    let mut rows = Vec::new();
    if args.wants(Scenario::Status) {
        rows.push(scenarios::status(&args, &server).await.context("status scenario")?);
    }
    if args.wants(Scenario::Complete) {
        rows.push(scenarios::complete(&args, &server).await.context("complete scenario")?);
    }
    if args.wants(Scenario::Events) {
        rows.push(scenarios::events(&args, &server).await.context("events scenario")?);
    }
    if args.wants(Scenario::Subscribers) {
        rows.push(scenarios::subscribers(&args, &server).await.context("subscribers scenario")?);
    }
    if args.wants(Scenario::Abuse) {
        rows.push(abuse::abuse(&args, &server).await.context("abuse scenario")?);
    }
    if args.wants(Scenario::Webhooks) {
        rows.extend(webhooks::webhooks(&args, &server).await.context("webhooks scenario")?);
    }
    if args.wants(Scenario::Nudges) {
        rows.extend(nudges::nudges(&args, &server).await.context("nudges scenario")?);
    }
    if args.wants(Scenario::Analytics) {
        rows.extend(scenarios::analytics(&args, &server).await.context("analytics scenario")?);
    }
    scenarios::print_table(&args, &rows);
    let failed: Vec<&str> = rows.iter().filter(|r| !r.ok).map(|r| r.name.as_str()).collect();
    if !failed.is_empty() {
        anyhow::bail!("scenarios with errors or lost updates: {}", failed.join(", "));
    }
    Ok(())
}

/// Thousands of sockets need more descriptors than the usual soft limit of 1024.
fn raise_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
