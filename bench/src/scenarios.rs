//! The scenarios. Each returns a row: the server's throughput and latency, and the same
//! work's floor, measured back to back at the same concurrency on the same database.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt, stream};
use onramp::auth::Role;
use onramp::service::{AnalyticsFilter, Onramp};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::{Value, json};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, Row as _};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::Args;
use crate::client::{Client, keys, token};
use crate::load::{self, Measured};
use crate::server::Server;

/// One line of the results table.
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub server: Measured,
    pub floor: Option<Measured>,
    /// Cores used while the server phase ran: server, PostgreSQL, the bench itself.
    pub cores: Cores,
    pub notes: String,
    /// No errors and, for subscribers, no lost update.
    pub ok: bool,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Cores {
    pub server: Option<f64>,
    pub postgres: f64,
    pub bench: f64,
}

/// CPU seconds of the server, of each PostgreSQL process by pid, and of this process.
fn cpu_now(server: &Server) -> (Option<f64>, HashMap<u32, f64>, f64) {
    let postgres = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
                })
                .filter_map(|pid| load::cpu_seconds(pid).map(|s| (pid, s)))
                .collect()
        })
        .unwrap_or_default();
    (server.pid().and_then(load::cpu_seconds), postgres, load::cpu_seconds(std::process::id()).unwrap_or(0.0))
}

/// Runs a server phase and reports the cores each party used during it. PostgreSQL's is
/// summed per process over those alive at the end (a backend started during the phase
/// counts whole): one that exits takes its time with it, and summing totals instead would
/// then go negative.
pub(crate) async fn measured<F: std::future::Future<Output = Measured>>(
    server: &Server,
    phase: F,
) -> (Measured, Cores) {
    let (s0, p0, b0) = cpu_now(server);
    let started = Instant::now();
    let m = phase.await;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let (s1, p1, b1) = cpu_now(server);
    let postgres: f64 = p1.iter().map(|(pid, end)| end - p0.get(pid).copied().unwrap_or(0.0)).sum();
    let cores =
        Cores { server: s0.zip(s1).map(|(a, b)| (b - a) / secs), postgres: postgres / secs, bench: (b1 - b0) / secs };
    (m, cores)
}

/// Creates the bench database when missing and migrates it.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let (base, name) = url.rsplit_once('/').context("database URL without a name")?;
    let name = name.split('?').next().unwrap_or(name);
    let mut admin =
        sqlx::PgConnection::connect(&format!("{base}/postgres")).await.context("connecting to PostgreSQL")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await?;
    }
    let db = onramp::persistence::connect(url, 2).await?;
    onramp::persistence::migrate(&db).await?;
    Ok(())
}

async fn floor_pool(args: &Args) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new().max_connections(args.pool).connect(&args.database_url).await?)
}

/// The machine's PostgreSQL may run with autovacuum off. A table never analyzed makes the
/// planner scan it whole for a multi-row lookup (`id IN (...)`), and the dead rows earlier
/// runs left slow both sides a little more each run (47% and 36% of the floor for the same
/// build, with and without). Production databases are vacuumed and analyzed by
/// autovacuum; the bench does it once its data is in place.
pub(crate) async fn analyze(args: &Args) -> anyhow::Result<()> {
    let pool = floor_pool(args).await?;
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    Ok(())
}

pub(crate) async fn count(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql.to_string()))
        .await?
        .context("no row")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// At least `users` demo-data users in `new_user`, topped up with a fresh seed.
async fn demo_users(args: &Args, users: u64) -> anyhow::Result<DatabaseConnection> {
    let db = onramp::persistence::connect(&args.database_url, 4).await?;
    let have = count(&db, "SELECT COUNT(*) FROM enrollments WHERE flow_key = 'new_user'").await? as u64;
    if have < users {
        let mut options = onramp::demo_data::Options::new(users - have, "new_user");
        options.seed = 1_000_000 + have;
        eprintln!("bench: demo-data: {} more users in new_user (seed {})", users - have, options.seed);
        let mut last = Instant::now();
        onramp::demo_data::generate(&db, &options, |p| {
            if last.elapsed() > Duration::from_secs(10) {
                eprintln!("bench: demo-data {}/{}", p.done, p.total);
                last = Instant::now();
            }
        })
        .await?;
    }
    Ok(db)
}

