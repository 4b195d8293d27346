//! JWT keys and verification. The algorithm is pinned by configuration, or for a key from
//! the identity provider's JWKS by the key's type (a token cannot choose it), `exp` and
//! `sub` are required, and `nbf`, `iss` and `aud` are checked when configured.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode};
use serde_json::{Map, Value, json};

use super::jwks::{Jwks, JwksKey};
use super::{Principal, Role};
use crate::config::{DEVELOPMENT_SECRET, JwtArgs, KeyAlgorithm, Mode, read_pem};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no JWT key configured. Set ONRAMP_JWT_SECRET (HS256 shared secret), or ONRAMP_JWT_PUBLIC_KEY (PEM file or PEM) with ONRAMP_JWT_ALGORITHM=RS256|ES256|EdDSA, or ONRAMP_JWT_JWKS_URL (an identity provider's keys), or run with ONRAMP_MODE=development"
    )]
    Missing,
    #[error("set either ONRAMP_JWT_SECRET or ONRAMP_JWT_PUBLIC_KEY, not both")]
    Ambiguous,
    #[error("ONRAMP_JWT_PUBLIC_KEY needs ONRAMP_JWT_ALGORITHM (RS256, ES256 or EdDSA)")]
    NoAlgorithm,
    #[error("the development secret cannot be used in production")]
    DevelopmentSecretInProduction,
    #[error(
        "ONRAMP_JWT_SECRET is {bytes} bytes; an HS256 secret must be at least {MIN_SECRET_BYTES} bytes in production (RFC 7518 section 3.2)"
    )]
    WeakSecret { bytes: usize },
    #[error("cannot read key: {0}")]
    Read(#[from] std::io::Error),
    #[error("invalid key: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("minting tokens needs a private key: set ONRAMP_JWT_PRIVATE_KEY")]
    NoPrivateKey,
    #[error("ONRAMP_JWT_JWKS_URL and its settings: {0}")]
    Jwks(String),
}

/// RFC 7518 3.2: an HS256 key must be at least as long as the hash output (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// A key configured on this server (a secret or a public key), with its algorithm.
struct LocalKey {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
}

pub struct JwtKeys {
    /// The static key; None when only the JWKS is configured.
    local: Option<LocalKey>,
    /// The identity provider's keys, when ONRAMP_JWT_JWKS_URL is set.
    jwks: Option<Jwks>,
    /// The checks every token passes, whatever key signed it; `algorithms` is set per key.
    validation: Validation,
    role_claim: String,
    workspace_claim: String,
    issuer: Option<String>,
    audience: Option<String>,
    /// The development secret is in use.
    pub development: bool,
}

impl JwtKeys {
    pub fn from_args(args: &JwtArgs, mode: Mode) -> Result<JwtKeys, KeyError> {
        let jwks = args.jwks.settings(mode).map_err(KeyError::Jwks)?;
        let jwks = jwks.map(Jwks::new).transpose().map_err(KeyError::Jwks)?;
        let (local, development) = match (&args.jwt_secret, &args.jwt_public_key) {
            (Some(_), Some(_)) => return Err(KeyError::Ambiguous),
            (Some(secret), None) => {
                if secret == DEVELOPMENT_SECRET && mode == Mode::Production {
                    return Err(KeyError::DevelopmentSecretInProduction);
                }
                if secret.len() < MIN_SECRET_BYTES && mode == Mode::Production {
                    return Err(KeyError::WeakSecret { bytes: secret.len() });
                }
                let s = secret.as_bytes();
                let key = LocalKey {
                    algorithm: Algorithm::HS256,
                    decoding: DecodingKey::from_secret(s),
                    encoding: Some(EncodingKey::from_secret(s)),
                };
                (Some(key), false)
            }
            (None, Some(public)) => {
                let pem = read_pem(public)?;
                let private = args.jwt_private_key.as_deref().map(read_pem).transpose()?;
                let algorithm = args.jwt_algorithm.ok_or(KeyError::NoAlgorithm)?;
                let (algorithm, decoding, encoding) = match algorithm {
                    KeyAlgorithm::Rs256 => (
                        Algorithm::RS256,
                        DecodingKey::from_rsa_pem(&pem)?,
                        private.map(|p| EncodingKey::from_rsa_pem(&p)).transpose()?,
                    ),
                    KeyAlgorithm::Es256 => (
                        Algorithm::ES256,
                        DecodingKey::from_ec_pem(&pem)?,
                        private.map(|p| EncodingKey::from_ec_pem(&p)).transpose()?,
                    ),
                    KeyAlgorithm::EdDsa => (
                        Algorithm::EdDSA,
                        DecodingKey::from_ed_pem(&pem)?,
                        private.map(|p| EncodingKey::from_ed_pem(&p)).transpose()?,
                    ),
                };
                (Some(LocalKey { algorithm, decoding, encoding }), false)
            }
            // Development keeps its secret beside a JWKS, so the printed token still works.
            (None, None) if mode == Mode::Development => {
                let s = DEVELOPMENT_SECRET.as_bytes();
                let key = LocalKey {
                    algorithm: Algorithm::HS256,
                    decoding: DecodingKey::from_secret(s),
                    encoding: Some(EncodingKey::from_secret(s)),
                };
                (Some(key), true)
            }
            (None, None) if jwks.is_some() => (None, false),
            (None, None) => return Err(KeyError::Missing),
        };
        let mut validation = Validation::new(local.as_ref().map_or(Algorithm::RS256, |k| k.algorithm));
        // jsonwebtoken checks `iss` and `aud` only when the token carries them: a
        // configured one must also be required, or a token without it passes.
        let mut required = vec!["exp", "sub"];
        if args.jwt_issuer.is_some() {
            required.push("iss");
        }
        if args.jwt_audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        validation.leeway = 30;
        match &args.jwt_issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &args.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(JwtKeys {
            local,
            jwks,
            validation,
            role_claim: args.role_claim.clone(),
            workspace_claim: args.workspace_claim.clone(),
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            development,
        })
    }

