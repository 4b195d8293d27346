//! The webhooks scenario: deliveries from the outbox to a receiver on loopback, run by the
//! server's own dispatcher.
//!
//! - live: events arrive at a steady rate (`--hook-rate`) and every change they make is
//!   delivered; the latency is commit to receipt, from the payload's `occurredAt` (stamped
//!   in the change's transaction, so a little before the commit) to the moment the
//!   receiver reads the request.
//! - backlog: every delivery of the live phase is replayed at once (`replayWebhookEndpoint`)
//!   and the dispatcher drains them: deliveries per second, timed from the replay request
//!   to the last receipt. Its floor is the receiver's own ceiling: the same number of
//!   posts of the same bodies sent straight to it from this process, as many at once as the
//!   dispatcher sends (its default concurrency, 64).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use onramp::auth::Role;
use serde_json::{Value, json};

use crate::Args;
use crate::client::{Client, keys, token};
use crate::load::Measured;
use crate::scenarios::{Row, analyze, bench_flow, enroll, measured, run_id};
use crate::server::Server;

/// Endpoints the bench creates carry this description, so a run that died before cleaning
/// up is cleaned up by the next (otherwise the server would keep retrying a dead port).
const MARK: &str = "onramp-bench receiver";
/// Events per trackEvents call in the live phase; batches go out every `TICK`.
const TICK: Duration = Duration::from_millis(100);
/// Longest wait for the last delivery of a phase.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);
/// What the dispatcher sends at once by default (ONRAMP_WEBHOOK_CONCURRENCY), for the floor.
const DISPATCHER_CONCURRENCY: usize = 64;

/// One request as the receiver saw it.
#[derive(Clone)]
struct Receipt {
    id: String,
    at: DateTime<Utc>,
    occurred_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Default)]
struct Receiver {
    receipts: Arc<Mutex<Vec<Receipt>>>,
}

