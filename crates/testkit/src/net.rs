//! Ports and a TCP proxy for tests that make a dependency appear later,
//! answer slowly, or go away for a while.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
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
    /// Whether the link to the upstream is up ([`Self::cut`]).
    link: watch::Sender<bool>,
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
        let (link, up) = watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*up.borrow() {
                    continue;
                }
                let mut up = up.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = up.wait_for(|up| !up) => {}
                        }
                    }
                });
            }
        });
        Self { addr, task, link }
    }

    /// The upstream goes away: open connections are closed, and new ones
    /// are closed as soon as they are accepted, until [`Self::restore`].
    pub fn cut(&self) {
        self.link.send_replace(false);
    }

    /// The upstream is back for new connections.
    pub fn restore(&self) {
        self.link.send_replace(true);
    }
}

/// A proxy on a free loopback port in front of the server of `url`
/// (`scheme://[user:pass@]host:port[/...]`), holding every new connection
/// for `delay`, and `url` pointed at it.
pub async fn delaying_proxy(url: &str, delay: Duration) -> (TcpProxy, String) {
    let authority = crate::brokers::authority_range(url);
    let upstream = tokio::net::lookup_host(&url[authority.clone()])
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("cannot resolve the host of {url}"));
    let proxy = TcpProxy::start_delayed(([127, 0, 0, 1], 0).into(), upstream, delay).await;
    let through = format!(
        "{}{}{}",
        &url[..authority.start],
        proxy.addr,
        &url[authority.end..]
    );
    (proxy, through)
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
