//! The onramp command line: serve (the default), migrate, schema, token, demo-data.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use onramp::auth::{JwtKeys, Role};
use onramp::config::{DatabaseArgs, JwtArgs, Mode, ServeArgs};
use onramp::persistence;
use onramp::service::Onramp;
use onramp::{AppState, demo_data, graphql, http};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "onramp", version, about = "Self-hosted onboarding engine")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    jwt: JwtArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the GraphQL API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL), as checked in at schema.graphql.
    Schema,
    /// Mint a token from the configured key (development and testing).
    Token {
        #[arg(long)]
        sub: String,
        #[arg(long, default_value = "user")]
        role: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
        /// A workspace the subject is a member of (repeat for several).
        #[arg(long = "workspace")]
        workspaces: Vec<String>,
    },
    /// Flow definitions as files: check, plan, apply, export, translations.
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// Fill the database with a plausible population for a flow (demos, benchmarks).
    /// The same seed, users and --until give the same data.
    DemoData {
        /// Users to generate.
        #[arg(long)]
        users: u64,
        /// The flow to enroll them in (published; `new_user` is published on demand).
        #[arg(long)]
        flow: String,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Enrollments start within this many weeks before --until.
        #[arg(long, default_value_t = 8)]
        weeks: u32,
        /// Nothing happens after this time (RFC 3339); default: now.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// The step whose completion drives later activity most.
        #[arg(long)]
        key_step: Option<String>,
        /// Users per transaction.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
}

