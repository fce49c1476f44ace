//! The proxy's sockets, below the WebSocket layer: the bytes of a request
//! head already read, handed back before the rest; and a byte budget that
//! cuts a connection at a seeded offset, mid-frame as often as not.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Bytes a connection may still carry (both ways, both sockets) before it
/// is cut. Shared by the connection's two sockets.
#[derive(Debug)]
pub(crate) struct Budget {
    left: AtomicU64,
    fired: AtomicBool,
    /// Woken once, when the budget runs out.
    pub(crate) cut: Notify,
}

impl Budget {
    pub(crate) fn new(bytes: u64) -> Arc<Budget> {
        Arc::new(Budget {
            left: AtomicU64::new(bytes),
            fired: AtomicBool::new(false),
            cut: Notify::new(),
        })
    }

    /// Take up to `n` bytes; fewer means the budget ran out here.
    fn take(&self, n: usize) -> usize {
        let mut allowed = 0;
        let _ = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                allowed = left.min(n as u64);
                Some(left - allowed)
            });
        // `allowed` ≤ `n`, a usize.
        usize::try_from(allowed).unwrap_or(n)
    }

    fn fire(&self) {
        if !self.fired.swap(true, Ordering::AcqRel) {
            self.cut.notify_one();
        }
    }

    /// Whether the budget ran out.
    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}

/// A socket with bytes to read first (the request head the proxy read to
/// route the connection) and, under `--cut-bytes`, a write budget.
#[derive(Debug)]
pub(crate) struct Wire<S> {
    inner: S,
    prefix: Vec<u8>,
    at: usize,
    budget: Option<Arc<Budget>>,
}

impl<S> Wire<S> {
    pub(crate) fn new(inner: S, prefix: Vec<u8>, budget: Option<Arc<Budget>>) -> Wire<S> {
        Wire {
            inner,
            prefix,
            at: 0,
            budget,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "cut by --cut-bytes")
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(budget) = &this.budget else {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        };
        if budget.fired() {
            return Poll::Ready(Err(cut_error()));
        }
        // Reserve before writing: what is not written is given back.
        let allowed = budget.take(data.len());
        if allowed == 0 {
            budget.fire();
            return Poll::Ready(Err(cut_error()));
        }
        match Pin::new(&mut this.inner).poll_write(cx, &data[..allowed]) {
            Poll::Ready(Ok(written)) => {
                budget
                    .left
                    .fetch_add((allowed - written) as u64, Ordering::AcqRel);
                if written < data.len() && budget.left.load(Ordering::Acquire) == 0 {
                    // The last bytes before the cut went out: flush them,
                    // then nothing more.
                    let _ = Pin::new(&mut this.inner).poll_flush(cx);
                    budget.fire();
                }
                Poll::Ready(Ok(written))
            }
            other => {
                budget.left.fetch_add(allowed as u64, Ordering::AcqRel);
                other
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The end of an HTTP request head, if `bytes` holds all of it.
pub(crate) fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_prefix_is_read_first_and_the_budget_cuts_mid_write() {
        let (near, mut far) = tokio::io::duplex(1024);
        let budget = Budget::new(5);
        let mut wire = Wire::new(near, b"head".to_vec(), Some(budget.clone()));
        far.write_all(b"-rest").await.expect("write");
        let mut got = [0u8; 9];
        wire.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"head-rest");

        assert!(wire.write_all(b"0123456789").await.is_err(), "cut");
        assert!(budget.fired());
        drop(wire);
        let mut seen = Vec::new();
        far.read_to_end(&mut seen).await.expect("read");
        assert_eq!(seen, b"01234", "exactly the budget went out");
    }

    #[test]
    fn a_request_head_ends_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nxx"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }
}
