//! Receipt numbers and their outcomes, shared by `Client::send`, the
//! [`Receipt`](crate::Receipt)s and the driver.
//!
//! One slot per receipt, in number order, from the oldest unsettled one:
//! a message whose receipt is dropped unawaited costs no allocation,
//! channel or hash (a oneshot and a map entry per receipt were 15% of a
//! pipelined client's time), only a flag set under the lock. The driver
//! settles outcomes in batches under one lock. Settled outcomes whose
//! receipts are still held move to a map, so a receipt kept for ever
//! pins nothing but itself.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::client::Delivery;
use crate::Error;

/// The outcome a receipt resolves to.
pub(crate) type Outcome = Result<Delivery, Error>;

#[derive(Debug)]
struct Slot {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
    /// A `Receipt` still refers to this slot.
    held: bool,
}

#[derive(Debug)]
pub(crate) struct Slots {
    /// The receipt number of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot>,
    /// Settled slots below `base` whose receipts are still held: a
    /// receipt kept and never awaited must not pin every later slot.
    kept: HashMap<u64, Slot>,
    /// The driver is gone: what is unsettled now never will be.
    ended: bool,
}

/// The ledger. Its lock also orders sends (see `Client::send`).
#[derive(Debug)]
pub(crate) struct Ledger(Mutex<Slots>);

