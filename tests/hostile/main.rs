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
//!
//! One module per theme; `harness`, `offence` and `video` hold what several themes share.

#[path = "../common/mod.rs"]
mod common;

// Shared by several themes.
mod harness; // the node's timeouts, the panic watch, one node + one good stream, cases
mod offence; // offences that end in a close: `Before`, `Close`, `commit`
mod video; // the good fixture's video tags, sent by a raw peer

// The themes.
mod amf; // AMF0 and commands
mod bad_media; // bad media, skipped and not fatal
mod chunks; // the chunk layer
mod flood; // 10,000 idle connections
mod handshake; // the handshake, silence and stalls
mod interleave; // legal interleaving of chunk streams
mod partial; // memory pinned by partial messages, per connection and node-wide
mod timestamps; // timestamp edges and aborted messages
