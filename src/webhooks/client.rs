//! The HTTP side of an attempt: one POST, no redirects, no proxy, a bounded time and a
//! bounded read of the answer, and only to addresses the policy allows, checked on every
//! connection by the resolver (a name can resolve elsewhere than when it was saved).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::webhooks::address::{AddressPolicy, check_ip, check_url};
use crate::domain::webhooks::outcome::AttemptResult;
use crate::domain::webhooks::retry::parse_retry_after;

/// The most of a response body kept in the attempt log.
pub const RESPONSE_BODY_BYTES: usize = 1024;

/// Resolves names like the system does, then drops every address the policy refuses;
/// a name left with none fails to connect.
struct GuardedResolver {
    policy: AddressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(allowed_addresses(name.as_str().to_string(), self.policy))
    }
}

async fn allowed_addresses(host: String, policy: AddressPolicy) -> Result<Addrs, BoxError> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    let mut refusal = None;
    let allowed: Vec<SocketAddr> = found
        .into_iter()
        .filter(|addr| match check_ip(addr.ip(), policy) {
            Ok(()) => true,
            Err(why) => {
                refusal = Some(why);
                false
            }
        })
        .collect();
    if allowed.is_empty() {
        let why = refusal.unwrap_or_else(|| "no address".into());
        return Err(format!("{host} resolves to no address webhooks may reach: {why}").into());
    }
    Ok(Box::new(allowed.into_iter()))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends attempts. One per dispatcher: its connection pool is shared by every attempt.
pub struct Sender {
    client: reqwest::Client,
    policy: AddressPolicy,
}

/// What one attempt got.
#[derive(Clone, Debug)]
pub struct Sent {
    pub result: AttemptResult,
    pub status_code: Option<u16>,
    /// Why there was no answer, or why the answer was cut short.
    pub error: Option<String>,
    pub body: Option<String>,
}

impl Sender {
    pub fn new(policy: AddressPolicy, timeout: Duration) -> Result<Sender, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf to wherever it resolves the name.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { policy }))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("onramp-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender { client, policy })
    }

    /// POSTs one signed body.
    pub async fn send(&self, url: &str, id: &str, timestamp: i64, signature: &str, body: String) -> Sent {
        // An address literal never reaches the resolver: it is checked here instead.
        if let Err(why) = check_url(url, self.policy, usize::MAX) {
            return no_answer(why);
        }
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return no_answer(describe(&e)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        // Read no more than is kept: a receiver cannot make us buffer a large answer.
        let mut kept = Vec::new();
        let mut error = None;
        while kept.len() <= RESPONSE_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("reading the response: {}", describe(&e)));
                    break;
                }
            }
        }
        Sent {
            result: AttemptResult::Answered { status, retry_after },
            status_code: Some(status),
            error,
            body: (!kept.is_empty()).then(|| printable(&kept, RESPONSE_BODY_BYTES)),
        }
    }
}

fn no_answer(error: String) -> Sent {
    Sent { result: AttemptResult::NoAnswer, status_code: None, error: Some(error), body: None }
}

/// An error and its causes, which say what actually went wrong (refused, timed out, DNS).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() { "timed out".to_string() } else { error.to_string() };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    printable(text.as_bytes(), RESPONSE_BODY_BYTES)
}

/// At most `max` bytes of text, cut on a character boundary, without NUL (PostgreSQL text
/// cannot hold it).
pub fn printable(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).replace('\0', "\u{FFFD}");
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check at connect time: a name is only as good as the addresses it resolves
    /// to now, whatever it resolved to when the endpoint was saved.
    #[tokio::test]
    async fn names_that_resolve_to_refused_addresses_do_not_connect() {
        let strict = GuardedResolver { policy: AddressPolicy::STRICT };
        let Err(error) = strict.resolve("localhost".parse().unwrap()).await else {
            panic!("localhost resolved to an address webhooks may reach");
        };
        assert!(error.to_string().contains("no address webhooks may reach"), "{error}");
        let open = GuardedResolver { policy: AddressPolicy { allow_private: true, allow_http: true } };
        let addrs: Vec<SocketAddr> = open.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty(), "{addrs:?}");
    }

    #[tokio::test]
    async fn a_refused_address_literal_is_not_contacted() {
        let sender =
            Sender::new(AddressPolicy { allow_private: false, allow_http: true }, Duration::from_secs(1)).unwrap();
        let sent = sender.send("http://127.0.0.1:9/hook", "msg_1", 1, "v1,x", "{}".into()).await;
        assert_eq!(sent.result, AttemptResult::NoAnswer);
        assert!(sent.error.unwrap_or_default().contains("loopback"));
    }

    #[test]
    fn kept_text_is_bounded_valid_and_storable() {
        assert_eq!(printable(b"ok", 1024), "ok");
        assert_eq!(printable(&[b'a'; 2000], 1024).len(), 1024);
        let cut = printable("é".repeat(600).as_bytes(), 1024);
        assert!(cut.len() <= 1024 && cut.chars().all(|c| c == 'é' || c == '\u{FFFD}'));
        assert_eq!(printable(b"a\0b", 1024), "a\u{FFFD}b");
    }
}
