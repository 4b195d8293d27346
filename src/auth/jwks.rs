//! Keys published by an identity provider at a JWKS URL: fetched, cached by `kid`, and
//! fetched again when a token names a kid we lack (at most once per `min_refresh`, so
//! forged kids cannot make us hammer the provider) or when the set's Cache-Control
//! max-age has run out. A failed fetch keeps the keys we have.
//!
//! Each key is pinned to one algorithm by its type (RSA: RS256, EC P-256: ES256, OKP
//! Ed25519: EdDSA); a token cannot choose another. Shared secrets (`oct` keys) are never
//! taken from a set, and neither are encryption keys nor RSA keys under 2048 bits.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use prometheus::{IntCounterVec, IntGauge, Opts};
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, HeaderMap};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

/// The longest `kid` taken from a set or looked up for a token.
pub const MAX_KID_BYTES: usize = 256;
/// How long a set is used when its response names no max-age.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// The longest a set is used without a fetch, whatever its max-age says.
pub const LONGEST_MAX_AGE: Duration = Duration::from_secs(86_400);
/// RSA keys shorter than this (in bytes of modulus) are not used (RFC 7518 3.3: 2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Where the keys are and the bounds on fetching them.
#[derive(Clone, Debug)]
pub struct JwksSettings {
    pub url: Url,
    /// Plain http (production requires https unless configured).
    pub allow_http: bool,
    /// A fetch, body included, is abandoned after this long.
    pub timeout: Duration,
    /// The largest JWKS body read.
    pub max_bytes: usize,
    /// The most keys a set may hold; a larger one is refused whole.
    pub max_keys: usize,
    /// The shortest time between two fetches, whatever asks for them.
    pub min_refresh: Duration,
}

impl JwksSettings {
    /// Checks the URL: http(s) with a host and no credentials; plain http only when
    /// allowed. Private addresses are fine: the URL is the operator's, not a caller's, and
    /// an in-cluster identity provider is common.
    pub fn check_url(text: &str, allow_http: bool) -> Result<Url, String> {
        let url = Url::parse(text).map_err(|e| format!("not a valid absolute URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => {
                return Err(
                    "must use https: keys fetched over plain http can be replaced on the way (ONRAMP_JWT_JWKS_ALLOW_HTTP=true allows it)"
                        .into(),
                );
            }
            other => return Err(format!("must use https, not `{other}`")),
        }
        if url.host().is_none() {
            return Err("has no host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain a user name or password".into());
        }
        Ok(url)
    }
}

/// A key from the set, and the one algorithm it verifies.
pub struct JwksKey {
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for JwksKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<JwksKey>>,
    /// The set is used without a fetch until then; None before the first good fetch.
    fresh_until: Option<Instant>,
    /// When the last fetch began, successful or not: the rate limit counts from it.
    last_attempt: Option<Instant>,
}

impl Cache {
    fn stale(&self, now: Instant) -> bool {
        self.fresh_until.is_none_or(|until| now >= until)
    }

    fn may_fetch(&self, now: Instant, min_refresh: Duration) -> bool {
        self.last_attempt.is_none_or(|at| now.duration_since(at) >= min_refresh)
    }
}

pub struct Jwks {
    settings: JwksSettings,
    client: reqwest::Client,
    cache: RwLock<Cache>,
    /// One fetch at a time; callers that need it wait for the one in flight.
    fetching: tokio::sync::Mutex<()>,
    /// Fetches by outcome (`ok`, `error`), for /metrics.
    pub fetches: IntCounterVec,
    /// Keys in the cache, for /metrics.
    pub cached_keys: IntGauge,
}

