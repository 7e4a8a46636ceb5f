//! Helpers shared by what drives livesnap from outside: the integration tests, benches,
//! examples (the soak tool) and the fuzz seeds. Compiled only under `cfg(test)` or the
//! `test-support` feature, which tests, benches and examples get through the package's
//! dev-dependency on itself; a plain `cargo build` never contains it.
//!
//! - [`replay`]: an FLV file as RTMP messages, published through `rtmp::client::Publisher`
//!   at a given speed, with what was sent.
//! - [`peer`]: an in-memory peer to publish to (rml_rtmp's server handshake and our own
//!   `rtmp::session::Session` over a pipe) that records what the client sent.
//! - [`wire`]: what a real client never sends, for hostile peers and fuzz seeds: the
//!   client handshake alone, chunk headers of every form, waiting for the server to close.
//! - [`pictures`]: PSNR of two pictures.
//! - [`probe`]: looking at a running node: its `/metrics` text, a process's RSS, a free
//!   loopback address.
//!
//! Nothing here is used by the server or by `livesnap-load` (a user-facing tool built by a
//! plain `cargo build --release`). Helpers panic only where a test would (a missing
//! fixture is an `Err`, not a panic); they never print.

pub mod peer;
pub mod pictures;
pub mod probe;
pub mod replay;
pub mod wire;
