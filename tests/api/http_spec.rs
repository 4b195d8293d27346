//! GraphQL over HTTP: the `graphql-http` package's server audit passes every MUST and
//! SHOULD, and the behaviour behind each rule holds when checked directly.

use std::process::Command;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use onramp::config::ServerLimits;

use crate::common::js::ensure_js_dependencies;
use crate::common::{TestApp, test_limits};
use crate::{both, both_with};

both!(media_types_and_status_codes_follow_the_spec);
both_with!(admin_introspection => the_graphql_http_audit_passes);

/// Some audits introspect `__type`: in production only an admin may, when allowed.
fn admin_introspection() -> ServerLimits {
    ServerLimits { admin_introspection: true, ..test_limits() }
}

async fn the_graphql_http_audit_passes(app: TestApp) {
    ensure_js_dependencies().await;
    let (url, token) = (app.url("/graphql"), app.admin());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("tests/js/audit.mjs")
            .arg(url)
            .env("TOKEN", token)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
    })
    .await
    .expect("audit task")
    .expect("node runs the audit");
    assert!(output.status.success(), "the audit failed to run: {}", String::from_utf8_lossy(&output.stderr));
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).expect("the audit's JSON");
    // MUST audits fail as "error", SHOULD audits as "warn"; "notice" marks a MAY.
    let failed: Vec<&Value> = results.iter().filter(|r| r["status"] == "error" || r["status"] == "warn").collect();
    assert!(failed.is_empty(), "audits failed: {failed:#?}");
    let passed = results.iter().filter(|r| r["status"] == "ok").count();
    assert!(passed >= 50, "the audit ran {} checks, {passed} passed", results.len());
}

async fn media_types_and_status_codes_follow_the_spec(app: TestApp) {
    let post = |accept: Option<&'static str>, body: Value| {
        let mut request = app.client.post(app.url("/graphql")).json(&body);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        request.send()
    };
    let content_type = |r: &reqwest::Response| r.headers()[CONTENT_TYPE].to_str().unwrap_or("").to_string();

    // JSON for JSON, for anything, and when nothing is said.
    for accept in [Some("application/json"), Some("*/*"), None] {
        let response = post(accept, json!({ "query": "{ __typename }" })).await.expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(content_type(&response).starts_with("application/json"), "{accept:?}: {}", content_type(&response));
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, json!({ "data": { "__typename": "Query" } }));
    }

    // Under application/json a request error is still 200; under the GraphQL response type
    // it is 400 with no data entry, for parse, validation and variable failures alike.
    let failures = [
        json!({ "query": "{" }),
        json!({ "query": "{ noSuchField }" }),
        json!({ "query": "query($f: String!) { status(flowKey: $f) { status } }", "variables": { "f": 7 } }),
    ];
    for failure in failures {
        let response = post(Some("application/json"), failure.clone()).await.expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{failure}");
        let response = post(Some("application/graphql-response+json"), failure.clone()).await.expect("request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{failure}");
        assert!(content_type(&response).starts_with("application/graphql-response+json"));
        let body: Value = response.json().await.expect("json");
        assert!(body.get("data").is_none(), "{failure}: {body:#}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION_FAILED", "{failure}: {body:#}");
    }

    // An error in execution is not a request error: 200, with data.
    let response =
        post(Some("application/graphql-response+json"), json!({ "query": "{ status(flowKey: \"none\") { status } }" }))
            .await
            .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert!(body.get("data").is_some(), "{body:#}");
    assert!(body["errors"][0]["path"].is_array(), "{body:#}");

    // A POST must say it carries JSON.
    let body = json!({ "query": "{ __typename }" }).to_string();
    let untyped = app.client.post(app.url("/graphql")).body(body.clone()).send().await.expect("request");
    assert_eq!(untyped.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let text = app.client.post(app.url("/graphql")).header(CONTENT_TYPE, "text/plain").body(body).send().await;
    assert_eq!(text.expect("request").status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}