impl Jwks {
    pub fn new(settings: JwksSettings) -> Result<Jwks, String> {
        let max_redirects = 3;
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .https_only(!settings.allow_http)
            .redirect(reqwest::redirect::Policy::limited(max_redirects))
            .user_agent(concat!("onramp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?;
        let fetches = IntCounterVec::new(
            Opts::new("onramp_jwks_fetches_total", "JWKS fetches from the identity provider, by outcome."),
            &["outcome"],
        )
        .map_err(|e| e.to_string())?;
        for outcome in ["ok", "error"] {
            fetches.with_label_values(&[outcome]);
        }
        let cached_keys =
            IntGauge::new("onramp_jwks_keys", "Keys from the JWKS in the cache.").map_err(|e| e.to_string())?;
        Ok(Jwks {
            settings,
            client,
            cache: RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
            fetches,
            cached_keys,
        })
    }

    pub fn settings(&self) -> &JwksSettings {
        &self.settings
    }

    /// The key with this kid if it is in the cache, without fetching.
    pub fn cached(&self, kid: &str) -> Option<Arc<JwksKey>> {
        self.read().keys.get(kid).cloned()
    }

    /// The key with this kid, fetching the set first when it is stale or lacks the kid
    /// (within the rate limit). Err says why a token naming this kid is refused.
    pub async fn key(&self, kid: &str) -> Result<Arc<JwksKey>, String> {
        if kid.len() > MAX_KID_BYTES {
            return Err(format!("the token's `kid` is longer than {MAX_KID_BYTES} bytes"));
        }
        let (found, stale) = {
            let cache = self.read();
            (cache.keys.get(kid).cloned(), cache.stale(Instant::now()))
        };
        match found {
            Some(key) if !stale => Ok(key),
            Some(key) => {
                // Stale but known: one caller fetches, the others go on with the key they
                // have instead of waiting on the provider.
                let Ok(_fetching) = self.fetching.try_lock() else {
                    return Ok(key);
                };
                self.fetch_if_allowed().await;
                self.cached(kid).ok_or_else(|| unknown(kid))
            }
            None => {
                // Wait for a fetch in flight: it may bring this kid.
                let _fetching = self.fetching.lock().await;
                if let Some(key) = self.cached(kid) {
                    return Ok(key);
                }
                self.fetch_if_allowed().await;
                self.cached(kid).ok_or_else(|| unknown(kid))
            }
        }
    }

    /// Fetches the set now unless one was fetched (or tried) within `min_refresh`; for
    /// start-up, so the first requests need not wait. The caller holds no lock.
    pub async fn prefetch(&self) -> Result<usize, String> {
        let _fetching = self.fetching.lock().await;
        self.fetch_if_allowed().await;
        let cache = self.read();
        if cache.fresh_until.is_some() { Ok(cache.keys.len()) } else { Err("the JWKS could not be fetched".into()) }
    }

    /// Fetches the set unless the rate limit says not yet. The caller holds `fetching`.
    async fn fetch_if_allowed(&self) {
        let now = Instant::now();
        {
            let mut cache = self.write();
            if !cache.may_fetch(now, self.settings.min_refresh) {
                return;
            }
            cache.last_attempt = Some(now);
        }
        match self.fetch().await {
            Ok((keys, max_age)) => {
                let max_age = max_age.unwrap_or(DEFAULT_MAX_AGE).clamp(self.settings.min_refresh, LONGEST_MAX_AGE);
                tracing::info!(url = %self.settings.url, keys = keys.len(), max_age_seconds = max_age.as_secs(), "fetched the JWKS");
                self.fetches.with_label_values(&["ok"]).inc();
                self.cached_keys.set(keys.len() as i64);
                let mut cache = self.write();
                cache.keys = keys;
                cache.fresh_until = Some(Instant::now() + max_age);
            }
            Err(why) => {
                // The keys we have stay in use: a provider's outage must not sign
                // everyone out. The next fetch waits for the rate limit.
                tracing::warn!(url = %self.settings.url, error = %why, "JWKS fetch failed; keeping the cached keys");
                self.fetches.with_label_values(&["error"]).inc();
            }
        }
    }

    async fn fetch(&self) -> Result<(HashMap<String, Arc<JwksKey>>, Option<Duration>), String> {
        let response = self
            .client
            .get(self.settings.url.clone())
            .header(ACCEPT, "application/json, application/jwk-set+json")
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the JWKS URL answered HTTP {status}"));
        }
        let max_age = max_age(response.headers());
        let limit = self.settings.max_bytes;
        let declared = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(format!("the JWKS is larger than {limit} bytes"));
        }
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| describe(&e))?;
            if body.len() + chunk.len() > limit {
                return Err(format!("the JWKS is larger than {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_set(&body, self.settings.max_keys)?;
        Ok((keys, max_age))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        // The cache is replaced whole under the lock, so a panic elsewhere cannot leave it
        // half-written: a poisoned lock is still a consistent cache.
        self.cache.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn unknown(kid: &str) -> String {
    format!("no key with kid `{kid}` in the identity provider's JWKS")
}

/// A reqwest error with its causes (the top one alone says little, e.g. "error sending request").
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() { "timed out".to_string() } else { error.to_string() };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The max-age of a response's Cache-Control; `no-cache` and `no-store` count as 0.
pub fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, argument) = directive.split_once('=').map_or((directive, None), |(n, a)| (n, Some(a)));
            match name.trim().to_ascii_lowercase().as_str() {
                "no-cache" | "no-store" => return Some(Duration::ZERO),
                "max-age" => {
                    if let Some(seconds) = argument.and_then(|a| a.trim().trim_matches('"').parse::<u64>().ok()) {
                        found = Some(Duration::from_secs(seconds));
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// The usable keys of a JWKS body by kid. Entries that are not usable signing keys of a
/// supported kind are left out (a provider may publish others beside them); a set with
/// more than `max_keys` entries, or that is not a JWKS, is refused.
pub fn parse_set(body: &[u8], max_keys: usize) -> Result<HashMap<String, Arc<JwksKey>>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("the JWKS is not a JSON key set: {e}"))?;
    if set.keys.len() > max_keys {
        return Err(format!("the JWKS has {} keys, more than the {max_keys} allowed", set.keys.len()));
    }
    let mut keys = HashMap::new();
    for entry in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry) else { continue };
        let Some(kid) = jwk.common.key_id.clone().filter(|k| !k.is_empty() && k.len() <= MAX_KID_BYTES) else {
            continue;
        };
        let Some(algorithm) = algorithm_of(&jwk) else { continue };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else { continue };
        if keys.contains_key(&kid) {
            // Two keys under one kid: which one a token meant cannot be known.
            tracing::warn!(%kid, "the JWKS has two usable keys with one kid; the first is used");
            continue;
        }
        keys.insert(kid, Arc::new(JwksKey { algorithm, decoding }));
    }
    Ok(keys)
}

/// The one algorithm a key verifies, or None when it is not a signing key onramp uses.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
        return None;
    }
    let stated = jwk.common.key_algorithm;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) if matches!(stated, None | Some(KeyAlgorithm::RS256)) => {
            let modulus = URL_SAFE_NO_PAD.decode(rsa.n.trim_end_matches('=')).ok()?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            (significant >= MIN_RSA_MODULUS_BYTES).then_some(Algorithm::RS256)
        }
        AlgorithmParameters::EllipticCurve(ec)
            if ec.curve == EllipticCurve::P256 && matches!(stated, None | Some(KeyAlgorithm::ES256)) =>
        {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(okp)
            if okp.curve == EllipticCurve::Ed25519 && matches!(stated, None | Some(KeyAlgorithm::EdDSA)) =>
        {
            Some(Algorithm::EdDSA)
        }
        // `oct` keys are shared secrets: a public set must never make one a verifier.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn cache_control_max_age_is_read() {
        assert_eq!(
            max_age(&headers(&["public, max-age=15, stale-while-revalidate=15"])),
            Some(Duration::from_secs(15))
        );
        assert_eq!(max_age(&headers(&["Max-Age=\"60\""])), Some(Duration::from_secs(60)));
        assert_eq!(max_age(&headers(&["public", "max-age=300"])), Some(Duration::from_secs(300)));
        assert_eq!(max_age(&headers(&["max-age=60, no-cache"])), Some(Duration::ZERO));
        assert_eq!(max_age(&headers(&["no-store"])), Some(Duration::ZERO));
        assert_eq!(max_age(&headers(&["public"])), None);
        assert_eq!(max_age(&headers(&["max-age=soon"])), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }

    #[test]
    fn urls_need_https_unless_allowed() {
        assert!(JwksSettings::check_url("https://idp.example.com/.well-known/jwks.json", false).is_ok());
        assert!(JwksSettings::check_url("http://keycloak:8080/realms/x/protocol/openid-connect/certs", false).is_err());
        assert!(JwksSettings::check_url("http://keycloak:8080/certs", true).is_ok());
        assert!(JwksSettings::check_url("ftp://idp.example.com/jwks", true).is_err());
        assert!(JwksSettings::check_url("https://user:pw@idp.example.com/jwks", false).is_err());
        assert!(JwksSettings::check_url("/jwks.json", true).is_err());
    }

    #[test]
    fn only_signing_keys_of_supported_kinds_are_taken() {
        // An RSA modulus of 2048 bits (any bytes do: the key is parsed, not used).
        let n2048 = URL_SAFE_NO_PAD.encode([0xC5u8; 256]);
        let n1024 = URL_SAFE_NO_PAD.encode([0xC5u8; 128]);
        let p256 = json!({ "kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" });
        let body = json!({ "keys": [
            { "kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig", "n": n2048, "e": "AQAB" },
            { "kty": "RSA", "kid": "rsa-no-alg", "n": n2048, "e": "AQAB" },
            // Keycloak publishes its encryption key beside the signing one.
            { "kty": "RSA", "kid": "enc", "alg": "RSA-OAEP", "use": "enc", "n": n2048, "e": "AQAB" },
            { "kty": "RSA", "kid": "ps256", "alg": "PS256", "n": n2048, "e": "AQAB" },
            { "kty": "RSA", "kid": "short", "alg": "RS256", "n": n1024, "e": "AQAB" },
            { "kty": "oct", "kid": "secret", "alg": "HS256", "k": "c2VjcmV0" },
            { "kty": "EC", "kid": "ec", "crv": "P-256", "x": p256["x"], "y": p256["y"], "alg": "ES256" },
            { "kty": "EC", "kid": "p384", "crv": "P-384", "x": p256["x"], "y": p256["y"] },
            { "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
            { "kty": "RSA", "n": n2048, "e": "AQAB" },
            { "kty": "unknown", "kid": "weird" },
            "not even an object",
        ]});
        let keys = parse_set(body.to_string().as_bytes(), 100).unwrap();
        let mut found: Vec<(&str, Algorithm)> = keys.iter().map(|(k, v)| (k.as_str(), v.algorithm)).collect();
        found.sort_by_key(|(k, _)| *k);
        assert_eq!(
            found,
            vec![
                ("ec", Algorithm::ES256),
                ("ed", Algorithm::EdDSA),
                ("rsa", Algorithm::RS256),
                ("rsa-no-alg", Algorithm::RS256)
            ]
        );
    }

    #[test]
    fn oversized_and_malformed_sets_are_refused() {
        let key =
            json!({ "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" });
        let three = json!({ "keys": [key, key, key] }).to_string();
        assert!(parse_set(three.as_bytes(), 2).unwrap_err().contains("more than the 2 allowed"));
        assert_eq!(parse_set(three.as_bytes(), 3).unwrap().len(), 1, "one kid, one key");
        assert!(parse_set(b"<html>", 10).is_err());
        assert!(parse_set(br#"{"keys": {}}"#, 10).is_err());
        assert!(parse_set(br#"{"keys": []}"#, 10).unwrap().is_empty());
    }
}
