//! Token verification as configured (algorithms, iss, aud, nbf, the role claim) and the
//! command line that mints tokens and refuses to serve without a key.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use onramp::auth::{JwtKeys, KeyError, Principal, Role};
use onramp::config::{DEVELOPMENT_SECRET, JwtArgs, KeyAlgorithm, Mode};
use serde_json::{Value, json};

use crate::common::{TEST_SECRET, jwt_args, sign_hmac, unix_now};

/// A second valid secret (32 bytes or more), for tokens the harness key must refuse.
const SOME_SECRET: &str = "another-secret-that-is-32-bytes-long";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The three public-key setups: config algorithm, JWT algorithm, fixture name.
const KEY_PAIRS: [(KeyAlgorithm, Algorithm, &str); 3] = [
    (KeyAlgorithm::Rs256, Algorithm::RS256, "rsa"),
    (KeyAlgorithm::Es256, Algorithm::ES256, "ec"),
    (KeyAlgorithm::EdDsa, Algorithm::EdDSA, "ed25519"),
];

fn public_key_args(algorithm: KeyAlgorithm, name: &str, with_private: bool) -> JwtArgs {
    JwtArgs {
        jwt_secret: None,
        jwt_public_key: Some(fixture(&format!("{name}-test-public.pem"))),
        jwt_algorithm: Some(algorithm),
        jwt_private_key: with_private.then(|| fixture(&format!("{name}-test-private.pem"))),
        ..jwt_args()
    }
}

fn keys(args: &JwtArgs) -> JwtKeys {
    JwtKeys::from_args(args, Mode::Production).unwrap_or_else(|e| panic!("keys: {e}"))
}

fn key_error(args: &JwtArgs, mode: Mode) -> KeyError {
    match JwtKeys::from_args(args, mode) {
        Ok(_) => panic!("expected a key error"),
        Err(e) => e,
    }
}

fn refused(keys: &JwtKeys, token: &str) -> String {
    match keys.verify(token) {
        Ok(p) => panic!("token accepted as {p:?}"),
        Err(why) => why,
    }
}

fn secret_args(secret: &str) -> JwtArgs {
    JwtArgs { jwt_secret: Some(secret.into()), ..jwt_args() }
}

#[test]
fn public_key_algorithms_mint_and_verify() {
    for (algorithm, jwt_algorithm, name) in KEY_PAIRS {
        let keys = keys(&public_key_args(algorithm, name, true));
        assert!(!keys.development);
        let token = keys.mint("alice", Role::Admin, 600).unwrap_or_else(|e| panic!("{name}: mint: {e}"));
        assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, jwt_algorithm, "{name}");
        let principal = keys.verify(&token).unwrap_or_else(|e| panic!("{name}: verify: {e}"));
        assert_eq!(principal.subject, "alice");
        assert_eq!(principal.role, Role::Admin);
        assert!(principal.expires_at.abs_diff(unix_now() + 600) <= 5, "{name}: {principal:?}");
        assert_eq!(keys.verify(&format!("Bearer {token}")).as_ref().ok(), Some(&principal), "{name}");
        // The scheme name is case-insensitive.
        assert_eq!(keys.verify(&format!("bearer  {token}")).as_ref().ok(), Some(&principal), "{name}");

        // A changed payload no longer matches the signature.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let forged = json!({ "sub": "mallory", "role": "admin", "exp": unix_now() + 600 });
        parts[1] = base64url(forged.to_string().as_bytes());
        refused(&keys, &parts.join("."));
    }
}

#[test]
fn public_key_configs_pin_their_algorithm() {
    let hs256 = keys(&secret_args(TEST_SECRET)).mint("alice", Role::Admin, 600).unwrap();
    for (algorithm, _, name) in KEY_PAIRS {
        let keys = keys(&public_key_args(algorithm, name, true));
        refused(&keys, &hs256);

        // The classic confusion: HS256 keyed with the public key itself.
        let public_pem = std::fs::read(fixture(&format!("{name}-test-public.pem"))).unwrap();
        let claims = json!({ "sub": "mallory", "role": "admin", "exp": unix_now() + 600 });
        let confused =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&public_pem))
                .unwrap();
        refused(&keys, &confused);

        // A token from another key pair is refused too.
        for (other_algorithm, _, other) in KEY_PAIRS.iter().filter(|(_, _, n)| *n != name) {
            let token =
                self::keys(&public_key_args(*other_algorithm, other, true)).mint("alice", Role::User, 600).unwrap();
            refused(&keys, &token);
        }
    }
    // And the HS256 setup refuses public-key tokens.
    let rs256 = keys(&public_key_args(KeyAlgorithm::Rs256, "rsa", true)).mint("alice", Role::User, 600).unwrap();
    refused(&keys(&secret_args(TEST_SECRET)), &rs256);
}

