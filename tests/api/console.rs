//! The console (/console): its responses and security headers, the development token,
//! and the pages in a real browser (Debian's chromium driven by playwright-core, in
//! tests/js/console.mjs): the checklist at 0 %, an event sent through the API, the bar at
//! 50 % within a second without a reload; flows with their versions; the analytics charts
//! drawn from the same numbers the API gives. Screenshots go to target/console-screenshots.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ChildStdin, Command};
use std::time::{Duration, Instant};

use onramp::auth::JwtKeys;
use onramp::config::Mode;
use onramp::service::Onramp;
use onramp::{AppState, http, persistence};
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::both;
use crate::common::js::{ensure_js_dependencies, js_dir};
use crate::common::process::Process;
use crate::common::{TestApp, jwt_args};

both!(the_console_is_served_under_a_strict_policy, the_console_works_in_a_real_browser);

// ----- Responses -----

async fn the_console_is_served_under_a_strict_policy(app: TestApp) {
    let page = app.client.get(app.url("/console")).send().await.expect("GET /console");
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().expect("policy");
    for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"] {
        assert!(policy.contains(directive), "`{directive}` missing from {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert!(!policy.contains("http"), "no other origin may serve anything: {policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.expect("html");
    assert!(html.contains(r#"<script type="module" src="/console/app.js">"#), "{html}");
    // Nothing from another origin: the console works offline.
    assert!(!html.contains("https://") && !html.contains("http://"), "{html}");

    let javascript = "text/javascript; charset=utf-8";
    for (asset, content_type) in [
        ("app.js", javascript),
        ("api.js", javascript),
        ("dom.js", javascript),
        ("charts.js", javascript),
        ("checklist.js", javascript),
        ("flows.js", javascript),
        ("analytics.js", javascript),
        ("console.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let response = app.client.get(app.url(&format!("/console/{asset}"))).send().await.expect("asset");
        assert_eq!(response.status(), 200, "{asset}");
        assert_eq!(response.headers()["content-type"], content_type, "{asset}");
        assert!(response.headers().contains_key("content-security-policy"), "{asset}");
        // The SVG namespace is a name, not an address.
        let body = response.text().await.expect("body").replace("http://www.w3.org/2000/svg", "");
        assert!(!body.contains("https://") && !body.contains("http://"), "{asset} loads from another origin");
    }
    let missing = app.client.get(app.url("/console/nothing.js")).send().await.expect("missing");
    assert_eq!(missing.status(), 404);
    let traversal = app.client.get(app.url("/console/..%2FCargo.toml")).send().await.expect("traversal");
    assert_eq!(traversal.status(), 404);

    // Production (the harness): no token is handed out; the user pastes one.
    let refused = app.client.get(app.url("/console/dev-token")).send().await.expect("dev-token");
    assert_eq!(refused.status(), 200);
    assert_eq!(refused.json::<Value>().await.expect("json"), json!({ "token": null }));

    // Development: an admin token that works.
    let dev = DevelopmentServer::start().await;
    let response = app.client.get(format!("http://{}/console/dev-token", dev.addr)).send().await.expect("dev-token");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let token = response.json::<Value>().await.expect("json")["token"].as_str().expect("a token").to_string();
    let answer: Value = app
        .client
        .post(format!("http://{}/graphql", dev.addr))
        .bearer_auth(&token)
        .json(&json!({ "query": "{ flows { key } }" }))
        .send()
        .await
        .expect("flows")
        .json()
        .await
        .expect("json");
    assert!(answer.get("errors").is_none(), "the development token is an admin's: {answer:#}");
}

/// A server in development mode on a SQLite file of its own.
struct DevelopmentServer {
    addr: SocketAddr,
    path: PathBuf,
}

impl DevelopmentServer {
    async fn start() -> DevelopmentServer {
        let path = std::env::temp_dir().join(format!("onramp-console-{}.db", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let db = persistence::connect(&url, 2).await.expect("connect");
        persistence::migrate(&db).await.expect("migrate");
        let keys = JwtKeys::from_args(&jwt_args(), Mode::Production).expect("keys");
        let state = AppState::new(Onramp::new(db), keys, true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        DevelopmentServer { addr, path }
    }
}

impl Drop for DevelopmentServer {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

// ----- In a browser -----

const FLOW: &str = "console_demo";
const EXPERIMENT: &str = "guided-tour";
const SUBJECT: &str = "alice";

/// Two required steps, so one completed is 50 %; an optional one. Version 2 adds an
/// optional tour.
fn demo_flow(with_tour: bool) -> Value {
    let mut steps = vec![
        json!({ "key": "verify_email", "title": "Verify your email", "points": 10,
                "description": "Click the link we sent you.", "trigger": { "event": "user.email_verified" } }),
        json!({ "key": "connect_integration", "title": "Connect your first integration", "points": 25,
                "dependsOn": ["verify_email"], "trigger": { "event": "integration.connected" } }),
        json!({ "key": "add_photo", "title": "Add a profile photo", "required": false, "points": 5,
                "trigger": { "event": "profile.photo_uploaded" } }),
    ];
    if with_tour {
        steps.push(json!({ "key": "take_tour", "title": "Take the guided tour", "required": false, "skippable": true,
                           "points": 5, "trigger": { "event": "tour.finished" } }));
    }
    json!({ "key": FLOW, "title": "Get started", "description": "Verify your email and connect your tools.", "steps": steps })
}

/// Two versions, an experiment between them, and a few dozen subjects who went some way
/// through the flow (the tour's variant completes more), so that every chart has data.
async fn seed(app: &TestApp) {
    app.publish(demo_flow(false)).await;
    app.publish(demo_flow(true)).await;
    let admin = app.admin();
    app.ok(
        &admin,
        "mutation($v: [VariantInput!]!) { createExperiment(key: \"guided-tour\", flowKey: \"console_demo\", variants: $v) { key } }",
        json!({ "v": [ { "name": "control", "version": 1, "weight": 50 }, { "name": "tour", "version": 2, "weight": 50 } ] }),
    )
    .await;
    app.ok(&admin, "mutation { startExperiment(key: \"guided-tour\") { state } }", json!({})).await;

    let mut events = Vec::new();
    for i in 0..32 {
        let subject = format!("user{i:02}");
        let status = app.start_as(&subject, FLOW).await;
        let tour = status["version"] == 2;
        let mut send = |name: &str| {
            events.push(json!({ "id": format!("{subject}-{name}"), "subjectId": subject, "name": name }));
        };
        if i % 8 != 7 {
            send("user.email_verified");
        }
        if i % 8 < if tour { 6 } else { 3 } {
            send("integration.connected");
        }
        if i % 3 == 0 {
            send("profile.photo_uploaded");
        }
        if tour && i % 2 == 0 {
            send("tour.finished");
        }
    }
    let results = app
        .ok(
            &app.service(),
            "mutation($e: [EventInput!]!) { trackEvents(events: $e) { status error { message } } }",
            json!({ "e": events }),
        )
        .await;
    for result in results["trackEvents"].as_array().expect("results") {
        assert_eq!(result["status"], "NEW", "{result:#}");
    }
}

fn chromium() -> PathBuf {
    let path =
        std::env::var_os("ONRAMP_TEST_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.exists(),
        "the console's browser test needs Chromium at {} (Debian: `apt-get install -y chromium`; .ci/run installs it; \
         ONRAMP_TEST_CHROMIUM names another binary)",
        path.display()
    );
    path
}

fn screenshots(backend: &str) -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp: the screenshots go beside it.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    target.parent().map_or(target.clone(), PathBuf::from).join("console-screenshots").join(backend)
}

async fn the_console_works_in_a_real_browser(app: TestApp) {
    let chromium = chromium();
    ensure_js_dependencies().await;
    seed(&app).await;
    // Alice has started and done nothing: 0 %.
    let alice = app.start_as(SUBJECT, FLOW).await;
    assert_eq!(alice["percentComplete"], 0);

    let backend = if app.is_postgres() { "postgres" } else { "sqlite" };
    let shots = screenshots(backend);
    let mut command = Command::new("node");
    command
        .arg("console.mjs")
        .current_dir(js_dir())
        .env("BASE", format!("http://{}", app.addr))
        .env("TOKEN", app.admin())
        .env("FLOW", FLOW)
        .env("SUBJECT", SUBJECT)
        .env("STEP", "verify_email")
        .env("EXPERIMENT", EXPERIMENT)
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium);
    let mut browser = Browser::spawn(command);

    let ready = browser.event("ready", Duration::from_secs(60)).await;
    assert_eq!(ready["percent"], 0, "{ready}");

    // The event goes through the API; the page must follow within a second, by itself.
    browser.send("send");
    let sent = Instant::now();
    let result = app.track_event("alice-verified", SUBJECT, "user.email_verified", json!({})).await;
    assert_eq!(result["status"], "NEW", "{result:#}");
    let progress = browser.event("progress", Duration::from_secs(5)).await;
    let elapsed = sent.elapsed();
    eprintln!("console: the bar reached 50 % {elapsed:?} after the event was sent ({} ms in the page)", progress["ms"]);
    assert!(elapsed < Duration::from_secs(1), "the bar reached 50 % after {elapsed:?}");
    assert_eq!(progress["reloaded"], false, "the page reloaded: {progress}");
    assert_eq!(progress["stepStatus"], "COMPLETED", "{progress}");
    assert_eq!(progress["label"], "50 %", "{progress}");

    // Flows: the key, both versions, the newest one's steps and definition.
    let flows = browser.event("flows", Duration::from_secs(30)).await;
    let api = app.ok(&app.admin(), "{ flow(key: \"console_demo\") { version definition } }", json!({})).await;
    assert_eq!(flows["listed"], json!([FLOW]), "{flows}");
    assert_eq!(flows["versions"], json!([1, 2]), "{flows}");
    assert_eq!(flows["shownVersion"], api["flow"]["version"], "the newest version is shown first");
    assert_eq!(flows["definition"], api["flow"]["definition"], "the stored definition, as stored");
    let keys: Vec<&Value> =
        api["flow"]["definition"]["steps"].as_array().expect("steps").iter().map(|s| &s["key"]).collect();
    assert_eq!(flows["steps"], json!(keys), "{flows}");

    // Analytics: the charts draw the API's numbers.
    let charts = browser.event("analytics", Duration::from_secs(30)).await;
    let since = (chrono::Utc::now() - chrono::Duration::days(31)).to_rfc3339();
    let api = app
        .ok(
            &app.admin(),
            "query($s: DateTime) { funnel(flowKey: \"console_demo\", since: $s) { enrolled steps { stepKey completed reached } }
               flowStats(flowKey: \"console_demo\") { enrolled completed }
               experimentResults(key: \"guided-tour\") { variants { name completionRate exposures } } }",
            json!({ "s": since }),
        )
        .await;
    let funnel = &api["funnel"];
    assert_eq!(funnel["enrolled"], 33, "32 seeded subjects and alice: {funnel:#}");
    assert_eq!(charts["enrolled"], funnel["enrolled"], "{charts}");
    let drawn: Vec<Value> = charts["funnel"]
        .as_array()
        .expect("funnel rows")
        .iter()
        .map(|row| json!({ "stepKey": row["stepKey"], "completed": row["completed"], "reached": row["reached"] }))
        .collect();
    assert_eq!(json!(drawn), funnel["steps"], "the funnel chart shows the funnel");
    for row in charts["funnel"].as_array().expect("rows") {
        let (completed, reached) =
            (row["completedWidth"].as_f64().expect("w"), row["reachedWidth"].as_f64().expect("w"));
        assert!(completed <= reached + 1e-9, "a completed bar is within its reached bar: {row}");
        assert_eq!(completed > 0.0, row["completed"].as_i64() > Some(0), "bars have data: {row}");
    }
    assert_eq!(charts["seriesStarts"], api["flowStats"]["enrolled"], "every enrollment started today: {charts}");
    assert_eq!(charts["seriesCompletions"], api["flowStats"]["completed"], "{charts}");
    assert_eq!(charts["versions"], json!(["version 1", "version 2"]), "{charts}");
    let variants: Vec<Value> = api["experimentResults"]["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| json!({ "name": v["name"], "rate": v["completionRate"] }))
        .collect();
    assert_eq!(charts["variants"], json!(variants), "the experiment chart shows the results");
    assert_eq!(charts["tiles"]["Enrolled"], "33", "{charts}");

    let done = browser.event("done", Duration::from_secs(30)).await;
    assert_eq!(done["errors"], json!([]), "console errors or policy violations in the page");
    let status = browser.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "console.mjs exited with {status}; stderr:\n{}", browser.stderr());
    for page in ["sign-in", "checklist", "flows", "analytics"] {
        let shot = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is missing or empty", shot.display());
    }
}

/// tests/js/console.mjs: JSON lines on stdout, commands on stdin, stopped when dropped.
struct Browser {
    process: Process,
    stdin: Option<ChildStdin>,
}

impl Browser {
    fn spawn(command: Command) -> Browser {
        let (process, stdin) = Process::spawn_with_stdin("node tests/js/console.mjs", command);
        Browser { process, stdin: Some(stdin) }
    }

    fn stderr(&self) -> String {
        self.process.stderr()
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("write to console.mjs");
    }

    /// The next line, which must be the named event.
    async fn event(&mut self, name: &str, within: Duration) -> Value {
        let line = match timeout(within, self.process.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => {
                // Exited: let stderr arrive in full.
                let _ = self.process.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("console.mjs ended before `{name}`; stderr:\n{}", self.stderr())
            }
            Err(_) => panic!("no `{name}` from console.mjs within {within:?}; stderr:\n{}", self.stderr()),
        };
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert_eq!(event["event"], name, "{event}");
        event
    }

    async fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        self.stdin = None;
        self.process.wait(within).await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stdin = None;
        let child = &mut self.process.child;
        if !matches!(child.try_wait(), Ok(None)) {
            return; // exited (and reaped): its pid may belong to someone else now
        }
        // SIGTERM first: playwright then closes the browser it launched, which a SIGKILL
        // of node (what dropping the process does) would leave running.
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
