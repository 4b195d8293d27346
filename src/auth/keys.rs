//! JWT keys and verification. The algorithm is pinned by configuration (a token cannot
//! choose it), `exp` and `sub` are required, and `nbf`, `iss` and `aud` are checked when
//! configured.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde_json::{Map, Value, json};

use super::{Principal, Role};
use crate::config::{DEVELOPMENT_SECRET, JwtArgs, KeyAlgorithm, Mode, read_pem};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no JWT key configured. Set ONRAMP_JWT_SECRET (HS256 shared secret), or ONRAMP_JWT_PUBLIC_KEY (PEM file or PEM) with ONRAMP_JWT_ALGORITHM=RS256|ES256|EdDSA, or run with ONRAMP_MODE=development"
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
}

/// RFC 7518 3.2: an HS256 key must be at least as long as the hash output (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

pub struct JwtKeys {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
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
        let (algorithm, decoding, encoding, development) = match (&args.jwt_secret, &args.jwt_public_key) {
            (Some(_), Some(_)) => return Err(KeyError::Ambiguous),
            (Some(secret), None) => {
                if secret == DEVELOPMENT_SECRET && mode == Mode::Production {
                    return Err(KeyError::DevelopmentSecretInProduction);
                }
                if secret.len() < MIN_SECRET_BYTES && mode == Mode::Production {
                    return Err(KeyError::WeakSecret { bytes: secret.len() });
                }
                let s = secret.as_bytes();
                (Algorithm::HS256, DecodingKey::from_secret(s), Some(EncodingKey::from_secret(s)), false)
            }
            (None, Some(public)) => {
                let pem = read_pem(public)?;
                let private = args.jwt_private_key.as_deref().map(read_pem).transpose()?;
                let algorithm = args.jwt_algorithm.ok_or(KeyError::NoAlgorithm)?;
                let (alg, decoding, encoding) = match algorithm {
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
                (alg, decoding, encoding, false)
            }
            (None, None) if mode == Mode::Development => {
                let s = DEVELOPMENT_SECRET.as_bytes();
                (Algorithm::HS256, DecodingKey::from_secret(s), Some(EncodingKey::from_secret(s)), true)
            }
            (None, None) => return Err(KeyError::Missing),
        };
        let mut validation = Validation::new(algorithm);
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
            algorithm,
            decoding,
            encoding,
            validation,
            role_claim: args.role_claim.clone(),
            workspace_claim: args.workspace_claim.clone(),
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            development,
        })
    }

    /// Verifies a token (with or without the `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        // The scheme name is case-insensitive (RFC 9110).
        let token = token.trim();
        let token = match token.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => token,
        };
        let data = decode::<Map<String, Value>>(token, &self.decoding, &self.validation).map_err(|e| e.to_string())?;
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
        let key = self.encoding.as_ref().ok_or(KeyError::NoPrivateKey)?;
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
        Ok(encode(&Header::new(self.algorithm), &claims, key)?)
    }
}
