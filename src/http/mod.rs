//! HTTP routes: /graphql (POST; GET serves GraphiQL in development, its assets under
//! /graphiql), /graphql/ws (subscriptions), /healthz and the console (/console).

mod console;
mod graphiql;
mod media;
mod panic;
pub mod rate_limit;
mod websocket;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::WebSocketProtocols;
use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde_json::json;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use media::Answer;
pub use panic::{catch_panic_layer, panic_message};
use rate_limit::{Caller, retry_after_seconds};

use crate::AppState;
use crate::auth::Auth;
use crate::error::ErrorCode;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route(&format!("{}/{{file}}", graphiql::ASSETS), get(graphiql_asset))
        .route("/healthz", get(healthz))
        .merge(console::routes())
        // For any extractor that reads a body; /graphql reads its own with the same limit.
        .layer(DefaultBodyLimit::max(state.limits.body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)))
        .layer(catch_panic_layer())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// A JSON error body shaped like a GraphQL response, for refusals made before GraphQL runs.
fn refusal(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code.as_str() } }] });
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string()).into_response()
}

/// The peer's address, when the server was started with connect info (main and the test
/// harness are; a router served without it keys every anonymous caller alike).
struct PeerAddr(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())))
    }
}

fn auth_from(state: &AppState, headers: &HeaderMap) -> Auth {
    match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => Auth::Anonymous,
        Some(Ok(value)) => match state.keys.verify(value) {
            Ok(principal) => Auth::Verified(principal),
            Err(why) => Auth::Rejected(why),
        },
        Some(Err(_)) => Auth::Rejected("the Authorization header is not valid text".into()),
    }
}

fn rate_limited(wait: Duration) -> Response {
    let seconds = retry_after_seconds(wait);
    let mut response = refusal(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        &format!("too many requests: retry after {seconds} s"),
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

async fn graphql(State(state): State<AppState>, PeerAddr(peer): PeerAddr, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let answer = Answer::of(&parts.headers);
    if !media::is_json_body(&parts.headers) {
        return refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::ValidationFailed,
            "a GraphQL request is a POST with `Content-Type: application/json`",
        );
    }
    let auth = auth_from(&state, &parts.headers);
    // Before the body is read: a refused caller costs a token check, nothing more.
    let caller = Caller::of(&auth, peer);
    if let Err(wait) = state.rate_limiter.take(&caller) {
        state.rate_limiter.hold(wait).await;
        return rate_limited(wait);
    }
    let (request, length) = match read_request(&parts.headers, body, state.limits.body_bytes).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    // Parsing costs time in proportion to the body: a large one costs more tokens.
    state.rate_limiter.charge_body(&caller, length);
    let mut response = execute(&state, request.data(auth)).await;
    // Errors raised before any resolver runs (a malformed query, a wrong variable type)
    // come from async-graphql without a code; every failure carries one.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", ErrorCode::ValidationFailed.as_str());
        }
    }
    respond(answer, response)
}

/// The response under the negotiated media type. A request error leaves out `data`
/// entirely (the spec: it never began executing).
fn respond(answer: Answer, response: async_graphql::Response) -> Response {
    let request_error = media::is_request_error(&response);
    let body = if request_error {
        serde_json::to_vec(&json!({ "errors": response.errors }))
    } else {
        serde_json::to_vec(&response)
    };
    let Ok(body) = body else {
        return refusal(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "the response could not be written");
    };
    let mut http = (answer.status(request_error), body).into_response();
    let headers = http.headers_mut();
    headers.extend(response.http_headers);
    headers.insert(header::CONTENT_TYPE, answer.content_type());
    http
}

/// Documents longer than this are parsed and validated on a thread of their own.
const LARGE_DOCUMENT_BYTES: usize = 8 * 1024;

