//! The transport edge against hostile clients: documents nested to overflow the parser,
//! bodies and messages past their limits, callers that flood, websocket protocol abuse,
//! what production shows strangers, and queries that ask for too much database work.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{StreamExt, stream};
use onramp::auth::Role;
use onramp::config::ServerLimits;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::ws::{Frame, RECV, TRANSPORT_WS, WsClient};
use crate::common::{TEST_SECRET, TestApp, sample_flow, test_limits};
use crate::{both, both_with};

both!(
    deep_documents_are_refused_before_parsing_over_http,
    deep_documents_are_refused_before_parsing_over_websockets,
    thousands_of_database_fields_exceed_the_complexity_limit,
    production_hides_the_schema_from_strangers,
    websocket_messages_past_the_limit_close_with_1009,
    a_repeated_operation_id_closes_with_4409,
    unknown_messages_close_with_4400,
    unsigned_and_unknown_algorithm_tokens_close_with_4403,
    a_ping_flood_never_resets_the_connection,
);

both_with!(admin_introspection => admins_may_introspect_when_configured);
both_with!(
    low_rate => http_callers_over_their_rate_get_429,
    websocket_callers_over_their_rate_get_4429,
    ping_frames_count_against_the_rate,
    users_behind_one_address_each_open_a_connection,
);
both_with!(two_operations => operations_past_the_connection_limit_are_refused_one_by_one);
both_with!(tight_query_limits => configured_query_limits_reach_the_schema);

fn tight_query_limits() -> ServerLimits {
    ServerLimits { query_depth: 2, query_complexity: 30, query_nesting: 8, ..test_limits() }
}

fn admin_introspection() -> ServerLimits {
    ServerLimits { admin_introspection: true, ..test_limits() }
}

fn low_rate() -> ServerLimits {
    ServerLimits { rate_per_second: 0.5, rate_burst: 3.0, ..test_limits() }
}

fn two_operations() -> ServerLimits {
    ServerLimits { subscriptions_per_connection: 2, ..test_limits() }
}

/// The hostile shapes, `depth` levels deep: a list literal, an object literal (both in an
/// argument, where any schema accepts them to the parser) and nested selection sets.
fn deep_documents(depth: usize) -> Vec<(&'static str, String)> {
    vec![
        ("list", format!("{{ __typename @include(if: {}true{}) }}", "[".repeat(depth), "]".repeat(depth))),
        ("object", format!("{{ __typename @include(if: {}true{}) }}", "{a:".repeat(depth), "}".repeat(depth))),
        ("selection", format!("{}{}", "{ a ".repeat(depth), "}".repeat(depth))),
    ]
}

fn assert_refused_for_nesting(errors: &Value, case: &str) {
    let error = &errors[0];
    assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED", "{case}: {errors}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("deeper than 64"), "{case}: {message}");
    assert!(message.len() <= 100, "{case}: the refusal does not echo the document: {message}");
}

async fn deep_documents_are_refused_before_parsing_over_http(app: TestApp) {
    for depth in [1_000, 10_000, 100_000] {
        for (shape, query) in deep_documents(depth) {
            let response = app.gql(None, &query, json!({})).await;
            assert_refused_for_nesting(&response["errors"], &format!("{shape} at depth {depth}"));
        }
    }
    // Within the limit the parser sees the document as before.
    let shallow = format!("{{ __typename @include(if: {}true{}) }}", "[".repeat(10), "]".repeat(10));
    let response = app.gql(None, &shallow, json!({})).await;
    assert!(!response.to_string().contains("deeper"), "{response}");
    // The server is alive and answers.
    assert_eq!(app.gql(None, "{ __typename }", json!({})).await, json!({ "data": { "__typename": "Query" } }));
}

async fn deep_documents_are_refused_before_parsing_over_websockets(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    for (n, depth) in [1_000, 10_000, 100_000].into_iter().enumerate() {
        for (shape, query) in deep_documents(depth) {
            let id = format!("{n}-{shape}");
            client.subscribe(&id, &query, json!({})).await;
            let errors = client.operation_errors(&id).await;
            assert_refused_for_nesting(&Value::Array(errors), &format!("{shape} at depth {depth}"));
        }
    }
    // The same connection still serves.
    assert_eq!(client.watch("live", "welcome", None).await["status"], "NOT_STARTED");
}

