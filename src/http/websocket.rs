//! GraphQL subscriptions over websockets (graphql-transport-ws, and the older
//! subscriptions-transport-ws), with onramp's rules on top of async-graphql's protocol
//! engine: the token travels in connection_init; a bad token closes with 4403, a
//! subscribe before the ack with 4401, a missing connection_init with 4408 after a
//! configurable timeout, and the connection closes with 4403 when the token expires.
//! Hostile clients: a message past the size limit closes with 1009, an unknown message
//! with 4400, a repeated operation id with 4409, too many messages (the caller's rate
//! limit, pings included) with 4429; operations past the per-connection limit are refused
//! one by one with an `error` message.

use std::collections::HashSet;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::Data;
use async_graphql::http::{WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_stream::wrappers::ReceiverStream;

use super::panic_message;
use super::rate_limit::Caller;
use crate::AppState;
use crate::auth::{Auth, JwtKeys, Principal};
use crate::error::ErrorCode;

/// Client messages queued for the protocol engine; a client that floods past this is cut off.
const INBOX: usize = 64;

/// A close frame's reason is at most 123 bytes (RFC 6455 5.5); a longer one makes the
/// frame invalid and the connection is dropped without any close frame at all.
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// How long a closing connection keeps reading for the client's close reply. Closing a
/// socket with unread data resets it, and the client may then never see the close frame.
const CLOSING_DRAIN: Duration = Duration::from_secs(2);

type Sink = SplitSink<WebSocket, Message>;
type Incoming = SplitStream<WebSocket>;

/// The bearer token in a connection_init payload: `{"authorization": "Bearer ..."}`
/// (any case) or `{"token": "..."}`.
fn token_from_payload(payload: &Value) -> Option<&str> {
    let object = payload.as_object()?;
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.as_str())
        .or_else(|| object.get("token").and_then(Value::as_str))
}

async fn verify_payload(keys: &JwtKeys, payload: &Value) -> Result<Principal, String> {
    let token = token_from_payload(payload).ok_or("connection_init carries no token")?;
    keys.authenticate(token).await
}

enum Phase {
    /// Waiting for connection_init until the deadline.
    AwaitingInit(Instant),
    /// Accepted; the token expires at this instant.
    Ready(Instant),
}

