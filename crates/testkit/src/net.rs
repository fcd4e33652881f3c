//! Ports and a TCP proxy for tests that make a dependency appear later, or
//! answer slowly.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("no free port on 127.0.0.1")
}

/// Forwards every connection on `listen` to `upstream` until dropped.
#[derive(Debug)]
pub struct TcpProxy {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> Self {
        Self::start_delayed(listen, upstream, Duration::ZERO).await
    }

    /// Like [`Self::start`], but holds every new connection for `delay`
    /// before forwarding it: a dependency that accepts at once and answers
    /// its first bytes late, as a loaded broker does.
    pub async fn start_delayed(listen: SocketAddr, upstream: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind(listen).await.expect("proxy cannot bind");
        let addr = listener.local_addr().expect("proxy has no address");
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
