//! The thread that writes session changes to a durable store, in the
//! order they were made, many connections' changes per commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use steadfast_core::SessionId;

use super::{Change, SessionStore};
use crate::metrics::Metrics;
use crate::registry::lock;

/// Hands changes to the store thread and tells who waits when they are
/// committed. A change gets a ticket (1, 2, 3…); tickets are committed in
/// order, so "ticket N committed" covers every change made before it, by
/// any connection.
///
/// A [`Unit`] keeps changes together: while one is open, nothing pushed
/// after it began is committed, so the changes made while the application
/// handles messages (its sends, to any session) and the session's
/// "delivered through" mark that ends it reach the disk in one commit, or
/// not at all. After a crash the store holds both or neither: a message
/// whose effects were kept is not delivered again, and one delivered
/// again had left no effect behind.
#[derive(Debug)]
pub(crate) struct Committer {
    inner: Arc<Inner>,
    committed: watch::Receiver<u64>,
}

#[derive(Debug)]
struct Inner {
    queue: Mutex<Queue>,
    ready: Condvar,
    stop: AtomicBool,
    /// Why the last commit failed, until one succeeds.
    failing: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct Queue {
    changes: Vec<Change>,
    last_ticket: u64,
    /// Open units, by the last ticket before each began (a multiset).
    open: BTreeMap<u64, usize>,
    /// The thread waits on `ready` (a notify is a syscall: made only then).
    idle: bool,
}

impl Queue {
    /// How many queued changes may be committed now: those before the
    /// oldest open unit.
    fn committable(&self) -> usize {
        let first = self.last_ticket + 1 - self.changes.len() as u64;
        match self.open.keys().next() {
            Some(&start) => usize::try_from((start + 1).saturating_sub(first))
                .unwrap_or(usize::MAX)
                .min(self.changes.len()),
            None => self.changes.len(),
        }
    }
}

/// Changes kept together (see [`Committer`]); ends when dropped.
#[must_use]
pub(crate) struct Unit<'a> {
    inner: &'a Inner,
    start: u64,
}

impl Drop for Unit<'_> {
    fn drop(&mut self) {
        let mut queue = lock(&self.inner.queue);
        if let Some(count) = queue.open.get_mut(&self.start) {
            *count -= 1;
            if *count == 0 {
                queue.open.remove(&self.start);
            }
        }
        if queue.idle {
            self.inner.ready.notify_one();
        }
    }
}

/// Retry a failed commit after this long, doubling up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

impl Committer {
    /// Start the thread that writes to `store`.
    /// `fenced` hears of sessions whose changes the store refused (another
    /// node claimed them), before the commit that refused them counts as
    /// done: the outputs waiting on it must not go out.
    pub(crate) fn start(
        store: Arc<dyn SessionStore>,
        metrics: Arc<Metrics>,
        fenced: Fenced,
    ) -> Committer {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            failing: Mutex::new(None),
        });
        let (tx, committed) = watch::channel(0);
        let thread = inner.clone();
        // The thread logs under the span of whoever started it (the node's).
        let span = tracing::Span::current();
        let spawned = std::thread::Builder::new()
            .name("steadfast-store".into())
            .spawn(move || {
                let _node = span.enter();
                run(&thread, store.as_ref(), &metrics, &tx, &fenced);
            });
        if let Err(error) = spawned {
            // Nothing is committed, so nothing is acknowledged: clients keep
            // their messages. Said loudly, once.
            tracing::error!(%error, "cannot start the session store thread");
        }
        Committer { inner, committed }
    }

    /// Queue `change`; returns its ticket.
    pub(crate) fn push(&self, change: Change) -> u64 {
        let mut queue = lock(&self.inner.queue);
        queue.changes.push(change);
        queue.last_ticket += 1;
        if queue.idle {
            self.inner.ready.notify_one();
        }
        queue.last_ticket
    }

    /// Keep what is pushed from now until the unit is dropped together.
    pub(crate) fn begin(&self) -> Unit<'_> {
        let mut queue = lock(&self.inner.queue);
        // Begun while another is open: it starts where that one did. Else
        // a unit ending inside another would let the commit boundary (the
        // oldest open start) fall between its changes: its effects
        // committed without its delivered mark, and after a crash the
        // delivery made them again.
        let start = match queue.open.keys().next() {
            Some(&oldest) => oldest,
            None => queue.last_ticket,
        };
        *queue.open.entry(start).or_default() += 1;
        Unit {
            inner: &self.inner,
            start,
        }
    }

    /// Why commits are failing (and being retried), if they are.
    pub(crate) fn failing(&self) -> Option<String> {
        lock(&self.inner.failing).clone()
    }

    /// The ticket of the last change pushed.
    pub(crate) fn pushed(&self) -> u64 {
        lock(&self.inner.queue).last_ticket
    }

    /// The highest ticket committed so far.
    pub(crate) fn committed(&self) -> u64 {
        *self.committed.borrow()
    }

    /// Wait until `ticket` is committed (forever, if the store stays
    /// down: nothing after it may reach a socket).
    pub(crate) async fn wait(&self, ticket: u64) {
        let mut committed = self.committed.clone();
        // Err: the thread ended (shutdown); nothing more will commit.
        if committed.wait_for(|done| *done >= ticket).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // The thread commits what is queued, then ends.
        // Under the lock: the thread is either waiting (and woken) or will
        // see `stop` before it waits.
        let _queue = lock(&self.inner.queue);
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.ready.notify_one();
    }
}

