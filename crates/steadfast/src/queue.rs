//! An unbounded many-to-one queue between tasks, made for bursts.
//!
//! futures' unbounded channel allocates a node per item and wakes the
//! receiver per item; with one item per message in each direction that was
//! a fifth of a client's CPU at 64 B. Here items go into one `VecDeque`
//! under a lock, the receiver takes all of them at once (one lock per
//! burst, then none per item), and a sender wakes the receiver only when
//! the queue goes from empty to not empty (the receiver registers its waker
//! only after finding it empty).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    items: VecDeque<T>,
    /// The receiver, waiting: set only while `items` is empty.
    waker: Option<Waker>,
    senders: usize,
    /// The receiver is gone or closed the queue: sends fail.
    closed: bool,
}

struct Chan<T> {
    state: Mutex<State<T>>,
}

impl<T> Chan<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every change is a single push, take or flag.
        crate::rt::lock(&self.state)
    }
}

/// Create a queue.
pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        state: Mutex::new(State {
            items: VecDeque::new(),
            waker: None,
            senders: 1,
            closed: false,
        }),
    });
    (
        Sender {
            chan: Arc::clone(&chan),
        },
        Receiver {
            chan,
            taken: VecDeque::new(),
            ended: false,
        },
    )
}

/// The sending side; clone it for more senders.
pub(crate) struct Sender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Sender<T> {
    /// Queue `item`; it comes back if the receiver is gone or closed.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let waker = {
            let mut state = self.chan.lock();
            if state.closed {
                return Err(item);
            }
            state.items.push_back(item);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.lock().senders += 1;
        Sender {
            chan: Arc::clone(&self.chan),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.chan.lock();
            state.senders -= 1;
            if state.senders == 0 {
                state.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("queue::Sender")
    }
}

/// The receiving side.
pub(crate) struct Receiver<T> {
    chan: Arc<Chan<T>>,
    /// Items taken from the queue, not yet returned.
    taken: VecDeque<T>,
    /// `None` was returned: every sender is gone and nothing is left.
    ended: bool,
}

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and the queue is
    /// empty (or it was closed and is empty).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.take(Some(cx.waker()))
    }

    /// The next item if there is one now; `Ready(None)` at the end.
    pub(crate) fn try_next(&mut self) -> Poll<Option<T>> {
        self.take(None)
    }

    /// Wait for the next item (see [`Receiver::poll_next`]).
    pub(crate) async fn next(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Refuse further sends; what was queued can still be taken.
    pub(crate) fn close(&mut self) {
        self.chan.lock().closed = true;
    }

    fn take(&mut self, waker: Option<&Waker>) -> Poll<Option<T>> {
        if let Some(item) = self.taken.pop_front() {
            return Poll::Ready(Some(item));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let mut state = self.chan.lock();
        if state.items.is_empty() {
            if state.senders == 0 || state.closed {
                drop(state);
                self.ended = true;
                return Poll::Ready(None);
            }
            if let Some(waker) = waker {
                match &mut state.waker {
                    Some(old) if old.will_wake(waker) => {}
                    slot => *slot = Some(waker.clone()),
                }
            }
            return Poll::Pending;
        }
        // Everything queued at once; the (empty) buffer goes back.
        std::mem::swap(&mut state.items, &mut self.taken);
        drop(state);
        Poll::Ready(self.taken.pop_front())
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let left = {
            let mut state = self.chan.lock();
            state.closed = true;
            state.waker = None;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock (an item may hold a sender).
        drop(left);
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("queue::Receiver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::counting_waker as counter;
    use std::task::Wake;

    #[test]
    fn items_come_out_in_order_and_a_burst_wakes_once() {
        let (tx, mut rx) = unbounded();
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(rx.poll_next(&mut cx), Poll::Pending);
        for i in 0..5 {
            tx.send(i).expect("open");
        }
        assert_eq!(count.get(), 1, "one wake for the burst");
        for i in 0..5 {
            assert_eq!(rx.poll_next(&mut cx), Poll::Ready(Some(i)));
        }
        assert_eq!(rx.poll_next(&mut cx), Poll::Pending);
        tx.send(5).expect("open");
        assert_eq!(count.get(), 2, "woken again once empty");
        assert_eq!(rx.try_next(), Poll::Ready(Some(5)));
        assert_eq!(rx.try_next(), Poll::Pending);
    }

    #[test]
    fn the_end_comes_after_the_last_item_of_the_last_sender() {
        let (tx, mut rx) = unbounded();
        let tx2 = tx.clone();
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        tx.send(1).expect("open");
        drop(tx);
        tx2.send(2).expect("open");
        assert_eq!(rx.poll_next(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(rx.poll_next(&mut cx), Poll::Ready(Some(2)));
        assert_eq!(rx.poll_next(&mut cx), Poll::Pending);
        drop(tx2);
        assert_eq!(count.get(), 1, "the last sender's drop wakes");
        assert_eq!(rx.poll_next(&mut cx), Poll::Ready(None));
        assert_eq!(rx.poll_next(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn sends_fail_once_the_receiver_closed_or_went() {
        let (tx, mut rx) = unbounded();
        tx.send(1).expect("open");
        rx.close();
        assert_eq!(tx.send(2), Err(2));
        assert_eq!(
            rx.try_next(),
            Poll::Ready(Some(1)),
            "queued before the close"
        );
        assert_eq!(rx.try_next(), Poll::Ready(None));
        let (tx, rx) = unbounded();
        drop(rx);
        assert_eq!(tx.send(3), Err(3));
    }

    #[test]
    fn items_cross_threads_without_loss_or_reordering() {
        const EACH: usize = 20_000;
        let (tx, mut rx) = unbounded();
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        tx.send((t, i)).expect("open");
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0usize; 3];
        // Block on the queue: park until woken.
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut got = 0;
        loop {
            match rx.poll_next(&mut cx) {
                Poll::Ready(Some((t, i))) => {
                    assert_eq!(i, next[t], "thread {t} in order");
                    next[t] += 1;
                    got += 1;
                }
                Poll::Ready(None) => break,
                Poll::Pending => std::thread::park(),
            }
        }
        for thread in threads {
            thread.join().expect("sender thread");
        }
        assert_eq!(got, 3 * EACH);
    }
}
