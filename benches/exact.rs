//! Exact-time snapshots: the cost of one snapshot when it decodes forward from the GOP's
//! keyframe, for GOPs of 4 s and 8 s at 720p and 1080p, against ffmpeg's own answer to
//! "the frame at T" (`ffmpeg -ss T -i file -frames:v 1`, which seeks to the keyframe
//! before T and decodes forward too).
//!
//! Not criterion: one snapshot of an 8 s GOP decodes up to 240 frames, so a few timed
//! repetitions (the median is printed) say enough. The recordings are made at start with
//! ffmpeg (testsrc2, libx264 High profile with 2 B-frames, 30 fps, 16 s) in a temporary
//! folder. Run with `cargo bench --bench exact`; it prints a Markdown table for
//! docs/performance.md.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use livesnap::media::avc::{self, AvcConfig};
use livesnap::media::flv::{self, FlvReader, PacketKind};
use livesnap::snapshot::exact::{ExactDecoder, ExactDue, ExactLimits, ExactScheduler};
use livesnap::snapshot::render::Renderer;

const INTERVAL_SECS: u32 = 5;
const RUNS: usize = 5;

fn make(dir: &Path, name: &str, size: &str, gop_secs: u32) -> std::path::PathBuf {
    let out = dir.join(name);
    let gop = (gop_secs * 30).to_string();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=30"))
        .args([
            "-t",
            "16",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "high",
        ])
        .args([
            "-bf",
            "2",
            "-crf",
            "23",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-g", &gop, "-keyint_min", &gop, "-f", "flv"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    out
}

/// The exact snapshots a 5 s rule takes of the file, as the ingest hands them to the pool.
fn dues(file: &Path) -> Vec<ExactDue<Arc<AvcConfig>>> {
    let data = Bytes::from(std::fs::read(file).unwrap());
    let limits = ExactLimits {
        gop_bytes: 1 << 30,
        max_frames: 3600,
    };
    let mut s = ExactScheduler::new(INTERVAL_SECS, limits);
    let mut config = None;
    let mut out = Vec::new();
    for tag in FlvReader::new(data).unwrap() {
        let tag = tag.unwrap();
        if tag.tag_type != 9 {
            continue;
        }
        let v = flv::parse_video_tag(&tag.data).unwrap();
        match v.kind {
            PacketKind::SequenceHeader => {
                config = Some(Arc::new(avc::parse_decoder_config(&v.body).unwrap()))
            }
            PacketKind::Nalus => {
                let c = config.clone().unwrap();
                out.extend(s.on_frame(
                    tag.timestamp_ms,
                    v.composition_time,
                    v.keyframe,
                    v.body,
                    || c,
                ));
            }
            _ => {}
        }
    }
    out.extend(s.finish());
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn ffmpeg_seek(file: &Path, t: f64, threads: Option<&str>) -> Duration {
    let out = file.with_extension("jpg");
    let runs = (0..RUNS)
        .map(|_| {
            let mut c = Command::new("ffmpeg");
            c.args(["-v", "error", "-y"]);
            if let Some(n) = threads {
                c.args(["-threads", n]);
            }
            c.args(["-ss", &format!("{t:.3}"), "-i"])
                .arg(file)
                .args(["-frames:v", "1", "-q:v", "3"])
                .arg(&out);
            let start = Instant::now();
            assert!(c.status().expect("ffmpeg runs").success());
            start.elapsed()
        })
        .collect();
    median(runs)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not: nothing to run then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    println!("| Picture | GOP | Due at | Frames decoded | livesnap exact (decode + JPEG), ms | ffmpeg -ss, ms | ffmpeg -threads 1 -ss, ms |");
    println!("|---|---|---|---|---|---|---|");
    for (label, size) in [("720p", "1280x720"), ("1080p", "1920x1080")] {
        for gop in [4u32, 8] {
            let file = make(dir.path(), &format!("{label}_gop{gop}.flv"), size, gop);
            let mut renderer = Renderer::new(80, 1 << 24);
            let mut exact = ExactDecoder::new(1 << 24);
            for due in dues(&file) {
                let frames = due.forward.len() + 1;
                let runs = (0..RUNS)
                    .map(|_| {
                        let start = Instant::now();
                        let pic = if due.forward.is_empty() {
                            renderer.render(&due.keyframe, &due.context)
                        } else {
                            renderer.render_exact(
                                &mut exact,
                                &due.keyframe,
                                &due.forward,
                                due.rank,
                                &due.context,
                                &[],
                            )
                        };
                        pic.expect("renders");
                        start.elapsed()
                    })
                    .collect();
                let ours = median(runs);
                // The first frame presents at +67 ms (two B-frames at 30 fps).
                let t = due.offset_ms as f64 / 1000.0 + 0.067;
                let theirs = ffmpeg_seek(&file, t, None);
                let single = ffmpeg_seek(&file, t, Some("1"));
                println!(
                    "| {label} | {gop} s | {:.0} s | {frames} | {} | {} | {} |",
                    due.offset_ms as f64 / 1000.0,
                    ms(ours),
                    ms(theirs),
                    ms(single)
                );
            }
        }
    }
}
