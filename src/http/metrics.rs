//! GET /metrics: the Prometheus text format, for a scraper holding the metrics token,
//! for admin tokens, or for anyone in development (see `MetricsAccess`). The output holds
//! counts and operation names, never subjects or payloads, but a public service still
//! should not show its traffic to strangers.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::refusal;
use crate::AppState;
use crate::auth::Role;
use crate::error::ErrorCode;

pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = check_access(&state, &headers).await {
        return refused;
    }
    let body = state.onramp.render_metrics().await;
    ([(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE))], body).into_response()
}

async fn check_access(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let access = &state.metrics_access;
    if access.open {
        return Ok(());
    }
    let unauthenticated = |message: &str| {
        let mut response = refusal(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, message);
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    };
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(unauthenticated("/metrics needs `Authorization: Bearer <metrics token or admin JWT>`"));
    };
    let presented = match value.trim().split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value.trim(),
    };
    if let Some(token) = &access.token
        && same_secret(presented, token)
    {
        return Ok(());
    }
    match state.keys.authenticate(value).await {
        Ok(principal) if principal.role == Role::Admin => Ok(()),
        Ok(_) => Err(refusal(StatusCode::FORBIDDEN, ErrorCode::Forbidden, "/metrics is for admin tokens")),
        Err(_) => Err(unauthenticated("the metrics token or admin JWT is not valid")),
    }
}

/// Compares digests, so the time taken says nothing about how much of a guess was right.
fn same_secret(presented: &str, secret: &str) -> bool {
    Sha256::digest(presented.as_bytes()) == Sha256::digest(secret.as_bytes())
}
