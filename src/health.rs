//! Stream health: what the pictures we already decode and the stream's own timing say
//! about a camera. No I/O and no clock: callers hand in the time (Unix seconds).
//!
//! - [`analyze`] turns a decoded picture's luma plane into a [`Luma`]: a 32×18
//!   box-filtered thumbnail, its mean and its spread (p5..p95 of the thumbnail's cells).
//!   Only the thumbnail is kept per stream (576 bytes), never a frame.
//! - [`StreamHealth`] is a stream's shared health: the snapshot pool reports each
//!   picture and each failed render into it ([`StreamHealth::picture`],
//!   [`StreamHealth::decode_failed`]); one node task ([`StreamHealth::check`], once a
//!   second) evaluates them with the [`HealthConfig`] and the stream's counters, and gets
//!   the [`Transition`]s to report. The admin API reads [`StreamHealth::active`].
//!
//! Conditions ([`Condition`]): `black` (mean and spread under thresholds), `frozen`
//! (the thumbnail unchanged beyond noise for K snapshots in a row, and not black), `no_keyframe` and
//! `no_video` (nothing of the kind for a configured wall time while the publish lives),
//! `decode_failing` (renders failing in a row). Each starts and ends once, with the
//! time it started (`since`).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Deserialize;

use crate::error::{invalid, Invalid};

/// Thumbnail width, in cells.
pub const THUMB_W: usize = 32;
/// Thumbnail height, in cells.
pub const THUMB_H: usize = 18;
const CELLS: usize = THUMB_W * THUMB_H;
/// Observations kept between two checks (snapshots come at most once a second).
const INBOX: usize = 32;

/// `[health]`: thresholds of the health conditions, node-wide.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Evaluate health at all. Default true.
    pub enabled: bool,
    /// `black`: the thumbnail's mean luma at most this (0..=255; 255 makes any single
    /// colour count). Default 40 (video black is 16).
    pub black_luma_max: u8,
    /// `black`: the thumbnail's p5..p95 luma range at most this. Default 10.
    pub black_spread_max: u8,
    /// `frozen`: this many snapshots in a row equal to the one before (at least 3).
    /// Default 3.
    pub frozen_snapshots: u32,
    /// `frozen`: the mean absolute difference of two thumbnails (0..=255) at most this
    /// counts as unchanged. Default 0.5.
    pub frozen_diff_max: f32,
    /// `no_keyframe`: no keyframe for more than this many seconds. Default 20.
    pub no_keyframe_secs: u64,
    /// `no_video`: no video message for more than this many seconds (audio only, or
    /// the video stopped). Default 10.
    pub no_video_secs: u64,
    /// `decode_failing`: this many renders failed in a row. Default 3.
    pub decode_failing_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            black_luma_max: 40,
            black_spread_max: 10,
            frozen_snapshots: 3,
            frozen_diff_max: 0.5,
            no_keyframe_secs: 20,
            no_video_secs: 10,
            decode_failing_after: 3,
        }
    }
}

/// A rule's `health` table: thresholds that replace the node's `[health]` ones for the
/// streams of that rule (keys left out keep the node's value).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub black_luma_max: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub black_spread_max: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_snapshots: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_diff_max: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_keyframe_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_video_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_failing_after: Option<u32>,
}

// frozen_diff_max is validated finite before a rule exists, so equality is total.
impl Eq for HealthOverride {}

impl HealthOverride {
    /// The node's thresholds with this rule's replacing them.
    pub fn apply(&self, node: &HealthConfig) -> HealthConfig {
        HealthConfig {
            enabled: self.enabled.unwrap_or(node.enabled),
            black_luma_max: self.black_luma_max.unwrap_or(node.black_luma_max),
            black_spread_max: self.black_spread_max.unwrap_or(node.black_spread_max),
            frozen_snapshots: self.frozen_snapshots.unwrap_or(node.frozen_snapshots),
            frozen_diff_max: self.frozen_diff_max.unwrap_or(node.frozen_diff_max),
            no_keyframe_secs: self.no_keyframe_secs.unwrap_or(node.no_keyframe_secs),
            no_video_secs: self.no_video_secs.unwrap_or(node.no_video_secs),
            decode_failing_after: self
                .decode_failing_after
                .unwrap_or(node.decode_failing_after),
        }
    }

