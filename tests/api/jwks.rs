//! Tokens from an identity provider's JWKS URL, against a local JWKS server that rotates
//! its keys: keys are cached by kid, fetched again for an unknown kid (at most once per
//! interval) and when Cache-Control's max-age runs out, every algorithm works, a failed
//! fetch keeps the cached keys, and HTTP requests and websocket connection_init alike
//! take the tokens.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use onramp::auth::{JwtKeys, KeyError, Role};
use onramp::config::{JwksArgs, JwtArgs, Mode};
use onramp::service::Onramp;
use onramp::{AppState, MetricsAccess, http, persistence};
use serde_json::{Value, json};

use crate::common::ws::{TRANSPORT_WS, WsClient};
use crate::common::{jwt_args, unix_now};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A signing key of the identity provider: its kid, algorithm, private key and JWK.
#[derive(Clone)]
struct ProviderKey {
    kid: String,
    algorithm: Algorithm,
    private: Arc<EncodingKey>,
    jwk: Value,
}

impl ProviderKey {
    /// `kind` is rsa, ec or ed25519; `generation` "" for the first key pair of a kind,
    /// "-rotated" for the one the provider rotates to.
    fn new(kind: &str, generation: &str, kid: &str) -> ProviderKey {
        let private = std::fs::read(fixture(&format!("{kind}{generation}-test-private.pem"))).expect("private key");
        let public = std::fs::read_to_string(fixture(&format!("{kind}{generation}-test-public.pem"))).expect("public");
        let (algorithm, private, mut jwk) = match kind {
            "rsa" => {
                let key = EncodingKey::from_rsa_pem(&private).expect("rsa");
                let jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).expect("jwk")).unwrap();
                (Algorithm::RS256, key, jwk)
            }
            "ec" => {
                let key = EncodingKey::from_ec_pem(&private).expect("ec");
                let jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk")).unwrap();
                (Algorithm::ES256, key, jwk)
            }
            "ed25519" => {
                // jsonwebtoken makes no OKP JWK; the raw key is the last 32 bytes of the
                // SubjectPublicKeyInfo (RFC 8410).
                let der: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
                let der = STANDARD.decode(der).expect("pem body");
                let x = URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
                let key = EncodingKey::from_ed_pem(&private).expect("ed25519");
                (Algorithm::EdDSA, key, json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA" }))
            }
            other => panic!("no fixture kind {other}"),
        };
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        ProviderKey { kid: kid.to_string(), algorithm, private: Arc::new(private), jwk }
    }

    fn token_with(&self, kid: &str, claims: Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, &claims, &self.private).expect("sign")
    }

    /// A token for `subject` with this key's kid.
    fn token(&self, subject: &str, role: &str) -> String {
        self.token_with(&self.kid, claims(subject, role))
    }
}

fn claims(subject: &str, role: &str) -> Value {
    json!({ "sub": subject, "role": role, "exp": unix_now() + 600, "iss": ISSUER, "aud": AUDIENCE })
}

const ISSUER: &str = "https://idp.onramp.test/";
const AUDIENCE: &str = "onramp-api";

/// What the local provider serves, and how often it was asked.
#[derive(Default)]
struct Served {
    keys: Vec<Value>,
    /// Extra raw entries (keys onramp must leave out).
    extra: Vec<Value>,
    cache_control: Option<String>,
    /// Answer with this status instead of the set.
    failing: Option<StatusCode>,
    /// Answer with this body instead of the set.
    body: Option<String>,
    /// Answer only after this long.
    delay: Option<Duration>,
    fetches: usize,
}

#[derive(Clone, Default)]
struct Provider(Arc<Mutex<Served>>);

impl Provider {
    /// Serves these keys, and nothing odd.
    fn serve(&self, keys: &[&ProviderKey], cache_control: Option<&str>) {
        let mut served = self.0.lock().unwrap();
        let fetches = served.fetches;
        *served = Served {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
            cache_control: cache_control.map(str::to_string),
            fetches,
            ..Served::default()
        };
    }

    fn fetches(&self) -> usize {
        self.0.lock().unwrap().fetches
    }

    fn with(&self, f: impl FnOnce(&mut Served)) {
        f(&mut self.0.lock().unwrap())
    }

