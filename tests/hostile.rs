//! Hostile peers against a real running node. Each test starts a node, keeps a good
//! publisher replaying a fixture alongside its offenders, and checks that:
//! - every offender is closed within a bound (bad media instead is skipped, not fatal);
//! - the node still accepts a fresh publish afterwards;
//! - the good stream stored exactly its 3 sequence snapshots and its overwrite object,
//!   and offenders stored nothing but the valid snapshots a case asks for;
//! - no offender's stream name stays in the registry;
//! - nothing in the node panicked, not even in a task that would catch it.
//!
//! Most offences are one row: how far the peer gets (`Before`), the bytes it then sends,
//! and when the server must close it (`Close`). Cases that need a dialogue have their own
//! code. Run with `--nocapture` to see when each offender was closed.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{
    amf, chunk_header, interleave, message, n, obj, read_until_closed, s, RawClient,
};
use common::*;
use livesnap::media::flv::FlvReader;
use livesnap::node::Node;
use livesnap::rtmp::framing::{
    set_chunk_size_chunk, write_single_chunk, Message, TYPE_ABORT, TYPE_AMF0_COMMAND,
    TYPE_AMF0_DATA, TYPE_AMF3_COMMAND, TYPE_AMF3_DATA, TYPE_AUDIO, TYPE_SET_CHUNK_SIZE, TYPE_VIDEO,
};
use livesnap::snapshot::scheduler::Scheduler;
use livesnap::snapshot::stats::StreamStats;
use rml_rtmp::rml_amf0::Amf0Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// start_server's `handshake_timeout_secs` and `idle_timeout_secs`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// An offence refused on sight is closed well before any timeout could fire.
const PROMPT: Duration = Duration::from_secs(2);
/// No offender may hold its connection longer than this.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

const GOOD: &str = "good";
const GOOD_FIXTURE: &str = "baseline_640x360_gop1s.flv";

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// ---- panics anywhere in the node -------------------------------------------------------