    /// Checks the values given, as `[health]` would (errors keyed under `at`, e.g.
    /// `rules[2].health.frozen_snapshots`).
    pub fn validate(&self, at: &str) -> Result<(), Invalid> {
        self.apply(&HealthConfig::default())
            .validate()
            .map_err(|e| Invalid {
                key: format!("{at}.{}", e.key),
                message: e.message,
            })
    }
}

impl HealthConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(3..=1000).contains(&self.frozen_snapshots) {
            return Err(invalid("health.frozen_snapshots", "must be 3..=1000"));
        }
        if !(self.frozen_diff_max.is_finite() && (0.0..=255.0).contains(&self.frozen_diff_max)) {
            return Err(invalid("health.frozen_diff_max", "must be 0..=255"));
        }
        if !(1..=86_400).contains(&self.no_keyframe_secs) {
            return Err(invalid("health.no_keyframe_secs", "must be 1..=86400"));
        }
        if !(1..=86_400).contains(&self.no_video_secs) {
            return Err(invalid("health.no_video_secs", "must be 1..=86400"));
        }
        if !(1..=1000).contains(&self.decode_failing_after) {
            return Err(invalid("health.decode_failing_after", "must be 1..=1000"));
        }
        Ok(())
    }
}

/// Whether a stream's keyframes come further apart than its rule's interval, so its
/// snapshots can only be taken late (at the next keyframe after each due time): `None`
/// while the interval is not measured yet or without a rule.
pub fn keyframes_sparser_than_rule(
    keyframe_interval_ms: Option<u32>,
    rule_interval_secs: Option<u32>,
) -> Option<bool> {
    let (kf, rule) = (keyframe_interval_ms?, rule_interval_secs?);
    Some(u64::from(kf) > u64::from(rule) * 1000)
}

/// A health condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    Black,
    Frozen,
    NoKeyframe,
    NoVideo,
    DecodeFailing,
}

impl Condition {
    pub const ALL: [Condition; 5] = [
        Condition::Black,
        Condition::Frozen,
        Condition::NoKeyframe,
        Condition::NoVideo,
        Condition::DecodeFailing,
    ];

    /// The name in the API, events and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Black => "black",
            Condition::Frozen => "frozen",
            Condition::NoKeyframe => "no_keyframe",
            Condition::NoVideo => "no_video",
            Condition::DecodeFailing => "decode_failing",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A condition starting or ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub condition: Condition,
    /// True for a start, false for an end.
    pub start: bool,
    /// Unix seconds.
    pub at: u64,
}

impl Transition {
    /// `"start"` or `"end"`.
    pub fn state(&self) -> &'static str {
        if self.start {
            "start"
        } else {
            "end"
        }
    }
}

/// What the luma plane of one picture looks like.
#[derive(Clone, PartialEq)]
pub struct Luma {
    /// Mean of the thumbnail's cells (0..=255).
    pub mean: f32,
    /// p95 minus p5 of the thumbnail's cells.
    pub spread: u8,
    /// 32×18 box-filtered averages, row by row.
    pub thumb: Box<[u8; CELLS]>,
}

impl std::fmt::Debug for Luma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Luma")
            .field("mean", &self.mean)
            .field("spread", &self.spread)
            .finish_non_exhaustive()
    }
}

impl Luma {
    /// Mean absolute difference of two thumbnails (0..=255).
    pub fn diff(&self, other: &Luma) -> f32 {
        let sum: u32 = self
            .thumb
            .iter()
            .zip(other.thumb.iter())
            .map(|(a, b)| u32::from(a.abs_diff(*b)))
            .sum();
        sum as f32 / CELLS as f32
    }
}

