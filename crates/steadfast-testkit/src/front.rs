//! A TCP front that a test switches between server nodes, as a load
//! balancer would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// Forwards each new loopback TCP connection to the current upstream;
/// [`Front::switch`] changes it for new connections, [`Front::cut`] drops
/// every open one (both directions, at once).
#[derive(Debug)]
pub struct Front {
    addr: SocketAddr,
    shared: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    open: Vec<AbortHandle>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panicking forwarder leaves the list consistent (one push or drain).
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Front {
    /// Listen on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Front {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(Mutex::new(State {
            upstream,
            open: Vec::new(),
        }));
        let task = tokio::spawn(accept(listener, shared.clone()));
        Front { addr, shared, task }
    }

    /// `ws://127.0.0.1:PORT` of the front.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// New connections go to `upstream` from now on.
    pub fn switch(&self, upstream: SocketAddr) {
        lock(&self.shared).upstream = upstream;
    }

    /// Drop every open connection.
    pub fn cut(&self) {
        for open in lock(&self.shared).open.drain(..) {
            open.abort();
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Mutex<State>>) {
    while let Ok((client, _)) = listener.accept().await {
        let upstream = lock(&shared).upstream;
        let forward = tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let mut client = client;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
        let mut state = lock(&shared);
        state.open.retain(|open| !open.is_finished());
        state.open.push(forward.abort_handle());
    }
}