/// Where the flows commands reach a server.
#[derive(clap::Args)]
struct ServerArgs {
    /// The onramp server (`https://onramp.example.com`) or its /graphql endpoint.
    #[arg(long, env = "ONRAMP_SERVER")]
    server: String,
    /// An admin token.
    #[arg(long, env = "ONRAMP_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand)]
enum FlowsCommand {
    /// Validate every flow file (*.json) under DIR offline; exit 1 on any problem.
    Check { dir: PathBuf },
    /// Compare DIR with the server's active versions: per flow new, unchanged or new
    /// version with a step-level diff and the migration preview. Exit 2 when changes
    /// are pending.
    Plan {
        dir: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        /// Also deprecate flows no longer in DIR.
        #[arg(long)]
        prune: bool,
        /// Save the plan, for `apply --plan`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Publish what plan shows, refusing any flow that changed on the server since.
    Apply {
        dir: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        /// Apply this saved plan, or nothing if the files or the server changed since.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Move enrollments on the previous active version to the new one.
        #[arg(long)]
        migrate: bool,
        /// Deprecate flows no longer in DIR.
        #[arg(long)]
        prune: bool,
    },
    /// Write the server's active definitions to DIR/<key>.json, canonical.
    Export {
        dir: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Translations as CSV for translators.
    #[command(subcommand)]
    Translations(TranslationsCommand),
}

#[derive(Subcommand)]
enum TranslationsCommand {
    /// Every text of the flows in DIR as CSV: flow, text, a column per locale.
    Export {
        dir: PathBuf,
        /// Add an empty column for a new locale (repeat for several).
        #[arg(long = "locale")]
        locales: Vec<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Set the CSV's non-empty cells in the flow files of DIR (all or nothing).
    Import { dir: PathBuf, csv: PathBuf },
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // JSON lines for log shippers in production; readable text otherwise.
    if std::env::var("ONRAMP_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    if matches!(cli.command, Some(Command::Flows(_)))
        && let Some(Command::Flows(command)) = cli.command.take()
    {
        return match flows(command).await {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    let mode = cli.jwt.mode(&cli.database.database_url);
    match cli.command.take().unwrap_or(Command::Serve) {
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Command::Token { sub, role, ttl, workspaces } => {
            let role = Role::parse(&role).context("role is user, admin or service")?;
            let keys = JwtKeys::from_args(&cli.jwt, mode)?;
            let workspaces: Vec<&str> = workspaces.iter().map(String::as_str).collect();
            println!("{}", keys.mint_member(&sub, role, &workspaces, ttl)?);
            Ok(())
        }
        Command::Migrate => {
            let db = persistence::connect(&cli.database.database_url, 1).await.context("connecting to the database")?;
            persistence::migrate(&db).await.context("migrating")?;
            println!("migrations applied");
            Ok(())
        }
        Command::DemoData { users, flow, seed, weeks, until, key_step, batch } => {
            let db = persistence::connect(&cli.database.database_url, cli.database.db_max_connections)
                .await
                .with_context(|| format!("connecting to {}", redact(&cli.database.database_url)))?;
            persistence::migrate(&db).await.context("migrating")?;
            let mut options = demo_data::Options::new(users, &flow);
            options.seed = seed;
            options.weeks = weeks;
            options.until = until.unwrap_or(options.until);
            options.key_step = key_step;
            options.batch = batch;
            let mut reported = std::time::Instant::now();
            let summary = demo_data::generate(&db, &options, |p| {
                if p.done == p.total || reported.elapsed().as_secs_f64() >= 2.0 {
                    reported = std::time::Instant::now();
                    let secs = p.elapsed.as_secs_f64();
                    eprintln!(
                        "demo-data: {}/{} users ({:.0} s, {:.0} users/s)",
                        p.done,
                        p.total,
                        secs,
                        p.done as f64 / secs.max(0.001)
                    );
                }
            })
            .await?;
            print_summary(&summary, &options);
            Ok(())
        }
        Command::Serve => serve(cli, mode).await,
        Command::Flows(_) => unreachable!("handled in main"),
    }
}

/// The flows commands; the exit code (2: plan found changes pending).
async fn flows(command: FlowsCommand) -> anyhow::Result<u8> {
    use onramp::cli::flows::{self, ApplyOptions, Target, translations};
    match command {
        FlowsCommand::Check { dir } => {
            let report = flows::check(&dir)?;
            print!("{}", report.render());
            Ok(if report.ok() { 0 } else { 1 })
        }
        FlowsCommand::Plan { dir, server, prune, out } => {
            let target = Target { server: &server.server, token: &server.token };
            let plan = flows::plan(&dir, &target, prune).await?;
            print!("{}", plan.render());
            if let Some(out) = out {
                std::fs::write(&out, serde_json::to_string_pretty(&plan)? + "\n")
                    .with_context(|| format!("writing {}", out.display()))?;
            }
            Ok(if plan.has_changes() { flows::CHANGES_PENDING } else { 0 })
        }
        FlowsCommand::Apply { dir, server, plan, migrate, prune } => {
            let target = Target { server: &server.server, token: &server.token };
            let options = ApplyOptions { saved_plan: plan.as_deref(), migrate, prune };
            print!("{}", flows::apply(&dir, &target, &options).await?.render());
            Ok(0)
        }
        FlowsCommand::Export { dir, server } => {
            let target = Target { server: &server.server, token: &server.token };
            for path in flows::export(&dir, &target).await? {
                println!("wrote {}", path.display());
            }
            Ok(0)
        }
        FlowsCommand::Translations(TranslationsCommand::Export { dir, locales, out }) => {
            let csv = translations::export(&dir, &locales)?;
            match out {
                Some(out) => std::fs::write(&out, csv).with_context(|| format!("writing {}", out.display()))?,
                None => print!("{csv}"),
            }
            Ok(0)
        }
        FlowsCommand::Translations(TranslationsCommand::Import { dir, csv }) => {
            let imported = translations::import(&dir, &csv)?;
            println!("{} text(s) set in {} file(s)", imported.texts, imported.files.len());
            for path in imported.files {
                println!("wrote {}", path.display());
            }
            Ok(0)
        }
    }
}

fn print_summary(s: &demo_data::Summary, options: &demo_data::Options) {
    let versions: Vec<String> = s.versions.iter().map(|v| format!("v{v}")).collect();
    let pct = |n: u64| 100.0 * n as f64 / s.users.max(1) as f64;
    println!(
        "demo-data: {} users in flow {} ({}), seed {}, {} weeks until {}, in {:.1} s",
        s.users,
        s.flow,
        versions.join(", "),
        options.seed,
        options.weeks,
        options.until.to_rfc3339(),
        s.elapsed.as_secs_f64()
    );
    println!(
        "  enrollments: {} COMPLETED ({:.1}%), {} IN_PROGRESS ({:.1}%) + {} not started ({:.1}%), {} SKIPPED ({:.1}%)",
        s.completed,
        pct(s.completed),
        s.in_progress,
        pct(s.in_progress),
        s.not_started,
        pct(s.not_started),
        s.skipped,
        pct(s.skipped)
    );
    println!(
        "  step_progress rows: {}, points_ledger entries: {}, exposures: {}",
        s.step_rows, s.ledger_entries, s.exposures
    );
    println!(
        "  events: {} ({} completing steps, {} later `{}` activity)",
        s.events(),
        s.trigger_events,
        s.activity_events,
        s.activity_event
    );
    if s.nudges_sent + s.nudges_held_out + s.nudges_suppressed + s.nudge_schedule_rows > 0 {
        println!(
            "  nudges: {} sent, {} held out, {} held back by the fatigue budget, {} cancelled by progress; {} nudge_schedule rows",
            s.nudges_sent, s.nudges_held_out, s.nudges_suppressed, s.nudges_cancelled, s.nudge_schedule_rows
        );
    }
    println!("  retention driver (key step): {}", s.key_step);
}

async fn serve(cli: Cli, mode: Mode) -> anyhow::Result<()> {
    // Refuse to start without a key before touching anything else.
    let keys = JwtKeys::from_args(&cli.jwt, mode)?;
    let metrics_access = cli.serve.metrics_access(mode).map_err(|e| anyhow::anyhow!(e))?;
    let url = &cli.database.database_url;
    let db = persistence::connect(url, cli.database.db_max_connections)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    persistence::migrate(&db).await.context("migrating")?;
    // Readers are exact whatever the compactor's lag; folding often keeps them fast.
    let _compactor = persistence::rollup::spawn_compactor(db.clone(), std::time::Duration::from_secs(5));
    let webhooks = cli.serve.webhooks.settings(mode).map_err(|e| anyhow::anyhow!(e))?;
    let nudges = cli.serve.nudges.settings().map_err(|e| anyhow::anyhow!(e))?;
    let onramp = Onramp::new(db).with_limits(cli.serve.limits.product()).with_webhooks(webhooks).with_nudges(nudges);
    let _listener = onramp.listen(url).await.context("PostgreSQL LISTEN for changes from other instances")?;
    let development = mode == Mode::Development;
    if development
        && !cli.serve.no_demo_flow
        && let Some(flow) =
            onramp.ensure_demo_flow().await.map_err(|e| anyhow::anyhow!("publishing the demo flow: {}", e.message))?
    {
        tracing::info!(key = %flow.key, "published the demo flow");
    }
    // Beside the API, on every instance: instances sharing PostgreSQL split the work.
    let dispatcher = if cli.serve.webhooks.no_webhook_dispatcher {
        None
    } else {
        Some(onramp.spawn_dispatcher().context("starting the webhook dispatcher")?)
    };
    // The first requests need not wait for the identity provider; a failure here is not
    // fatal (the provider may be down for a moment), the next token with a kid tries again.
    if let Some(jwks) = keys.jwks() {
        match jwks.prefetch().await {
            Ok(count) => tracing::info!(url = %jwks.settings().url, keys = count, "identity provider keys loaded"),
            Err(e) => tracing::warn!(url = %jwks.settings().url, error = %e, "identity provider keys not loaded yet"),
        }
    }
    let dev_token = if development { Some(keys.mint("demo-admin", Role::Admin, 7 * 86_400)?) } else { None };
    let listener =
        tokio::net::TcpListener::bind(cli.serve.bind).await.with_context(|| format!("binding {}", cli.serve.bind))?;
    let addr = listener.local_addr()?;
    let state = AppState::new(onramp, keys, development)
        .with_ws_init_timeout(std::time::Duration::from_secs(cli.serve.ws_init_timeout))
        .with_limits(cli.serve.limits.server())
        .with_metrics_access(metrics_access);
    let scheduler =
        (!cli.serve.nudges.no_nudge_scheduler).then(|| onramp::nudges::spawn_scheduler(state.onramp.clone()));
    let app = http::router(state);
    tracing::info!(%addr, database = %redact(url), ?mode, "onramp listening");
    // One stable line for scripts (and tests) that start onramp on port 0.
    println!("onramp listening on http://{addr}");
    if let Some(token) = dev_token {
        println!("\nonramp is running in development mode on {}", redact(url));
        println!("  GraphiQL:  http://{addr}/graphql");
        println!("  Console:   http://{addr}/console");
        println!("  Token (admin, 7 days; add as header `Authorization: Bearer <token>`):\n  {token}\n");
    }
    // The peer address keys the rate limit of callers without a valid token.
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    if let Some(scheduler) = scheduler {
        scheduler.shutdown().await;
    }
    if let Some(dispatcher) = dispatcher {
        // Attempts in flight finish and are recorded; nothing is claimed after this.
        dispatcher.shutdown().await;
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Hides a password in a database URL before it is logged.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, draining connections");
}