/// The [`Luma`] of a plane of `width` × `height` samples whose rows start every
/// `stride` bytes; `None` when the plane does not hold them. Each thumbnail cell is the
/// mean of its block, read on every other row of blocks taller than 3 rows (the cost
/// stays under half a millisecond at 1080p; see `benches/health.rs`).
pub fn analyze(plane: &[u8], stride: usize, width: usize, height: usize) -> Option<Luma> {
    if width == 0 || height == 0 || stride < width {
        return None;
    }
    let need = stride.checked_mul(height - 1)?.checked_add(width)?;
    if plane.len() < need {
        return None;
    }
    let bounds = |i: usize, n: usize, cells: usize| {
        let a = (i * n / cells).min(n - 1);
        let b = ((i + 1) * n / cells).clamp(a + 1, n);
        (a, b)
    };
    let cols: [(usize, usize); THUMB_W] = std::array::from_fn(|i| bounds(i, width, THUMB_W));
    let mut thumb = Box::new([0u8; CELLS]);
    let mut sums = [0u32; THUMB_W];
    for cy in 0..THUMB_H {
        let (y0, y1) = bounds(cy, height, THUMB_H);
        let step = if y1 - y0 > 3 { 2 } else { 1 };
        sums.fill(0);
        let mut rows = 0u32;
        for y in (y0..y1).step_by(step) {
            let row = &plane[y * stride..y * stride + width];
            for (sum, &(a, b)) in sums.iter_mut().zip(cols.iter()) {
                *sum += row[a..b].iter().map(|&v| u32::from(v)).sum::<u32>();
            }
            rows += 1;
        }
        for (cx, &(a, b)) in cols.iter().enumerate() {
            let n = rows * (b - a) as u32;
            thumb[cy * THUMB_W + cx] = ((sums[cx] + n / 2) / n) as u8;
        }
    }
    let mut hist = [0u32; 256];
    let mut total = 0u32;
    for &v in thumb.iter() {
        hist[usize::from(v)] += 1;
        total += u32::from(v);
    }
    let percentile = |p: u32| {
        let rank = (CELLS as u32 * p).div_ceil(100).max(1);
        let mut seen = 0;
        for (v, &n) in hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return v as u8;
            }
        }
        255
    };
    Some(Luma {
        mean: total as f32 / CELLS as f32,
        spread: percentile(95) - percentile(5),
        thumb,
    })
}

/// What the snapshot pool saw of one due keyframe.
#[derive(Debug, Clone)]
pub enum Observation {
    Picture(Luma),
    DecodeFailed,
}

/// The stream's counters the timing conditions are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub video_frames: u64,
    pub keyframes: u64,
}

/// A stream's health state machine (see the module doc).
#[derive(Debug, Default)]
pub struct Health {
    /// Since when each condition is active, by [`Condition::index`].
    active: [Option<u64>; 5],
    previous: Option<Luma>,
    /// Snapshots in a row equal to the one before.
    unchanged: u32,
    failed_in_row: u32,
    /// The counters last seen and when they last moved (the publish start at first).
    seen: Option<(Counters, u64, u64)>,
}

impl Health {
    fn set(&mut self, c: Condition, on: bool, now: u64, out: &mut Vec<Transition>) {
        let slot = &mut self.active[c.index()];
        if on == slot.is_some() {
            return;
        }
        *slot = on.then_some(now);
        out.push(Transition {
            condition: c,
            start: on,
            at: now,
        });
    }

