//! Standard Webhooks signatures (https://www.standardwebhooks.com): a secret is `whsec_`
//! and the base64 of its key; a signature is `v1,` and the base64 of
//! HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"); during a rotation the
//! `webhook-signature` header carries one signature per secret, separated by spaces.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of key in a secret onramp makes: the spec asks for 24 to 64.
pub const SECRET_BYTES: usize = 32;
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;

/// A signing key. Its Debug output hides the key, so a secret that ends up in a log line
/// or an error message by accident is not leaked.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("a webhook secret starts with `{SECRET_PREFIX}`")]
    MissingPrefix,
    #[error("a webhook secret is base64 after `{SECRET_PREFIX}`")]
    NotBase64,
    #[error("a webhook secret's key is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")]
    KeyLength,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// A secret with this key: the caller brings the randomness (the domain has no source
    /// of it).
    pub fn from_key(key: [u8; SECRET_BYTES]) -> Secret {
        Secret { key: key.to_vec() }
    }

    /// A secret as stored and as shown: `whsec_<base64 key>`.
    pub fn parse(text: &str) -> Result<Secret, SignError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(SignError::MissingPrefix)?;
        let key = BASE64.decode(encoded).map_err(|_| SignError::NotBase64)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SignError::KeyLength);
        }
        Ok(Secret { key })
    }

    /// The text form, for the database and for the one answer that shows it to an admin.
    pub fn reveal(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// One `v1,<base64>` signature of a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", BASE64.encode(self.mac(id, timestamp, body).finalize().into_bytes()))
    }

    /// Whether any `v1` signature in a `webhook-signature` header is this secret's for the
    /// message. Compared in constant time. The timestamp's freshness is the receiver's
    /// check, not this one.
    pub fn verifies(&self, header: &str, id: &str, timestamp: i64, body: &[u8]) -> bool {
        header.split(' ').filter_map(|entry| entry.strip_prefix("v1,")).any(|signature| {
            BASE64.decode(signature).is_ok_and(|bytes| self.mac(id, timestamp, body).verify_slice(&bytes).is_ok())
        })
    }
}

/// The `webhook-signature` header: one signature per secret, the current one first.
pub fn signature_header(secrets: &[&Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector the Standard Webhooks reference libraries share.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_specs_test_vector() {
        let secret = Secret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(ID, TIMESTAMP, BODY), EXPECTED);
        assert_eq!(signature_header(&[&secret], ID, TIMESTAMP, BODY), EXPECTED);
        assert!(secret.verifies(EXPECTED, ID, TIMESTAMP, BODY));
    }

    #[test]
    fn any_change_to_id_timestamp_or_body_fails_verification() {
        let secret = Secret::parse(SECRET).unwrap();
        assert!(!secret.verifies(EXPECTED, "msg_other", TIMESTAMP, BODY));
        assert!(!secret.verifies(EXPECTED, ID, TIMESTAMP + 1, BODY));
        assert!(!secret.verifies(EXPECTED, ID, TIMESTAMP, br#"{"test": 2432232315}"#));
        let other = Secret::from_key([7; SECRET_BYTES]);
        assert!(!other.verifies(EXPECTED, ID, TIMESTAMP, BODY));
        assert!(!secret.verifies("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", ID, TIMESTAMP, BODY));
        assert!(!secret.verifies("v1,not base64!", ID, TIMESTAMP, BODY));
        assert!(!secret.verifies("", ID, TIMESTAMP, BODY));
    }

    #[test]
    fn during_a_rotation_each_secret_finds_its_own_signature() {
        let new = Secret::from_key([1; SECRET_BYTES]);
        let old = Secret::from_key([2; SECRET_BYTES]);
        let header = signature_header(&[&new, &old], ID, TIMESTAMP, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.starts_with(&new.sign(ID, TIMESTAMP, BODY)));
        assert!(new.verifies(&header, ID, TIMESTAMP, BODY));
        assert!(old.verifies(&header, ID, TIMESTAMP, BODY));
        assert!(!Secret::from_key([3; SECRET_BYTES]).verifies(&header, ID, TIMESTAMP, BODY));
    }

    #[test]
    fn secrets_round_trip_and_malformed_ones_are_refused() {
        let secret = Secret::from_key([9; SECRET_BYTES]);
        let text = secret.reveal();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text).unwrap(), secret);
        assert_eq!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(SignError::MissingPrefix));
        assert_eq!(Secret::parse("whsec_!!!"), Err(SignError::NotBase64));
        assert_eq!(Secret::parse("whsec_c2hvcnQ="), Err(SignError::KeyLength));
        assert_eq!(format!("{secret:?}"), "Secret(***)", "Debug never shows the key");
    }
}