/// Publishes a bench flow of independent optional steps once (later runs reuse it).
pub(crate) async fn bench_flow(
    client: &Client,
    admin: &str,
    key: &str,
    steps: usize,
    triggers: bool,
) -> anyhow::Result<()> {
    let existing = client.gql(admin, "query($k: String!) { flow(key: $k) { version } }", json!({ "k": key })).await;
    if existing.is_ok_and(|d| !d["flow"].is_null()) {
        return Ok(());
    }
    let steps: Vec<Value> = (0..steps)
        .map(|i| {
            let mut step =
                json!({ "key": format!("s{i}"), "title": format!("Step {i}"), "required": false, "points": 1 });
            if triggers {
                step["trigger"] = json!({ "event": format!("bench.s{i}") });
            }
            step
        })
        .collect();
    let definition = json!({ "key": key, "title": key, "steps": steps });
    client
        .gql(admin, "mutation($d: JSON!) { publishFlow(definition: $d) { version } }", json!({ "d": definition }))
        .await?;
    Ok(())
}

/// Enrolls users through the API, `parallel` at a time, before anything is timed.
pub(crate) async fn enroll(client: &Client, tokens: &[String], flow: &str, parallel: usize) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<Value>> = stream::iter(tokens.iter())
        .map(|t| {
            client.gql(t, "mutation($f: String!) { startOnboarding(flowKey: $f) { revision } }", json!({ "f": flow }))
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok(())
}

pub(crate) fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

pub(crate) const STATUS_QUERY: &str = "query($f: String!) { status(flowKey: $f) { status percentComplete position revision nextStep { key } steps { key status available } } }";

/// The ids of `args.users` demo-data users enrolled in `new_user` (made when missing).
pub(crate) async fn demo_user_ids(args: &Args) -> anyhow::Result<Vec<String>> {
    let db = demo_users(args, args.users).await?;
    let sql = format!(
        "SELECT s.external_id FROM subjects s JOIN enrollments e ON e.subject_id = s.id \
         WHERE e.flow_key = 'new_user' ORDER BY s.id LIMIT {}",
        args.users
    );
    let rows = db.query_all_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql)).await?;
    let users: Vec<String> = rows.iter().map(|r| r.try_get_by_index::<String>(0)).collect::<Result<_, _>>()?;
    if users.is_empty() {
        bail!("no demo users");
    }
    Ok(users)
}

pub async fn status(args: &Args, server: &Server) -> anyhow::Result<Row> {
    let users = demo_user_ids(args).await?;
    let keys = keys();
    let tokens: Arc<Vec<String>> = Arc::new(users.iter().map(|u| token(&keys, u, Role::User)).collect());
    let users = Arc::new(users);
    let client = Client::new(&server.url);
    let pick = |w: usize, i: u64, n: usize| (w * 7919 + i as usize * 104_729) % n;

    let c = client.clone();
    let t = tokens.clone();
    let (server_run, cores) = measured(
        server,
        load::run(args.concurrency, args.phase(), move |w, i| {
            let (c, t) = (c.clone(), t.clone());
            async move {
                let token = &t[pick(w, i, t.len())];
                c.gql(token, STATUS_QUERY, json!({ "f": "new_user" })).await.map(|_| ())
            }
        }),
    )
    .await;

    // The floor: the read a status needs, as the server issues it: subject, enrollment and
    // steps in one statement (one statement is one snapshot). The flow version is
    // immutable, so neither side reads it per request.
    let pool = floor_pool(args).await?;
    let floor = load::run(args.concurrency, args.phase(), move |w, i| {
        let (pool, users) = (pool.clone(), users.clone());
        async move {
            let user = &users[pick(w, i, users.len())];
            let rows = sqlx::query(
                "SELECT s.id, s.external_id, s.attributes, e.id, e.subject_id, e.flow_id, e.flow_key, e.variant, \
                 e.status, e.started_at, e.completed_at, e.skipped_at, e.last_activity_at, e.points, e.revision, \
                 p.enrollment_id, p.step_key, p.status, p.started_at, p.completed_at, p.skipped_at, p.skip_reason, \
                 p.metadata, p.source, p.event_id, p.completed_by, p.available_at \
                 FROM subjects s LEFT JOIN enrollments e ON e.subject_id = s.id AND e.flow_key = $2 \
                 LEFT JOIN step_progress p ON p.enrollment_id = e.id WHERE s.external_id = $1",
            )
            .bind(user)
            .bind("new_user")
            .fetch_all(&pool)
            .await?;
            anyhow::ensure!(!rows.is_empty(), "no subject {user}");
            Ok(())
        }
    })
    .await;
    let ok = server_run.errors == 0 && floor.errors == 0;
    Ok(Row {
        name: "status".into(),
        unit: "req/s",
        notes: format!("{} users; floor: the same one-statement read (subject, enrollment, steps)", tokens.len()),
        server: server_run,
        floor: Some(floor),
        cores,
        ok,
    })
}