/// Panics raised outside this file and its harness: in the node, its dependencies or std.
/// Connection tasks and pool workers catch theirs, so a hook is the only way to see them.
static NODE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn watch_panics() {
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

fn assert_no_node_panic() {
    let p = NODE_PANICS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(p.is_empty(), "the node panicked: {p:#?}");
}

// ---- one node, one good stream ---------------------------------------------------------

struct Harness {
    server: TestServer,
    good: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// Starts a node and the good publisher (the fixture at 4× real time, about 3 s).
    async fn start() -> Harness {
        watch_panics();
        let server = start_server(DEFAULT_RULES).await;
        let good = tokio::spawn(publish_fixture_to(
            server.rtmp,
            "live",
            GOOD,
            GOOD_FIXTURE,
            4.0,
        ));
        Harness { server, good }
    }

    fn addr(&self) -> SocketAddr {
        self.server.rtmp
    }

    fn node(&self) -> Arc<Node> {
        self.server.node().clone()
    }

    /// The checks every test ends with; `others` are the objects offenders were expected
    /// to store (valid snapshots of streams that kept working).
    async fn finish(self, others: &[String]) {
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

        let mut want: Vec<String> = (1..=3)
            .map(|i| format!("live/{GOOD}/{i}.jpg"))
            .chain([format!("live/{GOOD}.jpg")])
            .chain(others.iter().cloned())
            .collect();
        want.sort();
        assert_eq!(list_files(&server.root()), want);
        for i in 1..=3 {
            let jpeg = std::fs::read(server.root().join(format!("live/{GOOD}/{i}.jpg"))).unwrap();
            let (w, h, _) = decode_jpeg(&jpeg);
            assert_eq!((w, h), (640, 360), "good snapshot {i}");
        }
    }
}

fn is_live(node: &Node, stream: &str) -> bool {
    node.registry.list().iter().any(|s| s.id.stream == stream)
}

fn stats_of(node: &Node, stream: &str) -> Arc<StreamStats> {
    let live = node.registry.list();
    let st = live.iter().find(|s| s.id.stream == stream);
    st.unwrap_or_else(|| panic!("{stream} is not live"))
        .stats
        .clone()
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    StreamStats::get(c)
}

/// The two objects a stream that stored one snapshot leaves.
fn one_snapshot(stream: &str) -> [String; 2] {
    [format!("live/{stream}.jpg"), format!("live/{stream}/1.jpg")]
}

type Case = Pin<Box<dyn Future<Output = ()> + Send>>;

fn case(f: impl Future<Output = ()> + Send + 'static) -> Case {
    Box::pin(f)
}

/// Runs the cases concurrently, each in its own task; reports every failure by name.
async fn run_cases(cases: Vec<(String, Case)>) {
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

async fn expect_open(c: &mut RawClient, what: &str) {
    let closed = c.closed_within(Duration::from_millis(300)).await;
    assert!(closed.is_none(), "{what}: the server closed the connection");
}

/// Deterministic bytes (xorshift64).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
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

// ---- offences that end in a close --------------------------------------------------------

/// How far an offender gets before it offends.
#[derive(Debug, Clone)]
enum Before {
    /// A bare TCP connection: its bytes are the handshake.
    Tcp,
    /// Past the handshake.
    Handshake,
    /// Past `connect` and `createStream` (message stream 1).
    Stream,
    /// Publishing this stream name on message stream 1.
    Publish(String),
}

/// When the server must close the offender.
#[derive(Debug, Clone, Copy)]
enum Close {
    /// On sight.
    Prompt,
    /// At the handshake deadline, counted from the TCP connect.
    HandshakeTimeout,
    /// At the idle timeout, counted from the offender's last bytes.
    IdleTimeout,
    /// On sight, or at the idle timeout if the bytes parse as an unfinished message.
    PromptOrIdle,
}

impl Close {
    fn window(self) -> RangeInclusive<Duration> {
        match self {
            Close::Prompt => Duration::ZERO..=PROMPT,
            Close::HandshakeTimeout => {
                HANDSHAKE_TIMEOUT - secs(0.5)..=HANDSHAKE_TIMEOUT + secs(2.0)
            }
            Close::IdleTimeout => IDLE_TIMEOUT - secs(0.5)..=IDLE_TIMEOUT + secs(3.0),
            Close::PromptOrIdle => Duration::ZERO..=IDLE_TIMEOUT + secs(3.0),
        }
    }
}

struct Offence {
    what: String,
    before: Before,
    close: Close,
    bytes: Vec<u8>,
}

fn offence(what: impl Into<String>, before: Before, close: Close, bytes: Vec<u8>) -> Offence {
    Offence {
        what: what.into(),
        before,
        close,
        bytes,
    }
}

/// Plays an offence on a fresh connection: checks that the server closes it within its
/// window with a logged reason and, if it had published, frees its name for a reconnect.
async fn commit(addr: SocketAddr, node: Arc<Node>, o: Offence) {
    let (since, closed, local) = if let Before::Tcp = o.before {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let local = sock.local_addr().unwrap();
        let since = Instant::now();
        let _ = sock.write_all(&o.bytes).await;
        (
            since,
            read_until_closed(&mut sock, CLOSE_LIMIT).await.is_some(),
            local,
        )
    } else {
        let mut c = match &o.before {
            Before::Publish(name) => RawClient::start_publish(addr, "live", name).await.0,
            _ => RawClient::connect(addr).await,
        };
        if let Before::Stream = o.before {
            c.connect_app("live", &format!("rtmp://{addr}/live")).await;
            assert_eq!(c.create_stream(2.0).await, 1);
        }
        if !o.bytes.is_empty() {
            let _ = c.send(&o.bytes).await;
        }
        let since = Instant::now();
        let local = c.sock.local_addr().unwrap();
        (since, c.closed_within(CLOSE_LIMIT).await.is_some(), local)
    };
    let t = since.elapsed();
    let what = &o.what;
    assert!(closed, "{what}: still open after {CLOSE_LIMIT:?}");
    let window = o.close.window();
    assert!(
        window.contains(&t),
        "{what}: closed after {t:?}, expected {window:?}"
    );
    // The node said why, naming the peer.
    let said = || {
        logs::about(local)
            .into_iter()
            .find(|l| !l.reason.is_empty())
    };
    assert!(
        wait_for(secs(2.0), || said().is_some()).await,
        "{what}: closed without a logged reason (logged: {:?})",
        logs::about(local)
    );
    println!("{what}: closed after {t:?}: {}", said().unwrap().reason);
    if let Before::Publish(name) = &o.before {
        let freed = wait_for(Duration::from_secs(2), || !is_live(&node, name)).await;
        assert!(freed, "{what}: {name} still held");
        // The encoder's reconnect under the same name is accepted (start_publish asserts
        // NetStream.Publish.Start).
        let (c, _) = RawClient::start_publish(addr, "live", name).await;
        drop(c);
        assert!(
            wait_for(Duration::from_secs(2), || !is_live(&node, name)).await,
            "{what}: {name} held after the reconnect ended"
        );
    }
}

fn committed(addr: SocketAddr, node: &Arc<Node>, offences: Vec<Offence>) -> Vec<(String, Case)> {
    offences
        .into_iter()
        .map(|o| (o.what.clone(), case(commit(addr, node.clone(), o))))
        .collect()
}

// ---- handshake, silence and stalls -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_slow_and_silent_peers_are_closed() {
    use {Before::*, Close::*};
    let h = Harness::start().await;
    let addr = h.addr();
    let http = b"GET / HTTP/1.1\r\nHost: livesnap\r\nAccept: */*\r\n\r\n".to_vec();
    let c1 = |seed| [vec![0; 8], random_bytes(seed, 1528)].concat();
    // A video message of exactly limits.max_message_bytes, 60 KiB of it sent.
    let mut at_cap = set_chunk_size_chunk(1 << 16);
    at_cap.extend(chunk_header(0, 6, 0, 4 << 20, TYPE_VIDEO, 1));
    at_cap.extend([0x17; 60 << 10]);
    let offences = vec![
        offence("HTTP on the RTMP port", Tcp, Prompt, http),
        offence("C0 = 6 (RTMPE)", Tcp, Prompt, [vec![6], c1(6)].concat()),
        offence("C0 = 0", Tcp, Prompt, vec![0; 1537]),
        offence("C0 alone", Tcp, HandshakeTimeout, vec![3]),
        offence(
            "C0, 700 bytes of C1",
            Tcp,
            HandshakeTimeout,
            [vec![3], c1(7)[..700].to_vec()].concat(),
        ),
        offence(
            "C0 and C1, never C2",
            Tcp,
            HandshakeTimeout,
            [vec![3], c1(8)].concat(),
        ),
        offence(
            "silence after the handshake",
            Handshake,
            IdleTimeout,
            vec![],
        ),
        offence(
            "half a chunk header",
            Handshake,
            IdleTimeout,
            chunk_header(0, 6, 0, 100, 9, 1)[..5].to_vec(),
        ),
        offence("4 MiB video message stalls", Handshake, IdleTimeout, at_cap),
        offence(
            "a publisher falls silent",
            Publish("silent".into()),
            IdleTimeout,
            vec![],
        ),
    ];
    let mut cases = committed(addr, &h.node(), offences);
    cases.push((
        "slowloris handshake, one byte a second".into(),
        case(async move {
            let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
            let since = Instant::now();
            let drip = tokio::spawn(async move {
                for b in [vec![3], c1(9)].concat() {
                    if wr.write_all(&[b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            let closed = read_until_closed(&mut rd, CLOSE_LIMIT).await;
            let t = since.elapsed();
            drip.abort();
            assert!(
                closed.is_some(),
                "slowloris: still open after {CLOSE_LIMIT:?}"
            );
            // The deadline covers the whole handshake; a byte does not extend it.
            let window = HandshakeTimeout.window();
            assert!(
                window.contains(&t),
                "slowloris: closed after {t:?}, expected {window:?}"
            );
        }),
    ));
    run_cases(cases).await;
    h.finish(&[]).await;
}

/// A peer that never completes a message but sends a byte every 2 s is not silent, yet it
/// does nothing: the idle deadline counts media, not bytes, so it is closed at the idle
/// timeout however long the drip lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drip_fed_peer_is_closed_by_idle_timeout() {
    watch_panics();
    let server = start_server(DEFAULT_RULES).await;
    let mut c = RawClient::connect(server.rtmp).await;
    let since = Instant::now();
    let mut header = chunk_header(0, 6, 0, 1000, TYPE_VIDEO, 1).into_iter();
    let mut closed = None;
    while since.elapsed() < CLOSE_LIMIT {
        let b = header.next().unwrap_or(0x17);
        if c.send(&[b]).await.is_err() {
            closed = Some(since.elapsed());
            break;
        }
        if c.closed_within(Duration::from_secs(2)).await.is_some() {
            closed = Some(since.elapsed());
            break;
        }
    }
    let window = Close::IdleTimeout.window();
    assert!(
        closed.is_some_and(|t| window.contains(&t)),
        "drip-fed peer closed after {closed:?}, expected {window:?}"
    );
    assert_no_node_panic();
}

// ---- the chunk layer -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_layer_violations_are_closed() {
    use {Before::*, Close::*};
    let h = Harness::start().await;
    let addr = h.addr();
    let mut offences = Vec::new();
    // set_chunk_size_chunk clears the top bit, as the spec asks: write these by hand.
    for size in [0u32, 1, 0x7FFF_FFFF, 0x8000_0100] {
        let mut b = chunk_header(0, 2, 0, 4, TYPE_SET_CHUNK_SIZE, 0);
        b.extend(size.to_be_bytes());
        offences.push(offence(
            format!("SetChunkSize {size:#x}"),
            Handshake,
            Prompt,
            b,
        ));
    }
    for fmt in 1..=3u8 {
        let mut b = chunk_header(fmt, 9, 0, 10, TYPE_AUDIO, 1);
        b.extend([0xAF; 10]);
        offences.push(offence(
            format!("fmt {fmt} chunk on an unopened csid"),
            Handshake,
            Prompt,
            b,
        ));
    }
    let mut b = chunk_header(0, 6, 0, 300, TYPE_VIDEO, 1);
    b.extend([0x27; 128]);
    b.extend(chunk_header(0, 6, 40, 300, TYPE_VIDEO, 1));
    offences.push(offence("another header mid-message", Handshake, Prompt, b));
    for seed in 1..=6u64 {
        let len = [512, 4096, 65536][seed as usize % 3];
        let what = format!("{len} random bytes after a publish, seed {seed}");
        let before = Publish(format!("random{seed}"));
        offences.push(offence(what, before, PromptOrIdle, random_bytes(seed, len)));
    }
    let mut cases = committed(addr, &h.node(), offences);
    cases.push((
        "thousands of chunk stream ids".into(),
        case(async move {
            let mut c = RawClient::connect(addr).await;
            let open = |csids: std::ops::Range<u32>| {
                let mut b = Vec::new();
                for csid in csids {
                    b.extend(chunk_header(0, csid, 0, 1, TYPE_AUDIO, 1));
                    b.push(0xAF);
                }
                b
            };
            // limits.max_chunk_streams = 64 are fine ...
            c.send(&open(3..67)).await.unwrap();
            expect_open(&mut c, "64 chunk streams").await;
            // ... more are not.
            let _ = c.send(&open(67..5067)).await;
            let t = c.closed_within(CLOSE_LIMIT).await;
            assert!(t.is_some_and(|t| t <= PROMPT), "5,000 chunk streams: {t:?}");
        }),
    ));
    cases.push((
        "16 MiB video message declared, then a stall".into(),
        case(async move {
            // The node runs in this process, beside other tests: the smallest growth of
            // three tries is the measure.
            let mut growth = u64::MAX;
            for _ in 0..3 {
                let mut c = RawClient::connect(addr).await;
                let mut b = set_chunk_size_chunk(0xFF_FFFF);
                b.extend(chunk_header(0, 6, 0, 0xFF_FFFF, TYPE_VIDEO, 1));
                b.extend([0x17; 64 << 10]);
                let before = vm_rss_bytes();
                let _ = c.send(&b).await;
                let t = c.closed_within(CLOSE_LIMIT).await;
                assert!(t.is_some_and(|t| t <= PROMPT), "16 MiB message: {t:?}");
                growth = growth.min(vm_rss_bytes().saturating_sub(before));
            }
            println!("16 MiB video message: RSS growth {growth} bytes");
            assert!(growth < 8 << 20, "RSS grew by {growth} bytes");
        }),
    ));
    run_cases(cases).await;
    h.finish(&[]).await;
}

// ---- AMF0 and commands -----------------------------------------------------------------

/// `connect`, 1, then `depth` objects nested through a property `k` around a null; with
/// `closed`, their object ends too (7 bytes a level), else only the openings (4 a level).
fn deep_connect(depth: usize, closed: bool) -> Vec<u8> {
    let mut b = amf(&[s("connect"), n(1.0)]);
    for _ in 0..depth {
        b.extend([0x03, 0, 1, b'k']);
    }
    b.push(0x05);
    if closed {
        for _ in 0..depth {
            b.extend([0, 0, 0x09]);
        }
    }
    b
}

/// `values`, then `depth` strict arrays of one element nested around a null (well-formed).
fn deep_arrays(values: &[Amf0Value], depth: usize) -> Vec<u8> {
    let mut b = amf(values);
    for _ in 0..depth {
        b.extend([0x0A, 0, 0, 0, 1]);
    }
    b.push(0x05);
    b
}

/// One message as one chunk on csid 3 (4 for data), after a SetChunkSize when it needs one.
fn single_chunk(type_id: u8, stream_id: u32, payload: Vec<u8>) -> Vec<u8> {
    let mut b = Vec::new();
    if payload.len() > 128 {
        b.extend(set_chunk_size_chunk(1 << 20));
    }
    let csid = if type_id == TYPE_AMF0_DATA { 4 } else { 3 };
    let m = Message {
        csid,
        timestamp: 0,
        type_id,
        stream_id,
        payload: Bytes::from(payload),
    };
    write_single_chunk(&m, csid, &mut b);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_amf_and_commands_are_closed() {
    use {Before::*, Close::*};
    let h = Harness::start().await;
    let addr = h.addr();
    let node = h.node();
    let connect = amf(&[s("connect"), n(1.0), obj(&[("app", s("live"))])]);
    let meta = [s("@setDataFrame"), s("onMetaData")];
    let cmd = |payload| single_chunk(TYPE_AMF0_COMMAND, 0, payload);
    let on_stream = |type_id, payload| single_chunk(type_id, 1, payload);
    let publish_no_name = amf(&[s("publish"), n(5.0), Amf0Value::Null]);
    let offences = vec![
        // 70 KB: over limits.max_command_bytes, refused at its chunk header.
        offence(
            "connect nesting 10,000 objects",
            Handshake,
            Prompt,
            cmd(deep_connect(10_000, true)),
        ),
        // 40 KB: under the cap, refused by the AMF0 depth guard.
        offence(
            "connect opening 10,000 objects",
            Handshake,
            Prompt,
            cmd(deep_connect(10_000, false)),
        ),
        offence(
            "connect, then 10,000 nested arrays",
            Handshake,
            Prompt,
            cmd(deep_arrays(
                &[s("connect"), n(1.0), obj(&[("app", s("live"))])],
                10_000,
            )),
        ),
        offence(
            "@setDataFrame nesting 10,000 arrays",
            Stream,
            Prompt,
            on_stream(TYPE_AMF0_DATA, deep_arrays(&meta, 10_000)),
        ),
        offence(
            "only the name \"connect\"",
            Handshake,
            Prompt,
            cmd(amf(&[s("connect")])),
        ),
        offence(
            "connect without its object",
            Handshake,
            Prompt,
            cmd(amf(&[s("connect"), n(1.0)])),
        ),
        offence(
            "connect cut inside its object",
            Handshake,
            Prompt,
            cmd(connect[..connect.len() - 5].to_vec()),
        ),
        offence(
            "only the name \"publish\"",
            Stream,
            Prompt,
            on_stream(TYPE_AMF0_COMMAND, amf(&[s("publish")])),
        ),
        offence(
            "publish without a name",
            Stream,
            Prompt,
            on_stream(TYPE_AMF0_COMMAND, publish_no_name),
        ),
        offence(
            "an AMF3 command (type 17)",
            Stream,
            Prompt,
            on_stream(TYPE_AMF3_COMMAND, [&[0], &connect[..]].concat()),
        ),
        offence(
            "AMF3 data (type 15)",
            Stream,
            Prompt,
            on_stream(TYPE_AMF3_DATA, [vec![0], amf(&meta)].concat()),
        ),
        // 16 MiB of metadata (the largest length a header can carry): refused at its chunk
        // header (limits.max_command_bytes).
        offence("16 MiB of @setDataFrame metadata", Stream, Prompt, {
            let mut b = chunk_header(0, 4, 0, (16 << 20) - 1, TYPE_AMF0_DATA, 1);
            b.extend(amf(&meta));
            b.extend(std::iter::repeat_n(0x20, 4000));
            b
        }),
        offence(
            "connect with app as a number",
            Handshake,
            Prompt,
            cmd(amf(&[s("connect"), n(1.0), obj(&[("app", n(7.0))])])),
        ),
        offence(
            "connect with app as an object",
            Handshake,
            Prompt,
            cmd(amf(&[
                s("connect"),
                n(1.0),
                obj(&[("app", obj(&[("x", s("live"))]))]),
            ])),
        ),
        offence(
            "publish with a number as the stream name",
            Stream,
            Prompt,
            on_stream(
                TYPE_AMF0_COMMAND,
                amf(&[s("publish"), n(5.0), Amf0Value::Null, n(42.0)]),
            ),
        ),
        offence(
            "publish with an object as the stream name",
            Stream,
            Prompt,
            on_stream(
                TYPE_AMF0_COMMAND,
                amf(&[
                    s("publish"),
                    n(5.0),
                    Amf0Value::Null,
                    obj(&[("name", s("cam"))]),
                ]),
            ),
        ),
    ];
    // AMF0 markers rml_rtmp does not decode (movieclip, reference, unsupported, recordset,
    // XML document, typed object, switch to AMF3), after a valid connect prefix.
    let mut offences = offences;
    for marker in [0x04u8, 0x07, 0x0D, 0x0E, 0x0F, 0x10, 0x11] {
        let mut b = amf(&[s("connect"), n(1.0)]);
        b.extend([marker, 0, 1, b'x', 0, 0, 0]);
        offences.push(offence(
            format!("connect with AMF0 marker {marker:#04x}"),
            Handshake,
            Prompt,
            cmd(b),
        ));
    }
    let mut cases = committed(addr, &node, offences);
    cases.push((
        "createStream 100,000 times".into(),
        case(async move {
            let mut c = RawClient::connect(addr).await;
            c.connect_app("live", &format!("rtmp://{addr}/live")).await;
            let mut flood = Vec::new();
            for i in 0..100_000u32 {
                let create = amf(&[s("createStream"), n(f64::from(i) + 2.0), Amf0Value::Null]);
                flood.extend(c.writer.write(3, &message(TYPE_AMF0_COMMAND, 0, 0, create)));
            }
            for part in flood.chunks(64 << 10) {
                if c.send(part).await.is_err() {
                    break;
                }
            }
            let t = c.closed_within(CLOSE_LIMIT).await;
            assert!(t.is_some_and(|t| t <= PROMPT), "createStream flood: {t:?}");
            let answered = c
                .commands()
                .iter()
                .filter(|v| {
                    v.len() >= 2
                        && v[0] == s("_result")
                        && matches!(v[1], Amf0Value::Number(t) if t >= 2.0)
                })
                .count();
            assert!(
                answered <= 8,
                "{answered} createStream calls answered; the cap is 8"
            );
        }),
    ));
    cases.push((
        "@setDataFrame alone, before and during a publish".into(),
        case(async move {
            // Outcome: ignored (the session drops an @setDataFrame with fewer than 3
            // values); the connection stays and the publish works.
            let lone = |sid| single_chunk(TYPE_AMF0_DATA, sid, amf(&[s("@setDataFrame")]));
            let mut c = RawClient::connect(addr).await;
            c.connect_app("live", &format!("rtmp://{addr}/live")).await;
            c.send(&lone(0)).await.unwrap();
            c.send(&single_chunk(TYPE_AMF0_DATA, 0, amf(&meta)))
                .await
                .unwrap();
            let sid = c.create_stream(2.0).await;
            let status = c.publish(sid, "meta").await;
            assert_eq!(
                status,
                Some(("status".into(), "NetStream.Publish.Start".into()))
            );
            c.send(&lone(sid)).await.unwrap();
            expect_open(&mut c, "@setDataFrame alone").await;
            let size = obj(&[("width", n(640.0)), ("height", n(360.0))]);
            let full = amf(&[s("@setDataFrame"), s("onMetaData"), size]);
            c.send(&single_chunk(TYPE_AMF0_DATA, sid, full))
                .await
                .unwrap();
            let video = fixture_video();
            let key = [(0, sequence_header(&video)), (0, first_keyframe(&video))];
            let sent = send_video(&mut c, sid, &key).await;
            let stats = stats_of(&node, "meta");
            assert!(wait_for(secs(5.0), || get(&stats.bytes) == sent).await);
            assert!(
                wait_for(secs(10.0), || get(&stats.stored) == 1).await,
                "no snapshot"
            );
            expect_open(&mut c, "after the publish").await;
        }),
    ));
    run_cases(cases).await;
    h.finish(&one_snapshot("meta")).await;
}

// ---- legal interleaving ----------------------------------------------------------------

/// Video tags of the good fixture: (timestamp, tag body).
fn fixture_video() -> Vec<(u32, Bytes)> {
    let data = Bytes::from(std::fs::read(fixture(GOOD_FIXTURE)).unwrap());
    FlvReader::new(data)
        .unwrap()
        .map(|t| t.unwrap())
        .filter(|t| t.tag_type == 9)
        .map(|t| (t.timestamp_ms, t.data))
        .collect()
}

fn sequence_header(video: &[(u32, Bytes)]) -> Bytes {
    video
        .iter()
        .find(|(_, d)| d[..2] == [0x17, 0])
        .unwrap()
        .1
        .clone()
}

fn first_keyframe(video: &[(u32, Bytes)]) -> Bytes {
    video
        .iter()
        .find(|(_, d)| d[..2] == [0x17, 1])
        .unwrap()
        .1
        .clone()
}

/// Sends video tags on chunk stream 6; returns the payload bytes sent.
async fn send_video(c: &mut RawClient, sid: u32, tags: &[(u32, Bytes)]) -> u64 {
    let mut sent = 0;
    for (ts, data) in tags {
        c.send_message(6, &message(TYPE_VIDEO, sid, *ts, data.clone()))
            .await
            .unwrap();
        sent += data.len() as u64;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legal_interleaved_chunk_streams_publish() {
    let h = Harness::start().await;
    let addr = h.addr();
    let node = h.node();

    let mut c = RawClient::connect(addr).await;
    // connect in 128-byte chunks on csid 3, interleaved with a data message on csid 4
    // whose timestamp needs the extended field (repeated on its continuation chunks).
    let pad = "p".repeat(300);
    let connect = amf(&[
        s("connect"),
        n(1.0),
        obj(&[
            ("app", s("live")),
            ("type", s("nonprivate")),
            ("flashVer", s("FMLE/3.0 (compatible; livesnap-hostile)")),
            ("swfUrl", s(&pad)),
            ("tcUrl", s(&format!("rtmp://{addr}/live"))),
        ]),
    ]);
    let side = amf(&[s("onTextData"), obj(&[("text", s(&"t".repeat(500)))])]);
    let a = c
        .writer
        .chunks(3, &message(TYPE_AMF0_COMMAND, 0, 0, connect));
    let b = c
        .writer
        .chunks(4, &message(TYPE_AMF0_DATA, 0, 0x0123_4567, side));
    assert!(
        a.len() >= 3 && b.len() >= 4,
        "both messages span several chunks"
    );
    c.send(&interleave(vec![a, b])).await.unwrap();
    c.wait_connected().await;
    let sid = c.create_stream(2.0).await;
    assert_eq!(
        c.publish(sid, "ilv").await,
        Some(("status".into(), "NetStream.Publish.Start".into()))
    );
    assert!(is_live(&node, "ilv"));

    // The first second of video (two keyframes) with AAC-like audio every 23 ms on csid 4,
    // chunks interleaved; timestamps past 0xFFFFFF; half at 128-byte chunks, half at 1000.
    const BASE: u32 = 0x0100_0000;
    let video: Vec<(u32, Bytes)> = fixture_video()
        .into_iter()
        .filter(|(ts, _)| *ts <= 1000)
        .collect();
    let mut audio = vec![(0u32, Bytes::from_static(&[0xAF, 0x00, 0x12, 0x10]))];
    audio.extend((1..=43).map(|k| {
        (
            23 * k,
            Bytes::from([vec![0xAF, 0x01], random_bytes(u64::from(k), 180)].concat()),
        )
    }));
    let mut sent = 0u64;
    for (range, chunk_size) in [(0..500, 128), (500..1001, 1000)] {
        if c.writer.chunk_size != chunk_size {
            c.send(&set_chunk_size_chunk(chunk_size as u32))
                .await
                .unwrap();
            c.writer.chunk_size = chunk_size;
        }
        let mut vchunks = Vec::new();
        for (ts, d) in video.iter().filter(|(ts, _)| range.contains(ts)) {
            vchunks.extend(
                c.writer
                    .chunks(6, &message(TYPE_VIDEO, sid, BASE + ts, d.clone())),
            );
            sent += d.len() as u64;
        }
        let mut achunks = Vec::new();
        for (ts, d) in audio.iter().filter(|(ts, _)| range.contains(ts)) {
            achunks.extend(
                c.writer
                    .chunks(4, &message(TYPE_AUDIO, sid, BASE + ts, d.clone())),
            );
            sent += d.len() as u64;
        }
        c.send(&interleave(vec![vchunks, achunks])).await.unwrap();
    }
    let stats = stats_of(&node, "ilv");
    assert!(
        wait_for(secs(5.0), || get(&stats.bytes) == sent).await,
        "media bytes seen {} of {sent}",
        get(&stats.bytes)
    );
    assert!(
        wait_for(secs(10.0), || get(&stats.stored) == 1).await,
        "no snapshot stored"
    );
    assert_eq!((get(&stats.keyframes), get(&stats.due)), (2, 1));
    expect_open(&mut c, "interleaved publisher").await;
    drop(c);
    assert!(wait_for(secs(2.0), || !is_live(&node, "ilv")).await);
    h.finish(&one_snapshot("ilv")).await;
}

// ---- connection floods -------------------------------------------------------------------

/// Raises this process's open-file soft limit to at least `need` (up to the hard limit).
fn raise_nofile(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert!(
        lim.rlim_max >= need,
        "this test holds {need} sockets but the open-file hard limit is {} (raise `ulimit -Hn`)",
        lim.rlim_max
    );
    if lim.rlim_cur < need {
        lim.rlim_cur = need;
        // SAFETY: as above.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        assert_eq!(rc, 0, "setrlimit(RLIMIT_NOFILE, {need})");
    }
}

/// 10,000 connections that connect and then say nothing, half from one address and half
/// from 39 others, held open:
/// the per-IP cap refuses what is over 64 per address at accept, the handshake table holds
/// at most `max_handshakes` and evicts its oldest for each newcomer, so while the flood is
/// still held a real encoder gets in and snapshots on schedule, the admin API answers,
/// every flood connection is accounted for (accepted or refused, and evicted or still
/// waiting) and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_lock_out_encoders() {
    const IDLE: usize = 10_000;
    const PEERS: usize = 40;
    const BATCH: usize = 100;
    raise_nofile(IDLE as u64 + 4096);
    watch_panics();
    // A long handshake timeout: the flood keeps its slots for the whole test.
    let limits =
        "[limits]\nmax_connections = 1024\nmax_connections_per_ip = 64\nmax_handshakes = 256\n";
    let mut server = start_server_with(
        tempfile::tempdir().unwrap(),
        60,
        &format!("{DEFAULT_RULES}{limits}"),
    )
    .await;
    let addr = server.rtmp;
    let node = server.node().clone();
    let m = node.metrics.clone();
    let rss0 = vm_rss_bytes();

    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    // Connections the accept loop has taken: admitted, or refused for their address.
    let seen = || m.connections_accepted.get() + m.rejected_count("per_ip_limit");
    for batch in 0..IDLE / BATCH {
        let conns = futures::future::join_all((0..BATCH).map(|i| {
            let k = batch * BATCH + i;
            // Half from one address (over its cap), half spread over the others.
            let host = if k.is_multiple_of(2) {
                1
            } else {
                2 + k % (PEERS - 1)
            };
            let ip = std::net::Ipv4Addr::new(127, 0, 1, host as u8);
            connect_from(ip.into(), addr)
        }))
        .await;
        for c in conns {
            idle.push(c.expect("connect"));
        }
        // Paced by the accept loop, so that the kernel's accept queue (net.core.somaxconn
        // may be as low as 128 on some hosts) never overflows: an overflowed connection
        // would be lost by the kernel, not by livesnap.
        let so_far = idle.len() as u64;
        assert!(
            wait_for(secs(10.0), || seen() >= so_far).await,
            "accept loop saw {} of {so_far}",
            seen()
        );
    }
    let opened = started.elapsed();
    assert_eq!(seen(), IDLE as u64);
    let slots = &server
        .running
        .as_ref()
        .expect("running")
        .conn_limits
        .handshakes;
    // Every admitted connection still waiting holds a slot; all others were evicted.
    let settled = || m.connections_accepted.get() - m.rejected_count("handshake_limit");
    assert!(
        wait_for(secs(10.0), || settled() == slots.in_progress() as u64).await,
        "accepted {} − evicted {} ≠ in progress {}",
        m.connections_accepted.get(),
        m.rejected_count("handshake_limit"),
        slots.in_progress()
    );
    assert_eq!(slots.in_progress(), 256, "the table is full of idle peers");
    assert!(m.rejected_count("per_ip_limit") > 0 && m.rejected_count("handshake_limit") > 0);
    println!(
        "{IDLE} idle connections opened and taken by the accept loop in {opened:?}: \
         {} refused per IP, {} evicted, {} waiting",
        m.rejected_count("per_ip_limit"),
        m.rejected_count("handshake_limit"),
        slots.in_progress()
    );

    // The flood is still held: a real encoder publishes and gets every snapshot, and the
    // admin API answers.
    let (status, _) = http_request(server.http, "GET", "/healthz").await.unwrap();
    assert_eq!(status, 200);
    tokio::time::timeout(
        Duration::from_secs(30),
        publish_fixture_to(addr, "live", GOOD, GOOD_FIXTURE, 4.0),
    )
    .await
    .expect("a publish during the flood finished within 30 s");

    // The server closed every flood connection except those still in the table.
    let mut still_open = 0;
    for sock in idle {
        let sock = sock.into_std().unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        if matches!(std::io::Read::read(&mut &sock, &mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        {
            still_open += 1;
        }
    }
    assert!(
        still_open <= 256,
        "{still_open} flood connections still open (max_handshakes 256)"
    );
    let growth = vm_rss_bytes().saturating_sub(rss0);
    println!("RSS growth with the flood held: {} KiB", growth / 1024);
    assert!(growth < 64 << 20, "RSS grew by {growth} bytes");

    assert!(
        wait_for(secs(5.0), || slots.in_progress() == 0
            && node.registry.is_empty())
        .await,
        "slots and names freed after the flood went away"
    );
    assert_no_node_panic();
    assert!(server.stop().await, "shutdown finished in time");
    let mut want: Vec<String> = snapshots_of(GOOD, 3);
    want.sort();
    assert_eq!(list_files(&server.root()), want);
}

// ---- timestamps and aborts -------------------------------------------------------------

fn is_keyframe(data: &Bytes) -> bool {
    data[..2] == [0x17, 1]
}

/// Sends `tags` with `base` added to their timestamps (wrapping, as RTMP's clock does).
async fn send_video_from(c: &mut RawClient, sid: u32, tags: &[(u32, Bytes)], base: u32) -> u64 {
    let shifted: Vec<(u32, Bytes)> = tags
        .iter()
        .map(|(ts, d)| (base.wrapping_add(*ts), d.clone()))
        .collect();
    send_video(c, sid, &shifted).await
}

/// Video tags, the base added to their timestamps, and the snapshots stored once sent.
type Part = (Vec<(u32, Bytes)>, u32, u64);

/// The parts to send, each with its timestamp base and the number of snapshots a 5 s rule
/// has taken once it is sent (one scheduler over all of them, as the server runs).
fn plan(parts: &[(&[(u32, Bytes)], u32)]) -> Vec<Part> {
    let mut sched = Scheduler::new(5);
    let mut due = 0;
    parts
        .iter()
        .map(|(tags, base)| {
            for (ts, d) in tags.iter() {
                if is_keyframe(d) && sched.on_keyframe(base.wrapping_add(*ts)).is_some() {
                    due += 1;
                }
            }
            (tags.to_vec(), *base, due)
        })
        .collect()
}

fn keyframe_count(parts: &[Part]) -> u64 {
    parts
        .iter()
        .flat_map(|(tags, _, _)| tags)
        .filter(|(_, d)| is_keyframe(d))
        .count() as u64
}

/// Sends `parts` one after the other, waiting after each for every byte to be seen and
/// for `stored` snapshots in total, so that "latest keyframe wins" never has to drop one.
async fn send_parts(c: &mut RawClient, sid: u32, stats: &StreamStats, parts: &[Part], name: &str) {
    let mut sent = 0;
    for (i, (tags, base, stored)) in parts.iter().enumerate() {
        sent += send_video_from(c, sid, tags, *base).await;
        assert!(
            wait_for(secs(5.0), || get(&stats.bytes) == sent).await,
            "{name} part {i}: media bytes seen {} of {sent}",
            get(&stats.bytes)
        );
        assert!(
            wait_for(secs(10.0), || get(&stats.stored) == *stored).await,
            "{name} part {i}: stored {} of {stored}",
            get(&stats.stored)
        );
    }
}

fn snapshots_of(stream: &str, n: u64) -> Vec<String> {
    (1..=n)
        .map(|i| format!("live/{stream}/{i}.jpg"))
        .chain([format!("live/{stream}.jpg")])
        .collect()
}

/// Timestamps at the edges of RTMP's clock: a stream crossing 0xFFFFFF ms with absolute
/// (fmt 0) headers, the extended field repeated on continuation chunks or left out (both
/// are sent by real encoders), or with deltas; the clock going backwards (an encoder
/// restarting without republishing); and messages aborted half-way (Abort Message), then
/// resent. Each stream must keep every byte and take exactly the snapshots its own
/// timestamps make due, while the good stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_edges_and_aborted_messages_keep_the_stream() {
    let h = Harness::start().await;
    let addr = h.addr();
    let node = h.node();
    let video = fixture_video();
    // 5 s segments, each with at most one due keyframe, sent one after the other.
    let segments: Vec<Vec<(u32, Bytes)>> = (0..3)
        .map(|k| {
            let range = k * 5000..(k + 1) * 5000;
            let seg: Vec<_> = video
                .iter()
                .filter(|(t, _)| range.contains(t) || (k == 2 && *t >= range.start))
                .cloned()
                .collect();
            seg
        })
        .collect();
    assert!(
        segments.iter().all(|s| !s.is_empty()),
        "the fixture lasts 10 s or more"
    );
    let last_ts = video.last().unwrap().0;
    let mut cases: Vec<(String, Case)> = Vec::new();
    let mut others = Vec::new();

    // The boundary is crossed 4 s in: before it the 3-byte field, after it the extended one.
    const BASE: u32 = 0xFF_FFFF - 4000;
    for (name, absolute, repeat) in [
        ("ext-absolute-repeated", true, true),
        ("ext-absolute-omitted", true, false),
        ("ext-delta", false, true),
    ] {
        let parts = plan(&segments.iter().map(|s| (&s[..], BASE)).collect::<Vec<_>>());
        let due = parts.last().unwrap().2;
        assert_eq!(due, 3, "0 s, 5 s and 10 s are due");
        others.extend(snapshots_of(name, due));
        let node = node.clone();
        cases.push((
            name.to_string(),
            case(async move {
                let (mut c, sid) = RawClient::start_publish(addr, "live", name).await;
                c.writer.absolute = absolute;
                c.writer.repeat_extended = repeat;
                let stats = stats_of(&node, name);
                send_parts(&mut c, sid, &stats, &parts, name).await;
                assert_eq!(get(&stats.keyframes), keyframe_count(&parts), "{name}");
                assert_eq!(get(&stats.due), due, "{name}");
                // The clock ran continuously across the boundary.
                assert_eq!(get(&stats.media_ms), u64::from(last_ts), "{name}");
                expect_open(&mut c, name).await;
            }),
        ));
    }

    // Backwards: 0..15 s, then the encoder's clock restarts at 0 for 5 s more.
    let mut back: Vec<(&[(u32, Bytes)], u32)> = segments.iter().map(|s| (&s[..], 0)).collect();
    back.push((&segments[0][..], 0));
    let back = plan(&back);
    let back_due = back.last().unwrap().2;
    assert!(
        back_due >= 4,
        "the cadence continues after the jump: {back_due}"
    );
    others.extend(snapshots_of("ts-backwards", back_due));
    let n2 = node.clone();
    cases.push((
        "timestamps going backwards".into(),
        case(async move {
            let name = "ts-backwards";
            let (mut c, sid) = RawClient::start_publish(addr, "live", name).await;
            let stats = stats_of(&n2, name);
            send_parts(&mut c, sid, &stats, &back, name).await;
            assert_eq!(get(&stats.keyframes), keyframe_count(&back));
            assert_eq!(get(&stats.due), back_due);
            expect_open(&mut c, name).await;
        }),
    ));

    // Abort Message mid-message: the first chunks of a keyframe, an Abort naming its chunk
    // stream, then the keyframe whole. Twice: the restart's first chunk is a fmt 3 header
    // (the aborted message's header repeated), then a fmt 2 one.
    others.extend(snapshots_of("abort", 2));
    let n3 = node.clone();
    let (seq, key) = (sequence_header(&video), first_keyframe(&video));
    cases.push((
        "Abort Message mid-message".into(),
        case(async move {
            let name = "abort";
            let (mut c, sid) = RawClient::start_publish(addr, "live", name).await;
            let stats = stats_of(&n3, name);
            let mut sent = send_video(&mut c, sid, &[(0, seq.clone())]).await;
            for (round, ts) in [(1u64, 0u32), (2, 5000)] {
                let chunks = c.writer.chunks(6, &message(TYPE_VIDEO, sid, ts, key.clone()));
                assert!(chunks.len() > 3, "the keyframe spans several chunks");
                c.send(&chunks[..2].concat()).await.unwrap();
                let mut abort = Vec::new();
                let m = Message {
                    csid: 2,
                    timestamp: 0,
                    type_id: TYPE_ABORT,
                    stream_id: 0,
                    payload: Bytes::copy_from_slice(&6u32.to_be_bytes()),
                };
                write_single_chunk(&m, 2, &mut abort);
                c.send(&abort).await.unwrap();
                sent += send_video(&mut c, sid, &[(ts, key.clone())]).await;
                assert!(
                    wait_for(secs(5.0), || get(&stats.bytes) == sent).await,
                    "round {round}: media bytes seen {} of {sent} (the aborted part must not count)",
                    get(&stats.bytes)
                );
                assert!(
                    wait_for(secs(10.0), || get(&stats.stored) == round).await,
                    "round {round}: no snapshot"
                );
                assert_eq!(get(&stats.keyframes), round);
            }
            expect_open(&mut c, name).await;
        }),
    ));

    run_cases(cases).await;
    h.finish(&others).await;
}

// ---- bad media -------------------------------------------------------------------------

/// A bit writer for a hand-made SPS.
#[derive(Default)]
struct Bits {
    bits: Vec<bool>,
}

impl Bits {
    fn u(&mut self, n: u32, v: u64) -> &mut Self {
        self.bits.extend((0..n).rev().map(|i| (v >> i) & 1 == 1));
        self
    }
    fn ue(&mut self, v: u64) -> &mut Self {
        let len = 64 - (v + 1).leading_zeros();
        self.u(len - 1, 0).u(len, v + 1)
    }
    /// RBSP stop bit, byte alignment and emulation prevention, after a NAL header byte.
    fn nal(&mut self, header: u8) -> Vec<u8> {
        self.bits.push(true);
        while !self.bits.len().is_multiple_of(8) {
            self.bits.push(false);
        }
        let mut out = vec![header];
        let mut zeros = 0;
        for byte in self.bits.chunks(8) {
            let b = byte
                .iter()
                .fold(0u8, |acc, &bit| (acc << 1) | u8::from(bit));
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            out.push(b);
            zeros = if b == 0 { zeros + 1 } else { 0 };
        }
        out
    }
}

/// A Constrained Baseline SPS coding a 16384x16384 picture (1024x1024 macroblocks).
fn huge_sps() -> Vec<u8> {
    let sps = Bits::default()
        .u(8, 66)
        .u(8, 0xC0)
        .u(8, 51)
        .ue(0) // seq_parameter_set_id
        .ue(0) // log2_max_frame_num_minus4
        .ue(0) // pic_order_cnt_type
        .ue(0) // log2_max_pic_order_cnt_lsb_minus4
        .ue(1) // max_num_ref_frames
        .u(1, 0) // gaps_in_frame_num_value_allowed_flag
        .ue(1023) // pic_width_in_mbs_minus1
        .ue(1023) // pic_height_in_map_units_minus1
        .u(1, 1) // frame_mbs_only_flag
        .u(1, 1) // direct_8x8_inference_flag
        .u(1, 0) // frame_cropping_flag
        .u(1, 0) // vui_parameters_present_flag
        .nal(0x67);
    assert!(matches!(
        livesnap::media::sps::parse_sps(&sps),
        Err(livesnap::media::flv::MediaError::Dimensions {
            width: 16384,
            height: 16384
        })
    ));
    sps
}

fn avc_tag(header: [u8; 2], body: &[u8]) -> Bytes {
    Bytes::from([&header[..], &[0, 0, 0], body].concat())
}

fn avcc(nals: &[&[u8]]) -> Vec<u8> {
    nals.iter()
        .flat_map(|n| [&(n.len() as u32).to_be_bytes()[..], n].concat())
        .collect()
}

/// An AVC sequence header built from the fixture's record with `edit` applied.
fn edited_header(sh: &Bytes, edit: impl Fn(&mut Vec<u8>)) -> Bytes {
    let mut record = sh[5..].to_vec();
    edit(&mut record);
    assert!(livesnap::media::avc::parse_decoder_config(&record).is_err());
    avc_tag([0x17, 0], &record)
}

struct BadMedia {
    stream: &'static str,
    tags: Vec<(u32, Bytes)>,
    /// Whether a keyframe of it is due and reaches the pool (which must fail it).
    reaches_pool: bool,
}

fn bad_media() -> Vec<BadMedia> {
    let video = fixture_video();
    let sh = sequence_header(&video);
    let key = first_keyframe(&video);
    let record = livesnap::media::avc::parse_decoder_config(&sh[5..]).unwrap();
    let key_body = &key[5..];
    let huge = huge_sps();
    let huge_record = [
        &[1, 66, 0xC0, 51, 0xFF, 0xE1][..],
        &(huge.len() as u16).to_be_bytes(),
        &huge,
        &[1],
        &(record.pps[0].len() as u16).to_be_bytes(),
        &record.pps[0],
    ]
    .concat();
    let bad = |stream, tags, reaches_pool| BadMedia {
        stream,
        tags,
        reaches_pool,
    };
    vec![
        bad(
            "before-header",
            vec![(0, key.clone()), (40, video[3].1.clone())],
            false,
        ),
        bad(
            "length-size-3",
            vec![(0, edited_header(&sh, |r| r[4] = 0xFE)), (0, key.clone())],
            false,
        ),
        bad(
            "zero-sps",
            vec![(0, edited_header(&sh, |r| r[5] = 0xE0)), (0, key.clone())],
            false,
        ),
        bad(
            "sps-overrun",
            vec![
                (
                    0,
                    edited_header(&sh, |r| r[6..8].copy_from_slice(&[0xFF, 0xF0])),
                ),
                (0, key.clone()),
            ],
            false,
        ),
        bad(
            "short-tags",
            vec![
                (0, Bytes::new()),
                (0, Bytes::from_static(&[0x17])),
                (0, Bytes::from_static(&[0x17, 1, 0])),
            ],
            false,
        ),
        bad(
            "nal-zero",
            vec![
                (0, sh.clone()),
                (0, avc_tag([0x17, 1], &[&[0, 0, 0, 0], key_body].concat())),
            ],
            true,
        ),
        bad(
            "nal-overrun",
            vec![
                (0, sh.clone()),
                (0, avc_tag([0x17, 1], &[0, 0, 0x10, 0, 0x65, 0x88, 0x84])),
            ],
            true,
        ),
        bad(
            "nal-ffffffff",
            vec![
                (0, sh.clone()),
                (0, avc_tag([0x17, 1], &[&[0xFF; 4], key_body].concat())),
            ],
            true,
        ),
        bad(
            "huge-sps",
            vec![(0, avc_tag([0x17, 0], &huge_record)), (0, key.clone())],
            true,
        ),
        bad(
            "huge-inband-sps",
            vec![
                (0, sh.clone()),
                (
                    0,
                    avc_tag([0x17, 1], &[avcc(&[&huge]), key_body.to_vec()].concat()),
                ),
            ],
            true,
        ),
    ]
}

/// Enhanced RTMP HEVC (sequence start, coded frames, coded frames X) and legacy codec 12.
fn hevc_tags() -> Vec<(u32, Bytes)> {
    let fourcc = b"hvc1";
    let hvcc = [
        1, 1, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x5D, 0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0,
        0x0F, 0,
    ];
    let nal = avcc(&[&[0x26, 0x01, 0xAF, 0x1C, 0x52, 0x40]]);
    let tag = |first: u8, ct: bool, body: &[u8]| {
        let mut t = vec![first];
        t.extend_from_slice(fourcc);
        if ct {
            t.extend_from_slice(&[0, 0, 0]);
        }
        t.extend_from_slice(body);
        Bytes::from(t)
    };
    vec![
        (0, tag(0x80 | 0x10, false, &hvcc)),
        (0, tag(0x80 | 0x10 | 1, true, &nal)),
        (40, tag(0x80 | 0x20 | 3, false, &nal)),
        (80, Bytes::from([&[0x1C, 1, 0, 0, 0][..], &nal].concat())),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_media_is_skipped_not_fatal() {
    let h = Harness::start().await;
    let addr = h.addr();
    let node = h.node();
    let video = fixture_video();
    let good = [
        (10_000, sequence_header(&video)),
        (10_000, first_keyframe(&video)),
    ];
    let mut cases: Vec<(String, Case)> = Vec::new();
    let mut others = Vec::new();
    for bad in bad_media() {
        others.extend(one_snapshot(bad.stream));
        let node = node.clone();
        let good = good.clone();
        cases.push((
            bad.stream.to_string(),
            case(async move {
                let name = bad.stream;
                let (mut c, sid) = RawClient::start_publish(addr, "live", name).await;
                let stats = stats_of(&node, name);
                let sent = send_video(&mut c, sid, &bad.tags).await;
                assert!(
                    wait_for(secs(5.0), || get(&stats.bytes) == sent).await,
                    "{name}: not all seen"
                );
                if bad.reaches_pool {
                    assert!(
                        wait_for(secs(5.0), || get(&stats.finished) == 1).await,
                        "{name}: not finished"
                    );
                    assert_eq!(
                        (get(&stats.due), get(&stats.failed_decode)),
                        (1, 1),
                        "{name}"
                    );
                } else {
                    assert_eq!(get(&stats.due), 0, "{name}");
                }
                expect_open(&mut c, name).await;
                // The stream still works: a valid keyframe later gives a valid snapshot.
                send_video(&mut c, sid, &good).await;
                assert!(
                    wait_for(secs(10.0), || get(&stats.stored) == 1).await,
                    "{name}: no snapshot"
                );
                expect_open(&mut c, name).await;
                drop(c);
                assert!(
                    wait_for(secs(2.0), || !is_live(&node, name)).await,
                    "{name} still held"
                );
            }),
        ));
    }
    let n2 = node.clone();
    cases.push((
        "Enhanced RTMP HEVC".into(),
        case(async move {
            let (mut c, sid) = RawClient::start_publish(addr, "live", "hevc").await;
            let stats = stats_of(&n2, "hevc");
            let sent = send_video(&mut c, sid, &hevc_tags()).await;
            assert!(
                wait_for(secs(5.0), || get(&stats.bytes) == sent).await,
                "hevc: not all seen"
            );
            expect_open(&mut c, "hevc").await;
            // Counted as received, never handed to the pool.
            assert_eq!((get(&stats.due), get(&stats.stored)), (0, 0));
            drop(c);
            assert!(
                wait_for(secs(2.0), || !is_live(&n2, "hevc")).await,
                "hevc still held"
            );
        }),
    ));
    run_cases(cases).await;
    for bad in bad_media() {
        let path = h.server.root().join(format!("live/{}/1.jpg", bad.stream));
        let (w, hh, _) = decode_jpeg(&std::fs::read(&path).unwrap());
        assert_eq!((w, hh), (640, 360), "{}", bad.stream);
    }
    h.finish(&others).await;
}
