//! HTTP routes: /graphql (POST; GET serves GraphiQL in development), /graphql/ws
//! (subscriptions) and /healthz.

mod websocket;

use std::time::Duration;

use async_graphql::http::WebSocketProtocols;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::AppState;
use crate::auth::Auth;
use crate::error::ErrorCode;

/// Flow definitions and event batches are the largest bodies; a few MiB is plenty.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn graphql(State(state): State<AppState>, headers: HeaderMap, request: GraphQLRequest) -> GraphQLResponse {
    let auth = match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => Auth::Anonymous,
        Some(Ok(value)) => match state.keys.verify(value) {
            Ok(principal) => Auth::Verified(principal),
            Err(why) => Auth::Rejected(why),
        },
        Some(Err(_)) => Auth::Rejected("the Authorization header is not valid text".into()),
    };
    let mut response = state.schema.execute(request.into_inner().data(auth)).await;
    // Errors raised before any resolver runs (a malformed query, a wrong variable type)
    // come from async-graphql without a code; every failure carries one.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", ErrorCode::ValidationFailed.as_str());
        }
    }
    response.into()
}

/// Small buffers: thousands of idle subscribers each hold them for as long as they are
/// connected. Client messages are a few hundred bytes (connection_init, subscribe,
/// pong); a larger one is still read whole, only in more than one read.
const WS_READ_BUFFER_BYTES: usize = 1024;
const WS_WRITE_BUFFER_BYTES: usize = 4 * 1024;
const WS_MAX_MESSAGE_BYTES: usize = 64 * 1024;

async fn graphql_ws(State(state): State<AppState>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
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
        .max_message_size(WS_MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| websocket::serve(socket, protocol, state))
}

async fn graphiql(State(state): State<AppState>) -> Response {
    if state.graphiql {
        Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql/ws").finish()).into_response()
    } else {
        (StatusCode::METHOD_NOT_ALLOWED, "POST GraphQL requests to /graphql").into_response()
    }
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