impl Receiver {
    fn take(&self) -> Vec<Receipt> {
        std::mem::take(&mut *self.receipts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Until `expected` distinct webhook-ids have arrived (or the limit); returns them all.
    async fn wait_for(&self, expected: usize) -> Vec<Receipt> {
        let started = Instant::now();
        let mut seen = HashSet::new();
        let mut all = Vec::new();
        while seen.len() < expected && started.elapsed() < DRAIN_LIMIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
            for r in self.take() {
                seen.insert(r.id.clone());
                all.push(r);
            }
        }
        all
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Utc::now();
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let occurred_at = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["data"]["occurredAt"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()))
        .map(|t| t.with_timezone(&Utc));
    receiver.receipts.lock().unwrap_or_else(PoisonError::into_inner).push(Receipt { id, at, occurred_at });
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> anyhow::Result<(Receiver, SocketAddr)> {
    let receiver = Receiver::default();
    let app = axum::Router::new().route("/hooks", axum::routing::post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((receiver, addr))
}

/// Deletes the endpoints earlier bench runs left behind.
async fn remove_bench_endpoints(client: &Client, admin: &str) -> anyhow::Result<()> {
    let data = client.gql(admin, "{ webhookEndpoints { id description } }", json!({})).await?;
    for e in data["webhookEndpoints"].as_array().into_iter().flatten() {
        if e["description"] == MARK {
            client
                .gql(admin, "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }", json!({ "id": e["id"] }))
                .await?;
        }
    }
    Ok(())
}

pub async fn webhooks(args: &Args, server: &Server) -> anyhow::Result<Vec<Row>> {
    let steps = args.event_steps.max(1);
    let flow = format!("bench_hooks_{steps}");
    let client = Client::new(&server.url);
    let keys = keys();
    let admin = token(&keys, "bench-admin", Role::Admin);
    let service = Arc::new(token(&keys, "bench-service", Role::Service));
    bench_flow(&client, &admin, &flow, steps, true).await?;
    let run = run_id();
    let users: Vec<String> = (0..args.hook_users.max(1)).map(|n| format!("bh-{run}-{n}")).collect();
    let tokens: Vec<String> = users.iter().map(|u| token(&keys, u, Role::User)).collect();
    eprintln!("bench: webhooks: enrolling {} users", users.len());
    enroll(&client, &tokens, &flow, args.concurrency).await?;
    analyze(args).await?;

    remove_bench_endpoints(&client, &admin).await?;
    let (receiver, addr) = start_receiver().await?;
    let created = client
        .gql(
            &admin,
            "mutation($u: String!, $d: String!) { createWebhookEndpoint(url: $u, eventTypes: [\"*\"], description: $d) { endpoint { id } } }",
            json!({ "u": format!("http://{addr}/hooks"), "d": MARK }),
        )
        .await
        .context("creating the endpoint (the server must allow http and loopback endpoints)")?;
    let endpoint = created["createWebhookEndpoint"]["endpoint"]["id"].as_str().context("endpoint id")?.to_string();

    let result = phases(args, server, &client, &admin, service, &users, steps, &endpoint, &receiver).await;
    client.gql(&admin, "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }", json!({ "id": endpoint })).await?;
    result
}

#[allow(clippy::too_many_arguments)]
async fn phases(
    args: &Args,
    server: &Server,
    client: &Client,
    admin: &str,
    service: Arc<String>,
    users: &[String],
    steps: usize,
    endpoint: &str,
    receiver: &Receiver,
) -> anyhow::Result<Vec<Row>> {
    let db = onramp::persistence::connect(&args.database_url, 2).await?;
    let rate = args.hook_rate.max(1) as usize;
    let ticks = (args.phase().as_millis() / TICK.as_millis()).max(1) as usize;
    let per_tick = (rate * TICK.as_millis() as usize / 1000).max(1);
    let capacity = users.len() * steps;
    if per_tick * ticks > capacity {
        bail!("{} events at {rate}/s need more than {} users × {steps} steps", per_tick * ticks, users.len());
    }

    // Live: batches at a steady pace, each event completing a step no event completed before
    // (event k: user k mod users, step k div users).
    let since = Utc::now();
    let before: i64 = outbox_rows_since(&db, since).await?;
    let users = Arc::new(users.to_vec());
    eprintln!("bench: webhooks: live phase, {rate} events/s for {} s", args.seconds);
    let started = Instant::now();
    let started_at = Utc::now();
    let (sent, cores) = measured(server, async {
        let mut batches = Vec::with_capacity(ticks);
        let mut pace = tokio::time::interval(TICK);
        for t in 0..ticks {
            pace.tick().await;
            let (c, users, service) = (client.clone(), users.clone(), service.clone());
            batches.push(tokio::spawn(async move {
                let events: Vec<Value> = (t * per_tick..(t + 1) * per_tick)
                    .map(|k| {
                        json!({
                            "id": format!("hook-{}-{k}", users[0]),
                            "subjectId": users[k % users.len()],
                            "name": format!("bench.s{}", k / users.len()),
                        })
                    })
                    .collect();
                c.gql(
                    &service,
                    "mutation($e: [EventInput!]!) { trackEvents(events: $e) { status } }",
                    json!({ "e": events }),
                )
                .await
            }));
        }
        let mut m = Measured { units_per_op: 1, ..Default::default() };
        for b in batches {
            match b.await {
                Ok(Ok(_)) => m.operations += 1,
                Ok(Err(e)) => {
                    eprintln!("bench: webhooks: a batch failed: {e:#}");
                    m.errors += 1;
                }
                Err(e) => {
                    eprintln!("bench: webhooks: a batch panicked: {e}");
                    m.errors += 1;
                }
            }
        }
        m
    })
    .await;
    let expected = usize::try_from(outbox_rows_since(&db, since).await? - before)?;
    let live = receiver.wait_for(expected).await;
    let live_ids: HashSet<&str> = live.iter().map(|r| r.id.as_str()).collect();
    let mut latencies: Vec<Duration> =
        live.iter().filter_map(|r| r.occurred_at.and_then(|o| (r.at - o).to_std().ok())).collect();
    latencies.sort_unstable();
    let last = live.iter().map(|r| r.at).max();
    let live_row = Row {
        name: "webhooks live".into(),
        unit: "deliveries/s",
        server: Measured {
            operations: live_ids.len() as u64,
            errors: sent.errors + (expected.saturating_sub(live_ids.len())) as u64,
            elapsed: last.and_then(|l| (l - started_at).to_std().ok()).unwrap_or_else(|| started.elapsed()),
            latencies,
            units_per_op: 1,
        },
        floor: None,
        cores,
        notes: format!(
            "{rate} events/s for {} s ({} batches of {per_tick}), each completing a step: {expected} changes, {} delivered ({} duplicate receipts); p50/p99 are commit to receipt (payload occurredAt to the receiver reading the request)",
            args.seconds,
            sent.operations,
            live_ids.len(),
            live.len() - live_ids.len(),
        ),
        ok: sent.errors == 0 && live_ids.len() == expected,
    };

    // Backlog: everything again at once.
    eprintln!("bench: webhooks: backlog phase, replaying {expected} deliveries");
    receiver.take();
    let replay_started = Instant::now();
    let replayed_at = Utc::now();
    let (drained, cores) = measured(server, async {
        let queued = client
            .gql(
                admin,
                "mutation($id: ID!, $s: DateTime!) { replayWebhookEndpoint(endpointId: $id, since: $s) }",
                json!({ "id": endpoint, "s": since.to_rfc3339() }),
            )
            .await
            .map(|d| d["replayWebhookEndpoint"].as_i64().unwrap_or(0) as usize);
        let queued = match queued {
            Ok(q) => q,
            Err(e) => {
                eprintln!("bench: webhooks: replay failed: {e:#}");
                return Measured { errors: 1, ..Default::default() };
            }
        };
        let got = receiver.wait_for(queued).await;
        let distinct: HashSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
        let mut waits: Vec<Duration> = got.iter().filter_map(|r| (r.at - replayed_at).to_std().ok()).collect();
        waits.sort_unstable();
        Measured {
            operations: distinct.len() as u64,
            errors: queued.saturating_sub(distinct.len()) as u64,
            elapsed: replay_started.elapsed().min(
                got.iter().map(|r| r.at).max().and_then(|l| (l - replayed_at).to_std().ok()).unwrap_or(Duration::MAX),
            ),
            latencies: waits,
            units_per_op: 1,
        }
    })
    .await;

    let floor =
        receiver_ceiling(receiver, &endpoint_url(client, admin, endpoint).await?, drained.operations as usize).await;
    let backlog_row = Row {
        name: "webhooks backlog".into(),
        unit: "deliveries/s",
        notes: format!(
            "{} deliveries replayed at once and drained by the dispatcher (concurrency 64, one endpoint); p50/p99: replay request to receipt; floor: the same number of posts sent straight to the receiver from the bench, 64 at once",
            drained.operations
        ),
        ok: drained.errors == 0 && drained.operations > 0,
        server: drained,
        floor: Some(floor),
        cores,
    };
    Ok(vec![live_row, backlog_row])
}

async fn endpoint_url(client: &Client, admin: &str, endpoint: &str) -> anyhow::Result<String> {
    let data =
        client.gql(admin, "query($id: ID!) { webhookEndpoint(id: $id) { url } }", json!({ "id": endpoint })).await?;
    Ok(data["webhookEndpoint"]["url"].as_str().context("endpoint url")?.to_string())
}

/// The receiver's ceiling: `n` posts of a payload-sized body, `DISPATCHER_CONCURRENCY` at once.
async fn receiver_ceiling(receiver: &Receiver, url: &str, n: usize) -> Measured {
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("http client");
    let body = json!({
        "type": "step.completed",
        "timestamp": Utc::now().to_rfc3339(),
        "data": {
            "owner": {"type": "user", "id": "bh-00000000-1234"},
            "flow": {"key": "bench_hooks_10", "version": 1},
            "step": {"key": "s3", "points": 1, "source": "EVENT", "metadata": {}},
            "revision": 4, "sequence": 123456, "occurredAt": Utc::now().to_rfc3339()
        }
    })
    .to_string();
    let started = Instant::now();
    let results: Vec<(Duration, bool)> = stream::iter(0..n)
        .map(|i| {
            let (http, body) = (http.clone(), body.clone());
            async move {
                let t = Instant::now();
                let ok = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", format!("msg_floor_{i}"))
                    .header("webhook-timestamp", Utc::now().timestamp().to_string())
                    .header("webhook-signature", "v1,floorfloorfloorfloorfloorfloorfloorfloorfloo=")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                (t.elapsed(), ok)
            }
        })
        .buffer_unordered(DISPATCHER_CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();
    receiver.take();
    let mut latencies: Vec<Duration> = results.iter().filter(|(_, ok)| *ok).map(|(d, _)| *d).collect();
    latencies.sort_unstable();
    Measured {
        operations: latencies.len() as u64,
        errors: results.iter().filter(|(_, ok)| !ok).count() as u64,
        elapsed,
        latencies,
        units_per_op: 1,
    }
}

async fn outbox_rows_since(db: &sea_orm::DatabaseConnection, since: DateTime<Utc>) -> anyhow::Result<i64> {
    use sea_orm::ConnectionTrait;
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT count(*) FROM outbox WHERE created_at >= $1",
            [since.into()],
        ))
        .await?
        .context("no row")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}