    /// One observation of the pool, in order.
    pub fn observe(
        &mut self,
        cfg: &HealthConfig,
        obs: Observation,
        now: u64,
        out: &mut Vec<Transition>,
    ) {
        match obs {
            Observation::DecodeFailed => {
                self.failed_in_row = self.failed_in_row.saturating_add(1);
                let failing = self.failed_in_row >= cfg.decode_failing_after;
                self.set(Condition::DecodeFailing, failing, now, out);
            }
            Observation::Picture(luma) => {
                self.failed_in_row = 0;
                self.set(Condition::DecodeFailing, false, now, out);
                let black = luma.mean <= f32::from(cfg.black_luma_max)
                    && luma.spread <= cfg.black_spread_max;
                self.set(Condition::Black, black, now, out);
                let same = self
                    .previous
                    .as_ref()
                    .is_some_and(|p| p.diff(&luma) <= cfg.frozen_diff_max);
                self.unchanged = if same { self.unchanged + 1 } else { 0 };
                // K snapshots in a row the same: K-1 equal pairs. A black picture is
                // `black` only: one cause, one condition.
                let frozen = !black && self.unchanged + 1 >= cfg.frozen_snapshots;
                self.set(Condition::Frozen, frozen, now, out);
                self.previous = Some(luma);
            }
        }
    }

    /// The timing conditions, from the stream's counters at `now` (`started`: when the
    /// publish began, the reference before any message).
    pub fn timing(
        &mut self,
        cfg: &HealthConfig,
        counters: Counters,
        started: u64,
        now: u64,
        out: &mut Vec<Transition>,
    ) {
        let (prev, mut key_at, mut video_at) =
            self.seen.unwrap_or((Counters::default(), started, started));
        if counters.keyframes != prev.keyframes {
            key_at = now;
        }
        if counters.video_frames != prev.video_frames {
            video_at = now;
        }
        self.seen = Some((counters, key_at, video_at));
        let no_video = now.saturating_sub(video_at) > cfg.no_video_secs;
        self.set(Condition::NoVideo, no_video, now, out);
        // Without video, the missing keyframes are `no_video`'s to tell.
        let no_key = !no_video && now.saturating_sub(key_at) > cfg.no_keyframe_secs;
        self.set(Condition::NoKeyframe, no_key, now, out);
    }

    /// Ends every active condition (the publish ended).
    pub fn end_all(&mut self, now: u64, out: &mut Vec<Transition>) {
        for c in Condition::ALL {
            self.set(c, false, now, out);
        }
    }

    /// The active conditions and since when.
    pub fn active(&self) -> Vec<(Condition, u64)> {
        Condition::ALL
            .into_iter()
            .filter_map(|c| self.active[c.index()].map(|t| (c, t)))
            .collect()
    }
}

#[derive(Debug, Default)]
struct Shared {
    inbox: VecDeque<Observation>,
    health: Health,
    ended: bool,
}

/// A stream's health, shared by the pool (observations), the health check and the API.
#[derive(Debug, Default)]
pub struct StreamHealth {
    inner: Mutex<Shared>,
}

