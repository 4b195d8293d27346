//! GraphiQL is served whole by the binary in development: the page names no other host,
//! and every script and stylesheet it loads comes from the server, byte for byte the
//! vendored production builds.

use crate::common::TestApp;
use crate::common::binary::DevServer;

/// The values of every `src` and `href` attribute in a page.
fn references(page: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        let mut rest = page;
        while let Some(start) = rest.find(attribute) {
            rest = &rest[start + attribute.len()..];
            let end = rest.find('"').expect("a closed attribute");
            found.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_is_served_from_the_binary_and_names_no_other_host() {
    let server = DevServer::start().await;
    let client = reqwest::Client::new();
    let page = client.get(server.url("/graphql")).send().await.expect("GET /graphql");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = page.text().await.unwrap();
    for host_marker in ["http://", "https://", "//unpkg", "cdn", "jsdelivr", "esm.sh"] {
        assert!(!page.contains(host_marker), "the GraphiQL page names another host ({host_marker}):\n{page}");
    }

    let references = references(&page);
    let vendored = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/graphiql");
    let mut served = Vec::new();
    for reference in &references {
        if reference.starts_with("data:") {
            continue;
        }
        assert!(
            reference.starts_with('/') && !reference.starts_with("//"),
            "{reference} is not an address on this server"
        );
        let response = client.get(server.url(reference)).send().await.expect("GET an asset");
        assert_eq!(response.status(), 200, "{reference}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
        let body = response.bytes().await.unwrap();
        let file = reference.rsplit('/').next().unwrap();
        let expected = std::fs::read(format!("{vendored}/{file}")).expect("the vendored file");
        assert!(body == expected, "{reference} is not the vendored {file}");
        if file.ends_with(".js") {
            assert!(content_type.starts_with("text/javascript"), "{reference}: {content_type}");
        } else {
            assert!(content_type.starts_with("text/css"), "{reference}: {content_type}");
            let css = String::from_utf8_lossy(&body);
            assert!(!css.contains("url(http") && !css.contains("@import"), "the stylesheet loads from elsewhere");
        }
        served.push(file.to_string());
    }
    served.sort();
    assert_eq!(
        served,
        ["graphiql.min.css", "graphiql.min.js", "react-dom.production.min.js", "react.production.min.js"],
        "the page loads GraphiQL, its styles and React's production builds"
    );
    let missing = client.get(server.url(&references[1].replace(".js", ".missing.js"))).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// In production there is no GraphiQL, and so no assets either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_serves_no_graphiql() {
    let app = TestApp::sqlite().await;
    let page = app.client.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 405);
    let dev = DevServer::start().await;
    let html = reqwest::get(dev.url("/graphql")).await.unwrap().text().await.unwrap();
    let asset = references(&html).into_iter().find(|r| r.ends_with("graphiql.min.js")).expect("a script");
    let response = app.client.get(app.url(&asset)).send().await.unwrap();
    assert_eq!(response.status(), 404);
}
