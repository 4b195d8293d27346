//! The bench's GraphQL client and tokens.

use anyhow::{Context, bail};
use onramp::auth::{JwtKeys, Role};
use onramp::config::{JwtArgs, Mode};
use serde_json::{Value, json};

use crate::server::JWT_SECRET;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
}

impl Client {
    pub fn new(server_url: &str) -> Client {
        let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build().expect("http client");
        Client { http, endpoint: format!("{server_url}/graphql") }
    }

    /// `data`, or an error carrying the GraphQL errors.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response: Value = self
            .http
            .post(&self.endpoint)
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .context("request")?
            .json()
            .await
            .context("response")?;
        if let Some(errors) = response.get("errors") {
            bail!("GraphQL errors: {errors}");
        }
        Ok(response["data"].clone())
    }
}

/// Mints tokens the started server accepts (same secret and claims).
pub fn keys() -> JwtKeys {
    let args = JwtArgs {
        jwt_secret: Some(JWT_SECRET.into()),
        jwt_public_key: None,
        jwt_algorithm: None,
        jwt_private_key: None,
        jwt_issuer: None,
        jwt_audience: None,
        role_claim: "role".into(),
        workspace_claim: "workspaces".into(),
        mode: Some(Mode::Production),
        jwks: Default::default(),
    };
    JwtKeys::from_args(&args, Mode::Production).expect("bench keys")
}

pub fn token(keys: &JwtKeys, subject: &str, role: Role) -> String {
    keys.mint(subject, role, 6 * 3600).expect("mint")
}