pub async fn complete(args: &Args, server: &Server) -> anyhow::Result<Row> {
    let steps = args.complete_steps.max(1);
    let flow = format!("bench_complete_{steps}");
    let client = Client::new(&server.url);
    let keys = keys();
    let admin = token(&keys, "bench-admin", Role::Admin);
    bench_flow(&client, &admin, &flow, steps as usize, false).await?;
    let run = run_id();
    // Enough users that no worker runs out within the phase at a few thousand per second.
    let per_worker = (args.seconds * 5_000 / steps / args.concurrency as u64).max(2);
    let users = per_worker as usize * args.concurrency;
    let names = |prefix: &str| (0..users).map(|n| format!("{prefix}-{run}-{n}")).collect::<Vec<_>>();
    let (server_users, floor_users) = (names("bc"), names("bf"));
    let server_tokens: Vec<String> = server_users.iter().map(|u| token(&keys, u, Role::User)).collect();
    let floor_tokens: Vec<String> = floor_users.iter().map(|u| token(&keys, u, Role::User)).collect();
    eprintln!("bench: complete: enrolling {} + {} users", users, users);
    enroll(&client, &server_tokens, &flow, args.concurrency).await?;
    enroll(&client, &floor_tokens, &flow, args.concurrency).await?;
    analyze(args).await?;

    let concurrency = args.concurrency;
    let slot = move |w: usize, i: u64| (w + concurrency * (i / steps) as usize, i % steps);
    let tokens = Arc::new(server_tokens);
    let c = client.clone();
    let f = Arc::new(flow.clone());
    let (server_run, cores) = measured(
        server,
        load::run(args.concurrency, args.phase(), move |w, i| {
            let (c, tokens, f) = (c.clone(), tokens.clone(), f.clone());
            async move {
                let (user, step) = slot(w, i);
                let token = tokens.get(user).context("ran out of users")?;
                c.gql(
                    token,
                    "mutation($f: String!, $k: String!) { completeStep(flowKey: $f, stepKey: $k) { revision percentComplete } }",
                    json!({ "f": f.as_str(), "k": format!("s{step}") }),
                )
                .await
                .map(|_| ())
            }
        }),
    )
    .await;

    // The floor: the smallest transaction that records the same change — lock the
    // enrollment, upsert the step, write the ledger entry, bump the enrollment.
    let pool = floor_pool(args).await?;
    let floor_users = Arc::new(floor_users);
    let floor_flow = Arc::new(flow.clone());
    let floor = load::run(args.concurrency, args.phase(), move |w, i| {
        let (pool, users, flow) = (pool.clone(), floor_users.clone(), floor_flow.clone());
        async move {
            let (user, step) = slot(w, i);
            let user = users.get(user).context("ran out of users")?;
            let step = format!("s{step}");
            let now = chrono::Utc::now();
            let mut tx = pool.begin().await?;
            let row = sqlx::query(
                "SELECT e.id, e.subject_id FROM enrollments e JOIN subjects s ON s.id = e.subject_id \
                 WHERE s.external_id = $1 AND e.flow_key = $2 FOR UPDATE OF e",
            )
            .bind(user)
            .bind(flow.as_str())
            .fetch_one(&mut *tx)
            .await?;
            let (enrollment_id, subject_id): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            sqlx::query(
                "INSERT INTO step_progress (enrollment_id, step_key, status, started_at, completed_at, source, updated_at, \
                 completed_by, available_at) VALUES ($1, $2, 'COMPLETED', $3, $3, 'USER', $3, $4, $3) \
                 ON CONFLICT (enrollment_id, step_key) DO UPDATE SET status = 'COMPLETED', started_at = $3, \
                 completed_at = $3, source = 'USER', updated_at = $3, completed_by = $4",
            )
            .bind(enrollment_id)
            .bind(&step)
            .bind(now)
            .bind(user)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO points_ledger (subject_id, enrollment_id, amount, reason, created_at) \
                 VALUES ($1, $2, 1, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(subject_id)
            .bind(enrollment_id)
            .bind(format!("onboarding:{flow}:{step}"))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE enrollments SET revision = revision + 1, points = points + 1, last_activity_at = $2 WHERE id = $1",
            )
            .bind(enrollment_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }
    })
    .await;
    let ok = server_run.errors == 0 && floor.errors == 0;
    Ok(Row {
        name: "complete".into(),
        unit: "req/s",
        notes: format!(
            "{users} users x {steps} steps, each completion new; floor: lock + step upsert + ledger + enrollment update"
        ),
        server: server_run,
        floor: Some(floor),
        cores,
        ok,
    })
}

pub async fn events(args: &Args, server: &Server) -> anyhow::Result<Row> {
    const BATCH: usize = 100;
    let steps = args.event_steps.max(1);
    let flow = format!("bench_events_{steps}");
    let client = Client::new(&server.url);
    let keys = keys();
    let admin = token(&keys, "bench-admin", Role::Admin);
    let service = Arc::new(token(&keys, "bench-service", Role::Service));
    bench_flow(&client, &admin, &flow, steps, true).await?;
    let run = run_id();
    let users: Vec<String> = (0..args.event_users.max(1)).map(|n| format!("be-{run}-{n}")).collect();
    let tokens: Vec<String> = users.iter().map(|u| token(&keys, u, Role::User)).collect();
    eprintln!("bench: events: enrolling {} users", users.len());
    enroll(&client, &tokens, &flow, args.concurrency).await?;
    analyze(args).await?;
    let users = Arc::new(users);

    let u = users.clone();
    let c = client.clone();
    let (server_run, cores) = measured(
        server,
        load::run(args.concurrency, args.phase(), move |w, i| {
            let (c, users, service) = (c.clone(), u.clone(), service.clone());
            async move {
                let events: Vec<Value> = (0..BATCH)
                    .map(|k| {
                        let n = (w * 7919 + i as usize * 131 + k * 31) % users.len();
                        json!({
                            "id": format!("{w}-{i}-{k}-{}", uuid::Uuid::new_v4().simple()),
                            "subjectId": users[n],
                            "name": format!("bench.s{}", (i as usize * 7 + k) % steps),
                        })
                    })
                    .collect();
                let data = c
                    .gql(
                        &service,
                        "mutation($e: [EventInput!]!) { trackEvents(events: $e) { status } }",
                        json!({ "e": events }),
                    )
                    .await?;
                let stored =
                    data["trackEvents"].as_array().map_or(0, |r| r.iter().filter(|r| r["status"] == "NEW").count());
                if stored != BATCH {
                    bail!("{stored} of {BATCH} events stored");
                }
                Ok(())
            }
        }),
    )
    .await;

    // The floor: the batch's events stored in one multi-row insert, in one transaction.
    let pool = floor_pool(args).await?;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM subjects WHERE external_id LIKE $1 ORDER BY id")
        .bind(format!("be-{run}-%"))
        .fetch_all(&pool)
        .await?;
    let ids = Arc::new(ids);
    let floor = load::run(args.concurrency, args.phase(), move |w, i| {
        let (pool, ids) = (pool.clone(), ids.clone());
        async move {
            let now = chrono::Utc::now();
            let mut sql = String::from(
                "INSERT INTO events (event_id, subject_id, name, properties, occurred_at, received_at) VALUES ",
            );
            for k in 0..BATCH {
                let n = (w * 7919 + i as usize * 131 + k * 31) % ids.len();
                let sep = if k == 0 { "" } else { "," };
                sql.push_str(&format!(
                    "{sep}('floor-{}', {}, 'bench.floor{}', '{{}}', $1, $1)",
                    uuid::Uuid::new_v4().simple(),
                    ids[n],
                    k % steps
                ));
            }
            let mut tx = pool.begin().await?;
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        }
    })
    .await;
    let (mut server_run, mut floor) = (server_run, floor);
    server_run.units_per_op = BATCH as u64;
    floor.units_per_op = BATCH as u64;
    let ok = server_run.errors == 0 && floor.errors == 0;
    Ok(Row {
        name: "events".into(),
        unit: "events/s",
        notes: format!(
            "batches of {BATCH} over {} enrolled users in a flow of {steps} triggered steps, most events completing a step; floor: the rows inserted, nothing applied",
            users.len()
        ),
        server: server_run,
        floor: Some(floor),
        cores,
        ok,
    })
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A graphql-transport-ws subscription to one user's progress, from a given source address.
async fn subscribe(server: SocketAddr, source: Ipv4Addr, token: &str) -> anyhow::Result<(Socket, i64)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(server).await?;
    let mut request = format!("ws://{server}/graphql/ws").into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } })))
        .await?;
    let query = "subscription { onboardingProgress(flowKey: \"bench_live\") { revision } }";
    let mut subscribed = false;
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else { continue };
        let frame: Value = serde_json::from_str(&text)?;
        match frame["type"].as_str() {
            Some("connection_ack") if !subscribed => {
                ws.send(send(json!({ "id": "1", "type": "subscribe", "payload": { "query": query } }))).await?;
                subscribed = true;
            }
            Some("next") => {
                let revision = frame["payload"]["data"]["onboardingProgress"]["revision"].as_i64().unwrap_or(-1);
                return Ok((ws, revision));
            }
            Some("ping") => ws.send(send(json!({ "type": "pong" }))).await?,
            other => bail!("unexpected frame {other:?}: {frame}"),
        }
    }
    bail!("closed before the first snapshot")
}

