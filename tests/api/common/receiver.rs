//! A webhook receiver for tests: a real HTTP server on loopback that records every request
//! and answers as the test scripts it.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: String,
    pub json: Value,
    pub at: Instant,
}

impl Received {
    /// The signatures of `webhook-signature`, one per signing secret.
    pub fn signatures(&self) -> Vec<&str> {
        self.signature.split(' ').collect()
    }
}

#[derive(Default)]
struct Inner {
    received: Mutex<Vec<Received>>,
    /// Statuses for the next requests, in order; then `status`.
    script: Mutex<VecDeque<u16>>,
    status: AtomicU16,
    /// How long the next requests take to answer, in order.
    delays: Mutex<VecDeque<Duration>>,
    /// Webhook ids being answered right now.
    in_flight: Mutex<HashSet<String>>,
    /// Requests that arrived while another with the same webhook id was being answered.
    overlaps: AtomicUsize,
    /// Headers and body every answer carries.
    headers: Mutex<Vec<(String, String)>>,
    body: Mutex<String>,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

impl Receiver {
    /// A receiver on a free loopback port, answering 200.
    pub async fn start() -> Receiver {
        Receiver::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// A receiver on this address (for one that comes up where an endpoint already points).
    pub async fn start_on(addr: SocketAddr) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the receiver");
        let addr = listener.local_addr().expect("addr");
        let inner = Arc::new(Inner::default());
        inner.status.store(200, Ordering::SeqCst);
        let receiver = Receiver { inner, addr };
        let app = Router::new().route("/hook", post(receive)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    /// A loopback address nothing listens on (yet).
    pub async fn unused_addr() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers the next requests with these statuses, then as before.
    pub fn script(&self, statuses: &[u16]) {
        self.inner.script.lock().unwrap().extend(statuses);
    }

    /// Answers every request (after the script) with this status.
    pub fn answer(&self, status: u16) {
        self.inner.status.store(status, Ordering::SeqCst);
    }

    /// Makes the next requests take this long to answer, in order.
    pub fn delay(&self, delays: &[Duration]) {
        self.inner.delays.lock().unwrap().extend(delays);
    }

    /// Adds a header to every answer.
    pub fn header(&self, name: &str, value: &str) {
        self.inner.headers.lock().unwrap().push((name.to_string(), value.to_string()));
    }

    /// Answers with this body.
    pub fn body(&self, body: &str) {
        *self.inner.body.lock().unwrap() = body.to_string();
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    pub fn overlaps(&self) -> usize {
        self.inner.overlaps.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived; fails the test after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(Instant::now() < deadline, "{} of {n} webhook requests after {within:?}", received.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Checks that nothing more than `n` requests arrive within `quiet`.
    pub async fn expect_no_more_than(&self, n: usize, quiet: Duration) {
        tokio::time::sleep(quiet).await;
        let received = self.received();
        assert!(received.len() <= n, "{} webhook requests, expected {n}: {received:#?}", received.len());
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: String) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let id = header("webhook-id");
    let request = Received {
        id: id.clone(),
        timestamp: header("webhook-timestamp").parse().unwrap_or_default(),
        signature: header("webhook-signature"),
        json: serde_json::from_str(&body).unwrap_or(Value::Null),
        body,
        at: Instant::now(),
    };
    let inner = &receiver.inner;
    if !inner.in_flight.lock().unwrap().insert(id.clone()) {
        inner.overlaps.fetch_add(1, Ordering::SeqCst);
    }
    // Out of flight however the answer ends, also when the sender hangs up (a killed
    // server) and this handler is dropped mid-delay.
    let _answering = Answering { inner, id };
    inner.received.lock().unwrap().push(request);
    let delay = inner.delays.lock().unwrap().pop_front();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let status = inner.script.lock().unwrap().pop_front().unwrap_or_else(|| inner.status.load(Ordering::SeqCst));
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, inner.body.lock().unwrap().clone()).into_response();
    for (name, value) in inner.headers.lock().unwrap().iter() {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(value).unwrap(),
        );
    }
    response
}

/// A request being answered: its webhook id leaves `in_flight` when this is dropped.
struct Answering<'a> {
    inner: &'a Inner,
    id: String,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.inner.in_flight.lock().unwrap().remove(&self.id);
    }
}
