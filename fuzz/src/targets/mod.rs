//! Fuzz target logic shared by `fuzz/fuzz_targets/` (cargo-fuzz, nightly features) and
//! the main crate's `tests/fuzz_regressions.rs` (stable). Depends only on crates the main
//! crate depends on (`livesnap`, `rml_rtmp`, `bytes`), so both can compile it.
//!
//! Every `run` takes arbitrary bytes, never panics on its own behalf, and panics when an
//! invariant of the code under test does not hold. Input layouts are described on each
//! module; seeds under `fuzz/corpus/<target>/` follow them.

pub mod amf0;
pub mod auth_key;
pub mod flv_tag;
pub mod framing;
pub mod handshake;
pub mod input;
pub mod keyframe_to_jpeg;
pub mod proxy_header;
pub mod session;
pub mod sps;
pub mod template;
pub mod x509;

/// A target's check: panics when an invariant does not hold.
pub type Run = fn(&[u8]);

/// Every target by name, as the fuzz targets and the corpus folders are named.
pub const ALL: &[(&str, Run)] = &[
    ("handshake", handshake::run),
    ("framing", framing::run),
    ("amf0", amf0::run),
    ("session", session::run),
    ("flv_tag", flv_tag::run),
    ("sps", sps::run),
    ("keyframe_to_jpeg", keyframe_to_jpeg::run),
    ("template", template::run),
    ("auth_key", auth_key::run),
    ("proxy_header", proxy_header::run),
    ("x509", x509::run),
];
