//! /metrics: who may read it, that the output is valid Prometheus text format (checked by
//! a strict parser below), and that requests, subscriptions, events, rate-limit refusals,
//! the pool and the webhook backlog move the metrics the README lists.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use onramp::MetricsAccess;
use onramp::auth::{JwtKeys, Role};
use onramp::config::{Mode, ServerLimits};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::ws::{TRANSPORT_WS, WsClient, progress_subscription};
use crate::common::{TestApp, complete_mutation, jwt_args, sample_flow};
use crate::{both, both_with};

/// Every metric the README's Metrics section lists (the JWKS ones appear only with a
/// JWKS URL, and are checked in `jwks::a_failed_fetch_keeps_the_cached_keys`).
const DOCUMENTED: [&str; 13] = [
    "onramp_graphql_requests_total",
    "onramp_graphql_request_duration_seconds",
    "onramp_graphql_subscriptions_live",
    "onramp_websocket_connections",
    "onramp_rate_limited_total",
    "onramp_events_ingested_total",
    "onramp_nudges_total",
    "onramp_db_pool_connections",
    "onramp_db_pool_max_connections",
    "onramp_webhook_outbox_pending",
    "onramp_webhook_outbox_oldest_pending_seconds",
    "onramp_webhook_deliveries_pending",
    "onramp_webhook_deliveries_overdue_seconds",
];

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: its samples and each family's TYPE.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// The value of the sample with this name and exactly these labels (0 when absent:
    /// a labelled counter appears only once it has counted).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == labels).map_or(0.0, |s| s.value)
    }

    /// The values of one label across a metric's samples.
    pub fn label_values(&self, name: &str, label: &str) -> HashSet<String> {
        self.samples.iter().filter(|s| s.name == name).filter_map(|s| s.labels.get(label).cloned()).collect()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse::<f64>().map_err(|_| format!("`{text}` is not a sample value")),
    }
}

/// `{a="1",b="x\"y"}` at the start of `text`: the labels and the rest of the line.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("labels start with {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("`{name}` is not a label name"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or("a label value starts with \"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("a bad escape {other:?} in a label value")),
                },
                Some((_, '\n')) => return Err("a raw newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label `{name}` twice"));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample belongs to, given the TYPEs seen.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(kind) = types.get(base)
            && (kind == "histogram" || (kind == "summary" && suffix != "_bucket"))
        {
            return base;
        }
    }
    name
}

/// Parses the text format (version 0.0.4) strictly: every line well-formed, HELP and TYPE
/// at most once per family and TYPE before its samples, a family's samples together, no
/// sample twice, counters not negative, and every histogram's buckets cumulative with a
/// +Inf bucket equal to its _count.
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line is not terminated".into());
    }
    let mut exposition = Exposition::default();
    let mut helps = HashSet::new();
    let mut seen_families: Vec<String> = Vec::new();
    let mut keys = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts.next().ok_or_else(|| at("HELP without a name".into()))?;
                    if !is_metric_name(name) || !helps.insert(name.to_string()) {
                        return Err(at(format!("a bad or repeated HELP for `{name}`")));
                    }
                    let doc = parts.next().unwrap_or("");
                    let mut chars = doc.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                            return Err(at("a bad escape in HELP".into()));
                        }
                    }
                }
                Some("TYPE") => {
                    let name = parts.next().ok_or_else(|| at("TYPE without a name".into()))?;
                    let kind = parts.next().ok_or_else(|| at("TYPE without a type".into()))?;
                    if !matches!(kind, "counter" | "gauge" | "histogram" | "summary" | "untyped") {
                        return Err(at(format!("unknown type `{kind}`")));
                    }
                    if seen_families.iter().any(|f| f == name) {
                        return Err(at(format!("TYPE for `{name}` after its samples")));
                    }
                    if exposition.types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at(format!("TYPE for `{name}` twice")));
                    }
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("`{name}` is not a metric name")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.strip_prefix(' ').ok_or_else(|| at("no space before the value".into()))?.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().map_err(|_| at("a bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &exposition.types).to_string();
        match seen_families.last() {
            Some(last) if *last == family => {}
            _ if seen_families.contains(&family) => return Err(at(format!("family `{family}` is split"))),
            _ => seen_families.push(family.clone()),
        }
        if !keys.insert(format!("{name}{labels:?}")) {
            return Err(at("the same sample twice".into()));
        }
        if exposition.types.get(&family).is_some_and(|k| k == "counter") && (value.is_nan() || value < 0.0) {
            return Err(at("a counter below zero".into()));
        }
        exposition.samples.push(Sample { name: name.to_string(), labels, value });
    }
    check_histograms(&exposition)?;
    Ok(exposition)
}

