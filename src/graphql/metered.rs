//! Counts every GraphQL operation for /metrics, whatever its transport: by operation type
//! and name and by outcome, with the latency of queries and mutations, and keeps the
//! gauge of live subscriptions.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest, NextSubscribe,
};
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Request, Response, ServerResult, Variables};
use futures_util::Stream;

use crate::auth::Auth;
use crate::metrics::{Metrics, outcome};

#[derive(Clone)]
pub struct Metered(pub Arc<Metrics>);

impl ExtensionFactory for Metered {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Operation { metrics: self.0.clone(), seen: Arc::default() })
    }
}

/// What one request turned out to be, filled in as it is prepared and parsed.
#[derive(Default)]
struct Seen {
    /// The operation the request names, if any.
    requested: Option<String>,
    /// The operation that runs, once the document is parsed: its type and name.
    operation: Option<(OperationType, Option<String>)>,
    /// The caller's token was verified.
    verified: bool,
}

/// One request's extension (the factory makes one per request or subscription).
struct Operation {
    metrics: Arc<Metrics>,
    seen: Arc<Mutex<Seen>>,
}

fn type_label(operation: Option<OperationType>) -> &'static str {
    match operation {
        Some(OperationType::Query) => "query",
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        None => "unknown",
    }
}

/// Records a finished operation (or the first answer of a subscription).
fn record(metrics: &Metrics, seen: &Mutex<Seen>, response: &Response, started: Instant) {
    let (operation, name, verified) = match seen.lock() {
        Ok(seen) => {
            let (operation, name) = seen.operation.clone().unzip();
            (operation, name.flatten(), seen.verified)
        }
        Err(_) => (None, None, false),
    };
    let outcome = outcome(&response.errors);
    let name = match operation {
        Some(_) => metrics.operation_name(name.as_deref(), verified && outcome == "ok"),
        // Nothing ran: no name to trust.
        None => crate::metrics::OTHER.to_string(),
    };
    let seconds = (operation != Some(OperationType::Subscription)).then(|| started.elapsed().as_secs_f64());
    metrics.record(type_label(operation), &name, &outcome, seconds);
}

/// The operation a document runs for a request naming `requested` (or none).
fn selected(document: &ExecutableDocument, requested: Option<&str>) -> Option<(OperationType, Option<String>)> {
    match (&document.operations, requested) {
        (DocumentOperations::Single(operation), _) => Some((operation.node.ty, None)),
        (DocumentOperations::Multiple(operations), Some(name)) => {
            operations.get(name).map(|operation| (operation.node.ty, Some(name.to_string())))
        }
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.iter().next().map(|(name, operation)| (operation.node.ty, Some(name.to_string())))
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Operation {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        record(&self.metrics, &self.seen, &response, started);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        Box::pin(Tracked {
            inner: next.run(ctx, stream),
            metrics: self.metrics.clone(),
            seen: self.seen.clone(),
            started: Instant::now(),
            recorded: false,
            live: false,
        })
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.requested = request.operation_name.clone();
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Ok(mut seen) = self.seen.lock() {
            seen.operation = selected(&document, seen.requested.as_deref());
            seen.verified = matches!(ctx.data_opt::<Auth>(), Some(Auth::Verified(_)));
        }
        Ok(document)
    }
}

/// An operation's answers over a websocket (a subscription's stream, or a single answer
/// to a query or mutation sent there). Counted at its first answer; a subscription is
/// live from then until its stream ends or is dropped.
struct Tracked<'s> {
    inner: BoxStream<'s, Response>,
    metrics: Arc<Metrics>,
    seen: Arc<Mutex<Seen>>,
    started: Instant,
    recorded: bool,
    live: bool,
}

impl Tracked<'_> {
    fn end(&mut self) {
        if self.live {
            self.live = false;
            self.metrics.subscriptions.dec();
        }
    }
}

impl Stream for Tracked<'_> {
    type Item = Response;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        let this = &mut *self;
        let polled = this.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(response)) if !this.recorded => {
                this.recorded = true;
                record(&this.metrics, &this.seen, response, this.started);
                let subscription =
                    this.seen.lock().is_ok_and(|seen| matches!(seen.operation, Some((OperationType::Subscription, _))));
                // A subscription whose first answer is an error ends with it.
                if subscription && response.errors.is_empty() {
                    this.live = true;
                    this.metrics.subscriptions.inc();
                }
            }
            Poll::Ready(None) => this.end(),
            _ => {}
        }
        polled
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.end();
    }
}
