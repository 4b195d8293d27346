//! Live progress over websockets.

use std::fmt::{self, Write as _};
use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;

use async_graphql::{Context, ID, Result, Subscription};
use futures_util::Stream;
use futures_util::stream;

use super::types::OnboardingStatus;
use super::{onramp, party};
use crate::error::{AppError, AppResult};
use crate::realtime::{Signal, Watch};
use crate::service::{Onramp, Party, Snapshot};

#[derive(Default)]
pub struct Subscription;

/// Live updates over websockets at `/graphql/ws` (graphql-transport-ws); the token goes in
/// the `connection_init` payload.
#[Subscription]
impl Subscription {
    /// The subject's progress in a flow (for a workspace-scoped flow, the workspace's,
    /// which every subscribed member sees change whoever acts): the current state first,
    /// then a new snapshot on every change (from any device, any instance, an event, or
    /// an attribute change). A client that falls behind gets the latest snapshot, not
    /// every intermediate one; revisions never go backwards. Only admin and service
    /// callers may pass subjectId; a user may pass only its own workspaces.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn onboarding_progress(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key, e.g. `new_user`.")] flow_key: String,
        #[graphql(desc = "The user to watch instead of the caller; admin and service callers only.")]
        subject_id: Option<ID>,
        #[graphql(desc = "For a workspace-scoped flow, the workspace whose shared progress to watch; a user \
                          may name only a workspace its token lists (a token listing one implies it).")]
        workspace_id: Option<ID>,
        #[graphql(
            desc = "Texts in this locale (exact tag, then its language, then the flow's default locale); default: the subject's `locale` attribute."
        )]
        locale: Option<String>,
    ) -> Result<impl Stream<Item = Result<Box<OnboardingStatus>>> + use<>> {
        let locale = super::onboarding::checked_locale(locale)?;
        let party = party(ctx, subject_id.as_ref(), workspace_id.as_ref())?;
        let onramp = onramp(ctx).clone();
        // Boxed, like every read below: async-graphql keeps this resolver's future inside
        // the subscription's stream for as long as the subscription lives, and a future
        // is as large as the largest one it awaits inline (a database read is many KB).
        let (watch, first) = Box::pin(async {
            let owner = detached(&onramp, &party, &flow_key, |o, p, f| async move { o.owner(&p, &f).await }).await?;
            // Watch before the first read, so a change between the two is not missed.
            let watch = onramp.realtime().hub().watch(&owner.key());
            let first = Box::new(OnboardingStatus::of(&read(&onramp, &party, &flow_key).await?, locale.as_deref()));
            Ok::<_, async_graphql::Error>((watch, first))
        })
        .await?;
        let state = Progress { onramp, party, flow_key, locale, watch, first: Some(first), last: None, resyncs: 0 };
        Ok(stream::unfold(state, Progress::next))
    }

    /// Every in-app nudge sent to the subject from now on (with workspaceId, the
    /// workspace's too), once each, as it is sent by any instance. Only admin and service
    /// callers may pass subjectId.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn nudge_received(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Whose nudges (admin and service callers only); default: the caller.")] subject_id: Option<ID>,
        #[graphql(desc = "Also the nudges of this workspace (a user must be a member).")] workspace_id: Option<ID>,
        #[graphql(
            desc = "The language of the texts (exact tag, then its language, then the flow's default locale); default: as sent, in the subject's `locale` attribute."
        )]
        locale: Option<String>,
    ) -> Result<impl Stream<Item = Result<super::nudges::Nudge>> + use<>> {
        let party = party(ctx, subject_id.as_ref(), workspace_id.as_ref())?;
        let locale = super::onboarding::checked_locale(locale)?;
        Ok(super::nudges::received(onramp(ctx).clone(), party, locale))
    }
}

/// One subscription between snapshots: thousands are idle at once, so it keeps what it
/// needs to read the next snapshot and to compare it with the last one sent, nothing more.
/// Snapshots travel boxed: async-graphql holds a stream's items and futures inline for
/// the subscription's lifetime, and a snapshot by value is hundreds of bytes.
struct Progress {
    onramp: Arc<Onramp>,
    party: Party,
    flow_key: String,
    locale: Option<String>,
    watch: Watch,
    first: Option<Box<OnboardingStatus>>,
    last: Option<Sent>,
    resyncs: u64,
}

/// The last snapshot sent, as its revision and a fingerprint of the whole, rather than
/// the snapshot itself (several KB for a flow of a few dozen steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sent {
    revision: i64,
    fingerprint: u64,
}

impl Sent {
    fn of(snapshot: &OnboardingStatus) -> Sent {
        Sent { revision: snapshot.revision, fingerprint: fingerprint(snapshot) }
    }
}

/// A 64-bit hash of a snapshot's every field, through its Debug form (the GraphQL types
/// hold JSON, which has no Hash); equal snapshots always have equal fingerprints.
fn fingerprint(snapshot: &OnboardingStatus) -> u64 {
    struct HashWriter(DefaultHasher);
    impl fmt::Write for HashWriter {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let mut writer = HashWriter(DefaultHasher::new());
    let _ = write!(writer, "{snapshot:?}");
    writer.0.finish()
}

/// A snapshot, read in a task of its own (see `detached`).
async fn read(onramp: &Arc<Onramp>, party: &Party, flow_key: &str) -> AppResult<Snapshot> {
    detached(onramp, party, flow_key, |o, p, f| async move { o.status(&p, &f).await }).await
}

/// Runs a subscription's read in a task of its own. A subscription is dropped whenever
/// its client goes, often in the middle of a read, and a query dropped mid-flight makes
/// the pool close its connection and open a new one: a client that opens subscriptions
/// and hangs up in a loop would churn the pool and stall everyone waiting for a
/// connection. The detached read finishes (it is short) and hands its connection back.
async fn detached<T, F, Fut>(onramp: &Arc<Onramp>, party: &Party, flow_key: &str, read: F) -> AppResult<T>
where
    T: Send + 'static,
    F: FnOnce(Arc<Onramp>, Party, String) -> Fut,
    Fut: Future<Output = AppResult<T>> + Send + 'static,
{
    let task = tokio::spawn(read(onramp.clone(), party.clone(), flow_key.to_string()));
    task.await.map_err(|e| AppError::internal(format!("a subscription's read failed: {e}")))?
}

impl Progress {
    async fn next(mut self) -> Option<(Result<Box<OnboardingStatus>>, Self)> {
        if let Some(first) = self.first.take() {
            self.last = Some(Sent::of(&first));
            return Some((Ok(first), self));
        }
        loop {
            let Signal { resyncs, .. } = self.watch.next().await?;
            let forced = resyncs != self.resyncs;
            self.resyncs = resyncs;
            // Boxed, so the idle wait above does not carry the read's state (see above).
            let snapshot = match Box::pin(read(&self.onramp, &self.party, &self.flow_key)).await {
                Ok(s) => Box::new(OnboardingStatus::of(&s, self.locale.as_deref())),
                Err(e) => return Some((Err(e.into()), self)),
            };
            let sent = Sent::of(&snapshot);
            if self.should_send(sent, forced) {
                self.last = Some(sent);
                return Some((Ok(snapshot), self));
            }
        }
    }

    /// Newer revisions always; the same revision only when something else changed (what
    /// applies before enrollment) or a resync asks for it; older revisions never.
    fn should_send(&self, snapshot: Sent, forced: bool) -> bool {
        match &self.last {
            None => true,
            Some(last) if snapshot.revision > last.revision => true,
            Some(last) if snapshot.revision == last.revision => forced || snapshot != *last,
            Some(_) => false,
        }
    }
}