pub async fn subscribers(args: &Args, server: &Server) -> anyhow::Result<Row> {
    const STEPS: u64 = 20;
    const SOURCES: u8 = 8;
    let client = Client::new(&server.url);
    let keys = keys();
    let admin = token(&keys, "bench-admin", Role::Admin);
    bench_flow(&client, &admin, "bench_live", STEPS as usize, false).await?;
    let addr: SocketAddr =
        server.url.trim_start_matches("http://").parse().context("the server URL must be http://IP:PORT")?;
    let run = run_id();
    let n = args.subscribers;
    let tokens: Arc<Vec<String>> =
        Arc::new((0..n).map(|i| token(&keys, &format!("bs-{run}-{i}"), Role::User)).collect());
    let rss_before = server.pid().and_then(load::resident_bytes);

    eprintln!("bench: subscribers: opening {n} subscriptions from {SOURCES} source addresses");
    let opened = Instant::now();
    let sockets: Vec<anyhow::Result<(Socket, i64)>> = stream::iter(0..n)
        .map(|i| {
            let tokens = tokens.clone();
            async move { subscribe(addr, Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCES as usize) as u8), &tokens[i]).await }
        })
        .buffered(256)
        .collect()
        .await;
    let mut connected = Vec::with_capacity(n);
    for (i, s) in sockets.into_iter().enumerate() {
        connected.push(s.with_context(|| format!("subscriber {i}"))?);
    }
    eprintln!("bench: subscribers: {n} open in {:.1} s", opened.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = server.pid().and_then(load::resident_bytes);

    // Every socket is read by its own task, which notes when each revision arrived.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let readers: Vec<_> = connected
        .into_iter()
        .map(|(mut ws, _)| {
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut seen: Vec<(i64, Instant)> = Vec::new();
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        message = ws.next() => {
                            let Some(Ok(Message::Text(text))) = message else { break };
                            let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                            if frame["type"] == "next"
                                && let Some(r) = frame["payload"]["data"]["onboardingProgress"]["revision"].as_i64()
                            {
                                seen.push((r, Instant::now()));
                            }
                        }
                    }
                }
                let _ = ws.close(None).await;
                seen
            })
        })
        .collect();

    // Completions at a steady rate, each for a different subscriber in turn.
    let total = (args.push_rate * args.seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.push_rate as f64);
    let started = Instant::now();
    let sent: Vec<anyhow::Result<(usize, i64, Instant, Duration)>> = stream::iter(0..total)
        .map(|k| {
            let (client, tokens) = (client.clone(), tokens.clone());
            async move {
                tokio::time::sleep_until((started + interval * k as u32).into()).await;
                let user = k % n;
                let step = (k / n) as u64 % STEPS;
                let t = Instant::now();
                let data = client
                    .gql(
                        &tokens[user],
                        "mutation($k: String!) { completeStep(flowKey: \"bench_live\", stepKey: $k) { revision } }",
                        json!({ "k": format!("s{step}") }),
                    )
                    .await?;
                let answered = Instant::now();
                let revision = data["completeStep"]["revision"].as_i64().context("revision")?;
                Ok((user, revision, answered, answered - t))
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await; // the last pushes
    let _ = stop_tx.send(true);
    let mut seen: Vec<Vec<(i64, Instant)>> = Vec::with_capacity(n);
    for reader in readers {
        seen.push(reader.await.unwrap_or_default());
    }

    let mut errors = 0u64;
    let mut latencies = Vec::new();
    let mut lost = 0u64;
    let mut mutation_latencies = Vec::new();
    for result in sent {
        match result {
            Ok((user, revision, answered, took)) => {
                mutation_latencies.push(took);
                match seen[user].iter().find(|(r, _)| *r >= revision) {
                    Some((_, at)) => latencies.push(at.saturating_duration_since(answered)),
                    None => lost += 1,
                }
            }
            Err(e) => {
                if errors == 0 {
                    eprintln!("bench: subscribers: completion failed: {e:#}");
                }
                errors += 1;
            }
        }
    }
    latencies.sort_unstable();
    let pushes = Measured { operations: latencies.len() as u64, errors, elapsed, latencies, units_per_op: 1 };
    let memory = match (rss_before, rss_after) {
        (Some(b), Some(a)) => format!(
            "server RSS {:.0} MB with {n} subscribers ({:.1} KB each over the {:.0} MB before)",
            a as f64 / 1e6,
            a.saturating_sub(b) as f64 / 1e3 / n as f64,
            b as f64 / 1e6
        ),
        _ => "server RSS unknown (external server)".into(),
    };
    let cores = Cores::default();
    Ok(Row {
        name: "subscribers".into(),
        unit: "pushes/s",
        notes: format!("{memory}; latency = mutation response to push; lost {lost} of {total} updates"),
        ok: lost == 0 && errors == 0,
        server: pushes,
        floor: None,
        cores,
    })
}

pub async fn analytics(args: &Args, server: &Server) -> anyhow::Result<Vec<Row>> {
    let db = demo_users(args, args.analytics_users).await?;
    let enrollments = count(&db, "SELECT COUNT(*) FROM enrollments WHERE flow_key = 'new_user'").await?;
    let steps = count(
        &db,
        "SELECT COUNT(*) FROM step_progress sp JOIN enrollments e ON e.id = sp.enrollment_id WHERE e.flow_key = 'new_user'",
    )
    .await?;
    let client = Client::new(&server.url);
    let admin = Arc::new(token(&keys(), "bench-admin", Role::Admin));
    let engine = Arc::new(Onramp::new(db));
    let repeat = if args.smoke { 2 } else { 10 };
    let filter =
        AnalyticsFilter { flow_key: "new_user".into(), version: None, variant: None, since: None, until: None };
    let mut rows = Vec::new();
    for (name, query) in [
        (
            "analytics: funnel",
            "{ funnel(flowKey: \"new_user\") { enrolled steps { stepKey applied reached completed skipped medianHours p90Hours } } }",
        ),
        (
            "analytics: flowStats",
            "{ flowStats(flowKey: \"new_user\") { enrolled completed completionRate medianHoursToComplete p90HoursToComplete byVersion { version enrolled } byVariant { variant enrolled } } }",
        ),
    ] {
        // Once unmeasured, so both sides run with a warm cache.
        client.gql(&admin, query, json!({})).await?;
        let (c, a) = (client.clone(), admin.clone());
        let (server_run, cores) = measured(
            server,
            sequential(repeat, move || {
                let (c, a) = (c.clone(), a.clone());
                async move { c.gql(&a, query, json!({})).await.map(|_| ()) }
            }),
        )
        .await;
        let (e, f) = (engine.clone(), filter.clone());
        let floor = sequential(repeat, move || {
            let (e, f) = (e.clone(), f.clone());
            async move {
                if name.ends_with("funnel") {
                    e.funnel(f).await.map(|_| ()).map_err(|e| anyhow::anyhow!("{e:?}"))
                } else {
                    e.flow_stats(f).await.map(|_| ()).map_err(|e| anyhow::anyhow!("{e:?}"))
                }
            }
        })
        .await;
        let ok = server_run.errors == 0 && floor.errors == 0;
        rows.push(Row {
            name: name.into(),
            unit: "queries/s",
            notes: format!(
                "{enrollments} enrollments, {steps} step rows; {repeat} runs one at a time; floor: the same service call in process (no HTTP, JWT, GraphQL)"
            ),
            server: server_run,
            floor: Some(floor),
            cores,
            ok,
        });
    }
    Ok(rows)
}

/// One operation after another, `times` times.
async fn sequential<F, Fut>(times: usize, op: F) -> Measured
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut m = Measured { units_per_op: 1, ..Default::default() };
    let started = Instant::now();
    for _ in 0..times {
        let t = Instant::now();
        match op().await {
            Ok(()) => m.latencies.push(t.elapsed()),
            Err(e) => {
                eprintln!("bench: {e:#}");
                m.errors += 1;
            }
        }
    }
    m.elapsed = started.elapsed();
    m.operations = m.latencies.len() as u64;
    m.latencies.sort_unstable();
    m
}

/// Throughput with enough digits to mean something below 10.
fn rate(x: f64) -> String {
    if x < 10.0 { format!("{x:.2}") } else { format!("{x:.0}") }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn print_table(args: &Args, rows: &[Row]) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "onramp-bench: {} s phases, concurrency {}, pool {}, {} cores{}",
        args.seconds,
        args.concurrency,
        args.pool,
        cpus,
        if args.smoke { ", SMOKE (numbers mean nothing)" } else { "" }
    );
    println!(
        "| scenario | throughput | p50 | p99 | floor throughput | floor p50 | floor p99 | ratio | cores: server / PostgreSQL / bench | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (ft, fp50, fp99, ratio) = match &r.floor {
            Some(f) => (
                format!("{} {}", rate(f.throughput()), r.unit),
                ms(f.percentile(50.0)),
                ms(f.percentile(99.0)),
                format!("{:.0}%", 100.0 * r.server.throughput() / f.throughput().max(1e-9)),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let cores = match r.cores.server {
            Some(s) => format!("{s:.2} / {:.2} / {:.2}", r.cores.postgres, r.cores.bench),
            None => "-".into(),
        };
        println!(
            "| {} | {} {} | {} | {} | {ft} | {fp50} | {fp99} | {ratio} | {cores} | {} |",
            r.name,
            rate(r.server.throughput()),
            r.unit,
            ms(r.server.percentile(50.0)),
            ms(r.server.percentile(99.0)),
            r.server.errors + r.floor.as_ref().map_or(0, |f| f.errors),
        );
    }
    println!();
    for r in rows {
        println!("- {}: {}", r.name, r.notes);
    }
}
