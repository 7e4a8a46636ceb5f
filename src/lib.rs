//! livesnap: an RTMP ingest server that takes keyframe-only JPEG snapshots of live
//! streams and stores them through opendal. `docs/architecture.md` is the map.
//!
//! Data flows one way: `rtmp` (socket → bounded framing → rml_rtmp session) →
//! `admission` → `ingest` (one live publish) → `snapshot` (schedule, render on a
//! bounded pool, write) → `storage` → `notify`. `rules` and `api` sit beside the flow;
//! `node` is the shared state every part is handed, `server` wires it all.
#![deny(clippy::print_stdout, clippy::print_stderr)]

// Low layers: no module here imports a higher one.
pub mod clock;
pub mod error;
pub mod events;
pub mod health;
pub mod hub;
pub mod links;
pub mod media;
pub mod metrics;
pub mod names;
pub mod netlist;
pub mod picture;
pub mod util;
pub mod x509;

pub mod auth;
pub mod notify;
pub mod play;
pub mod relay;
pub mod review;
pub mod rules;
pub mod storage;

pub mod config;
pub mod live;
pub mod snapshot;

pub mod node;

// The retention sweeper (a node task and the `sweep` command).
pub mod retention;

// The flow and the edges, each handed the node.
pub mod admission;
pub mod api;
pub mod health_check;
pub mod ingest;
pub mod rtmp;

// Wiring and commands.
pub mod cli;
pub mod server;

// Helpers for tests, benches, examples, fuzz seeds and the soak tool (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