/// Runs a request in a task of its own, so that it finishes even when its client hangs
/// up: hyper drops a request's future when the connection goes, and a database query
/// dropped mid-flight makes the pool close that connection and open another. A client
/// that sends and hangs up in a loop would otherwise churn the pool and stall everyone
/// waiting for a connection. (Requests are bounded by the query limits, so finishing
/// one costs little; a mutation that finishes is as good as one that never began.)
///
/// Parsing and validating a document takes time in proportion to its size (tens of
/// milliseconds for thousands of aliased fields, refused only once parsed), and on an
/// async worker that time would stall every other request queued there. So a large
/// document runs on a blocking thread, and only a few at once (`heavy`): a client
/// sending them in a loop gets at most those threads, never the workers that serve
/// everyone else. The operations clients generate are far smaller.
async fn execute(state: &AppState, request: async_graphql::Request) -> async_graphql::Response {
    let schema = state.schema.clone();
    let finished = if request.query.len() <= LARGE_DOCUMENT_BYTES {
        tokio::spawn(async move { schema.execute(request).await }).await
    } else {
        let Ok(permit) = state.heavy.clone().acquire_owned().await else {
            return internal_response("the server is shutting down");
        };
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            runtime.block_on(schema.execute(request))
        })
        .await
    };
    match finished {
        Ok(response) => response,
        // A panic goes on to the edge's catch-panic layer, as if it had happened here.
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => internal_response(&format!("a request's task failed: {e}")),
        },
    }
}

/// An INTERNAL error response; the cause goes to the log with the reference.
fn internal_response(cause: &str) -> async_graphql::Response {
    let error = crate::error::AppError::internal(cause);
    let mut server_error = async_graphql::ServerError::new(error.message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", ErrorCode::Internal.as_str());
    server_error.extensions = Some(extensions);
    async_graphql::Response::from_errors(vec![server_error])
}

/// Returns the request and the body's length.
async fn read_request(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(async_graphql::Request, usize), Response> {
    let too_large = || {
        refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ValidationFailed,
            &format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.map_or(0, |length| length as usize));
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| {
            refusal(StatusCode::BAD_REQUEST, ErrorCode::ValidationFailed, "the request body could not be read")
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let request = serde_json::from_slice(&bytes).map_err(|e| {
        // serde's message can quote the input; its category and position cannot.
        let message = format!(
            "the body is not a JSON GraphQL request ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        );
        refusal(StatusCode::BAD_REQUEST, ErrorCode::ValidationFailed, &message)
    })?;
    Ok((request, bytes.len()))
}

/// Small buffers: thousands of idle subscribers each hold them for as long as they are
/// connected. Client messages are a few hundred bytes (connection_init, subscribe,
/// pong); a larger one is still read whole, only in more than one read.
const WS_READ_BUFFER_BYTES: usize = 1024;
const WS_WRITE_BUFFER_BYTES: usize = 4 * 1024;

async fn graphql_ws(
    State(state): State<AppState>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The first protocol the client offers that we speak; graphql-transport-ws when it
    // names none.
    let offered = headers.get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok());
    let protocol = match offered {
        None => WebSocketProtocols::GraphQLWS,
        Some(list) => match list.split(',').find_map(|p| p.trim().parse::<WebSocketProtocols>().ok()) {
            Some(p) => p,
            None => return (StatusCode::BAD_REQUEST, "unsupported websocket subprotocol").into_response(),
        },
    };
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        // Past this the connection closes with 1009 (websocket.rs). A frame is read whole
        // before its message is measured, so the client that sent it is reading again when
        // the close frame comes; frames beyond four times the limit are refused from their
        // header, unread, which bounds what one connection can make the server buffer (the
        // close frame is still sent, but a client still writing may see a reset).
        .max_message_size(state.limits.ws_message_bytes)
        .max_frame_size(state.limits.ws_message_bytes.saturating_mul(4))
        .on_upgrade(move |socket| websocket::serve(socket, protocol, state, peer))
}

async fn graphiql(State(state): State<AppState>) -> Response {
    if state.graphiql {
        graphiql::page().into_response()
    } else {
        (StatusCode::METHOD_NOT_ALLOWED, "POST GraphQL requests to /graphql").into_response()
    }
}

/// GraphiQL's scripts and styles, only where GraphiQL is served.
async fn graphiql_asset(State(state): State<AppState>, file: axum::extract::Path<String>) -> Response {
    if state.graphiql { graphiql::asset(file) } else { StatusCode::NOT_FOUND.into_response() }
}

/// Healthy when the database answers.
async fn healthz(State(state): State<AppState>) -> Response {
    match state.onramp.db().ping().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}