#[test]
fn a_public_key_alone_verifies_but_cannot_mint() {
    let minter = keys(&public_key_args(KeyAlgorithm::Es256, "ec", true));
    let token = minter.mint("alice", Role::Service, 600).unwrap();
    // The PEM itself rather than a path is accepted too.
    let inline = std::fs::read_to_string(fixture("ec-test-public.pem")).unwrap();
    let verifier = keys(&JwtArgs { jwt_public_key: Some(inline), ..public_key_args(KeyAlgorithm::Es256, "ec", false) });
    let principal = verifier.verify(&token).unwrap();
    assert_eq!((principal.subject.as_str(), principal.role), ("alice", Role::Service));
    assert!(matches!(verifier.mint("alice", Role::User, 600), Err(KeyError::NoPrivateKey)));
}

#[test]
fn key_configuration_mistakes_are_refused() {
    let both = JwtArgs { jwt_secret: Some("s".into()), ..public_key_args(KeyAlgorithm::Rs256, "rsa", false) };
    assert!(matches!(key_error(&both, Mode::Production), KeyError::Ambiguous));
    let no_algorithm = JwtArgs { jwt_algorithm: None, ..public_key_args(KeyAlgorithm::Rs256, "rsa", false) };
    assert!(matches!(key_error(&no_algorithm, Mode::Production), KeyError::NoAlgorithm));
    let none = JwtArgs { jwt_secret: None, ..jwt_args() };
    let missing = key_error(&none, Mode::Production);
    assert!(matches!(missing, KeyError::Missing));
    assert!(missing.to_string().contains("ONRAMP_JWT_SECRET"));
    assert!(JwtKeys::from_args(&none, Mode::Development).unwrap().development, "development falls back to its secret");
    assert!(matches!(
        key_error(&secret_args(DEVELOPMENT_SECRET), Mode::Production),
        KeyError::DevelopmentSecretInProduction
    ));
    let missing_file = JwtArgs {
        jwt_public_key: Some(fixture("no-such-test-key.pem")),
        ..public_key_args(KeyAlgorithm::Rs256, "rsa", false)
    };
    assert!(matches!(key_error(&missing_file, Mode::Production), KeyError::Read(_)));
    // An EC key declared as RSA.
    let mismatched = public_key_args(KeyAlgorithm::Rs256, "ec", false);
    assert!(matches!(key_error(&mismatched, Mode::Production), KeyError::Invalid(_)));
}

#[test]
fn short_hs256_secrets_are_refused_in_production() {
    for secret in ["s", "integration-test-secret", &"x".repeat(31)] {
        let error = key_error(&secret_args(secret), Mode::Production);
        assert!(matches!(error, KeyError::WeakSecret { bytes } if bytes == secret.len()), "{secret}: {error}");
        let message = error.to_string();
        assert!(message.contains("at least 32 bytes") && message.contains("ONRAMP_JWT_SECRET"), "{message}");
        assert!(secret.len() < 8 || !message.contains(secret), "the secret itself is not printed: {message}");
        // Development keeps working with any secret.
        assert!(JwtKeys::from_args(&secret_args(secret), Mode::Development).is_ok());
    }
    assert!(JwtKeys::from_args(&secret_args(&"x".repeat(32)), Mode::Production).is_ok());
}

