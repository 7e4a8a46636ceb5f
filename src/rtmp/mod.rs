//! RTMP. The server side: the accept loop and its connection limits (`listener`,
//! `limits`), the per-connection task that moves bytes (`conn`), a player's side of it (`player`:
//! its play across publishes, its wait for a publish, the batch buffers players share) and
//! its socket (`socket`: options, a read that does not wait), our bounded chunk
//! framing layer (`framing`, `amf`) that guards rml_rtmp, and the session glue
//! (`session`) that turns rml_rtmp events into publish/media events without doing I/O.
//! The outbound side: `chunk_writer` (messages → chunks, no I/O), `outbox` (what a
//! client connection has queued: its own bytes and shared payload slices) and `client` (an RTMP
//! publisher and player for relays, the load tool and tests).

pub mod amf;
pub mod chunk_writer;
pub mod client;
pub mod conn;
pub mod framing;
pub mod limits;
pub mod listener;
pub mod outbox;
mod player;
pub mod proxy;
pub mod session;
pub mod socket;
pub mod tls;
