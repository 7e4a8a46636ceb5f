//! The RTMP framing layer's throughput on realistic bytes: every audio, video and script
//! tag of a fixture, chunked once at 4096 bytes (what ffmpeg and OBS send), fed in the
//! 16 KiB reads the connection task makes. Throughput is over the chunked bytes.
//!
//! - `framing/chunk_reader/F`: `ChunkReader::push` alone (reassembly into whole messages;
//!   each payload is one allocation handed out as `Bytes`).
//! - `framing/session/F`: `Session::handle` on a session that has accepted a publish (set
//!   up in memory with rml_rtmp's client session): framing plus the session's dispatch of
//!   media into events, i.e. everything between `read()` and `Ingest::on_video`.
//!
//! `cargo bench --bench framing`; see `benches/support/mod.rs` for choosing fixtures.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use livesnap::rtmp::framing::{ChunkReader, FramingLimits};
use livesnap::rtmp::session::{Event, Session, SessionLimits};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};

/// The connection task's read buffer.
const READ_BUF: usize = 16 * 1024;
const CHUNK_SIZE: usize = 4096;

fn queue(
    results: Vec<ClientSessionResult>,
    to_server: &mut Vec<u8>,
    client_events: &mut Vec<ClientSessionEvent>,
) {
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => to_server.extend_from_slice(&p.bytes),
            ClientSessionResult::RaisedEvent(e) => client_events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
}

/// Client and server of an in-memory connection, with what each has raised.
struct Pair {
    server: Session,
    client: ClientSession,
    to_server: Vec<u8>,
    server_events: Vec<Event>,
    client_events: Vec<ClientSessionEvent>,
}

impl Pair {
    /// One round trip: the client's bytes to the server, the server's answer back.
    fn exchange(&mut self) {
        self.server
            .handle(&self.to_server, &mut self.server_events)
            .expect("server input");
        self.to_server.clear();
        let out = std::mem::take(self.server.output());
        let results = self.client.handle_input(&out).expect("client input");
        queue(results, &mut self.to_server, &mut self.client_events);
    }

    fn send(&mut self, r: ClientSessionResult) {
        queue(vec![r], &mut self.to_server, &mut self.client_events);
    }
}

/// Drives a `Session` through connect and publish with rml_rtmp's client, in memory.
fn publishing_session() -> Session {
    let (client, initial) = ClientSession::new(ClientSessionConfig::new()).expect("client");
    let mut p = Pair {
        server: Session::new(SessionLimits::default()).expect("session"),
        client,
        to_server: Vec::new(),
        server_events: Vec::new(),
        client_events: Vec::new(),
    };
    queue(initial, &mut p.to_server, &mut p.client_events);
    let r = p
        .client
        .request_connection("live".to_string())
        .expect("connect");
    p.send(r);
    for _ in 0..10 {
        p.exchange();
    }
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted)),
        "connect was not accepted"
    );
    let r = p
        .client
        .request_publishing("bench".to_string(), PublishRequestType::Live)
        .expect("publish");
    p.send(r);
    for _ in 0..10 {
        p.exchange();
        if p.server_events
            .iter()
            .any(|e| matches!(e, Event::PublishRequested { .. }))
        {
            p.server_events.clear();
            p.server.accept_publish().expect("accept");
        }
    }
    assert!(p.server.is_publishing(), "publish was not accepted");
    p.server.output().clear();
    p.server
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for fx in support::fixtures() {
        let wire = support::chunk_stream(&fx, CHUNK_SIZE, 1);
        group.throughput(Throughput::Bytes(wire.len() as u64));

        let mut messages = Vec::new();
        group.bench_function(format!("chunk_reader/{}", fx.name), |b| {
            b.iter(|| {
                let mut reader = ChunkReader::new(FramingLimits::default());
                let mut count = 0usize;
                for read in black_box(&wire).chunks(READ_BUF) {
                    reader.push(read, &mut messages).expect("framing");
                    count += messages.len();
                    messages.clear();
                }
                count
            })
        });

        // The session keeps publishing across iterations: every iteration replays the same
        // messages with the same absolute (type-0) timestamps.
        let mut session = publishing_session();
        let mut events = Vec::new();
        group.bench_function(format!("session/{}", fx.name), |b| {
            b.iter(|| {
                let mut videos = 0usize;
                for read in black_box(&wire).chunks(READ_BUF) {
                    session.handle(read, &mut events).expect("session");
                    videos += events
                        .iter()
                        .filter(|e| matches!(e, Event::Video { .. }))
                        .count();
                    events.clear();
                    session.output().clear();
                }
                videos
            })
        });
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
