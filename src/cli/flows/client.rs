//! The onramp GraphQL API as the flows commands use it: over HTTP, with an admin token.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

/// The largest answer read from the server.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// An error the server answered with, keeping its `extensions.code`.
#[derive(Debug)]
pub struct ApiError {
    pub code: Option<String>,
    pub message: String,
    pub extensions: Value,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ApiError {}

pub struct Server {
    endpoint: String,
    token: String,
    http: reqwest::Client,
}

/// The versions of one flow key on the server.
#[derive(Clone, Debug, Default)]
pub struct ServerFlow {
    /// The newest version of any status: what a new version follows.
    pub latest: i32,
    /// The newest ACTIVE version and its canonical definition: what new subjects get.
    pub active: Option<(i32, Value)>,
    /// Every ACTIVE version, oldest first.
    pub active_versions: Vec<i32>,
}

impl Server {
    /// `url` is the server (`https://onramp.example.com`) or its GraphQL endpoint.
    pub fn new(url: &str, token: &str) -> anyhow::Result<Server> {
        let url = url.trim_end_matches('/');
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "--server is an http:// or https:// URL, not `{url}`"
        );
        let endpoint = if url.ends_with("/graphql") { url.to_string() } else { format!("{url}/graphql") };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?;
        Ok(Server { endpoint, token: token.to_string(), http })
    }

    /// `data` of a GraphQL request; the first error as an `ApiError`.
    pub async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(&json!({ "query": query, "variables": variables }))?;
        let response = self
            .http
            .post(&self.endpoint)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("calling {}", self.endpoint))?;
        let status = response.status();
        // Read in chunks, so an answer over the limit is refused before it is all in memory.
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) =
            response.chunk().await.with_context(|| format!("reading the answer of {}", self.endpoint))?
        {
            anyhow::ensure!(
                bytes.len() + chunk.len() <= MAX_RESPONSE_BYTES,
                "the server's answer is over {MAX_RESPONSE_BYTES} bytes"
            );
            bytes.extend_from_slice(&chunk);
        }
        let answer: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} answered HTTP {status} with no GraphQL response", self.endpoint))?;
        if let Some(error) = answer.get("errors").and_then(|e| e.get(0)) {
            let extensions = error.get("extensions").cloned().unwrap_or(Value::Null);
            return Err(ApiError {
                code: extensions.get("code").and_then(Value::as_str).map(String::from),
                message: error.get("message").and_then(Value::as_str).unwrap_or("unknown error").to_string(),
                extensions,
            }
            .into());
        }
        Ok(answer.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Every flow key on the server with its versions.
    pub async fn flows(&self) -> anyhow::Result<BTreeMap<String, ServerFlow>> {
        let data = self.gql("{ flows { key version status definition } }", json!({})).await?;
        let mut flows: BTreeMap<String, ServerFlow> = BTreeMap::new();
        for f in data["flows"].as_array().context("the server listed no flows")? {
            let key = f["key"].as_str().context("a flow without a key")?.to_string();
            let version = f["version"].as_i64().and_then(|v| i32::try_from(v).ok()).context("a flow version")?;
            let entry = flows.entry(key).or_default();
            entry.latest = entry.latest.max(version);
            if f["status"] == "ACTIVE" {
                entry.active_versions.push(version);
                if entry.active.as_ref().is_none_or(|(v, _)| *v < version) {
                    entry.active = Some((version, f["definition"].clone()));
                }
            }
        }
        for flow in flows.values_mut() {
            flow.active_versions.sort_unstable();
        }
        Ok(flows)
    }

    pub async fn preview_migration(&self, key: &str, from: i32, definition: &Value) -> anyhow::Result<Migration> {
        let data = self
            .gql(
                "query($k: String!, $v: Int!, $d: JSON!) { previewMigration(flowKey: $k, fromVersion: $v, definition: $d) { moved becameComplete droppedCompletedSteps { stepKey enrollments } } }",
                json!({ "k": key, "v": from, "d": definition }),
            )
            .await?;
        Ok(Migration::from_json(&data["previewMigration"]))
    }

    /// Publishes `definition` while the key's newest version is `expected`; the new version.
    pub async fn publish(&self, definition: &Value, expected: i32) -> anyhow::Result<i32> {
        let data = self
            .gql(
                "mutation($d: JSON!, $e: Int) { publishFlow(definition: $d, expectedVersion: $e) { version } }",
                json!({ "d": definition, "e": expected }),
            )
            .await?;
        data["publishFlow"]["version"].as_i64().and_then(|v| i32::try_from(v).ok()).context("published version")
    }

    pub async fn migrate(&self, key: &str, from: i32, to: i32) -> anyhow::Result<Migration> {
        let data = self
            .gql(
                "mutation($k: String!, $f: Int!, $t: Int!) { migrateEnrollments(flowKey: $k, fromVersion: $f, toVersion: $t, dryRun: false) { moved becameComplete droppedCompletedSteps { stepKey enrollments } } }",
                json!({ "k": key, "f": from, "t": to }),
            )
            .await?;
        Ok(Migration::from_json(&data["migrateEnrollments"]))
    }

    pub async fn deprecate(&self, key: &str, version: i32) -> anyhow::Result<()> {
        self.gql(
            "mutation($k: String!, $v: Int!) { deprecateFlow(key: $k, version: $v) { status } }",
            json!({ "k": key, "v": version }),
        )
        .await
        .map(|_| ())
    }
}

/// What moving the enrollments of a version does, or would do.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    pub moved: u64,
    pub became_complete: u64,
    /// Completed steps the new version drops: step key -> enrollments.
    pub dropped_completed: BTreeMap<String, u64>,
}

impl Migration {
    fn from_json(v: &Value) -> Migration {
        Migration {
            moved: v["moved"].as_u64().unwrap_or(0),
            became_complete: v["becameComplete"].as_u64().unwrap_or(0),
            dropped_completed: v["droppedCompletedSteps"]
                .as_array()
                .map(|steps| {
                    steps
                        .iter()
                        .filter_map(|s| Some((s["stepKey"].as_str()?.to_string(), s["enrollments"].as_u64()?)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
