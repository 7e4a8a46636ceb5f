//! What every hostile test stands on: the node's timeouts and the bounds an offender is
//! closed within, a watch for panics anywhere in the node, the harness of one node and one
//! good stream with the checks every test ends with, and cases run concurrently.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use livesnap::node::Node;
use livesnap::snapshot::stats::StreamStats;

use crate::common::raw::RawClient;
use crate::common::*;

/// start_server's `handshake_timeout_secs` and `idle_timeout_secs`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// An offence refused on sight is closed well before any timeout could fire.
pub const PROMPT: Duration = Duration::from_secs(2);
/// No offender may hold its connection longer than this.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(10);

pub const GOOD: &str = "good";
pub const GOOD_FIXTURE: &str = "baseline_640x360_gop1s.flv";

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// ---- panics anywhere in the node -------------------------------------------------------

/// Panics raised outside this file and its harness: in the node, its dependencies or std.
/// Connection tasks and pool workers catch theirs, so a hook is the only way to see them.
static NODE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn watch_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let from_tests = info
                .location()
                .is_some_and(|l| l.file().starts_with("tests/") || l.file().contains("/tests/"));
            if !from_tests {
                let mut p = NODE_PANICS.lock().unwrap_or_else(|e| e.into_inner());
                p.push(info.to_string());
            }
            previous(info);
        }));
    });
}

pub fn assert_no_node_panic() {
    let p = NODE_PANICS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(p.is_empty(), "the node panicked: {p:#?}");
}

// ---- one node, one good stream ---------------------------------------------------------

pub struct Harness {
    pub server: TestServer,
    good: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// Starts a node and the good publisher (the fixture at 4× real time, about 3 s).
    pub async fn start() -> Harness {
        Harness::start_with("").await
    }

    /// [`Harness::start`] with `extra` config after the default rules (a `[limits]` table).
    pub async fn start_with(extra: &str) -> Harness {
        watch_panics();
        let server = start_server(&format!("{DEFAULT_RULES}\n{extra}")).await;
        let good = tokio::spawn(publish_fixture_to(
            server.rtmp,
            "live",
            GOOD,
            GOOD_FIXTURE,
            4.0,
        ));
        Harness { server, good }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.rtmp
    }

    pub fn node(&self) -> Arc<Node> {
        self.server.node().clone()
    }

    /// The checks every test ends with; `others` are the objects offenders were expected
    /// to store (valid snapshots of streams that kept working).
    pub async fn finish(self, others: &[String]) {
        let Harness { mut server, good } = self;
        tokio::time::timeout(Duration::from_secs(30), good)
            .await
            .expect("good stream finished within 30 s")
            .expect("good stream published");

        let addr = server.rtmp;
        let tc_url = format!("rtmp://{addr}/live");
        let (p, outcome) = Publisher::connect(addr, &tc_url, "live", "after").await;
        assert_eq!(
            outcome,
            PublishOutcome::Accepted,
            "a fresh publish after the offenders"
        );
        p.finish().await;

        let node = server.node().clone();
        assert!(
            wait_for(Duration::from_secs(5), || node.registry.is_empty()).await,
            "names still held: {:?}",
            node.registry
                .list()
                .iter()
                .map(|s| s.id.to_string())
                .collect::<Vec<_>>()
        );
        assert_no_node_panic();
        assert!(server.stop().await, "shutdown finished in time");

        let mut want = snapshot_keys(GOOD, 3);
        want.extend_from_slice(others);
        want.sort();
        assert_eq!(list_files(&server.root()), want);
        for i in 1..=3 {
            let jpeg = std::fs::read(server.root().join(format!("live/{GOOD}/{i}.jpg"))).unwrap();
            let (w, h, _) = decode_jpeg(&jpeg);
            assert_eq!((w, h), (640, 360), "good snapshot {i}");
        }
    }
}

pub fn is_live(node: &Node, stream: &str) -> bool {
    node.registry.list().iter().any(|s| s.id.stream == stream)
}

pub fn stats_of(node: &Node, stream: &str) -> Arc<StreamStats> {
    let live = node.registry.list();
    let st = live.iter().find(|s| s.id.stream == stream);
    st.unwrap_or_else(|| panic!("{stream} is not live"))
        .stats
        .clone()
}

pub type Case = Pin<Box<dyn Future<Output = ()> + Send>>;

pub fn case(f: impl Future<Output = ()> + Send + 'static) -> Case {
    Box::pin(f)
}

/// Runs the cases concurrently, each in its own task; reports every failure by name.
pub async fn run_cases(cases: Vec<(String, Case)>) {
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(name, f)| (name, tokio::spawn(f)))
        .collect();
    let mut failed = Vec::new();
    for (name, h) in handles {
        if let Err(e) = h.await {
            failed.push(format!("{name}: {e}"));
        }
    }
    assert!(failed.is_empty(), "failed cases: {failed:#?}");
}

pub async fn expect_open(c: &mut RawClient, what: &str) {
    let closed = c.closed_within(Duration::from_millis(300)).await;
    assert!(closed.is_none(), "{what}: the server closed the connection");
}

/// Deterministic bytes (xorshift64).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}
