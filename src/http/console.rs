//! The console at /console: a subject's live checklist, flows and their versions, and
//! analytics charts. Plain ES modules and hand-drawn SVG, embedded in the binary (no CDN,
//! no build step), served under a strict Content-Security-Policy.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::AppState;
use crate::auth::Role;

/// Scripts, styles and connections only from this origin (`'self'` covers the websocket
/// at /graphql/ws); no inline script or style, no plugins, no framing, no form posts.
/// Images from this origin and `data:` (the favicon).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// How long the development token served to the console lasts.
const DEV_TOKEN_SECONDS: u64 = 7 * 86_400;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: &str = include_str!("console/index.html");

/// Every file the page loads, by the name it is requested under.
const ASSETS: &[Asset] = &[
    Asset { name: "console.css", content_type: "text/css; charset=utf-8", body: include_str!("console/console.css") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", body: include_str!("console/icon.svg") },
    js("app.js", include_str!("console/app.js")),
    js("api.js", include_str!("console/api.js")),
    js("dom.js", include_str!("console/dom.js")),
    js("charts.js", include_str!("console/charts.js")),
    js("checklist.js", include_str!("console/checklist.js")),
    js("flows.js", include_str!("console/flows.js")),
    js("analytics.js", include_str!("console/analytics.js")),
];

const fn js(name: &'static str, body: &'static str) -> Asset {
    Asset { name, content_type: "text/javascript; charset=utf-8", body }
}

/// The console's routes, merged into the server's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(page))
        .route("/console/", get(page))
        .route("/console/dev-token", get(dev_token))
        .route("/console/{asset}", get(asset))
}

/// Headers every console response carries.
fn secured(status: StatusCode, content_type: &'static str, cache: &'static str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// Assets change with the binary and are a few KB: revalidating costs nothing worth
/// saving, and a stale module after an upgrade would be worse.
const NO_CACHE: &str = "no-cache";

async fn page() -> Response {
    secured(StatusCode::OK, "text/html; charset=utf-8", NO_CACHE, INDEX.to_string())
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => secured(StatusCode::OK, a.content_type, NO_CACHE, a.body.to_string()),
        None => secured(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", NO_CACHE, "not found".to_string()),
    }
}

/// In development, an admin token for the console, so that it works with no set-up:
/// `{"token": "..."}`; elsewhere `{"token": null}` and the user pastes one. (An answer
/// rather than a 404, which the browser would log as an error on every production page
/// load.) The development key is a well-known secret anyone can sign with, so serving a
/// token signed with it gives nothing away; production refuses that secret.
/// `AppState::graphiql` is set exactly in development.
async fn dev_token(State(state): State<AppState>) -> Response {
    let token = if state.graphiql {
        match state.keys.mint("demo-admin", Role::Admin, DEV_TOKEN_SECONDS) {
            Ok(token) => Some(token),
            Err(e) => {
                tracing::warn!(error = %e, "cannot mint the console's development token");
                None
            }
        }
    } else {
        None
    };
    secured(StatusCode::OK, "application/json", "no-store", json!({ "token": token }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        // Each `from './x.js'` and `src="/console/x.js"` names an embedded asset.
        let sources = std::iter::once(INDEX).chain(ASSETS.iter().map(|a| a.body));
        for source in sources {
            let pieces = source.split(['\'', '"']);
            for name in pieces.filter_map(|p| p.strip_prefix("./").or_else(|| p.strip_prefix("/console/"))) {
                if name.ends_with(".js") || name.ends_with(".css") || name.ends_with(".svg") {
                    assert!(ASSETS.iter().any(|a| a.name == name), "`{name}` is referenced but not embedded");
                }
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        // The policy forbids both; the browser would refuse them silently.
        assert!(!INDEX.contains("<style"), "inline <style>");
        assert!(!INDEX.contains(" style="), "a style attribute");
        for script in INDEX.split("<script").skip(1) {
            assert!(script.trim_start().starts_with("type=\"module\" src="), "inline script: {script}");
        }
    }
}