#[test]
fn fractional_numeric_dates_are_accepted() {
    // RFC 7519 2: a NumericDate is a JSON number and may carry a fraction.
    let keys = keys(&secret_args(TEST_SECRET));
    let now = unix_now() as f64;
    let sign = |claims: Value| sign_hmac(&claims, Algorithm::HS256, TEST_SECRET);
    let fractional = sign(json!({ "sub": "alice", "exp": now + 600.5, "nbf": now - 10.25, "iat": now - 0.5 }));
    let principal = keys.verify(&fractional).unwrap_or_else(|e| panic!("refused: {e}"));
    assert_eq!(principal.expires_at, (now + 600.5).floor() as u64);
    // The fraction changes nothing about what is refused.
    refused(&keys, &sign(json!({ "sub": "alice", "exp": now - 3600.5 })));
    refused(&keys, &sign(json!({ "sub": "alice", "exp": now + 7200.5, "nbf": now + 3600.5 })));
    refused(&keys, &sign(json!({ "sub": "alice", "exp": -1.5 })));
    refused(&keys, &sign(json!({ "sub": "alice", "exp": "1700000000.5" })));
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let args = JwtArgs {
        jwt_issuer: Some("https://auth.example.com/".into()),
        jwt_audience: Some("onramp-api".into()),
        ..secret_args(TEST_SECRET)
    };
    let keys = keys(&args);
    let exp = unix_now() + 600;
    let sign = |claims: Value| sign_hmac(&claims, Algorithm::HS256, TEST_SECRET);

    let good = keys
        .verify(&sign(json!({ "sub": "alice", "exp": exp, "iss": "https://auth.example.com/", "aud": "onramp-api" })));
    assert_eq!(good.map(|p| p.subject), Ok("alice".to_string()));
    let in_list = keys.verify(&sign(
        json!({ "sub": "alice", "exp": exp, "iss": "https://auth.example.com/", "aud": ["other", "onramp-api"] }),
    ));
    assert!(in_list.is_ok(), "an audience list naming us is accepted: {in_list:?}");
    let minted = keys.mint("bob", Role::User, 600).unwrap();
    assert_eq!(keys.verify(&minted).map(|p| p.subject), Ok("bob".to_string()), "mint sets iss and aud");

    for (case, claims) in [
        ("no iss", json!({ "sub": "alice", "exp": exp, "aud": "onramp-api" })),
        ("wrong iss", json!({ "sub": "alice", "exp": exp, "iss": "https://evil.example.com/", "aud": "onramp-api" })),
        ("no aud", json!({ "sub": "alice", "exp": exp, "iss": "https://auth.example.com/" })),
        ("wrong aud", json!({ "sub": "alice", "exp": exp, "iss": "https://auth.example.com/", "aud": "billing" })),
        (
            "wrong aud list",
            json!({ "sub": "alice", "exp": exp, "iss": "https://auth.example.com/", "aud": ["billing"] }),
        ),
    ] {
        let result = keys.verify(&sign(claims));
        assert!(result.is_err(), "{case}: accepted as {result:?}");
    }

    // Not configured: neither is looked at.
    let open = self::keys(&secret_args(TEST_SECRET));
    let any = open.verify(&sign(json!({ "sub": "alice", "exp": exp, "iss": "whoever", "aud": "whatever" })));
    assert!(any.is_ok(), "{any:?}");
}

#[test]
fn not_before_in_the_future_is_refused() {
    let keys = keys(&secret_args(TEST_SECRET));
    let now = unix_now();
    let early =
        sign_hmac(&json!({ "sub": "alice", "exp": now + 7200, "nbf": now + 3600 }), Algorithm::HS256, TEST_SECRET);
    refused(&keys, &early);
    let ready =
        sign_hmac(&json!({ "sub": "alice", "exp": now + 7200, "nbf": now - 10 }), Algorithm::HS256, TEST_SECRET);
    assert!(keys.verify(&ready).is_ok());
    let expired = sign_hmac(&json!({ "sub": "alice", "exp": now - 3600 }), Algorithm::HS256, TEST_SECRET);
    refused(&keys, &expired);
    let no_exp = sign_hmac(&json!({ "sub": "alice" }), Algorithm::HS256, TEST_SECRET);
    refused(&keys, &no_exp);
}

