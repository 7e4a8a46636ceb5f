//! livesnap: an RTMP ingest server that takes keyframe-only JPEG snapshots of live
//! streams and stores them through opendal.
//!
//! Data flows one way: `rtmp` (socket → bounded framing → rml_rtmp session) →
//! `media` (FLV/AVC parsing) → `snapshot` (schedule, decode, encode on a bounded
//! pool) → `storage`. `rules` and `api` sit beside the flow.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod ingest;
pub mod media;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod rtmp;
pub mod rules;
pub mod server;
pub mod snapshot;
pub mod storage;
