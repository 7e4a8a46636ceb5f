//! Real external tools the tests check our output with: ffmpeg's decode of fixtures and
//! JPEGs (reference pictures for PSNR), and Debian's headless Chromium for the
//! dashboard. Each fails, never skips, when the tool is missing (`.ci/setup` installs
//! them).

use std::path::Path;
use std::process::Command;

use super::fixture;

const CHROMIUM: &str = "/usr/bin/chromium";

/// ffmpeg's decode of a fixture's keyframes, as RGB24 frames (BT.601 for untagged
/// sources, the tagged matrix otherwise: swscale's defaults).
pub fn reference_keyframes(file: &str, width: usize, height: usize) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-skip_frame", "nokey", "-i"])
        .arg(fixture(file))
        .args(["-vsync", "0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = width * height * 3;
    assert_eq!(out.stdout.len() % size, 0);
    out.stdout.chunks(size).map(|c| c.to_vec()).collect()
}

/// A JPEG decoded by ffmpeg's own decoder and converted to RGB24 by the same path as
/// the reference frames, so that a comparison measures our pixels, not two
/// converters' different chroma upsampling.
pub fn ffmpeg_rgb(jpeg: &Path) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(jpeg)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// MD5s of the decoded video frames of `file`, in order.
pub fn decoded_md5s(file: &Path) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-map", "0:v", "-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit(',').next().unwrap().trim().to_owned())
        .collect()
}

/// Runs headless Chromium on `url` and returns the DOM after `budget_ms` of virtual
/// time (timers and fetches run).
pub fn dump_dom(url: &str, budget_ms: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {CHROMIUM} (apt-get install chromium): {e}"));
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
