//! The abusive-client scenario: ordinary users read their status while one user floods
//! the server with everything a hostile client can send (expensive aliased queries,
//! nesting bombs, oversized bodies, request floods, subscribe floods on websockets). What
//! is measured is the ordinary users' status latency, quiet and under the flood: limits
//! and rate limiting exist so that one caller cannot starve the others.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use onramp::auth::Role;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::Args;
use crate::client::{Client, keys, token};
use crate::load;
use crate::scenarios::{Row, STATUS_QUERY, demo_user_ids, measured};
use crate::server::Server;

/// What the abuser sends: the HTTP attacks round robin per task, the subscribe flood
/// on websockets beside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// 2,400 aliased `points` fields: 2,400 database reads if nothing bounds it.
    Aliases,
    /// A list literal nested 10,000 deep: a parser stack overflow if nothing stops it.
    Nesting,
    /// A 2 MiB body (past the 1 MiB default).
    Oversized,
    /// Cheap requests, as fast as possible: the rate limit's case.
    Flood,
    /// Websockets opened one after another, each sending 10,000 `subscribe` messages.
    SubscribeFlood,
}

/// The attacks sent over HTTP.
const HTTP_ATTACKS: [Attack; 4] = [Attack::Aliases, Attack::Nesting, Attack::Oversized, Attack::Flood];

/// Outcomes of the abuser's requests, by HTTP status (or `error` when none came back).
type Tally = Arc<Mutex<BTreeMap<String, u64>>>;

fn count(tally: &Tally, outcome: String) {
    if let Ok(mut t) = tally.lock() {
        *t.entry(outcome).or_default() += 1;
    }
}

pub async fn abuse(args: &Args, server: &Server) -> anyhow::Result<Row> {
    let users = Arc::new(demo_user_ids(args).await?);
    let keys = keys();
    let tokens: Arc<Vec<String>> = Arc::new(users.iter().map(|u| token(&keys, u, Role::User)).collect());
    let abuser = token(&keys, "bench-abuser", Role::User);
    let client = Client::new(&server.url);
    // The ordinary users: fewer than the status scenario's, so their latency is the
    // server's answer time and not a queue of their own making.
    let victims = (args.concurrency / 4).max(2);
    let victim_load = |client: Client, tokens: Arc<Vec<String>>| {
        load::run(victims, Duration::from_secs(args.seconds), move |w, i| {
            let (c, t) = (client.clone(), tokens.clone());
            async move {
                let token = &t[(w * 7919 + i as usize * 104_729) % t.len()];
                c.gql(token, STATUS_QUERY, json!({ "f": "new_user" })).await.map(|_| ())
            }
        })
    };
    let quiet = victim_load(client.clone(), tokens.clone()).await;

    let tally: Tally = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(args.seconds) + Duration::from_millis(500);
    let http = reqwest::Client::new();
    let endpoint = format!("{}/graphql", server.url);
    let wanted = |attack: &Attack| args.attacks.is_empty() || args.attacks.contains(attack);
    let bodies: Vec<_> = bodies().into_iter().filter(|(attack, _)| wanted(attack)).collect();
    let bodies = Arc::new(bodies);
    let flood_subscribers = wanted(&Attack::SubscribeFlood);
    let mut abusers = Vec::new();
    for task in 0..args.concurrency {
        let (http, endpoint, abuser, tally) = (http.clone(), endpoint.clone(), abuser.clone(), tally.clone());
        let bodies = bodies.clone();
        abusers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < deadline && !bodies.is_empty() {
                let (attack, body) = &bodies[(task + i) % bodies.len()];
                let outcome = send(&http, &endpoint, &abuser, body.clone()).await;
                count(&tally, format!("{attack:?} {outcome}"));
                i += 1;
            }
        }));
    }
    let addr: SocketAddr = server.url.trim_start_matches("http://").parse().context("server URL")?;
    let subscribe_flood = {
        let (abuser, tally) = (abuser.clone(), tally.clone());
        tokio::spawn(async move {
            while flood_subscribers && Instant::now() < deadline {
                let outcome = subscribe_flood(addr, &abuser, 10_000).await.unwrap_or_else(|e| format!("error {e}"));
                count(&tally, format!("SubscribeFlood {outcome}"));
            }
        })
    };
    let (flooded, cores) = measured(server, victim_load(client, tokens)).await;
    for task in abusers {
        let _ = task.await;
    }
    let _ = subscribe_flood.await;

    let outcomes: Vec<String> =
        tally.lock().map(|t| t.iter().map(|(k, v)| format!("{k}: {v}")).collect()).unwrap_or_default();
    let target = if flooded.percentile(99.0) < Duration::from_millis(100) { "met" } else { "MISSED" };
    let ok = quiet.errors == 0 && flooded.errors == 0;
    Ok(Row {
        name: "abuse".into(),
        unit: "req/s",
        notes: format!(
            "{victims} ordinary users' status: quiet p99 {}, under the flood p99 {} (target < 100 ms: {target}); \
             one abusive user with {} tasks and a websocket subscribe flood sent {}; server column = ordinary \
             users under the flood, floor column = the same users with no flood",
            ms(quiet.percentile(99.0)),
            ms(flooded.percentile(99.0)),
            args.concurrency,
            outcomes.join(", ")
        ),
        server: flooded,
        floor: Some(quiet),
        cores,
        ok,
    })
}

