use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The reference server on `127.0.0.1:0`, running on the current tokio
/// runtime until [`TestServer::stop`] or drop.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Bind a free loopback port and start serving.
    pub async fn start() -> std::io::Result<TestServer> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = steadfast_server::Server::bind(loopback).await?;
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            // A dropped sender stops the server too.
            let _ = stopped.await;
        }));
        Ok(TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Shut the server down gracefully and wait until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