    /// Starts the provider on a loopback port; returns its JWKS URL.
    async fn start(&self) -> String {
        async fn jwks(State(provider): State<Provider>) -> axum::response::Response {
            let (answer, delay) = {
                let mut served = provider.0.lock().unwrap();
                served.fetches += 1;
                let mut keys = served.keys.clone();
                keys.extend(served.extra.iter().cloned());
                let body = served.body.clone().unwrap_or_else(|| json!({ "keys": keys }).to_string());
                let mut headers = HeaderMap::new();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                if let Some(cc) = &served.cache_control {
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(cc).unwrap());
                }
                let answer = match served.failing {
                    Some(status) => (status, "unavailable").into_response(),
                    None => (headers, body).into_response(),
                };
                (answer, served.delay)
            };
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            answer
        }
        let app =
            axum::Router::new().route("/.well-known/jwks.json", axum::routing::get(jwks)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/.well-known/jwks.json")
    }
}

/// JWKS-only settings as production would have them, with plain http allowed for the
/// loopback provider and a short refresh interval so the tests need not wait 10 s.
fn jwks_args(url: &str, min_refresh_ms: u64) -> JwtArgs {
    JwtArgs {
        jwt_secret: None,
        jwt_issuer: Some(ISSUER.into()),
        jwt_audience: Some(AUDIENCE.into()),
        jwks: JwksArgs {
            jwt_jwks_url: Some(url.to_string()),
            jwt_jwks_allow_http: Some(true),
            jwt_jwks_min_refresh_ms: min_refresh_ms,
            ..JwksArgs::default()
        },
        ..jwt_args()
    }
}

/// A server (on a fresh SQLite database) with these keys; also used by the metrics tests.
pub async fn serve_with(keys: JwtKeys, access: MetricsAccess) -> (SocketAddr, tempfile_path::Path) {
    let path = tempfile_path::Path::new();
    let url = format!("sqlite://{}?mode=rwc", path.0.display());
    let db = persistence::connect(&url, 4).await.expect("connect");
    persistence::migrate(&db).await.expect("migrate");
    let state = AppState::new(Onramp::new(db), keys, false)
        .with_ws_init_timeout(Duration::from_secs(2))
        .with_limits(crate::common::test_limits())
        .with_metrics_access(access);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, path)
}

/// A temporary database file, removed when dropped.
pub mod tempfile_path {
    pub struct Path(pub std::path::PathBuf);

    impl Path {
        pub fn new() -> Path {
            Path(std::env::temp_dir().join(format!("onramp-test-{}.db", uuid::Uuid::new_v4().simple())))
        }
    }

    impl Drop for Path {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }
}

