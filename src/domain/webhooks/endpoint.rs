//! An endpoint's inputs and its secrets: the limits on what an admin may set, and which
//! secrets sign at a given time during a rotation.

use chrono::{DateTime, Utc};

use super::signing::Secret;

/// How large an endpoint's settings may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointLimits {
    pub url_bytes: usize,
    pub description_bytes: usize,
    pub event_types: usize,
}

impl Default for EndpointLimits {
    fn default() -> Self {
        EndpointLimits { url_bytes: 2048, description_bytes: 1024, event_types: 64 }
    }
}

impl EndpointLimits {
    /// A description: at most `description_bytes`, no control characters but line breaks
    /// and tabs (it is shown in consoles and logs).
    pub fn check_description(&self, description: &str) -> Result<(), String> {
        if description.len() > self.description_bytes {
            return Err(format!("description is longer than {} bytes", self.description_bytes));
        }
        if description.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            return Err("description contains control characters".into());
        }
        Ok(())
    }
}

/// The secrets that sign at `now`: the current one, then the one it replaced while its
/// overlap lasts, so receivers can switch secrets without missing a delivery.
pub fn signing_secrets<'a>(
    current: &'a Secret,
    previous: Option<&'a Secret>,
    previous_expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<&'a Secret> {
    let mut secrets = vec![current];
    if let (Some(previous), Some(until)) = (previous, previous_expires_at)
        && now < until
    {
        secrets.push(previous);
    }
    secrets
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::webhooks::signing::SECRET_BYTES;

    #[test]
    fn the_previous_secret_signs_until_its_overlap_ends() {
        let (new, old) = (Secret::from_key([1; SECRET_BYTES]), Secret::from_key([2; SECRET_BYTES]));
        let until = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
        let before = until - chrono::Duration::seconds(1);
        assert_eq!(signing_secrets(&new, Some(&old), Some(until), before), [&new, &old]);
        assert_eq!(signing_secrets(&new, Some(&old), Some(until), until), [&new]);
        assert_eq!(signing_secrets(&new, None, None, before), [&new]);
    }

    #[test]
    fn descriptions_are_bounded_and_printable() {
        let limits = EndpointLimits::default();
        assert!(limits.check_description("CRM sync\nowner: growth team").is_ok());
        assert!(limits.check_description(&"x".repeat(1024)).is_ok());
        assert!(limits.check_description(&"x".repeat(1025)).is_err());
        assert!(limits.check_description("bell\u{7}").is_err());
    }
}
