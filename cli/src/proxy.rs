//! A loopback TCP proxy that a harness controls: it forwards every connection to its target until
//! told to cut, when it drops every connection it carries and refuses new ones for a while, as a
//! failed network link would. `pulsaga chaos` puts one between the platform's processes and
//! PostgreSQL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The proxy's address; dropping it stops accepting and drops every connection.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    link: Arc<Link>,
    accepting: tokio::task::JoinHandle<()>,
}

/// Whether the link is cut, and a counter each cut bumps to drop the connections of before.
#[derive(Debug)]
struct Link {
    cut: AtomicBool,
    cuts: watch::Sender<u64>,
}

impl Proxy {
    /// Listens on a free loopback port, forwarding to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let link = Arc::new(Link {
            cut: AtomicBool::new(false),
            cuts: watch::channel(0).0,
        });
        let accepting = tokio::spawn(accept(listener, target, link.clone()));
        Ok(Proxy {
            address,
            link,
            accepting,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Drops every connection it carries and refuses new ones for `outage`, then forwards again.
    pub fn cut(&self, outage: Duration) {
        self.link.cut.store(true, Ordering::SeqCst);
        self.link.cuts.send_modify(|cuts| *cuts += 1);
        let link = self.link.clone();
        tokio::spawn(async move {
            tokio::time::sleep(outage).await;
            link.cut.store(false, Ordering::SeqCst);
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.link.cuts.send_modify(|cuts| *cuts += 1);
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, link: Arc<Link>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if link.cut.load(Ordering::SeqCst) {
            // Refused: closed at once, as a connection to a host that is gone is.
            drop(inbound);
            continue;
        }
        let cuts = link.cuts.subscribe();
        tokio::spawn(forward(inbound, target, cuts));
    }
}

/// Carries one connection both ways until either side closes it or the link is cut.
async fn forward(mut inbound: TcpStream, target: SocketAddr, mut cuts: watch::Receiver<u64>) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cuts.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that echoes what it reads.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut answer = vec![0; 4];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn a_cut_drops_connections_and_refuses_new_ones_until_the_link_is_back() {
        let proxy = Proxy::start(echo().await).await.expect("proxy");
        let mut before = TcpStream::connect(proxy.address()).await.expect("connect");
        assert_eq!(round_trip(&mut before).await.expect("forwarded"), b"ping");

        proxy.cut(Duration::from_millis(300));
        assert!(
            round_trip(&mut before).await.is_err(),
            "the connection was dropped"
        );
        let mut during = TcpStream::connect(proxy.address()).await.expect("accepted");
        assert!(round_trip(&mut during).await.is_err(), "and closed at once");

        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut after = TcpStream::connect(proxy.address()).await.expect("connect");
        assert_eq!(
            round_trip(&mut after).await.expect("forwarded again"),
            b"ping"
        );
    }
}