async fn thousands_of_database_fields_exceed_the_complexity_limit(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let token = app.user("alice");
    let aliased = |n: usize| {
        let fields: String = (0..n).map(|i| format!("p{i}: points {{ total }} ")).collect();
        format!("{{ {fields} }}")
    };
    let error = app.error(Some(&token), &aliased(2_400), json!({})).await;
    assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED", "{error}");
    assert!(error["message"].as_str().unwrap_or_default().contains("complex"), "{error}");
    // A few aliases, as a dashboard might send, still fit.
    let data = app.ok(&token, &aliased(5), json!({})).await;
    assert_eq!(data["p4"]["total"], 0);
}

async fn production_hides_the_schema_from_strangers(app: TestApp) {
    let introspection = "{ __schema { queryType { name } } }";
    let type_query = r#"{ __type(name: "Query") { name } }"#;
    for token in [None, Some(app.user("alice")), Some(app.admin())] {
        for query in [introspection, type_query] {
            let response = app.gql(token.as_deref(), query, json!({})).await;
            assert!(response["data"].is_null(), "{token:?} {query}: {response}");
            assert_eq!(response["errors"][0]["extensions"]["code"], "FORBIDDEN", "{response}");
            assert_eq!(response["errors"][0]["message"], "introspection is disabled");
        }
    }
    // No suggestions that would map the schema field by field.
    let error = app.error(Some(&app.user("alice")), "{ statu(flowKey: \"welcome\") { status } }", json!({})).await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("statu"), "{message}");
    assert!(!message.contains("Did you mean"), "{message}");
    // __typename is not introspection: clients need it.
    assert_eq!(app.gql(None, "{ __typename }", json!({})).await["data"]["__typename"], "Query");
}

async fn admins_may_introspect_when_configured(app: TestApp) {
    let introspection = "{ __schema { queryType { name } } }";
    let data = app.ok(&app.admin(), introspection, json!({})).await;
    assert_eq!(data["__schema"]["queryType"]["name"], "Query");
    for token in [None, Some(app.user("alice")), Some(app.service())] {
        let response = app.gql(token.as_deref(), introspection, json!({})).await;
        assert!(response["data"].is_null(), "{token:?}: {response}");
        assert_eq!(response["errors"][0]["extensions"]["code"], "FORBIDDEN", "{response}");
    }
}

/// A body of `size` bytes that is a valid request: the query padded with spaces.
fn padded_request(size: usize) -> Vec<u8> {
    let request = json!({ "query": "{ __typename }" }).to_string();
    let mut body = request.into_bytes();
    let close = body.pop().expect("}");
    body.resize(size - 1, b' ');
    body.push(close);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_past_the_limit_get_413_unread() {
    let app = TestApp::sqlite().await;
    let limit = test_limits().body_bytes;
    let post = |body: reqwest::Body| {
        app.client.post(app.url("/graphql")).header("content-type", "application/json").body(body).send()
    };
    // Just under the limit: served.
    let response = post(padded_request(limit).into()).await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["data"]["__typename"], "Query");

    // A declared length past the limit is refused from the headers alone: the server
    // answers before a byte of the body is sent.
    for size in [limit + 1, 5_000_000, 50_000_000, 500_000_000] {
        let (status, body) = headers_only_post(&app, size).await;
        assert_eq!(status, 413, "{size} bytes declared");
        assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION_FAILED", "{body}");
    }
    // Sent whole, the client sees the 413 or, still writing when the server closes, a
    // broken connection; never a 200.
    for size in [5_000_000, 50_000_000] {
        if let Ok(response) = post(padded_request(size).into()).await {
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{size} bytes");
        }
    }

    // 500 MB chunked, with no Content-Length: read only until it passes the limit.
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let chunk = bytes_of(64 * 1024);
    let chunks = stream::iter((0..500_000_000 / chunk.len()).map(move |_| {
        counter.fetch_add(chunk.len(), Ordering::Relaxed);
        Ok::<_, std::io::Error>(chunk.clone())
    }));
    let outcome = post(reqwest::Body::wrap_stream(chunks)).await;
    match outcome {
        Ok(response) => assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE),
        // The server answers and closes without reading the rest; a client still writing
        // may see the connection end first. Either way the body was not read whole.
        Err(e) => eprintln!("chunked upload ended with {e}"),
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent < 100_000_000, "the server read {sent} bytes of a 500 MB body");
    // And the server still serves.
    let response = post(padded_request(100).into()).await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
}