fn check_histograms(exposition: &Exposition) -> Result<(), String> {
    for (family, kind) in &exposition.types {
        if kind != "histogram" {
            continue;
        }
        // Series by their labels other than `le`, buckets in the order written.
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for sample in exposition.samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let le = sample.labels.get("le").ok_or(format!("{family}_bucket without le"))?;
            let mut rest = sample.labels.clone();
            rest.remove("le");
            series.entry(format!("{rest:?}")).or_default().push((parse_value(le)?, sample.value));
        }
        for (labels, buckets) in &series {
            if !buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
                return Err(format!("{family}{labels}: buckets not increasing and cumulative"));
            }
            let (last_le, last_count) = *buckets.last().ok_or("no buckets")?;
            if last_le != f64::INFINITY {
                return Err(format!("{family}{labels}: no +Inf bucket"));
            }
            let count = exposition
                .samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && format!("{:?}", s.labels) == *labels)
                .ok_or(format!("{family}{labels}: no _count"))?;
            if count.value != last_count {
                return Err(format!("{family}{labels}: _count is not the +Inf bucket"));
            }
            if !exposition
                .samples
                .iter()
                .any(|s| s.name == format!("{family}_sum") && format!("{:?}", s.labels) == *labels)
            {
                return Err(format!("{family}{labels}: no _sum"));
            }
        }
    }
    Ok(())
}

