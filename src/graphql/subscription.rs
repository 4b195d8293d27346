//! Live progress over websockets.

use std::sync::Arc;

use async_graphql::{Context, ID, Result, Subscription};
use futures_util::Stream;
use futures_util::stream;

use super::types::OnboardingStatus;
use super::{onramp, party};
use crate::realtime::{Signal, Watch};
use crate::service::{Onramp, Party};

#[derive(Default)]
pub struct Subscription;

#[Subscription]
impl Subscription {
    /// The subject's progress in a flow (for a workspace-scoped flow, the workspace's,
    /// which every subscribed member sees change whoever acts): the current state first,
    /// then a new snapshot on every change (from any device, any instance, an event, or
    /// an attribute change). A client that falls behind gets the latest snapshot, not
    /// every intermediate one; revisions never go backwards. Only admin and service
    /// callers may pass subjectId; a user may pass only its own workspaces.
    async fn onboarding_progress(
        &self,
        ctx: &Context<'_>,
        flow_key: String,
        subject_id: Option<ID>,
        workspace_id: Option<ID>,
    ) -> Result<impl Stream<Item = Result<OnboardingStatus>> + use<>> {
        let party = party(ctx, subject_id.as_ref(), workspace_id.as_ref())?;
        let onramp = onramp(ctx).clone();
        // Watch before the first read, so a change between the two is not missed.
        let watch = onramp.realtime().hub().watch(&onramp.owner(&party, &flow_key).await?.key());
        let first = OnboardingStatus::from(&onramp.status(&party, &flow_key).await?);
        let state = Progress { onramp, party, flow_key, watch, first: Some(first), last: None, resyncs: 0 };
        Ok(stream::unfold(state, Progress::next))
    }
}

struct Progress {
    onramp: Arc<Onramp>,
    party: Party,
    flow_key: String,
    watch: Watch,
    first: Option<OnboardingStatus>,
    last: Option<OnboardingStatus>,
    resyncs: u64,
}

impl Progress {
    async fn next(mut self) -> Option<(Result<OnboardingStatus>, Self)> {
        if let Some(first) = self.first.take() {
            self.last = Some(first.clone());
            return Some((Ok(first), self));
        }
        loop {
            let Signal { resyncs, .. } = self.watch.next().await?;
            let forced = resyncs != self.resyncs;
            self.resyncs = resyncs;
            let snapshot = match self.onramp.status(&self.party, &self.flow_key).await {
                Ok(s) => OnboardingStatus::from(&s),
                Err(e) => return Some((Err(e.into()), self)),
            };
            if self.should_send(&snapshot, forced) {
                self.last = Some(snapshot.clone());
                return Some((Ok(snapshot), self));
            }
        }
    }

    /// Newer revisions always; the same revision only when something else changed (what
    /// applies before enrollment) or a resync asks for it; older revisions never.
    fn should_send(&self, snapshot: &OnboardingStatus, forced: bool) -> bool {
        match &self.last {
            None => true,
            Some(last) if snapshot.revision > last.revision => true,
            Some(last) if snapshot.revision == last.revision => forced || snapshot != last,
            Some(_) => false,
        }
    }
}
