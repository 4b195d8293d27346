//! Local watchers, one channel per watched subject. A `watch` channel holds only the
//! latest signal, so a watcher that falls behind wakes once and reads the latest state
//! instead of every intermediate one, and never slows anyone else down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What a watcher wakes up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signal {
    /// Grows with every announced change.
    pub changes: u64,
    /// Grows when every watcher must re-send its state (the listener reconnected, so a
    /// notification may have been missed).
    pub resyncs: u64,
}

#[derive(Default)]
pub struct Hub {
    subjects: Mutex<HashMap<String, watch::Sender<Signal>>>,
    /// Grows with every change to the published flows heard of, here or from another
    /// instance, and whenever the listener (re)connects.
    flows_epoch: AtomicU64,
    /// Whether the listener is up: only then does this instance hear of other instances'
    /// flow changes.
    listening: AtomicBool,
}

impl Hub {
    /// Starts watching a subject. The channel goes away with its last watcher.
    pub fn watch(self: &Arc<Self>, subject: &str) -> Watch {
        let mut subjects = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        let sender = subjects.entry(subject.to_string()).or_insert_with(|| watch::channel(Signal::default()).0);
        let mut receiver = sender.subscribe();
        receiver.mark_unchanged();
        Watch { receiver: Some(receiver), hub: self.clone(), subject: subject.to_string() }
    }

    /// The epoch of the published flows, for caching what is derived from them: a cache
    /// made at one epoch is good until the epoch moves. `None` while nothing would tell this
    /// instance of another's change (no listener: SQLite, a CLI, or a dropped connection),
    /// so nothing may be cached.
    pub fn flows_epoch(&self) -> Option<u64> {
        self.listening.load(Ordering::Acquire).then(|| self.flows_epoch.load(Ordering::Acquire))
    }

    /// The published flows changed.
    pub fn flows_changed(&self) {
        self.flows_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The listener connected (a new epoch: changes made while it was down went unheard)
    /// or lost its connection.
    pub fn set_listening(&self, up: bool) {
        if up {
            self.flows_changed();
        }
        self.listening.store(up, Ordering::Release);
    }

    pub fn changed(&self, subject: &str) {
        let subjects = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = subjects.get(subject) {
            sender.send_modify(|s| s.changes += 1);
        }
    }

    /// Wakes every watcher to re-send its current state.
    pub fn resync_all(&self) {
        let subjects = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        for sender in subjects.values() {
            sender.send_modify(|s| s.resyncs += 1);
        }
    }

    /// Subjects watched on this instance.
    pub fn watched(&self) -> usize {
        self.subjects.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One watcher of one subject.
pub struct Watch {
    /// Always Some until dropped; taken in `drop` under the hub's lock.
    receiver: Option<watch::Receiver<Signal>>,
    hub: Arc<Hub>,
    subject: String,
}

impl Watch {
    /// Waits for the next signal; several signals since the last call count as one.
    pub async fn next(&mut self) -> Option<Signal> {
        let receiver = self.receiver.as_mut()?;
        receiver.changed().await.ok()?;
        Some(*receiver.borrow_and_update())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut subjects = self.hub.subjects.lock().unwrap_or_else(|e| e.into_inner());
        // Drop the receiver under the lock, so of two watchers leaving at once the second
        // always sees the first gone, and the last one out removes the channel.
        drop(self.receiver.take());
        if subjects.get(&self.subject).is_some_and(|s| s.receiver_count() == 0) {
            subjects.remove(&self.subject);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_wake_once_for_many_changes_and_channels_are_dropped_with_them() {
        let hub = Arc::new(Hub::default());
        let mut a = hub.watch("alice");
        let b = hub.watch("alice");
        let _c = hub.watch("bob");
        assert_eq!(hub.watched(), 2);
        for _ in 0..5 {
            hub.changed("alice");
        }
        hub.changed("carol"); // nobody watches: nothing to do
        assert_eq!(a.next().await, Some(Signal { changes: 5, resyncs: 0 }));
        hub.resync_all();
        assert_eq!(a.next().await, Some(Signal { changes: 5, resyncs: 1 }));
        drop(b);
        assert_eq!(hub.watched(), 2, "alice still has a watcher");
        drop(a);
        assert_eq!(hub.watched(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchers_leaving_at_once_leave_no_channel_behind() {
        let hub = Arc::new(Hub::default());
        for _ in 0..200 {
            let watchers: Vec<Watch> = (0..4).map(|_| hub.watch("alice")).collect();
            let handles: Vec<_> = watchers.into_iter().map(|w| std::thread::spawn(move || drop(w))).collect();
            handles.into_iter().for_each(|h| h.join().unwrap());
            assert_eq!(hub.watched(), 0);
        }
    }
}
