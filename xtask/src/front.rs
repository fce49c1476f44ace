//! The demo's load balancer: a TCP front on loopback that forwards each
//! new connection to the current upstream node.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub(crate) struct Front {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
}

impl Front {
    pub(crate) fn start(upstream: SocketAddr) -> Result<Front, String> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("front: cannot bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let upstream = Arc::new(Mutex::new(upstream));
        let current = upstream.clone();
        // Ends with the process (the demo's): an accept loop on loopback.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let to = *current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                std::thread::spawn(move || forward(client, to));
            }
        });
        Ok(Front { addr, upstream })
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// New connections go to `upstream`.
    pub(crate) fn switch(&self, upstream: SocketAddr) {
        *self
            .upstream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = upstream;
    }
}

fn forward(client: TcpStream, to: SocketAddr) {
    let Ok(server) = TcpStream::connect(to) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_in), Ok(server_in)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pipe(client_in, server));
    pipe(server_in, client);
    let _ = up.join();
}

/// Copy until either side ends; then end both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
