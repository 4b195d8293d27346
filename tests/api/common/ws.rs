//! A websocket client for the subscription tests: graphql-transport-ws, and the older
//! subscriptions-transport-ws (`graphql-ws`). Every receive is bounded in time, so a test
//! that waits for something that never comes fails instead of hanging.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async, connect_async};

use super::STATUS_FIELDS;

/// The current protocol (graphql-ws library, Apollo Client 3+, urql...).
pub const TRANSPORT_WS: &str = "graphql-transport-ws";
/// The older subscriptions-transport-ws protocol, by its subprotocol name.
pub const LEGACY_WS: &str = "graphql-ws";

/// The default bound on one receive.
pub const RECV: Duration = Duration::from_secs(5);

/// The live progress subscription, with every status field.
pub fn progress_subscription() -> String {
    format!(
        "subscription($f: String!, $s: ID) {{ onboardingProgress(flowKey: $f, subjectId: $s) {{ {STATUS_FIELDS} }} }}"
    )
}

/// What the server sent.
#[derive(Debug)]
pub enum Frame {
    /// A protocol message.
    Json(Value),
    /// The connection ended: the close code and reason, or None without a close frame.
    Closed(Option<(u16, String)>),
}

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: &'static str,
}

impl WsClient {
    /// Opens ws://ADDR/graphql/ws offering one subprotocol, and checks the server chose it.
    pub async fn connect(addr: SocketAddr, protocol: &'static str) -> WsClient {
        let (stream, response) = timeout(RECV, connect_async(WsClient::request(addr, protocol)))
            .await
            .unwrap_or_else(|_| panic!("websocket handshake with {addr} timed out"))
            .unwrap_or_else(|e| panic!("websocket handshake with {addr}: {e}"));
        WsClient::check_protocol(&response, protocol);
        WsClient { stream, protocol }
    }

    /// Like `connect`, with a small socket receive buffer: a client that stops reading
    /// then pushes back on the server after a few KiB instead of a few MiB.
    pub async fn connect_with_receive_buffer(addr: SocketAddr, protocol: &'static str, bytes: u32) -> WsClient {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let tcp = timeout(RECV, socket.connect(addr)).await.expect("connect timed out").expect("connect");
        let request = WsClient::request(addr, protocol);
        let (stream, response) = timeout(RECV, client_async(request, MaybeTlsStream::Plain(tcp)))
            .await
            .unwrap_or_else(|_| panic!("websocket handshake with {addr} timed out"))
            .unwrap_or_else(|e| panic!("websocket handshake with {addr}: {e}"));
        WsClient::check_protocol(&response, protocol);
        WsClient { stream, protocol }
    }

    fn request(addr: SocketAddr, protocol: &'static str) -> Request {
        let mut request = format!("ws://{addr}/graphql/ws").into_client_request().expect("request");
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
        request
    }

    fn check_protocol(response: &Response, protocol: &str) {
        let chosen = response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
        assert_eq!(chosen, Some(protocol), "the server must answer with the offered subprotocol");
    }

    /// Connects, sends connection_init with `{"authorization": "Bearer <token>"}` and waits
    /// for connection_ack.
    pub async fn authorized(addr: SocketAddr, protocol: &'static str, token: &str) -> WsClient {
        let mut client = WsClient::connect(addr, protocol).await;
        client.init(json!({ "authorization": format!("Bearer {token}") })).await;
        client.expect_ack().await;
        client
    }

    pub async fn send(&mut self, message: Value) {
        timeout(RECV, self.stream.send(Message::text(message.to_string())))
            .await
            .expect("websocket send timed out")
            .expect("websocket send");
    }

    /// Sends any text, JSON or not.
    pub async fn send_text(&mut self, text: String) {
        timeout(RECV, self.stream.send(Message::text(text)))
            .await
            .expect("websocket send timed out")
            .expect("websocket send");
    }

    /// Sends `count` websocket ping frames as fast as the socket takes them.
    pub async fn flood_ping_frames(&mut self, count: usize) {
        for i in 0..count {
            timeout(RECV, self.stream.feed(Message::Ping(i.to_be_bytes().to_vec().into())))
                .await
                .expect("websocket send timed out")
                .expect("websocket send");
        }
        timeout(RECV, self.stream.flush()).await.expect("websocket flush timed out").expect("websocket flush");
    }

    pub async fn init(&mut self, payload: Value) {
        self.send(json!({ "type": "connection_init", "payload": payload })).await;
    }

