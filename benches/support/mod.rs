//! Shared by the fixture benches: which FLV files to run on, their tags, and an RTMP
//! chunker that frames those tags the way an encoder does (so the framing benches read
//! realistic bytes).
//!
//! Fixtures: the committed recordings under `fixtures/` (small, low bit rate), plus every
//! `*.flv` in the directory named by `LIVESNAP_BENCH_FIXTURES` (for example the 720p/1080p
//! Baseline/High files at live bit rates that `benches/compare.sh fixtures DIR` makes).
//! `LIVESNAP_BENCH_ONLY=substring` keeps only the fixtures whose name contains it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use livesnap::media::avc::{self, AvcConfig};
use livesnap::media::flv::{self, FlvReader, FlvTag, PacketKind};
use livesnap::snapshot::scheduler::Scheduler;

/// Committed fixtures used by every bench (the other committed files test edge cases).
pub const COMMITTED: [&str; 3] = [
    "baseline_640x360_gop1s.flv",
    "high_1280x720_bframes_aac.flv",
    "high_1920x1080_gop2s.flv",
];

/// One FLV file, read once.
pub struct Fixture {
    /// File stem, used in bench ids.
    pub name: String,
    pub data: Bytes,
    pub tags: Vec<FlvTag>,
}

impl Fixture {
    pub fn load(path: &Path) -> Fixture {
        let data =
            Bytes::from(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        let tags = FlvReader::new(data.clone())
            .expect("FLV header")
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        Fixture { name, data, tags }
    }

    /// Video tags only (type 9).
    pub fn video(&self) -> impl Iterator<Item = &FlvTag> {
        self.tags.iter().filter(|t| t.tag_type == 9)
    }

    /// Bytes of all video tag bodies.
    pub fn video_bytes(&self) -> u64 {
        self.video().map(|t| t.data.len() as u64).sum()
    }

    /// Length of the recording in ms (last tag timestamp minus first).
    pub fn duration_ms(&self) -> u32 {
        let first = self.tags.first().map_or(0, |t| t.timestamp_ms);
        let last = self.tags.last().map_or(0, |t| t.timestamp_ms);
        last.wrapping_sub(first)
    }

    /// The keyframes a rule with `interval_secs` snapshots, in order, each with the
    /// sequence header in force when it arrived: what the ingest path hands the pool.
    pub fn due_keyframes(&self, interval_secs: u32) -> Vec<(Bytes, std::sync::Arc<AvcConfig>)> {
        let mut scheduler = Scheduler::new(interval_secs);
        let mut config = None;
        let mut due = Vec::new();
        for tag in self.video() {
            let Ok(v) = flv::parse_video_tag(&tag.data) else {
                continue;
            };
            match v.kind {
                PacketKind::SequenceHeader => {
                    config = avc::parse_decoder_config(&v.body)
                        .ok()
                        .map(std::sync::Arc::new);
                }
                PacketKind::Nalus if v.keyframe => {
                    if let Some(cfg) = &config {
                        if scheduler.on_keyframe(tag.timestamp_ms).is_some() {
                            due.push((v.body.clone(), cfg.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        due
    }
}

/// Paths of the fixtures to bench, committed first.
pub fn fixture_paths() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut paths: Vec<PathBuf> = COMMITTED.iter().map(|n| root.join(n)).collect();
    if let Ok(dir) = std::env::var("LIVESNAP_BENCH_FIXTURES") {
        let mut extra: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("LIVESNAP_BENCH_FIXTURES={dir}: {e}"))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "flv"))
            .collect();
        extra.sort();
        paths.extend(extra);
    }
    if let Ok(only) = std::env::var("LIVESNAP_BENCH_ONLY") {
        paths.retain(|p| p.to_string_lossy().contains(&only));
    }
    paths
}

pub fn fixtures() -> Vec<Fixture> {
    fixture_paths().iter().map(|p| Fixture::load(p)).collect()
}

/// Chunk stream ids an encoder typically uses (ffmpeg: audio 4, video 6, data 5).
fn csid_for(tag_type: u8) -> u8 {
    match tag_type {
        8 => 4,
        9 => 6,
        _ => 5,
    }
}

/// Frames every audio, video and script tag of `fixture` as RTMP messages on message
/// stream `stream_id`, chunked at `chunk_size`: a type-0 header on each message's first
/// chunk, type-3 headers on its continuations. Starts with a `SetChunkSize`. Timestamps
/// stay below 0xFFFFFF for every committed fixture, so no extended timestamps appear.
pub fn chunk_stream(fixture: &Fixture, chunk_size: usize, stream_id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(fixture.data.len() + fixture.data.len() / chunk_size * 2);
    // SetChunkSize on chunk stream 2, message stream 0, sent at the default size (128).
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]);
    out.extend_from_slice(&(chunk_size as u32).to_be_bytes());
    for tag in &fixture.tags {
        let type_id = match tag.tag_type {
            8 | 9 => tag.tag_type,
            18 => 18,
            _ => continue,
        };
        let csid = csid_for(type_id);
        let ts = tag.timestamp_ms;
        assert!(ts < 0x00FF_FFFF, "extended timestamps are not written here");
        let len = tag.data.len() as u32;
        out.push(csid);
        out.extend_from_slice(&ts.to_be_bytes()[1..]);
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(type_id);
        out.extend_from_slice(&stream_id.to_le_bytes());
        for (i, piece) in tag.data.chunks(chunk_size).enumerate() {
            if i > 0 {
                out.push(0xC0 | csid);
            }
            out.extend_from_slice(piece);
        }
    }
    out
}
