//! GraphiQL, served whole from the binary (development only): the page and the pinned
//! production builds of GraphiQL and React vendored in src/http/graphiql (update.sh
//! fetches them from npm), so it works offline and asks no other host for anything.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// Where the assets are served. The versions are part of the path, so browsers may keep
/// them for good: a new version is a new address.
pub const ASSETS: &str = "/graphiql/graphiql-4.1.2-react-18.3.1";

/// The vendored files: name, content type, bytes.
const FILES: [(&str, &str, &[u8]); 4] = [
    ("graphiql.min.js", "text/javascript; charset=utf-8", include_bytes!("graphiql/graphiql.min.js")),
    ("graphiql.min.css", "text/css; charset=utf-8", include_bytes!("graphiql/graphiql.min.css")),
    ("react.production.min.js", "text/javascript; charset=utf-8", include_bytes!("graphiql/react.production.min.js")),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("graphiql/react-dom.production.min.js"),
    ),
];

/// The page. Addresses are relative to the server, and the websocket URL is made from the
/// page's own origin, so it works behind any host name and under TLS.
pub fn page() -> Html<String> {
    Html(PAGE.replace("{ASSETS}", ASSETS))
}

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="robots" content="noindex">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>onramp GraphiQL</title>
    <style>
      body { height: 100%; margin: 0; width: 100%; overflow: hidden; }
      #graphiql { height: 100vh; }
    </style>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="{ASSETS}/graphiql.min.css">
    <script src="{ASSETS}/react.production.min.js"></script>
    <script src="{ASSETS}/react-dom.production.min.js"></script>
    <script src="{ASSETS}/graphiql.min.js"></script>
  </head>
  <body>
    <div id="graphiql">Loading…</div>
    <script>
      const here = new URL(window.location.href);
      const ws = new URL('/graphql/ws', here);
      ws.protocol = here.protocol === 'https:' ? 'wss:' : 'ws:';
      const fetcher = GraphiQL.createFetcher({
        url: new URL('/graphql', here).toString(),
        subscriptionUrl: ws.toString(),
        // Put {"Authorization": "Bearer <token>"} in the headers tab: GraphiQL sends it with
        // every request and as the websocket's connection_init payload (read in any case).
      });
      ReactDOM.createRoot(document.getElementById('graphiql')).render(
        React.createElement(GraphiQL, {
          fetcher,
          defaultEditorToolsVisibility: true,
        }),
      );
    </script>
  </body>
</html>
"#;

/// One vendored file, or 404.
pub fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            ],
            *bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
