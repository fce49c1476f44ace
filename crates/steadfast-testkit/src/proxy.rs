//! A seeded TCP proxy that cuts connections at random byte offsets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use steadfast_core::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards loopback TCP to `upstream`; connection `i` is cut (both
/// directions dropped, mid-frame as often as not) after a number of bytes
/// drawn uniformly from `1..=2 * mean_bytes` by a generator seeded with
/// `seed` and `i`. The same seed cuts the same connections at the same
/// offsets.
#[derive(Debug)]
pub struct ChaosProxy {
    addr: SocketAddr,
    cuts: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl ChaosProxy {
    /// Listen on a free loopback port.
    pub async fn start(upstream: SocketAddr, seed: u64, mean_bytes: u64) -> ChaosProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let cuts = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept(
            listener,
            upstream,
            seed,
            mean_bytes.max(1),
            cuts.clone(),
            connections.clone(),
        ));
        ChaosProxy {
            addr,
            cuts,
            connections,
            task,
        }
    }

    /// `ws://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    seed: u64,
    mean: u64,
    cuts: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let index = connections.fetch_add(1, Ordering::Relaxed);
        let mut rng = Rng::new(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let budget = 1 + rng.up_to(2 * mean - 1);
        let cuts = cuts.clone();
        tasks.spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let remaining = Arc::new(AtomicU64::new(budget));
            let (cut_tx, cut_rx) = watch::channel(false);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pipe(
                client_read,
                server_write,
                remaining.clone(),
                cut_tx.clone(),
                cut_rx.clone(),
            );
            let down = pipe(server_read, client_write, remaining, cut_tx, cut_rx.clone());
            let (cut_up, cut_down) = tokio::join!(up, down);
            if cut_up || cut_down {
                cuts.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Reap finished connections.
        while tasks.try_join_next().is_some() {}
    }
}

/// Copy until EOF or the budget runs out (then signal the cut). Returns
/// whether this direction made the cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    remaining: Arc<AtomicU64>,
    cut: watch::Sender<bool>,
    mut cut_seen: watch::Receiver<bool>,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return false;
                }
                Ok(n) => n,
            },
            _ = cut_seen.changed() => return false,
        };
        // Take up to `n` bytes of the budget.
        let mut allowed = 0;
        let _ = remaining.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
            allowed = left.min(n as u64);
            Some(left - allowed)
        });
        let allowed = allowed as usize;
        if allowed > 0 && to.write_all(&buf[..allowed]).await.is_err() {
            return false;
        }
        if allowed < n || remaining.load(Ordering::Acquire) == 0 {
            // Out of budget: drop both directions without a goodbye.
            let _ = cut.send(true);
            return true;
        }
    }
}