#[test]
fn a_custom_role_claim_carries_the_role() {
    const CLAIM: &str = "https://example.com/roles";
    let keys = keys(&JwtArgs { role_claim: CLAIM.into(), ..secret_args(TEST_SECRET) });
    let exp = unix_now() + 600;
    let verify = |role: Value| {
        let mut claims = json!({ "sub": "alice", "exp": exp });
        claims[CLAIM] = role;
        keys.verify(&sign_hmac(&claims, Algorithm::HS256, TEST_SECRET))
    };
    let role = |r: Value| verify(r).map(|p: Principal| p.role);

    assert_eq!(role(json!(["user", "admin"])), Ok(Role::Admin), "the most privileged role wins");
    assert_eq!(role(json!(["service", "user"])), Ok(Role::Service));
    assert_eq!(role(json!(["user"])), Ok(Role::User));
    assert_eq!(role(json!("ADMIN")), Ok(Role::Admin));
    assert_eq!(role(json!("service")), Ok(Role::Service));
    assert_eq!(role(Value::Null), Ok(Role::User));
    let unknown = verify(json!("superuser")).unwrap_err();
    assert!(unknown.contains("superuser"), "{unknown}");
    assert!(verify(json!(7)).is_err(), "a number is not a role");
    assert!(verify(json!({ "admin": true })).is_err(), "an object is not a role");

    // The standard `role` claim means nothing when another claim is configured.
    let plain = sign_hmac(&json!({ "sub": "alice", "exp": exp, "role": "admin" }), Algorithm::HS256, TEST_SECRET);
    assert_eq!(keys.verify(&plain).map(|p| p.role), Ok(Role::User));
    // Minting writes the configured claim.
    let minted = keys.mint("carol", Role::Service, 600).unwrap();
    assert_eq!(keys.verify(&minted).map(|p| p.role), Ok(Role::Service));
}

#[test]
fn the_workspace_claim_lists_memberships() {
    const CLAIM: &str = "https://example.com/workspaces";
    let keys = keys(&JwtArgs { workspace_claim: CLAIM.into(), ..secret_args(TEST_SECRET) });
    let exp = unix_now() + 600;
    let verify = |workspaces: Value| {
        let mut claims = json!({ "sub": "alice", "exp": exp });
        claims[CLAIM] = workspaces;
        keys.verify(&sign_hmac(&claims, Algorithm::HS256, TEST_SECRET))
    };
    let workspaces = |w: Value| verify(w).map(|p: Principal| p.workspaces);

    assert_eq!(workspaces(json!(["acme", "globex"])), Ok(vec!["acme".to_string(), "globex".to_string()]));
    assert_eq!(workspaces(json!("acme")), Ok(vec!["acme".to_string()]), "a single workspace as a string");
    assert_eq!(workspaces(Value::Null), Ok(vec![]));
    assert!(verify(json!(["acme", 7])).is_err(), "ids are strings");
    assert!(verify(json!({ "acme": true })).is_err(), "an object is not a list");
    // The default claim name means nothing when another one is configured.
    let plain =
        sign_hmac(&json!({ "sub": "alice", "exp": exp, "workspaces": ["acme"] }), Algorithm::HS256, TEST_SECRET);
    assert_eq!(keys.verify(&plain).map(|p| p.workspaces), Ok(vec![]));
    // Minting writes the configured claim.
    let minted = keys.mint_member("carol", Role::User, &["acme", "initech"], 600).unwrap();
    assert_eq!(keys.verify(&minted).map(|p| p.workspaces), Ok(vec!["acme".to_string(), "initech".to_string()]));
}

// The command line.

/// The built binary with an empty environment: nothing leaks in from the test runner.
fn onramp() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_onramp"));
    command.env_clear().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Runs to completion, killing the process and failing the test after `limit`.
fn run(mut command: Command, limit: Duration) -> Output {
    let mut child = command.spawn().expect("spawn onramp");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "onramp still running after {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn cli_token_mints_a_token_the_server_accepts() {
    let mut command = onramp();
    command.args(["token", "--sub", "alice", "--role", "admin", "--ttl", "120"]).env("ONRAMP_JWT_SECRET", SOME_SECRET);
    let output = run(command, LIMIT);
    assert!(output.status.success(), "{}", stderr(&output));
    let token = stdout(&output).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "one JWT on stdout: {token}");
    let principal = keys(&secret_args(SOME_SECRET)).verify(&token).unwrap();
    assert_eq!((principal.subject.as_str(), principal.role), ("alice", Role::Admin));
    assert!(principal.expires_at.abs_diff(unix_now() + 120) <= 10, "--ttl is honoured: {principal:?}");
    refused(&keys(&secret_args(TEST_SECRET)), &token);

    let mut command = onramp();
    command.args(["token", "--sub", "alice", "--role", "wizard"]).env("ONRAMP_JWT_SECRET", SOME_SECRET);
    let output = run(command, LIMIT);
    assert!(!output.status.success());
    assert!(stdout(&output).trim().is_empty(), "no token for an unknown role");
    assert!(stderr(&output).contains("role"), "{}", stderr(&output));

    // Workspace memberships go in the default `workspaces` claim.
    let mut command = onramp();
    command
        .args(["token", "--sub", "bob", "--workspace", "acme", "--workspace", "globex"])
        .env("ONRAMP_JWT_SECRET", SOME_SECRET);
    let output = run(command, LIMIT);
    assert!(output.status.success(), "{}", stderr(&output));
    let defaults = JwtArgs { workspace_claim: "workspaces".into(), ..secret_args(SOME_SECRET) };
    let principal = keys(&defaults).verify(stdout(&output).trim()).unwrap();
    assert_eq!(principal.workspaces, ["acme", "globex"]);
    assert_eq!(principal.role, Role::User);
}

