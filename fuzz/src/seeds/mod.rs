//! Seed corpora, built from real data: publishes recorded between a client and our
//! `Session` (rml_rtmp's client session, whose compressed headers encoders also write, and
//! livesnap's own `rtmp::client::Publisher`), the fixtures' sequence headers, SPS NAL units
//! and keyframes, chunk streams covering every header form (whole messages written by
//! `rtmp::chunk_writer`, the other forms laid out with `testing::wire::chunk_header`),
//! AMF0 commands, and the shipped key templates.
//!
//! Written as `fuzz/corpus/<target>/seed-*` by `LIVESNAP_WRITE_SEEDS=1 cargo test --test
//! fuzz_regressions committed_seeds_are_current`; the files libFuzzer adds keep their
//! hash names.
//! Deterministic, except the random parts of the handshake packets.

use std::path::Path;

mod media;
mod rtmp;
mod text;

/// One seed: target, file name (without the `seed-` prefix), bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Every seed of every target; `root` is the main crate's directory (for `fixtures/`).
pub fn all(root: &Path) -> Vec<Seed> {
    let fixtures = media::Fixtures::load(root);
    let mut seeds = Vec::new();
    let publish = rtmp::recorded_publish(&fixtures.bt709, 48 << 10);
    let client = rtmp::client_publish(&fixtures.bt709, 24 << 10);
    rtmp::handshake(&publish, &mut seeds);
    rtmp::framing(&publish, &client, &mut seeds);
    rtmp::session(&publish, &client, &mut seeds);
    rtmp::amf0(&mut seeds);
    media::flv_tag(&fixtures, &mut seeds);
    media::sps(&fixtures, &mut seeds);
    media::keyframe_to_jpeg(&fixtures, &mut seeds);
    text::template(&mut seeds);
    text::auth_key(&mut seeds);
    text::proxy_header(&mut seeds);
    text::x509(&mut seeds);
    seeds
}

/// Writes every seed under `root/fuzz/corpus/<target>/seed-<name>`.
pub fn write_all(root: &Path) -> std::io::Result<usize> {
    let seeds = all(root);
    for (target, name, bytes) in &seeds {
        let dir = root.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(seeds.len())
}