/// Serves one connection. A panic inside ends this connection only, with 1011 and a
/// reference to the log line.
pub async fn serve(socket: WebSocket, protocol: WebSocketProtocols, state: AppState, peer: Option<IpAddr>) {
    let websockets = state.onramp.metrics().websockets.clone();
    websockets.inc();
    // Dropped when the connection ends, however it ends (a panic included).
    let _open = scopeguard(move || websockets.dec());
    let (mut sink, mut incoming) = socket.split();
    let close = contain_panic(connection(&mut sink, &mut incoming, protocol, state, peer)).await;
    if let Some((code, reason)) = close {
        let frame = CloseFrame { code, reason: truncate(&reason, MAX_CLOSE_REASON_BYTES).into() };
        if sink.send(Message::Close(Some(frame))).await.is_ok() {
            // Read until the client answers the close (or goes), so what it sent last is
            // consumed and the close frame reaches it instead of a reset.
            let _ = timeout(CLOSING_DRAIN, async {
                while let Some(Ok(message)) = incoming.next().await {
                    if let Message::Close(_) = message {
                        break;
                    }
                }
            })
            .await;
        }
    }
    let _ = sink.close().await;
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Runs a connection's protocol; a panic in it becomes a 1011 close with a reference to
/// the log line, for this connection only.
async fn contain_panic(protocol: impl std::future::Future<Output = Option<(u16, String)>>) -> Option<(u16, String)> {
    match AssertUnwindSafe(protocol).catch_unwind().await {
        Ok(close) => close,
        Err(panic) => {
            let reference = uuid::Uuid::new_v4();
            tracing::error!(%reference, panic = %panic_message(panic.as_ref()), "websocket connection panicked");
            Some((1011, format!("internal error (reference {reference})")))
        }
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A protocol error, as the client's close reason.
fn invalid_message() -> Option<(u16, String)> {
    Some((4400, "Invalid message received".to_string()))
}

/// Runs the protocol until the connection should close: the close code and reason, or
/// None when the client went away.
async fn connection(
    sink: &mut Sink,
    incoming: &mut Incoming,
    protocol: WebSocketProtocols,
    state: AppState,
    peer: Option<IpAddr>,
) -> Option<(u16, String)> {
    let (inbox, inbox_rx) = mpsc::channel::<String>(INBOX);
    let keys = state.keys.clone();
    let mut engine = async_graphql::http::WebSocket::new(state.schema.clone(), ReceiverStream::new(inbox_rx), protocol)
        .on_connection_init(move |payload| {
            let keys = keys.clone();
            async move {
                let principal = verify_payload(&keys, &payload).await.map_err(async_graphql::Error::new)?;
                let mut data = Data::default();
                data.insert(Auth::Verified(principal));
                Ok(data)
            }
        });
    let strict = protocol == WebSocketProtocols::GraphQLWS;
    let mut phase = Phase::AwaitingInit(Instant::now() + state.ws_init_timeout);
    // Until connection_init names a subject, the peer's address pays for its messages.
    let mut caller = Caller::Address(peer);
    // Operations the engine is running, by id: a repeated id is a protocol error, and
    // their number is bounded.
    let mut live: HashSet<String> = HashSet::new();
    let max_live = state.limits.subscriptions_per_connection;

    loop {
        let deadline = match phase {
            Phase::AwaitingInit(at) | Phase::Ready(at) => at,
        };
        tokio::select! {
            message = incoming.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
                    // Answered by the websocket layer, but paid for like any message, so a
                    // ping flood ends in 4429 rather than unbounded work.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        if state.rate_limiter.take(&caller).is_err() {
                            return Some((4429, "Too many messages".to_string()));
                        }
                        continue;
                    }
                    Some(Err(ref e)) if too_big(e) => return Some((1009, "Message too big".to_string())),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                };
                let parsed: Value = match serde_json::from_str(&text) {
                    Ok(value) => value,
                    Err(_) if strict => return invalid_message(),
                    Err(_) => Value::Null,
                };
                let kind = parsed.get("type").and_then(Value::as_str);
                // Every message is paid for, but the connection_init that opens a
                // connection: many users behind one address (an office, a carrier's NAT)
                // each open one, and a second connection_init closes with 4429 anyway.
                let opening = matches!(phase, Phase::AwaitingInit(_)) && kind == Some("connection_init");
                if !opening && state.rate_limiter.take_for(&caller, text.len()).is_err() {
                    return Some((4429, "Too many messages".to_string()));
                }
                if let Phase::AwaitingInit(_) = phase {
                    match kind {
                        Some("connection_init") => {
                            let payload = parsed.get("payload").cloned().unwrap_or(Value::Null);
                            match verify_payload(&state.keys, &payload).await {
                                Ok(principal) => {
                                    phase = Phase::Ready(expiry(&principal));
                                    caller = Caller::verified(&principal);
                                }
                                // The older protocol reports the refusal in-band; the engine does that.
                                Err(why) if strict => return Some((4403, format!("Forbidden: {why}"))),
                                Err(_) => {}
                            }
                        }
                        Some("subscribe" | "start") if strict => return Some((4401, "Unauthorized".to_string())),
                        _ => {}
                    }
                }
                match (kind, parsed.get("id")) {
                    (Some("subscribe" | "start"), Some(Value::String(id))) => {
                        if live.contains(id) {
                            if strict {
                                return Some((4409, format!("Subscriber for {} already exists", truncate(id, 64))));
                            }
                            let refused = operation_error(protocol, id, "an operation with this id is running");
                            if sink.send(Message::Text(refused.into())).await.is_err() {
                                return None;
                            }
                            continue;
                        }
                        if live.len() >= max_live {
                            let message = format!("at most {max_live} operations may run on one connection");
                            let refused = operation_error(protocol, id, &message);
                            if sink.send(Message::Text(refused.into())).await.is_err() {
                                return None;
                            }
                            continue;
                        }
                        live.insert(id.clone());
                    }
                    (Some("subscribe"), _) if strict => return invalid_message(),
                    (Some("complete" | "stop"), Some(Value::String(id))) => {
                        live.remove(id);
                    }
                    (Some("connection_init" | "ping" | "pong" | "complete"), _) => {}
                    _ if strict => return invalid_message(),
                    _ => {}
                }
                if inbox.try_send(text).is_err() {
                    return Some((4429, "Too many messages".to_string()));
                }
            }
            output = engine.next() => match output {
                Some(WsMessage::Text(text)) => {
                    // The engine serializes the type first; only completions end an operation.
                    if text.starts_with(r#"{"type":"complete""#)
                        && let Ok(done) = serde_json::from_str::<Value>(&text)
                        && let Some(id) = done.get("id").and_then(Value::as_str)
                    {
                        live.remove(id);
                    }
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        return None;
                    }
                }
                Some(WsMessage::Close(code, reason)) => return Some((code, reason)),
                None => return None,
            },
            () = sleep_until(deadline) => return Some(match phase {
                Phase::AwaitingInit(_) => (4408, "Connection initialisation timeout".to_string()),
                Phase::Ready(_) => (4403, "Forbidden: token expired".to_string()),
            }),
        }
    }
}

/// A message past `max_message_size`: the one read error that deserves a close frame.
fn too_big(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// An `error` message for one operation; the connection stays open.
fn operation_error(protocol: WebSocketProtocols, id: &str, message: &str) -> String {
    let error = json!({ "message": message, "extensions": { "code": ErrorCode::ValidationFailed.as_str() } });
    let payload = match protocol {
        WebSocketProtocols::GraphQLWS => json!([error]),
        _ => error,
    };
    json!({ "type": "error", "id": id, "payload": payload }).to_string()
}

/// The instant a principal's token expires.
fn expiry(principal: &Principal) -> Instant {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Instant::now() + Duration::from_secs(principal.expires_at.saturating_sub(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_a_connection_closes_it_with_1011() {
        let closed = contain_panic(async { panic!("a bug in a resolver") }).await;
        let (code, reason) = closed.expect("a close frame");
        assert_eq!(code, 1011);
        assert!(reason.starts_with("internal error (reference ") && reason.len() <= MAX_CLOSE_REASON_BYTES, "{reason}");
        assert!(!reason.contains("a bug"), "{reason}");
        // A connection that ends normally is untouched.
        assert_eq!(contain_panic(async { Some((4400, "x".to_string())) }).await, Some((4400, "x".to_string())));
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        let cut = truncate(&long, MAX_CLOSE_REASON_BYTES);
        assert!(cut.len() <= MAX_CLOSE_REASON_BYTES && cut.len() >= MAX_CLOSE_REASON_BYTES - 1);
        assert_eq!(truncate("short", MAX_CLOSE_REASON_BYTES), "short");
    }
}
