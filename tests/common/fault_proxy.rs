//! A TCP proxy in front of a real server that can withhold one response: the request
//! reaches the server (and takes effect there), its answer never reaches the client,
//! which times out and retries. What a lost response on a real network does to a
//! write that landed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Shared {
    /// The next request containing these bytes has its response withheld.
    armed: Mutex<Option<Vec<u8>>>,
    withheld: AtomicUsize,
}

/// The proxy; its accept loop stops on drop (open connections end with their peers).
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, s.clone()));
            }
        });
        FaultProxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The response to the next request whose bytes contain `request_start` (say
    /// `PUT /bucket/key`) is withheld: the connection stays open and silent.
    pub fn withhold_next_response(&self, request_start: &str) {
        *self.shared.armed.lock().unwrap() = Some(request_start.as_bytes().to_vec());
    }

    /// Responses withheld so far.
    pub fn withheld(&self) -> usize {
        self.shared.withheld.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let silent = Arc::new(AtomicBool::new(false));
    let s = silent.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            {
                let mut armed = shared.armed.lock().unwrap();
                let hit = armed
                    .as_ref()
                    .is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == p.as_slice()));
                if hit {
                    *armed = None;
                    s.store(true, Ordering::SeqCst);
                    shared.withheld.fetch_add(1, Ordering::SeqCst);
                }
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if silent.load(Ordering::SeqCst) {
                continue;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}
