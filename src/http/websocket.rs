//! GraphQL subscriptions over websockets (graphql-transport-ws, and the older
//! subscriptions-transport-ws), with onramp's rules on top of async-graphql's protocol
//! engine: the token travels in connection_init; a bad token closes with 4403, a
//! subscribe before the ack with 4401, a missing connection_init with 4408 after a
//! configurable timeout, and the connection closes with 4403 when the token expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::Data;
use async_graphql::http::{WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;

use crate::AppState;
use crate::auth::{Auth, JwtKeys, Principal};

/// Client messages queued for the protocol engine; a client that floods past this is cut off.
const INBOX: usize = 64;

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

fn verify_payload(keys: &JwtKeys, payload: &Value) -> Result<Principal, String> {
    let token = token_from_payload(payload).ok_or("connection_init carries no token")?;
    keys.verify(token)
}

enum Phase {
    /// Waiting for connection_init until the deadline.
    AwaitingInit(Instant),
    /// Accepted; the token expires at this instant.
    Ready(Instant),
}

pub async fn serve(socket: WebSocket, protocol: WebSocketProtocols, state: AppState) {
    let (mut sink, mut incoming) = socket.split();
    let (inbox, inbox_rx) = mpsc::channel::<String>(INBOX);
    let keys = state.keys.clone();
    let mut engine = async_graphql::http::WebSocket::new(state.schema.clone(), ReceiverStream::new(inbox_rx), protocol)
        .on_connection_init(move |payload| {
            let keys = keys.clone();
            async move {
                let principal = verify_payload(&keys, &payload).map_err(async_graphql::Error::new)?;
                let mut data = Data::default();
                data.insert(Auth::Verified(principal));
                Ok(data)
            }
        });
    let strict = protocol == WebSocketProtocols::GraphQLWS;
    let mut phase = Phase::AwaitingInit(Instant::now() + state.ws_init_timeout);

    let close = loop {
        let deadline = match phase {
            Phase::AwaitingInit(at) | Phase::Ready(at) => at,
        };
        tokio::select! {
            message = incoming.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                };
                if let Phase::AwaitingInit(_) = phase {
                    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    match parsed.get("type").and_then(Value::as_str) {
                        Some("connection_init") => {
                            let payload = parsed.get("payload").cloned().unwrap_or(Value::Null);
                            match verify_payload(&state.keys, &payload) {
                                Ok(principal) => phase = Phase::Ready(expiry(&principal)),
                                // The older protocol reports the refusal in-band; the engine does that.
                                Err(why) if strict => break Some((4403, format!("Forbidden: {why}"))),
                                Err(_) => {}
                            }
                        }
                        Some("subscribe" | "start") if strict => break Some((4401, "Unauthorized".to_string())),
                        _ => {}
                    }
                }
                if inbox.try_send(text).is_err() {
                    break Some((4429, "Too many messages".to_string()));
                }
            }
            output = engine.next() => match output {
                Some(WsMessage::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break None;
                    }
                }
                Some(WsMessage::Close(code, reason)) => break Some((code, reason)),
                None => break None,
            },
            () = sleep_until(deadline) => break Some(match phase {
                Phase::AwaitingInit(_) => (4408, "Connection initialisation timeout".to_string()),
                Phase::Ready(_) => (4403, "Forbidden: token expired".to_string()),
            }),
        }
    };
    if let Some((code, reason)) = close {
        let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    }
    let _ = sink.close().await;
}

/// The instant a principal's token expires.
fn expiry(principal: &Principal) -> Instant {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Instant::now() + Duration::from_secs(principal.expires_at.saturating_sub(now))
}
