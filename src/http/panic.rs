//! Panics at the edge: a panicking request answers 500 with a GraphQL-shaped error and a
//! reference to the log line, and the process (and every other request) carries on.

use std::any::Any;

use axum::http::StatusCode;
use axum::response::Response;
use tower_http::catch_panic::CatchPanicLayer;

use super::refusal;
use crate::error::ErrorCode;

pub type PanicHandler = fn(Box<dyn Any + Send + 'static>) -> Response;

/// The layer the router wraps every route in.
pub fn catch_panic_layer() -> CatchPanicLayer<PanicHandler> {
    CatchPanicLayer::custom(answer_panic as PanicHandler)
}

fn answer_panic(panic: Box<dyn Any + Send + 'static>) -> Response {
    let reference = uuid::Uuid::new_v4();
    tracing::error!(%reference, panic = %panic_message(panic.as_ref()), "request handler panicked");
    refusal(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, &format!("internal error (reference {reference})"))
}

/// The text a panic was raised with, when it has one.
pub fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn panics() -> &'static str {
        panic!("a bug in a handler")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_a_graphql_error_and_the_service_lives_on() {
        let app =
            Router::new().route("/boom", get(panics)).route("/ok", get(|| async { "ok" })).layer(catch_panic_layer());
        let response = app.clone().oneshot(Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], "INTERNAL");
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with("internal error (reference "), "{message}");
        assert!(!message.contains("a bug"), "the panic text stays in the log: {message}");

        let response = app.oneshot(Request::get("/ok").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