#[test]
fn cli_token_signs_with_a_private_key() {
    let mut command = onramp();
    command
        .args(["token", "--sub", "svc", "--role", "service"])
        .env("ONRAMP_JWT_PUBLIC_KEY", fixture("ed25519-test-public.pem"))
        .env("ONRAMP_JWT_PRIVATE_KEY", fixture("ed25519-test-private.pem"))
        .env("ONRAMP_JWT_ALGORITHM", "EdDSA");
    let output = run(command, LIMIT);
    assert!(output.status.success(), "{}", stderr(&output));
    let token = stdout(&output).trim().to_string();
    assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, Algorithm::EdDSA);
    let principal = keys(&public_key_args(KeyAlgorithm::EdDsa, "ed25519", false)).verify(&token).unwrap();
    assert_eq!((principal.subject.as_str(), principal.role), ("svc", Role::Service));

    // Without the private key there is nothing to sign with.
    let mut command = onramp();
    command
        .args(["token", "--sub", "svc"])
        .env("ONRAMP_JWT_PUBLIC_KEY", fixture("ed25519-test-public.pem"))
        .env("ONRAMP_JWT_ALGORITHM", "EdDSA");
    let output = run(command, LIMIT);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("ONRAMP_JWT_PRIVATE_KEY"), "{}", stderr(&output));
}

#[test]
fn cli_serve_refuses_production_without_a_key() {
    let dir = std::env::temp_dir().join(format!("onramp-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("refused.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());

    // Production asked for explicitly, and production by default once DATABASE_URL is set.
    for explicit in [true, false] {
        let mut command = onramp();
        command.arg("serve").env("DATABASE_URL", &url).env("ONRAMP_BIND", "127.0.0.1:0");
        if explicit {
            command.env("ONRAMP_MODE", "production");
        }
        let output = run(command, LIMIT);
        assert!(!output.status.success(), "explicit={explicit}: started without a key");
        assert!(stderr(&output).contains("ONRAMP_JWT_SECRET"), "explicit={explicit}: {}", stderr(&output));
        assert!(!db.exists(), "explicit={explicit}: refused before touching the database");
    }

    // The well-known development secret is no key in production.
    let mut command = onramp();
    command
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("ONRAMP_BIND", "127.0.0.1:0")
        .env("ONRAMP_MODE", "production")
        .env("ONRAMP_JWT_SECRET", DEVELOPMENT_SECRET);
    let output = run(command, LIMIT);
    assert!(!output.status.success(), "started with the development secret in production");
    assert!(stderr(&output).contains("development secret"), "{}", stderr(&output));
    assert!(!stderr(&output).contains(DEVELOPMENT_SECRET), "the secret itself is not printed");
    assert!(!db.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_serve_refuses_a_short_secret_in_production() {
    let dir = std::env::temp_dir().join(format!("onramp-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("refused.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let short = "only-23-bytes-of-secret";
    let mut command = onramp();
    command
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("ONRAMP_BIND", "127.0.0.1:0")
        .env("ONRAMP_MODE", "production")
        .env("ONRAMP_JWT_SECRET", short);
    let output = run(command, LIMIT);
    assert!(!output.status.success(), "started with a 23-byte secret in production");
    assert!(stderr(&output).contains("at least 32 bytes"), "{}", stderr(&output));
    assert!(!stderr(&output).contains(short), "the secret itself is not printed");
    assert!(!db.exists(), "refused before touching the database");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_schema_prints_the_sdl() {
    let mut command = onramp();
    command.arg("schema");
    let output = run(command, LIMIT);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), onramp::graphql::sdl());
}

/// Unpadded base64url, as JWT segments are written.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