impl StreamHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, obs: Observation) {
        let mut s = self.lock();
        if s.inbox.len() == INBOX {
            s.inbox.pop_front();
        }
        s.inbox.push_back(obs);
    }

    /// A rendered picture's luma (from a pool worker).
    pub fn picture(&self, luma: Luma) {
        self.push(Observation::Picture(luma));
    }

    /// A due keyframe that gave no picture (from a pool worker).
    pub fn decode_failed(&self) {
        self.push(Observation::DecodeFailed);
    }

    /// Evaluates the observations since the last check and the timing conditions;
    /// returns the transitions, in order.
    pub fn check(
        &self,
        cfg: &HealthConfig,
        counters: Counters,
        started: u64,
        now: u64,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut s = self.lock();
        if s.ended {
            return out;
        }
        while let Some(obs) = s.inbox.pop_front() {
            s.health.observe(cfg, obs, now, &mut out);
        }
        s.health.timing(cfg, counters, started, now, &mut out);
        out
    }

    /// Ends every active condition, once (the publish ended); later checks do nothing.
    pub fn end(&self, now: u64) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut s = self.lock();
        s.ended = true;
        s.inbox.clear();
        s.health.end_all(now, &mut out);
        out
    }

    /// The active conditions and since when (Unix seconds).
    pub fn active(&self) -> Vec<(Condition, u64)> {
        self.lock().health.active()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn keyframes_sparser_than_the_rule_make_snapshots_late() {
        assert_eq!(keyframes_sparser_than_rule(Some(8000), Some(5)), Some(true));
        assert_eq!(
            keyframes_sparser_than_rule(Some(5000), Some(5)),
            Some(false)
        );
        assert_eq!(
            keyframes_sparser_than_rule(Some(1000), Some(5)),
            Some(false)
        );
        assert_eq!(keyframes_sparser_than_rule(None, Some(5)), None);
        assert_eq!(keyframes_sparser_than_rule(Some(8000), None), None);
    }
    use super::*;

    const W: usize = 640;
    const H: usize = 360;

    fn plane(f: impl Fn(usize, usize) -> u8) -> Vec<u8> {
        let mut p = vec![0u8; W * H];
        for y in 0..H {
            for x in 0..W {
                p[y * W + x] = f(x, y);
            }
        }
        p
    }

    fn luma(f: impl Fn(usize, usize) -> u8) -> Luma {
        analyze(&plane(f), W, W, H).unwrap()
    }

    /// A deterministic pseudo-random byte per pixel and seed.
    fn noise(x: usize, y: usize, seed: usize) -> u8 {
        let mut v = (x * 7919 + y * 104_729 + seed * 1_299_709) as u64;
        v ^= v >> 13;
        v = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (v >> 56) as u8
    }

    fn gradient(shift: usize) -> impl Fn(usize, usize) -> u8 {
        move |x, y| (((x + shift) * 255 / W + y * 64 / H) % 256) as u8
    }

    fn run(h: &mut Health, cfg: &HealthConfig, obs: Observation, now: u64) -> Vec<Transition> {
        let mut out = Vec::new();
        h.observe(cfg, obs, now, &mut out);
        out
    }

    fn starts(t: &[Transition]) -> Vec<(&'static str, bool)> {
        t.iter().map(|t| (t.condition.name(), t.start)).collect()
    }

    #[test]
    fn analysis_of_synthetic_planes() {
        let black = luma(|_, _| 16);
        assert_eq!((black.mean, black.spread), (16.0, 0));
        let grey = luma(|_, _| 128);
        assert_eq!((grey.mean, grey.spread), (128.0, 0));
        // Noise averages out in the thumbnail: mid grey, little spread.
        let n = luma(|x, y| noise(x, y, 1));
        assert!((n.mean - 127.5).abs() < 3.0, "{n:?}");
        assert!(n.spread < 24, "{n:?}");
        // A gradient spreads wide.
        let g = luma(gradient(0));
        assert!(g.spread > 150, "{g:?}");
        // Thumbnail layout: left half dark, right half bright.
        let half = luma(|x, _| if x < W / 2 { 0 } else { 200 });
        assert_eq!(half.thumb[0], 0);
        assert_eq!(half.thumb[THUMB_W - 1], 200);
        assert_eq!(half.thumb[CELLS - 1], 200);
        // Strides beyond the width are skipped; short planes are refused.
        let mut strided = vec![255u8; 700 * H];
        for y in 0..H {
            strided[y * 700..y * 700 + W].fill(16);
        }
        assert_eq!(analyze(&strided, 700, W, H).unwrap().mean, 16.0);
        assert!(analyze(&strided, 700, W, H + 1).is_none());
        assert!(analyze(&strided, 600, W, H).is_none());
        // Pictures smaller than the thumbnail still work.
        assert_eq!(analyze(&[50; 4], 2, 2, 2).unwrap().mean, 50.0);
        // The difference of two thumbnails.
        assert_eq!(black.diff(&grey), 112.0);
        assert!(g.diff(&luma(gradient(64))) > 10.0);
        assert!(n.diff(&luma(|x, y| noise(x, y, 2))) < 8.0);
    }

    #[test]
    fn black_starts_and_ends() {
        let cfg = HealthConfig::default();
        let mut h = Health::default();
        let t = run(&mut h, &cfg, Observation::Picture(luma(|_, _| 16)), 10);
        assert_eq!(starts(&t), [("black", true)]);
        assert_eq!(h.active(), [(Condition::Black, 10)]);
        // Black again: no new transition.
        assert!(run(&mut h, &cfg, Observation::Picture(luma(|_, _| 20)), 15).is_empty());
        // Black for K snapshots is still only black (not frozen as well).
        for now in 16..20 {
            assert!(run(&mut h, &cfg, Observation::Picture(luma(|_, _| 20)), now).is_empty());
        }
        let t = run(&mut h, &cfg, Observation::Picture(luma(gradient(0))), 20);
        assert_eq!(starts(&t), [("black", false)]);
        assert_eq!(t[0].at, 20);
        // A single bright colour is not black by default, but is with black_luma_max = 255.
        assert!(run(&mut h, &cfg, Observation::Picture(luma(|_, _| 200)), 25).is_empty());
        let any = HealthConfig {
            black_luma_max: 255,
            ..cfg
        };
        let t = run(
            &mut Health::default(),
            &any,
            Observation::Picture(luma(|_, _| 200)),
            1,
        );
        assert_eq!(starts(&t), [("black", true)]);
        // Noise is not black, nor is a moving gradient.
        let t = run(
            &mut Health::default(),
            &cfg,
            Observation::Picture(luma(|x, y| noise(x, y, 3))),
            1,
        );
        assert!(t.is_empty());
        let t = run(
            &mut Health::default(),
            &cfg,
            Observation::Picture(luma(gradient(5))),
            1,
        );
        assert!(t.is_empty());
    }

    #[test]
    fn frozen_after_k_unchanged_snapshots() {
        let cfg = HealthConfig {
            frozen_snapshots: 4,
            ..HealthConfig::default()
        };
        let mut h = Health::default();
        // A moving gradient never freezes.
        for i in 0..10 {
            let t = run(
                &mut h,
                &cfg,
                Observation::Picture(luma(gradient(i * 40))),
                i as u64,
            );
            assert!(t.is_empty(), "{i}: {t:?}");
        }
        // The same picture (with fresh, faint noise): frozen at the 4th.
        let scene =
            |seed| move |x: usize, y: usize| (x * 200 / W) as u8 / 2 + noise(x, y, seed) / 32;
        for i in 0..3 {
            let t = run(
                &mut h,
                &cfg,
                Observation::Picture(luma(scene(i))),
                20 + i as u64,
            );
            assert!(t.is_empty(), "{i}: {t:?}");
        }
        let t = run(&mut h, &cfg, Observation::Picture(luma(scene(3))), 23);
        assert_eq!(starts(&t), [("frozen", true)]);
        assert_eq!(h.active(), [(Condition::Frozen, 23)]);
        let t = run(&mut h, &cfg, Observation::Picture(luma(scene(4))), 24);
        assert!(t.is_empty());
        // It moves: frozen ends.
        let t = run(&mut h, &cfg, Observation::Picture(luma(gradient(0))), 25);
        assert_eq!(starts(&t), [("frozen", false)]);
        // A failed render does not count as a picture.
        assert!(run(&mut h, &cfg, Observation::DecodeFailed, 26).is_empty());
        assert!(run(&mut h, &cfg, Observation::Picture(luma(gradient(0))), 27).is_empty());
    }

    #[test]
    fn decode_failing_after_n_in_a_row() {
        let cfg = HealthConfig::default();
        let mut h = Health::default();
        assert!(run(&mut h, &cfg, Observation::DecodeFailed, 1).is_empty());
        assert!(run(&mut h, &cfg, Observation::DecodeFailed, 2).is_empty());
        let t = run(&mut h, &cfg, Observation::DecodeFailed, 3);
        assert_eq!(starts(&t), [("decode_failing", true)]);
        let t = run(&mut h, &cfg, Observation::Picture(luma(gradient(0))), 4);
        assert_eq!(starts(&t), [("decode_failing", false)]);
        // Interrupted streaks never start it.
        for i in 0..10 {
            let obs = if i % 3 == 2 {
                Observation::Picture(luma(gradient(i * 30)))
            } else {
                Observation::DecodeFailed
            };
            assert!(run(&mut h, &cfg, obs, 10 + i as u64).is_empty());
        }
    }

    #[test]
    fn timing_conditions() {
        let cfg = HealthConfig {
            no_keyframe_secs: 5,
            no_video_secs: 3,
            ..HealthConfig::default()
        };
        let mut h = Health::default();
        let mut out = Vec::new();
        let c = |video_frames, keyframes| Counters {
            video_frames,
            keyframes,
        };
        // Video and keyframes flowing.
        for now in 100..110 {
            h.timing(&cfg, c(now * 30, now), 100, now, &mut out);
        }
        assert!(out.is_empty());
        // Keyframes stop (the last at 109), video goes on: no_keyframe once more than 5 s
        // passed.
        for now in 110..=114 {
            h.timing(&cfg, c(now * 30, 109), 100, now, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        h.timing(&cfg, c(115 * 30, 109), 100, 115, &mut out);
        assert_eq!(starts(&out), [("no_keyframe", true)]);
        out.clear();
        // A keyframe: it ends.
        h.timing(&cfg, c(116 * 30, 110), 100, 116, &mut out);
        assert_eq!(starts(&out), [("no_keyframe", false)]);
        out.clear();
        // Video stops: no_video (and not no_keyframe on top).
        for now in 117..=130 {
            h.timing(&cfg, c(116 * 30, 110), 100, now, &mut out);
        }
        assert_eq!(starts(&out), [("no_video", true)]);
        assert_eq!(out[0].at, 120);
        out.clear();
        // The stream ends: every active condition ends.
        h.end_all(131, &mut out);
        assert_eq!(starts(&out), [("no_video", false)]);
        assert!(h.active().is_empty());

        // Audio only from the start: no_video after no_video_secs from the publish start.
        let mut h = Health::default();
        let mut out = Vec::new();
        for now in 200..=204 {
            h.timing(&cfg, c(0, 0), 200, now, &mut out);
        }
        assert_eq!(starts(&out), [("no_video", true)]);
    }

    #[test]
    fn shared_health_ends_once() {
        let cfg = HealthConfig::default();
        let s = StreamHealth::default();
        s.picture(luma(|_, _| 16));
        let counters = Counters {
            video_frames: 1,
            keyframes: 1,
        };
        let t = s.check(&cfg, counters, 0, 1);
        assert_eq!(starts(&t), [("black", true)]);
        assert_eq!(s.active(), [(Condition::Black, 1)]);
        // The inbox is bounded.
        for _ in 0..100 {
            s.decode_failed();
        }
        assert_eq!(s.lock().inbox.len(), INBOX);
        let t = s.end(2);
        assert_eq!(starts(&t), [("black", false)]);
        assert!(s.end(3).is_empty());
        s.picture(luma(|_, _| 16));
        assert!(s.check(&cfg, counters, 0, 4).is_empty());
    }

    #[test]
    fn config_validation_names_keys() {
        assert!(HealthConfig::default().validate().is_ok());
        let bad = |c: HealthConfig| c.validate().unwrap_err().key;
        let d = HealthConfig::default;
        assert_eq!(
            bad(HealthConfig {
                frozen_snapshots: 2,
                ..d()
            }),
            "health.frozen_snapshots"
        );
        assert_eq!(
            bad(HealthConfig {
                frozen_diff_max: f32::NAN,
                ..d()
            }),
            "health.frozen_diff_max"
        );
        assert_eq!(
            bad(HealthConfig {
                no_keyframe_secs: 0,
                ..d()
            }),
            "health.no_keyframe_secs"
        );
        assert_eq!(
            bad(HealthConfig {
                no_video_secs: 0,
                ..d()
            }),
            "health.no_video_secs"
        );
        assert_eq!(
            bad(HealthConfig {
                decode_failing_after: 0,
                ..d()
            }),
            "health.decode_failing_after"
        );
        let parsed: HealthConfig = toml::from_str("black_luma_max = 30").unwrap();
        assert_eq!(parsed.black_luma_max, 30);
        assert!(toml::from_str::<HealthConfig>("black_max = 30").is_err());
    }
}