/// The body of each attack, built once: the abuser should spend the machine's CPU on
/// sending, not on building 2 MiB strings (the bench shares the server's two cores).
fn bodies() -> Vec<(Attack, bytes::Bytes)> {
    HTTP_ATTACKS
        .iter()
        .map(|&attack| {
            let body = match attack {
                Attack::Aliases => {
                    let fields: String = (0..2400).map(|i| format!("p{i}: points {{ total }} ")).collect();
                    json!({ "query": format!("{{ {fields} }}") })
                }
                Attack::Nesting => {
                    let depth = 10_000;
                    json!({ "query": format!("{{ __typename @include(if: {}true{}) }}", "[".repeat(depth), "]".repeat(depth)) })
                }
                Attack::Oversized => json!({ "query": "{ __typename }", "variables": { "pad": "x".repeat(2 * 1024 * 1024) } }),
                Attack::Flood => json!({ "query": "{ points { total } }" }),
                Attack::SubscribeFlood => unreachable!("not an HTTP attack"),
            };
            (attack, bytes::Bytes::from(body.to_string()))
        })
        .collect()
}

/// One hostile request; its outcome as the HTTP status and the error code it carried
/// (a GraphQL refusal comes with 200 or 4xx and `extensions.code`).
async fn send(http: &reqwest::Client, endpoint: &str, token: &str, body: bytes::Bytes) -> String {
    let response = http
        .post(endpoint)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match response {
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            match body["errors"][0]["extensions"]["code"].as_str() {
                Some(code) => format!("{status} {code}"),
                None => format!("{status} ok"),
            }
        }
        Err(e) if e.is_timeout() => "timeout".into(),
        // The server answers a body past the limit before reading it and closes the
        // connection, so a client still writing sees the connection end.
        Err(e) if e.is_request() || e.is_body() => "connection closed while sending".into(),
        Err(e) if e.is_connect() => "connect error".into(),
        Err(_) => "error".into(),
    }
}

/// Opens a websocket and sends `n` subscribe messages without waiting; the outcome is
/// the close code the server ends it with (or how it ended otherwise).
async fn subscribe_flood(addr: SocketAddr, token: &str, n: usize) -> anyhow::Result<String> {
    let mut request = format!("ws://{addr}/graphql/ws").into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let text = |v: Value| Message::Text(v.to_string().into());
    ws.send(text(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } })))
        .await?;
    let query = "subscription { onboardingProgress(flowKey: \"new_user\") { revision } }";
    for i in 0..n {
        let message = text(json!({ "id": i.to_string(), "type": "subscribe", "payload": { "query": query } }));
        if ws.send(message).await.is_err() {
            break;
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(Some(frame))) => return format!("close {}", u16::from(frame.code)),
                Ok(Message::Close(None)) => return "close without code".to_string(),
                Ok(_) => {}
                Err(_) => return "reset".to_string(),
            }
        }
        "ended".to_string()
    })
    .await;
    Ok(ended.unwrap_or_else(|_| "still open after 10 s".into()))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