#[test]
fn the_parser_refuses_what_is_not_the_text_format() {
    let good = "# HELP a_total A counter.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n";
    let parsed = parse_exposition(good).expect("valid");
    assert_eq!(parsed.value("a_total", &[("x", "1"), ("y", "q\"")]), 3.0);
    for bad in [
        "a_total 1",                                        // unterminated
        "a-total 1\n",                                      // bad name
        "a_total{x=1} 1\n",                                 // unquoted
        "a_total{x=\"1\" 1\n",                              // unclosed
        "a_total one\n",                                    // value
        "a_total 1\nb 1\na_total{x=\"2\"} 1\n",             // split family
        "a_total 1\n# TYPE a_total counter\n",              // TYPE late
        "# TYPE a_total counter\n# TYPE a_total counter\n", // TYPE twice
        "# TYPE a_total counter\na_total -1\n",             // negative counter
        "a_total 1\na_total 2\n",                           // repeated sample
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "# TYPE x frequency\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

async fn scrape_with(app: &TestApp, token: &str) -> Exposition {
    let response = app.client.get(app.url("/metrics")).bearer_auth(token).send().await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.expect("body");
    parse_exposition(&text).unwrap_or_else(|e| panic!("not the text format: {e}\n{text}"))
}

async fn scrape(app: &TestApp) -> Exposition {
    scrape_with(app, &app.admin()).await
}

const STATUS: &str = "query Status($f: String!) { status(flowKey: $f) { percentComplete } }";

async fn operations_subscriptions_events_and_the_backlog_are_counted(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let before = scrape(&app).await;
    for name in DOCUMENTED {
        assert!(before.types.contains_key(name), "{name} is not exposed");
    }
    let alice = app.user("alice");
    for _ in 0..3 {
        app.ok(&alice, STATUS, json!({ "f": "welcome" })).await;
    }
    assert_eq!(app.code(None, STATUS, json!({ "f": "welcome" })).await, "UNAUTHENTICATED");
    assert_eq!(app.code(Some(&alice), STATUS, json!({ "f": "nope" })).await, "NOT_FOUND");
    assert_eq!(app.code(Some(&alice), "query {", json!({})).await, "VALIDATION_FAILED");
    app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;
    app.track_event("evt-1", "bob", "signed_up", json!({})).await;
    app.track_event("evt-1", "bob", "signed_up", json!({})).await;
    let bad = app.track_event("evt-2", "", "signed_up", json!({})).await;
    assert_eq!(bad["status"], "REJECTED", "{bad}");

    // A live subscription, over a websocket.
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &alice).await;
    client.subscribe("1", &progress_subscription(), json!({ "f": "welcome" })).await;
    client.snapshot("1").await;

    let after = scrape(&app).await;
    let moved = |name: &str, labels: &[(&str, &str)]| after.value(name, labels) - before.value(name, labels);
    let requests = "onramp_graphql_requests_total";
    let status = [("operation_type", "query"), ("operation_name", "Status")];
    assert_eq!(moved(requests, &[status[0], status[1], ("outcome", "ok")]), 3.0);
    assert_eq!(moved(requests, &[status[0], status[1], ("outcome", "UNAUTHENTICATED")]), 1.0);
    assert_eq!(moved(requests, &[status[0], status[1], ("outcome", "NOT_FOUND")]), 1.0);
    let unparsed = [("operation_type", "unknown"), ("operation_name", "(other)"), ("outcome", "VALIDATION_FAILED")];
    assert_eq!(moved(requests, &unparsed), 1.0);
    let anonymous_mutation = [("operation_type", "mutation"), ("operation_name", "(anonymous)"), ("outcome", "ok")];
    assert_eq!(moved(requests, &anonymous_mutation), 4.0, "completeStep and three trackEvent calls");
    let subscription = [("operation_type", "subscription"), ("operation_name", "(anonymous)"), ("outcome", "ok")];
    assert_eq!(moved(requests, &subscription), 1.0);
    assert_eq!(moved("onramp_graphql_request_duration_seconds_count", &status), 5.0);
    assert!(after.value("onramp_graphql_request_duration_seconds_sum", &status) > 0.0);
    assert!(
        after
            .label_values("onramp_graphql_request_duration_seconds_count", "operation_type")
            .iter()
            .all(|t| t != "subscription"),
        "subscriptions have no latency"
    );

    assert_eq!(after.value("onramp_graphql_subscriptions_live", &[]), 1.0);
    assert_eq!(after.value("onramp_websocket_connections", &[]), 1.0);
    assert_eq!(moved("onramp_events_ingested_total", &[("status", "new")]), 1.0);
    assert_eq!(moved("onramp_events_ingested_total", &[("status", "duplicate")]), 1.0);
    assert_eq!(moved("onramp_events_ingested_total", &[("status", "rejected")]), 1.0);

    // The harness's pool holds 8; at least the connection that read the backlog is open.
    assert_eq!(after.value("onramp_db_pool_max_connections", &[]), 8.0);
    let open = after.value("onramp_db_pool_connections", &[("state", "idle")])
        + after.value("onramp_db_pool_connections", &[("state", "in_use")]);
    assert!((1.0..=8.0).contains(&open), "{open}");
    // No dispatcher runs here, so the completion's outbox row waits.
    assert!(after.value("onramp_webhook_outbox_pending", &[]) >= 1.0);
    assert!(after.value("onramp_webhook_outbox_oldest_pending_seconds", &[]) >= 0.0);
    assert_eq!(after.value("onramp_webhook_deliveries_pending", &[]), 0.0);

    // The subscriber goes; the gauges follow.
    drop(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = scrape(&app).await;
        if now.value("onramp_graphql_subscriptions_live", &[]) == 0.0
            && now.value("onramp_websocket_connections", &[]) == 0.0
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the gauges stayed up after the client left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn operation_names_are_bounded(app: TestApp) {
    let alice = app.user("alice");
    for i in 0..210 {
        app.ok(&alice, &format!("query Op{i} {{ __typename }}"), json!({})).await;
    }
    let long = format!("query {} {{ __typename }}", "L".repeat(65));
    app.ok(&alice, &long, json!({})).await;
    // A name first seen failing is not kept either.
    app.code(None, "query Sneaky { status(flowKey: \"x\") { percentComplete } }", json!({})).await;
    let metrics = scrape(&app).await;
    let names = metrics.label_values("onramp_graphql_requests_total", "operation_name");
    assert!(names.len() <= onramp::metrics::MAX_OPERATION_NAMES + 2, "{} names", names.len());
    assert!(names.contains("Op0") && names.contains("(other)"), "{names:?}");
    assert!(!names.contains("Sneaky"), "{names:?}");
    assert!(names.iter().all(|n| n.len() <= onramp::metrics::MAX_OPERATION_NAME_BYTES), "{names:?}");
}

async fn only_admins_read_metrics_in_production(app: TestApp) {
    let url = app.url("/metrics");
    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()[reqwest::header::WWW_AUTHENTICATE], "Bearer");
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    for token in [app.user("alice"), app.service()] {
        let response = app.client.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    let forged = app.client.get(&url).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    scrape(&app).await;
}

fn low_rate() -> ServerLimits {
    ServerLimits { rate_per_second: 1.0, rate_burst: 2.0, ..ServerLimits::default() }
}

async fn rate_limited_refusals_are_counted(app: TestApp) {
    let alice = app.user("alice");
    let mut refused = 0.0;
    for _ in 0..4 {
        let response = app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(&alice)
            .json(&json!({ "query": "{ __typename }" }))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused += 1.0;
        }
    }
    assert!(refused >= 1.0);
    // Admin callers are not rate limited, so the scrape itself is not refused.
    let metrics = scrape(&app).await;
    assert_eq!(metrics.value("onramp_rate_limited_total", &[]), refused);
}

both!(
    operations_subscriptions_events_and_the_backlog_are_counted,
    operation_names_are_bounded,
    only_admins_read_metrics_in_production
);
both_with!(low_rate => rate_limited_refusals_are_counted);

/// A scraper's token; development's open door; the JWKS fetch counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_token_lets_a_scraper_in() {
    let keys = JwtKeys::from_args(&jwt_args(), Mode::Production).unwrap();
    let admin = keys.mint("root", Role::Admin, 600).unwrap();
    let token = "scrape-token-0123456789";
    let access = MetricsAccess { token: Some(token.into()), open: false };
    let (addr, _db) = crate::jwks::serve_with(keys, access).await;
    let client = reqwest::Client::new();
    let get = |bearer: Option<&str>| {
        let mut request = client.get(format!("http://{addr}/metrics"));
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        request.send()
    };
    let ok = get(Some(token)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    parse_exposition(&ok.text().await.unwrap()).expect("valid");
    assert_eq!(get(Some(&admin)).await.unwrap().status(), StatusCode::OK, "admin tokens still work");
    assert_eq!(get(Some("scrape-token-0123456788")).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let keys = JwtKeys::from_args(&jwt_args(), Mode::Production).unwrap();
    let (addr, _db) = crate::jwks::serve_with(keys, MetricsAccess { token: None, open: true }).await;
    let open = client.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(open.status(), StatusCode::OK, "development: open");
}