/// POSTs only the headers of a JSON request declaring `length` bytes, and reads the
/// response: the status and the JSON body.
async fn headers_only_post(app: &TestApp, length: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        app.addr
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(RECV, socket.read_to_end(&mut response))
        .await
        .expect("the server answers without waiting for the body")
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn bytes_of(size: usize) -> bytes::Bytes {
    bytes::Bytes::from(vec![b' '; size])
}

async fn websocket_messages_past_the_limit_close_with_1009(app: TestApp) {
    let limit = test_limits().ws_message_bytes;
    let padded_ping = |size: usize| format!("{{\"type\":\"ping\"{}}}", " ".repeat(size));
    for size in [limit + 1, 3 * limit] {
        let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
        // Within the limit: a (useless) padded ping is answered.
        client.send_text(padded_ping(limit / 2)).await;
        assert_eq!(client.recv_json(RECV).await["type"], "pong");
        client.send_text(padded_ping(size)).await;
        let (code, reason) = client.expect_close(RECV).await;
        assert_eq!((code, reason.as_str()), (1009, "Message too big"), "{size} bytes");
    }
}

async fn a_repeated_operation_id_closes_with_4409(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    client.watch("dup", "welcome", None).await;
    client.watch_request("dup", "welcome", None).await;
    let (code, reason) = client.expect_close(RECV).await;
    assert_eq!((code, reason.as_str()), (4409, "Subscriber for dup already exists"));

    // Once an operation is complete its id may be used again.
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    client.watch("again", "welcome", None).await;
    client.send(json!({ "type": "complete", "id": "again" })).await;
    assert_eq!(client.recv_json(RECV).await, json!({ "type": "complete", "id": "again" }));
    assert_eq!(client.watch("again", "welcome", None).await["status"], "NOT_STARTED");
}

async fn unknown_messages_close_with_4400(app: TestApp) {
    for message in [json!({ "type": "subscribe_all" }), json!({ "kind": "ping" }), json!("ping"), json!({ "type": 4 })]
    {
        let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
        client.send(message.clone()).await;
        let (code, _) = client.expect_close(RECV).await;
        assert_eq!(code, 4400, "{message}");
    }
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    client.send_text("not json at all".to_string()).await;
    assert_eq!(client.expect_close(RECV).await.0, 4400);
}

async fn unsigned_and_unknown_algorithm_tokens_close_with_4403(app: TestApp) {
    let claims = json!({ "sub": "alice", "exp": crate::common::unix_now() + 600, "role": "admin" });
    let segment = |value: &Value| base64url(value.to_string().as_bytes());
    let signed = crate::common::sign_hmac(&claims, jsonwebtoken::Algorithm::HS256, TEST_SECRET);
    let signature = signed.rsplit('.').next().expect("signature").to_string();
    let cases = [
        ("alg none", format!("{}.{}.", segment(&json!({ "alg": "none", "typ": "JWT" })), segment(&claims))),
        ("alg None", format!("{}.{}.", segment(&json!({ "alg": "None" })), segment(&claims))),
        ("alg unknown", format!("{}.{}.{signature}", segment(&json!({ "alg": "HS1024" })), segment(&claims))),
        ("alg long", format!("{}.{}.{signature}", segment(&json!({ "alg": "X".repeat(500) })), segment(&claims))),
    ];
    for (case, token) in cases {
        let mut client = WsClient::connect(app.addr, TRANSPORT_WS).await;
        client.init(json!({ "authorization": format!("Bearer {token}") })).await;
        let (code, reason) = client.expect_close(RECV).await;
        assert_eq!(code, 4403, "{case}: {reason}");
        assert!(reason.starts_with("Forbidden") && reason.len() <= 123, "{case}: {reason}");
        // Over HTTP the same tokens are refused too.
        let error = app.error(Some(&token), "{ points { total } }", json!({})).await;
        assert_eq!(error["extensions"]["code"], "UNAUTHENTICATED", "{case}");
    }
}

async fn a_ping_flood_never_resets_the_connection(app: TestApp) {
    // Websocket ping frames, then protocol pings, sent without reading: every one is
    // answered or the server closes with a close frame; it never just drops the socket.
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    client.flood_ping_frames(5_000).await;
    for _ in 0..5_000 {
        client.send(json!({ "type": "ping" })).await;
    }
    let mut pongs = 0;
    loop {
        match client.recv(RECV).await {
            Frame::Json(message) => {
                assert_eq!(message["type"], "pong", "{message}");
                pongs += 1;
                if pongs == 5_000 {
                    break;
                }
            }
            Frame::Closed(Some((code, reason))) => {
                assert_eq!(code, 4429, "{reason}");
                break;
            }
            Frame::Closed(None) => panic!("the connection ended without a close frame after {pongs} pongs"),
        }
    }
}

async fn http_callers_over_their_rate_get_429(app: TestApp) {
    let alice = app.user("alice");
    for _ in 0..3 {
        app.ok(&alice, "{ __typename }", json!({})).await;
    }
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&alice)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "one token back in 2 s at 0.5/s: {retry_after}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{body}");
    // Another subject, and anonymous callers (by address), have buckets of their own.
    app.ok(&app.user("bob"), "{ __typename }", json!({})).await;
    // Service and admin callers (the operator's backends) are not rate limited.
    for token in [app.token("backend", Role::Service), app.admin()] {
        for _ in 0..10 {
            app.ok(&token, "{ __typename }", json!({})).await;
        }
    }
    assert_eq!(app.gql(None, "{ __typename }", json!({})).await["data"]["__typename"], "Query");
    // A refused token is no way around the limit: its caller is counted by address.
    let forged = app.keys.mint("alice", Role::User, 60).expect("mint").replace('.', "x");
    for _ in 0..3 {
        let _ = app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(&forged)
            .json(&json!({ "query": "{ __typename }" }))
            .send()
            .await;
    }
    let response =
        app.client.post(app.url("/graphql")).json(&json!({ "query": "{ __typename }" })).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "anonymous and rejected callers share the address");
}