/// Told the sessions another node claimed.
pub(crate) type Fenced = Box<dyn Fn(Vec<SessionId>) + Send>;

fn run(
    inner: &Inner,
    store: &dyn SessionStore,
    metrics: &Metrics,
    committed: &watch::Sender<u64>,
    on_fenced: &Fenced,
) {
    loop {
        let (changes, ticket, made) = {
            let mut queue = lock(&inner.queue);
            while queue.committable() == 0 && !inner.stop.load(Ordering::SeqCst) {
                queue.idle = true;
                queue = inner
                    .ready
                    .wait(queue)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                queue.idle = false;
            }
            let count = queue.committable();
            if count == 0 {
                // Stopping, with nothing (more) that may be committed.
                return;
            }
            let ticket = queue.last_ticket - (queue.changes.len() - count) as u64;
            let changes: Vec<Change> = super::coalesce(queue.changes.drain(..count).collect());
            (changes, ticket, count)
        };
        let mut retry = RETRY_MIN;
        loop {
            let started = Instant::now();
            match store.commit(crate::registry::wall_ms(), &changes) {
                Ok(fenced) => {
                    if lock(&inner.failing).take().is_some() {
                        tracing::warn!(store = store.name(), "the session store is back");
                    }
                    if !fenced.is_empty() {
                        on_fenced(fenced);
                    }
                    metrics.inc(&metrics.store_commits);
                    // As the sessions made them (coalesced, fewer are written).
                    metrics.add(&metrics.store_changes, made as u64);
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    metrics.add(&metrics.store_commit_micros, micros);
                    metrics.store_commit_seconds.observe(micros);
                    break;
                }
                Err(error) => {
                    // Said once per outage (loudly: no ACK goes out meanwhile).
                    if lock(&inner.failing).replace(error.to_string()).is_none() {
                        tracing::error!(
                            store = store.name(),
                            %error,
                            "the session store fails: nothing is acknowledged until it is back"
                        );
                    }
                    metrics.inc(&metrics.store_errors);
                    if inner.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(retry);
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
        committed.send_replace(ticket);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use steadfast_core::SessionId;

    use super::*;
    use crate::sessions::{Retention, SavedSession, SessionStoreError, Swept};

    /// Records each commit's changes (as session id bytes).
    #[derive(Debug, Default)]
    struct Recording(Mutex<Vec<Vec<u8>>>);

    impl SessionStore for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }
        fn durable(&self) -> bool {
            true
        }
        fn load(&self, _: &SessionId) -> Result<Option<SavedSession>, SessionStoreError> {
            Ok(None)
        }
        fn claim(
            &self,
            _: &SessionId,
            _: crate::sessions::Claim,
        ) -> Result<Option<SavedSession>, SessionStoreError> {
            Ok(None)
        }
        fn commit(&self, _: u64, changes: &[Change]) -> Result<Vec<SessionId>, SessionStoreError> {
            let ids = changes
                .iter()
                .map(|c| match c {
                    Change::Remove { session } => session.0[0],
                    _ => 0,
                })
                .collect();
            lock(&self.0).push(ids);
            Ok(Vec::new())
        }
        fn sweep(
            &self,
            _: u64,
            _: Retention,
            _: &dyn Fn(&SessionId) -> bool,
        ) -> Result<Swept, SessionStoreError> {
            Ok(Swept::default())
        }
        fn count(&self) -> Result<usize, SessionStoreError> {
            Ok(0)
        }
        fn live_sessions(&self) -> Result<Vec<SessionId>, SessionStoreError> {
            Ok(Vec::new())
        }
    }

    fn change(byte: u8) -> Change {
        Change::Remove {
            session: SessionId([byte; 16]),
        }
    }

    /// Two units overlapping: the first ends while the second is open.
    /// Its effect and its mark are committed together (with the second's
    /// changes), never the effect alone.
    #[tokio::test]
    async fn a_unit_ending_inside_another_is_still_committed_whole() {
        let store = Arc::new(Recording::default());
        let committer = Committer::start(
            store.clone(),
            Arc::new(Metrics::default()),
            Box::new(|_| {}),
        );
        let first = committer.begin();
        let effect = committer.push(change(1));
        let second = committer.begin();
        let mark = committer.push(change(2));
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            committer.committed() < effect,
            "nothing of the first unit while the second is open"
        );
        let other = committer.push(change(3));
        drop(second);
        committer.wait(other).await;
        assert!(effect < mark && mark < other);
        let commits = lock(&store.0).clone();
        assert!(
            commits.iter().any(|c| c.contains(&1) && c.contains(&2)),
            "the effect and its mark in one commit: {commits:?}"
        );
    }

    #[tokio::test]
    async fn a_unit_is_committed_whole_and_in_order() {
        let store = Arc::new(Recording::default());
        let committer = Committer::start(
            store.clone(),
            Arc::new(Metrics::default()),
            Box::new(|_| {}),
        );
        let first = committer.push(change(1));
        committer.wait(first).await;
        let unit = committer.begin();
        let inside = committer.push(change(2));
        // Nothing of an open unit is committed, however long it stays open.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(committer.committed(), first);
        let more = committer.push(change(3));
        drop(unit);
        committer.wait(more).await;
        assert!(inside < more);
        let commits = lock(&store.0).clone();
        assert_eq!(commits.concat(), vec![1, 2, 3], "in order, once each");
        assert!(
            commits
                .iter()
                .any(|c| c.starts_with(&[2]) && c.contains(&3)),
            "2 and 3 (pushed while the unit was open) in one commit: {commits:?}"
        );
    }
}
