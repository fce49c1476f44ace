//! A value that tasks can wait on for changes (a tiny `watch` channel that
//! needs no runtime).

use std::sync::{Mutex, MutexGuard};
use std::task::{Poll, Waker};

#[derive(Debug)]
struct Inner<T> {
    version: u64,
    value: T,
    wakers: Vec<Waker>,
}

/// The shared cell.
#[derive(Debug)]
pub(crate) struct Watch<T> {
    inner: Mutex<Inner<T>>,
}

impl<T: Clone> Watch<T> {
    pub(crate) fn new(value: T) -> Watch<T> {
        Watch {
            inner: Mutex::new(Inner {
                version: 0,
                value,
                wakers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        crate::rt::lock(&self.inner)
    }

    /// Replace the value and wake every waiter.
    pub(crate) fn set(&self, value: T) {
        let wakers = {
            let mut inner = self.lock();
            inner.version += 1;
            inner.value = value;
            std::mem::take(&mut inner.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// The value and its version.
    pub(crate) fn get(&self) -> (u64, T) {
        let inner = self.lock();
        (inner.version, inner.value.clone())
    }

    /// Wait until the version differs from `seen`; the new version and value.
    pub(crate) async fn changed(&self, seen: u64) -> (u64, T) {
        futures::future::poll_fn(|cx| {
            let mut inner = self.lock();
            if inner.version != seen {
                return Poll::Ready((inner.version, inner.value.clone()));
            }
            if !inner.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                inner.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