    /// The identity provider's keys, when configured.
    pub fn jwks(&self) -> Option<&Jwks> {
        self.jwks.as_ref()
    }

    /// Verifies a token (with or without the `Bearer ` prefix), fetching the identity
    /// provider's keys first when the token names a `kid` the cache lacks or the cached
    /// set is stale (see `auth::jwks`). What requests and websocket connections use.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, String> {
        let token = without_scheme(token);
        let found = match self.jwks_kid(token)? {
            Some((jwks, kid)) => Some(jwks.key(&kid).await),
            None => None,
        };
        self.verify_found(token, found)
    }

    /// Verifies a token (with or without the `Bearer ` prefix) with the keys at hand: the
    /// static key, and the JWKS keys already cached (nothing is fetched).
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        let token = without_scheme(token);
        let found = self.jwks_kid(token)?.map(|(jwks, kid)| {
            if kid.len() > super::jwks::MAX_KID_BYTES {
                return Err(format!("the token's `kid` is longer than {} bytes", super::jwks::MAX_KID_BYTES));
            }
            jwks.cached(&kid).ok_or_else(|| format!("no key with kid `{kid}` in the cached JWKS"))
        });
        self.verify_found(token, found)
    }

    /// The JWKS and the token's kid, when a JWKS is configured and the token names one.
    fn jwks_kid(&self, token: &str) -> Result<Option<(&Jwks, String)>, String> {
        let Some(jwks) = &self.jwks else { return Ok(None) };
        let header = decode_header(token).map_err(|e| e.to_string())?;
        Ok(header.kid.map(|kid| (jwks, kid)))
    }

    /// Verifies with the JWKS key found for the token's kid, or else the static key: a
    /// token without a kid, or whose kid the JWKS does not have, is the static key's.
    fn verify_found(&self, token: &str, found: Option<Result<Arc<JwksKey>, String>>) -> Result<Principal, String> {
        match (found, &self.local) {
            (Some(Ok(key)), _) => self.decode(token, &key.decoding, key.algorithm),
            (Some(Err(_)) | None, Some(local)) => self.decode(token, &local.decoding, local.algorithm),
            (Some(Err(why)), None) => Err(why),
            (None, None) => Err("the token names no `kid`: keys from the identity provider are found by kid".into()),
        }
    }

    fn decode(&self, token: &str, key: &DecodingKey, algorithm: Algorithm) -> Result<Principal, String> {
        // The key's algorithm, and no other: jsonwebtoken refuses a header naming another.
        let data = if self.validation.algorithms == [algorithm] {
            decode::<Map<String, Value>>(token, key, &self.validation)
        } else {
            let mut validation = self.validation.clone();
            validation.algorithms = vec![algorithm];
            decode::<Map<String, Value>>(token, key, &validation)
        }
        .map_err(|e| e.to_string())?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("`sub` must be a non-empty string")?;
        // A NumericDate may have a fraction (RFC 7519 2); jsonwebtoken has checked it, and
        // the connection lives until the whole second it falls in.
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_f64)
            .filter(|exp| exp.is_finite() && *exp >= 0.0)
            .map(|exp| exp.floor() as u64)
            .ok_or("`exp` must be a number")?;
        let role = match claims.get(&self.role_claim) {
            None | Some(Value::Null) => Role::User,
            Some(Value::String(r)) => Role::parse(r).ok_or_else(|| format!("unknown role `{r}`"))?,
            // A list of roles: the most privileged known one wins.
            Some(Value::Array(items)) => {
                items.iter().filter_map(Value::as_str).filter_map(Role::parse).max().unwrap_or(Role::User)
            }
            Some(_) => return Err(format!("claim `{}` must be a string or a list", self.role_claim)),
        };
        let workspaces = match claims.get(&self.workspace_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(w)) => vec![w.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|w| w.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("claim `{}` must list workspace ids as strings", self.workspace_claim))?,
            Some(_) => return Err(format!("claim `{}` must be a string or a list", self.workspace_claim)),
        };
        Ok(Principal { subject: subject.to_string(), role, expires_at, workspaces })
    }

    /// Mints a token, for development and tests.
    pub fn mint(&self, subject: &str, role: Role, ttl_seconds: u64) -> Result<String, KeyError> {
        self.mint_member(subject, role, &[], ttl_seconds)
    }

    /// Mints a token for a member of the given workspaces.
    pub fn mint_member(
        &self,
        subject: &str,
        role: Role,
        workspaces: &[&str],
        ttl_seconds: u64,
    ) -> Result<String, KeyError> {
        let local = self.local.as_ref().ok_or(KeyError::NoPrivateKey)?;
        let key = local.encoding.as_ref().ok_or(KeyError::NoPrivateKey)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut claims = json!({ "sub": subject, "iat": now, "exp": now + ttl_seconds });
        claims[&self.role_claim] = json!(role.name());
        if !workspaces.is_empty() {
            claims[&self.workspace_claim] = json!(workspaces);
        }
        if let Some(iss) = &self.issuer {
            claims["iss"] = json!(iss);
        }
        if let Some(aud) = &self.audience {
            claims["aud"] = json!(aud);
        }
        Ok(encode(&Header::new(local.algorithm), &claims, key)?)
    }
}

/// The token of an Authorization value; the scheme name is case-insensitive (RFC 9110).
fn without_scheme(token: &str) -> &str {
    let token = token.trim();
    match token.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => token,
    }
}