    pub async fn expect_ack(&mut self) {
        let message = self.recv_json(RECV).await;
        assert_eq!(message["type"], "connection_ack", "expected connection_ack, got {message}");
    }

    /// Starts an operation: `subscribe`, or `start` on the older protocol.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.protocol == LEGACY_WS { "start" } else { "subscribe" };
        self.send(json!({ "id": id, "type": kind, "payload": { "query": query, "variables": variables } })).await;
    }

    /// Subscribes to onboardingProgress and returns the first snapshot (the current state).
    pub async fn watch(&mut self, id: &str, flow: &str, subject: Option<&str>) -> Value {
        self.watch_request(id, flow, subject).await;
        self.snapshot(id).await
    }

    /// Sends the onboardingProgress subscription, reading nothing.
    pub async fn watch_request(&mut self, id: &str, flow: &str, subject: Option<&str>) {
        self.subscribe(id, &progress_subscription(), json!({ "f": flow, "s": subject })).await;
    }

    /// The next frame, within `within`; pings are answered, keep-alives skipped.
    pub async fn recv(&mut self, within: Duration) -> Frame {
        let deadline = Instant::now() + within;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(message) => message,
                Err(_) => panic!("nothing received from the server within {within:?}"),
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("the server sent text that is not JSON ({e}): {text}"));
                    match value["type"].as_str() {
                        Some("ping") => self.send(json!({ "type": "pong" })).await,
                        Some("ka") => {}
                        _ => return Frame::Json(value),
                    }
                }
                Some(Ok(Message::Binary(bytes))) => panic!("unexpected binary message: {bytes:?}"),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    return Frame::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
                }
                Some(Err(_)) | None => return Frame::Closed(None),
            }
        }
    }

    /// The next protocol message, failing the test if the connection closes instead.
    pub async fn recv_json(&mut self, within: Duration) -> Value {
        match self.recv(within).await {
            Frame::Json(value) => value,
            Frame::Closed(close) => panic!("the connection closed ({close:?}) while a message was expected"),
        }
    }

    /// The next result for operation `id` (`next`, or `data` on the older protocol): its
    /// whole payload, `{"data": ..., "errors": ...}`.
    pub async fn payload(&mut self, id: &str) -> Value {
        let message = self.recv_json(RECV).await;
        assert!(
            matches!(message["type"].as_str(), Some("next" | "data")),
            "expected a result for `{id}`, got {message}"
        );
        assert_eq!(message["id"], id, "a result for another operation: {message}");
        message["payload"].clone()
    }

    /// The next onboardingProgress snapshot for operation `id`, failing on errors.
    pub async fn snapshot(&mut self, id: &str) -> Value {
        let payload = self.payload(id).await;
        assert!(payload.get("errors").is_none_or(Value::is_null), "unexpected errors: {payload:#}");
        let snapshot = payload["data"]["onboardingProgress"].clone();
        assert!(snapshot.is_object(), "no onboardingProgress in {payload:#}");
        snapshot
    }

    /// The errors operation `id` failed with: an `error` message, or a result carrying
    /// errors and no data. The operation must then be over: no further result for it.
    pub async fn operation_errors(&mut self, id: &str) -> Vec<Value> {
        let message = self.recv_json(RECV).await;
        assert_eq!(message["id"], id, "a message for another operation: {message}");
        match message["type"].as_str() {
            Some("error") => message["payload"].as_array().cloned().unwrap_or_else(|| vec![message["payload"].clone()]),
            Some("next" | "data") => {
                let payload = &message["payload"];
                assert!(payload["data"].is_null(), "a failed operation must carry no data: {message}");
                let errors = payload["errors"].as_array().cloned().unwrap_or_default();
                assert!(!errors.is_empty(), "expected errors, got {message}");
                let complete = self.recv_json(RECV).await;
                assert_eq!(complete, json!({ "type": "complete", "id": id }), "the failed operation must end");
                errors
            }
            _ => panic!("expected errors for `{id}`, got {message}"),
        }
    }

    /// The close code and reason the server sends within `within`; any message before it
    /// fails the test.
    pub async fn expect_close(&mut self, within: Duration) -> (u16, String) {
        match self.recv(within).await {
            Frame::Closed(Some(close)) => close,
            Frame::Closed(None) => panic!("the connection ended without a close frame"),
            Frame::Json(message) => panic!("expected the server to close, got {message}"),
        }
    }

    /// Asserts that nothing arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(message) = timeout(quiet, self.stream.next()).await {
            panic!("expected nothing for {quiet:?}, got {message:?}");
        }
    }
}