async fn websocket_callers_over_their_rate_get_4429(app: TestApp) {
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    for _ in 0..5 {
        client.send(json!({ "type": "ping" })).await;
    }
    let (code, reason) = loop {
        match client.recv(RECV).await {
            Frame::Json(message) => assert_eq!(message["type"], "pong", "{message}"),
            Frame::Closed(close) => break close.expect("a close frame"),
        }
    };
    assert_eq!((code, reason.as_str()), (4429, "Too many messages"));
    // The subject's HTTP requests draw on the same bucket; another subject's do not.
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(app.user("alice"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("bob")).await;
}

async fn ping_frames_count_against_the_rate(app: TestApp) {
    // Websocket-level pings are answered below the protocol, but still paid for: a flood
    // of them ends in 4429 with a close frame, not in unbounded work or a reset.
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    client.flood_ping_frames(2_000).await;
    let (code, reason) = client.expect_close(RECV).await;
    assert_eq!((code, reason.as_str()), (4429, "Too many messages"));
}

async fn operations_past_the_connection_limit_are_refused_one_by_one(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    client.watch("1", "welcome", None).await;
    client.watch("2", "welcome", None).await;
    client.watch_request("3", "welcome", None).await;
    let errors = client.operation_errors("3").await;
    assert_eq!(errors[0]["extensions"]["code"], "VALIDATION_FAILED", "{errors:?}");
    assert!(errors[0]["message"].as_str().unwrap_or_default().contains("at most 2"), "{errors:?}");
    // The connection stays open, and a finished operation frees its place.
    client.send(json!({ "type": "complete", "id": "1" })).await;
    assert_eq!(client.recv_json(RECV).await, json!({ "type": "complete", "id": "1" }));
    assert_eq!(client.watch("3", "welcome", None).await["status"], "NOT_STARTED");
}

async fn configured_query_limits_reach_the_schema(app: TestApp) {
    let alice = app.user("alice");
    assert_eq!(app.ok(&alice, "{ points { total } }", json!({})).await["points"]["total"], 0);
    let error = app.error(Some(&alice), "{ points { entries { reason } } }", json!({})).await;
    assert!(error["message"].as_str().unwrap_or_default().contains("too deep"), "depth 3 of 2: {error}");
    let error = app.error(Some(&alice), "{ a: points { total } b: points { total } }", json!({})).await;
    assert!(error["message"].as_str().unwrap_or_default().contains("too complex"), "two reads of 20: {error}");
    let nested = format!("{{ __typename @include(if: {}true{}) }}", "[".repeat(8), "]".repeat(8));
    let error = app.error(None, &nested, json!({})).await;
    assert!(error["message"].as_str().unwrap_or_default().contains("deeper than 8"), "{error}");
    assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED");
}

/// Unpadded base64url, as JWT segments are written.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The connection_init that opens a connection is free: many users behind one address
/// (an office, a carrier's NAT) each open theirs, though the address's bucket holds 3.
async fn users_behind_one_address_each_open_a_connection(app: TestApp) {
    let mut open = Vec::new();
    for i in 0..8 {
        open.push(WsClient::authorized(app.addr, TRANSPORT_WS, &app.user(&format!("user-{i}"))).await);
    }
    assert_eq!(open.len(), 8);
}

/// Clients that hang up in the middle of a read (a subscription's first snapshot, an HTTP
/// request) must not cost the server its database connections: a query dropped mid-flight
/// makes the pool close that connection, and a client hanging up in a loop then churned
/// the pool and stalled every other caller waiting for one (the abuse benchmark's
/// subscribe flood took others' p99 from 6 to 130 ms). On PostgreSQL the pool's
/// connections are backends with a pid: every one of them must outlive the hang-ups.
#[tokio::test]
async fn clients_hanging_up_mid_read_do_not_churn_the_pool() {
    let app = TestApp::postgres().await;
    app.publish(sample_flow("onboarding")).await;
    let status = crate::common::status_query();
    let users: Vec<String> = (0..8).map(|i| app.user(&format!("hangup-{i}"))).collect();
    for token in &users {
        app.ok(token, &status, json!({ "f": "onboarding" })).await;
    }
    // Fill the server's pool (8 connections) with concurrent reads.
    let warm = (0..64).map(|i| app.ok(&users[i % 8], &status, json!({ "f": "onboarding" })));
    futures_util::future::join_all(warm).await;
    let backends = "SELECT CAST(pid AS TEXT) FROM pg_stat_activity \
                    WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY pid";
    let before = app.rows(backends).await;
    assert!(before.len() >= 3, "the server's pool and listener: {before:?}");

    let hangups = (0..160).map(|i| {
        let (app, token) = (&app, users[i % 8].clone());
        async move {
            if i % 2 == 0 {
                // Subscribe, then go away at once or a moment later, while the first
                // snapshot is being read.
                let mut ws = WsClient::authorized(app.addr, TRANSPORT_WS, &token).await;
                ws.watch_request("1", "onboarding", None).await;
                tokio::time::sleep(std::time::Duration::from_micros((i as u64 % 7) * 300)).await;
                drop(ws);
            } else {
                // A status request abandoned before its answer.
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_micros(500 + (i as u64 % 7) * 300))
                    .build()
                    .expect("client");
                let body = json!({ "query": crate::common::status_query(), "variables": { "f": "onboarding" } });
                let _ = client.post(app.url("/graphql")).bearer_auth(&token).json(&body).send().await;
            }
        }
    });
    stream::iter(hangups).buffer_unordered(16).collect::<Vec<()>>().await;
    // Let abandoned reads finish and hand their connections back.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for token in &users {
        app.ok(token, &status, json!({ "f": "onboarding" })).await;
    }
    let after = app.rows(backends).await;
    let gone: Vec<_> = before.iter().filter(|pid| !after.contains(pid)).collect();
    assert!(gone.is_empty(), "connections closed by clients hanging up: {gone:?} (before {before:?}, after {after:?})");
}
