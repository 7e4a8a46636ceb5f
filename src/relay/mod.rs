//! Relaying every publish to upstream origins (edge deployment): the `[[relays]]`
//! settings and their lookup (`config`), target URL templates, signing and redaction
//! (`url`), the per-target state the API and metrics read (`state`), the TLS client for
//! `rtmps://` (`tls`) and the task that pushes one publish to one target (`task`).
//!
//! A relay task reads the publish through its own `hub::Subscription` and never holds
//! up ingest, snapshots, players or other targets: the hub never waits on a consumer,
//! a target that falls a whole window behind skips to a keyframe (counted). The task
//! reconnects with backoff while the publish lives, each time from a fresh subscription
//! (metadata, sequence headers, then the newest keyframe).
//!
//! `config`, `url` and `state` are low (no I/O, nothing of the node); `task` is wired
//! by `ingest` and is the only part that touches the network.

pub mod config;
pub mod state;
pub mod task;
pub mod tls;
pub mod url;