/// `Ok(())` when the server took the token, else the error code it answered with. The
/// query needs a signed-in caller: NOT_FOUND (no such flow) means the token was taken.
async fn try_token(addr: SocketAddr, token: &str) -> Result<(), String> {
    let response: Value = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": "{ status(flowKey: \"no_such_flow\") { percentComplete } }" }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    match response["errors"][0]["extensions"]["code"].as_str() {
        Some("NOT_FOUND") => Ok(()),
        Some(code) => Err(format!("{code}: {}", response["errors"][0]["message"])),
        None => panic!("unexpected answer {response}"),
    }
}

async fn accepted(addr: SocketAddr, token: &str, what: &str) {
    if let Err(why) = try_token(addr, token).await {
        panic!("{what}: refused: {why}");
    }
}

async fn refused(addr: SocketAddr, token: &str, what: &str) -> String {
    match try_token(addr, token).await {
        Ok(()) => panic!("{what}: accepted"),
        Err(why) => {
            assert!(why.starts_with("UNAUTHENTICATED"), "{what}: {why}");
            why
        }
    }
}

struct Keys {
    rsa: ProviderKey,
    ec: ProviderKey,
    ed: ProviderKey,
    rsa_rotated: ProviderKey,
    ec_rotated: ProviderKey,
    ed_rotated: ProviderKey,
}

fn provider_keys() -> Keys {
    Keys {
        rsa: ProviderKey::new("rsa", "", "rsa-1"),
        ec: ProviderKey::new("ec", "", "ec-1"),
        ed: ProviderKey::new("ed25519", "", "ed-1"),
        rsa_rotated: ProviderKey::new("rsa", "-rotated", "rsa-2"),
        ec_rotated: ProviderKey::new("ec", "-rotated", "ec-2"),
        ed_rotated: ProviderKey::new("ed25519", "-rotated", "ed-2"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_and_unknown_kids_are_refused_within_the_refresh_limit() {
    let k = provider_keys();
    let provider = Provider::default();
    let url = provider.start().await;
    provider.serve(&[&k.rsa, &k.ec, &k.ed], Some("public, max-age=3600"));
    let min_refresh = Duration::from_millis(3000);
    let keys = JwtKeys::from_args(&jwks_args(&url, min_refresh.as_millis() as u64), Mode::Production).expect("keys");
    let (addr, _db) = serve_with(keys, MetricsAccess::default()).await;

    // Every algorithm, from one fetch.
    for key in [&k.rsa, &k.ec, &k.ed] {
        accepted(addr, &key.token("alice", "user"), &key.kid).await;
    }
    assert_eq!(provider.fetches(), 1, "the set is fetched once and cached by kid");

    // Signed ahead: RSA signing is slow in a debug build, and what follows is timed.
    let rotated =
        [k.rsa_rotated.token("alice", "user"), k.ec_rotated.token("bob", "user"), k.ed_rotated.token("bob", "admin")];
    let old_rsa = k.rsa.token("alice", "user");
    let forged: Vec<String> =
        (0..20).map(|i| k.ed.token_with(&format!("forged-{i}"), claims("mallory", "admin"))).collect();

    // The provider rotates: tokens with the new kids make onramp fetch again, once.
    provider.serve(&[&k.rsa, &k.ec, &k.ed, &k.rsa_rotated, &k.ec_rotated, &k.ed_rotated], Some("max-age=3600"));
    tokio::time::sleep(min_refresh).await;
    accepted(addr, &rotated[0], "a new kid").await;
    assert_eq!(provider.fetches(), 2, "an unknown kid fetches the set");
    accepted(addr, &rotated[1], "a kid of the same fetch").await;
    accepted(addr, &rotated[2], "a kid of the same fetch").await;
    accepted(addr, &old_rsa, "the old kid while it is published").await;
    assert_eq!(provider.fetches(), 2);

    // Forged kids: refused with the auth error code, and at most one fetch per interval
    // whatever their number.
    for token in &forged {
        let why = refused(addr, token, "a forged kid").await;
        assert!(why.contains("kid"), "{why}");
    }
    assert_eq!(provider.fetches(), 2, "forged kids within the interval fetch nothing");
    tokio::time::sleep(min_refresh).await;
    for token in &forged {
        refused(addr, token, "a forged kid after the interval").await;
    }
    assert_eq!(provider.fetches(), 3, "one fetch per interval, not one per forged kid");

    // A known kid does not make a token good: the signature, the algorithm and the claims
    // still have to be right.
    let wrong_key = k.rsa_rotated.token_with(&k.rsa.kid, claims("mallory", "admin"));
    refused(addr, &wrong_key, "signed by another key than its kid's").await;
    let wrong_algorithm = k.ec.token_with(&k.rsa.kid, claims("mallory", "admin"));
    refused(addr, &wrong_algorithm, "an ES256 token naming an RSA key").await;
    let mut other_audience = claims("mallory", "admin");
    other_audience["aud"] = json!("another-api");
    refused(addr, &k.rsa.token_with(&k.rsa.kid, other_audience), "another audience").await;
    let mut expired = claims("alice", "user");
    expired["exp"] = json!(unix_now() - 3600);
    refused(addr, &k.ed.token_with(&k.ed.kid, expired), "expired").await;
    let no_kid =
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims("alice", "user"), &k.rsa.private).unwrap();
    let why = refused(addr, &no_kid, "no kid").await;
    assert!(why.contains("kid"), "{why}");

    // The provider drops a key; once fetched again (here for an unknown kid), the old
    // kid's tokens are refused.
    provider.serve(&[&k.rsa_rotated, &k.ec_rotated, &k.ed_rotated], Some("max-age=3600"));
    tokio::time::sleep(min_refresh).await;
    refused(addr, &forged[0], "a forged kid").await;
    assert_eq!(provider.fetches(), 4);
    refused(addr, &k.rsa.token("alice", "user"), "a key the provider no longer publishes").await;
    accepted(addr, &k.rsa_rotated.token("alice", "user"), "the current key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_max_age_expires_the_set() {
    let k = provider_keys();
    let provider = Provider::default();
    let url = provider.start().await;
    provider.serve(&[&k.ec], Some("public, max-age=1"));
    let keys = JwtKeys::from_args(&jwks_args(&url, 200), Mode::Production).expect("keys");
    let (addr, _db) = serve_with(keys, MetricsAccess::default()).await;
    accepted(addr, &k.ec.token("alice", "user"), "ec").await;
    assert_eq!(provider.fetches(), 1);
    accepted(addr, &k.ec.token("alice", "user"), "ec, cached").await;
    assert_eq!(provider.fetches(), 1, "fresh for max-age");

    // The key is withdrawn; after max-age the set is fetched again for a known kid.
    provider.serve(&[&k.ec_rotated], Some("public, max-age=1"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    refused(addr, &k.ec.token("alice", "user"), "a withdrawn key after max-age").await;
    assert_eq!(provider.fetches(), 2, "a stale set is fetched again");
    accepted(addr, &k.ec_rotated.token("alice", "user"), "the new key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_keeps_the_cached_keys() {
    let k = provider_keys();
    let provider = Provider::default();
    let url = provider.start().await;
    provider.serve(&[&k.ed], Some("max-age=1"));
    let base = jwks_args(&url, 200);
    let args = JwtArgs {
        jwks: JwksArgs { jwt_jwks_max_bytes: 8 * 1024, jwt_jwks_max_keys: 5, jwt_jwks_timeout: 1, ..base.jwks.clone() },
        ..base
    };
    let keys = JwtKeys::from_args(&args, Mode::Production).expect("keys");
    let (addr, _db) = serve_with(keys, MetricsAccess { token: None, open: true }).await;
    accepted(addr, &k.ed.token("alice", "user"), "ed").await;

    type Breakage = fn(&mut Served);
    let failures: [(&str, Breakage); 5] = [
        ("the provider answers 503", |s| s.failing = Some(StatusCode::SERVICE_UNAVAILABLE)),
        ("the set is larger than the byte limit", |s| {
            s.body = Some(format!("{{\"keys\": [], \"x\": \"{}\"}}", "x".repeat(16 * 1024)))
        }),
        ("the set has more keys than the limit", |s| s.extra = vec![json!({ "kty": "oct", "k": "AA" }); 10]),
        ("the body is not a key set", |s| s.body = Some("<html>maintenance</html>".into())),
        ("the provider does not answer in time", |s| s.delay = Some(Duration::from_secs(3))),
    ];
    for (what, break_it) in failures {
        provider.serve(&[&k.ed], Some("max-age=1"));
        provider.with(break_it);
        let before = provider.fetches();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let started = std::time::Instant::now();
        accepted(addr, &k.ed.token("alice", "user"), what).await;
        assert!(started.elapsed() < Duration::from_millis(2500), "{what}: the fetch is bounded by its timeout");
        assert!(provider.fetches() > before, "{what}: the stale set was fetched again");
    }
    // Once the provider is back, a good fetch replaces the set.
    provider.serve(&[&k.ed_rotated], Some("max-age=1"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    refused(addr, &k.ed.token("alice", "user"), "a key withdrawn once the provider is back").await;
    accepted(addr, &k.ed_rotated.token("alice", "user"), "the new key").await;

    // /metrics counts the fetches by outcome and the keys held.
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    let metrics = crate::metrics::parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(metrics.value("onramp_jwks_fetches_total", &[("outcome", "error")]), 5.0, "{text}");
    assert_eq!(metrics.value("onramp_jwks_fetches_total", &[("outcome", "ok")]), 2.0, "{text}");
    assert_eq!(metrics.value("onramp_jwks_keys", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connection_init_takes_jwks_tokens() {
    let k = provider_keys();
    let provider = Provider::default();
    let url = provider.start().await;
    provider.serve(&[&k.rsa], None);
    let keys = JwtKeys::from_args(&jwks_args(&url, 200), Mode::Production).expect("keys");
    let (addr, _db) = serve_with(keys, MetricsAccess::default()).await;

    // The first token is the one that makes onramp fetch the set.
    let mut client = WsClient::authorized(addr, TRANSPORT_WS, &k.rsa.token("alice", "user")).await;
    client
        .subscribe("1", "subscription { onboardingProgress(flowKey: \"no_such_flow\") { percentComplete } }", json!({}))
        .await;
    let errors = client.operation_errors("1").await;
    assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND", "{errors:?}");
    assert_eq!(provider.fetches(), 1);

    // A rotated key reaches websockets too.
    provider.serve(&[&k.rsa, &k.ec_rotated], None);
    tokio::time::sleep(Duration::from_millis(250)).await;
    WsClient::authorized(addr, TRANSPORT_WS, &k.ec_rotated.token("bob", "user")).await;

    // An unknown kid closes the connection with 4403, like any bad token.
    let mut client = WsClient::connect(addr, TRANSPORT_WS).await;
    let forged = k.rsa.token_with("forged", claims("mallory", "admin"));
    client.init(json!({ "authorization": format!("Bearer {forged}") })).await;
    let (code, reason) = client.expect_close(Duration::from_secs(5)).await;
    assert_eq!(code, 4403, "{reason}");
}

#[test]
fn jwks_configuration_is_checked_at_start_up() {
    // JWKS alone is a complete production set-up, though it cannot mint.
    let only =
        JwtKeys::from_args(&jwks_args("https://idp.example.com/.well-known/jwks.json", 10_000), Mode::Production)
            .expect("a JWKS URL alone is enough");
    assert!(matches!(only.mint("alice", Role::User, 60), Err(KeyError::NoPrivateKey)));

    // Plain http only when allowed (development allows it by default, like webhooks).
    let plain = |allow: Option<bool>| JwtArgs {
        jwks: JwksArgs {
            jwt_jwks_url: Some("http://keycloak:8080/realms/x/protocol/openid-connect/certs".into()),
            jwt_jwks_allow_http: allow,
            ..JwksArgs::default()
        },
        ..jwt_args()
    };
    let error = JwtKeys::from_args(&plain(None), Mode::Production).err().expect("http refused in production");
    assert!(error.to_string().contains("https"), "{error}");
    assert!(JwtKeys::from_args(&plain(Some(true)), Mode::Production).is_ok());
    assert!(JwtKeys::from_args(&plain(None), Mode::Development).is_ok());
    let nonsense =
        JwtArgs { jwks: JwksArgs { jwt_jwks_url: Some("not a url".into()), ..JwksArgs::default() }, ..jwt_args() };
    assert!(matches!(JwtKeys::from_args(&nonsense, Mode::Production), Err(KeyError::Jwks(_))));
    let hammering = JwtArgs {
        jwks: JwksArgs { jwt_jwks_min_refresh_ms: 0, ..jwks_args("https://idp.example.com/jwks", 0).jwks },
        ..jwt_args()
    };
    assert!(matches!(JwtKeys::from_args(&hammering, Mode::Production), Err(KeyError::Jwks(_))));
}

/// With a static key beside the JWKS, tokens without a kid (the operator's own, minted
/// with the secret) still work, and JWKS tokens too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_key_and_a_jwks_serve_side_by_side() {
    let k = provider_keys();
    let provider = Provider::default();
    let url = provider.start().await;
    provider.serve(&[&k.ed], None);
    let args = JwtArgs { jwt_secret: jwt_args().jwt_secret, ..jwks_args(&url, 200) };
    let keys = JwtKeys::from_args(&args, Mode::Production).expect("keys");
    let own = keys.mint("backend", Role::Service, 600).expect("mint with the secret");
    let (addr, _db) = serve_with(keys, MetricsAccess::default()).await;
    accepted(addr, &own, "a token minted with the static secret").await;
    accepted(addr, &k.ed.token("alice", "user"), "a JWKS token").await;
    refused(addr, &k.ed.token_with("forged", claims("mallory", "admin")), "a forged kid").await;
}