impl Ledger {
    pub(crate) fn new() -> Ledger {
        Ledger(Mutex::new(Slots {
            base: 1,
            slots: VecDeque::new(),
            kept: HashMap::new(),
            ended: false,
        }))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Slots> {
        crate::rt::lock(&self.0)
    }

    /// Number receipts from `next` on (the driver, before any send: the
    /// restored messages keep the numbers below).
    pub(crate) fn start_at(&self, next: u64) {
        let mut slots = self.lock();
        debug_assert!(slots.slots.is_empty());
        slots.base = next;
    }

    /// Record outcomes; wake the receipts awaiting them. Numbers without
    /// a slot (restored messages, or settled twice) are ignored.
    pub(crate) fn settle(&self, outcomes: impl IntoIterator<Item = (u64, Outcome)>) {
        let mut slots = self.lock();
        for (id, outcome) in outcomes {
            let Some(slot) = slots.get_mut(id) else {
                continue;
            };
            if slot.outcome.is_some() {
                continue;
            }
            if slot.held {
                slot.outcome = Some(outcome);
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            } else {
                // Nobody will look: mark it settled so it can go.
                slot.outcome = Some(Err(Error::Closed));
            }
        }
        slots.trim();
    }

    /// The driver ended: every unsettled receipt resolves to `ERR_CLOSED`.
    pub(crate) fn end(&self) {
        let mut slots = self.lock();
        slots.ended = true;
        for slot in &mut slots.slots {
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }

    /// The receipt `id`'s outcome, or `Pending` (woken when it settles).
    pub(crate) fn poll(&self, id: u64, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut slots = self.lock();
        let ended = slots.ended;
        let Some(slot) = slots.get_mut(id) else {
            return Poll::Ready(Err(Error::Closed));
        };
        if let Some(outcome) = slot.outcome.take() {
            // Taken once; a second poll after Ready is a caller's bug
            // and sees a closed client rather than a panic.
            slot.outcome = Some(Err(Error::Closed));
            return Poll::Ready(outcome);
        }
        if ended {
            return Poll::Ready(Err(Error::Closed));
        }
        match &mut slot.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The receipt `id` was dropped (or consumed).
    pub(crate) fn release(&self, id: u64) {
        let mut slots = self.lock();
        if slots.kept.remove(&id).is_some() {
            return;
        }
        if let Some(slot) = slots.get_mut(id) {
            slot.held = false;
            slot.waker = None;
        }
        slots.trim();
    }
}

impl Slots {
    /// Open a slot for the next receipt; its number.
    pub(crate) fn open(&mut self) -> u64 {
        let id = self.base + self.slots.len() as u64;
        self.slots.push_back(Slot {
            outcome: None,
            waker: None,
            held: true,
        });
        id
    }

    /// Close the last slot opened, whose send never reached the driver.
    pub(crate) fn abandon(&mut self, id: u64) {
        if let Some(slot) = self.get_mut(id) {
            slot.held = false;
            slot.outcome = Some(Err(Error::Closed));
        }
        self.trim();
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Slot> {
        match id.checked_sub(self.base) {
            Some(offset) => self.slots.get_mut(usize::try_from(offset).ok()?),
            None => self.kept.get_mut(&id),
        }
    }

    /// Move the settled slots off the front: forgotten if their receipt
    /// is gone, set aside in `kept` if it is still held. The queue then
    /// spans only unsettled messages (bounded by the outbox) and what
    /// follows them.
    fn trim(&mut self) {
        while self
            .slots
            .front()
            .is_some_and(|slot| slot.outcome.is_some())
        {
            if let Some(slot) = self.slots.pop_front() {
                if slot.held {
                    self.kept.insert(self.base, slot);
                }
            }
            self.base += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::counting_waker as waker;

    fn open(ledger: &Ledger, n: usize) -> Vec<u64> {
        let mut slots = ledger.lock();
        (0..n).map(|_| slots.open()).collect()
    }

    #[test]
    fn an_outcome_settled_before_the_poll_is_kept_for_it() {
        let ledger = Ledger::new();
        ledger.start_at(7);
        let ids = open(&ledger, 2);
        assert_eq!(ids, [7, 8]);
        ledger.settle([(8, Ok(Delivery::Sent)), (7, Ok(Delivery::Acked))]);
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(matches!(
            ledger.poll(7, &mut cx),
            Poll::Ready(Ok(Delivery::Acked))
        ));
        assert!(matches!(
            ledger.poll(8, &mut cx),
            Poll::Ready(Ok(Delivery::Sent))
        ));
        ledger.release(7);
        ledger.release(8);
        assert!(ledger.lock().slots.is_empty(), "settled and released: gone");
    }

    #[test]
    fn a_waiting_receipt_is_woken_once_with_its_own_outcome() {
        let ledger = Ledger::new();
        let ids = open(&ledger, 3);
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(ledger.poll(ids[1], &mut cx).is_pending());
        ledger.settle([(ids[0], Ok(Delivery::Acked))]);
        assert_eq!(count.get(), 0, "another receipt settled");
        ledger.settle([(
            ids[1],
            Err(Error::QueueFull {
                messages: 1,
                bytes: 2,
            }),
        )]);
        assert_eq!(count.get(), 1);
        assert!(matches!(
            ledger.poll(ids[1], &mut cx),
            Poll::Ready(Err(Error::QueueFull { .. }))
        ));
    }

    #[test]
    fn dropped_receipts_go_once_settled_and_in_order() {
        let ledger = Ledger::new();
        let ids = open(&ledger, 4);
        // Dropped unsettled: kept until the driver settles them.
        ledger.release(ids[0]);
        ledger.release(ids[2]);
        assert_eq!(ledger.lock().slots.len(), 4);
        ledger.settle([(ids[2], Ok(Delivery::Acked))]);
        assert_eq!(ledger.lock().slots.len(), 4, "the oldest is still open");
        ledger.settle([(ids[0], Ok(Delivery::Acked))]);
        // ids[1] is held and unsettled: it and what follows stay.
        assert_eq!(ledger.lock().base, ids[1]);
        ledger.settle([(ids[1], Ok(Delivery::Acked)), (ids[3], Ok(Delivery::Acked))]);
        ledger.release(ids[1]);
        ledger.release(ids[3]);
        let slots = ledger.lock();
        assert!(slots.slots.is_empty() && slots.kept.is_empty());
        assert_eq!(slots.base, ids[3] + 1);
    }

    #[test]
    fn a_receipt_kept_unawaited_does_not_pin_later_slots() {
        let ledger = Ledger::new();
        let first = open(&ledger, 1)[0];
        ledger.settle([(first, Ok(Delivery::Acked))]);
        for _ in 0..1000 {
            let id = open(&ledger, 1)[0];
            ledger.settle([(id, Ok(Delivery::Acked))]);
            ledger.release(id);
        }
        {
            let slots = ledger.lock();
            assert_eq!(slots.slots.len(), 0, "settled slots leave the queue");
            assert_eq!(slots.kept.len(), 1, "only the held one is kept");
        }
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(matches!(
            ledger.poll(first, &mut cx),
            Poll::Ready(Ok(Delivery::Acked))
        ));
        ledger.release(first);
        assert!(ledger.lock().kept.is_empty());
    }

    #[test]
    fn the_driver_ending_resolves_every_unsettled_receipt_as_closed() {
        let ledger = Ledger::new();
        let ids = open(&ledger, 2);
        ledger.settle([(ids[0], Ok(Delivery::Acked))]);
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(ledger.poll(ids[1], &mut cx).is_pending());
        ledger.end();
        assert_eq!(count.get(), 1);
        assert!(matches!(
            ledger.poll(ids[0], &mut cx),
            Poll::Ready(Ok(Delivery::Acked))
        ));
        assert!(matches!(
            ledger.poll(ids[1], &mut cx),
            Poll::Ready(Err(Error::Closed))
        ));
        // Unknown numbers (restored messages, long gone ones) are ignored.
        ledger.settle([(0, Ok(Delivery::Acked)), (999, Ok(Delivery::Acked))]);
        let slots = ledger.lock();
        assert_eq!((slots.slots.len(), slots.kept.len()), (1, 1));
    }

    #[test]
    fn an_abandoned_send_leaves_nothing_behind() {
        let ledger = Ledger::new();
        let id = {
            let mut slots = ledger.lock();
            let id = slots.open();
            slots.abandon(id);
            id
        };
        let slots = ledger.lock();
        assert!(slots.slots.is_empty());
        assert_eq!(slots.base, id + 1, "the number is not reused");
    }
}
