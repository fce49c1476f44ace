use std::net::SocketAddr;

use steadfast_server::{Echo, Handler, Server, ServerConfig, ServerHandle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The reference server on `127.0.0.1:0`, running on the current tokio
/// runtime until [`TestServer::stop`] or drop.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    url: String,
    handle: ServerHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// The echo server with default settings on a free loopback port.
    pub async fn start() -> std::io::Result<TestServer> {
        TestServer::start_with(ServerConfig::default(), Echo).await
    }

    /// A server with these settings and this application on a free
    /// loopback port.
    pub async fn start_with(
        config: ServerConfig,
        handler: impl Handler,
    ) -> std::io::Result<TestServer> {
        TestServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config, handler).await
    }

    /// A server on `addr` (e.g. the port of a server that was stopped, to
    /// restart it).
    pub async fn start_on(
        loopback: SocketAddr,
        config: ServerConfig,
        handler: impl Handler,
    ) -> std::io::Result<TestServer> {
        let server = Server::builder()
            .config(config)
            .handler(handler)
            .bind(loopback)
            .await?;
        let addr = server.local_addr();
        let url = server.url();
        let handle = server.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            // A dropped sender stops the server too.
            let _ = stopped.await;
        }));
        Ok(TestServer {
            addr,
            url,
            handle,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's handle: peers, metrics, the fault log.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// `ws://127.0.0.1:PORT`, or `wss://` when TLS is on.
    pub fn url(&self) -> String {
        self.url.clone()
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
