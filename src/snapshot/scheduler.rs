//! When is a snapshot due? Pure per-stream logic over keyframe timestamps, so that a
//! recorded file pushed faster than real time gives the same snapshots as a live push.
//!
//! The stream's own timestamps drive a monotonic media clock `pos` (ms since the first
//! keyframe, t0). The first keyframe is taken; the k-th snapshot is the first keyframe
//! at or after `k·interval`; due times that pass without a keyframe are skipped, not
//! queued. A timestamp jump (backwards, or forwards by more than an hour) re-anchors:
//! the clock does not move across the jump, so the cadence continues without a burst
//! or a silence.

/// Forward jumps larger than this are treated as discontinuities.
pub const MAX_FORWARD_JUMP_MS: u32 = 3_600_000;

#[derive(Debug, Clone)]
pub struct Scheduler {
    interval_ms: u64,
    last_ts: Option<u32>,
    pos_ms: u64,
    next_due_ms: u64,
    reanchors: u64,
}

impl Scheduler {
    pub fn new(interval_secs: u32) -> Scheduler {
        Scheduler {
            interval_ms: u64::from(interval_secs) * 1000,
            last_ts: None,
            pos_ms: 0,
            next_due_ms: 0,
            reanchors: 0,
        }
    }

    /// Called for every decodable keyframe with its RTMP timestamp (ms, wrapping u32).
    /// Returns `Some(offset_ms)` — the keyframe's offset from t0 on the media clock —
    /// when a snapshot is due at this keyframe.
    pub fn on_keyframe(&mut self, ts: u32) -> Option<u64> {
        if let Some(last) = self.last_ts {
            let delta = ts.wrapping_sub(last);
            // Signed view: a "huge" forward delta is a backwards step.
            if (delta as i32) < 0 || delta > MAX_FORWARD_JUMP_MS {
                self.reanchors += 1;
            } else {
                self.pos_ms += u64::from(delta);
            }
        }
        self.last_ts = Some(ts);
        if self.pos_ms < self.next_due_ms {
            return None;
        }
        self.next_due_ms = (self.pos_ms / self.interval_ms + 1) * self.interval_ms;
        Some(self.pos_ms)
    }

    /// How many discontinuities were absorbed.
    pub fn reanchors(&self) -> u64 {
        self.reanchors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(interval: u32, ts: &[u32]) -> Vec<u32> {
        let mut s = Scheduler::new(interval);
        ts.iter()
            .copied()
            .filter(|&t| s.on_keyframe(t).is_some())
            .collect()
    }

    #[test]
    fn gop_shorter_than_interval() {
        // Keyframes every 2 s, interval 5 s: 0, then the first at/after 5, 10, 15, 20.
        let ts: Vec<u32> = (0..12).map(|i| 1000 + i * 2000).collect();
        assert_eq!(taken(5, &ts), vec![1000, 7000, 11000, 17000, 21000]);
    }

    #[test]
    fn gop_longer_than_interval_skips_missed_due_times() {
        // Keyframes every 8 s, interval 5 s: each keyframe is due; no catch-up bursts.
        let ts: Vec<u32> = (0..5).map(|i| i * 8000).collect();
        assert_eq!(taken(5, &ts), vec![0, 8000, 16000, 24000, 32000]);
        let mut s = Scheduler::new(5);
        assert_eq!(s.on_keyframe(0), Some(0));
        assert_eq!(s.on_keyframe(12000), Some(12000));
        // 12 s covered due times 5 and 10; the next is 15, not 12 + anything queued.
        assert_eq!(s.on_keyframe(14000), None);
        assert_eq!(s.on_keyframe(15000), Some(15000));
    }

    #[test]
    fn first_keyframe_is_t0_whatever_its_timestamp() {
        assert_eq!(
            taken(5, &[123_456, 124_000, 128_456, 133_455, 133_456]),
            vec![123_456, 128_456, 133_456]
        );
    }

    #[test]
    fn irregular_keyframes_exact_choice() {
        let ts = [
            0, 1000, 4999, 5000, 5001, 9000, 11000, 14999, 15000, 29000, 30500,
        ];
        assert_eq!(taken(5, &ts), vec![0, 5000, 11000, 15000, 29000, 30500]);
    }

    #[test]
    fn backwards_jump_reanchors_without_burst() {
        let mut s = Scheduler::new(5);
        assert_eq!(s.on_keyframe(100_000), Some(0));
        assert_eq!(s.on_keyframe(102_000), None);
        // The encoder restarted its clock at 0: the clock holds, cadence continues.
        assert_eq!(s.on_keyframe(0), None);
        assert_eq!(s.reanchors(), 1);
        assert_eq!(s.on_keyframe(2000), None); // pos 4 s
        assert_eq!(s.on_keyframe(3000), Some(5000)); // pos 5 s
    }

    #[test]
    fn forward_jump_of_more_than_an_hour_reanchors() {
        let mut s = Scheduler::new(5);
        assert_eq!(s.on_keyframe(0), Some(0));
        assert_eq!(s.on_keyframe(2000), None);
        assert_eq!(s.on_keyframe(2000 + 7_200_000), None);
        assert_eq!(s.reanchors(), 1);
        assert_eq!(s.on_keyframe(2000 + 7_203_000), Some(5000));
        // One hour exactly is not a jump.
        let mut s = Scheduler::new(3600);
        assert_eq!(s.on_keyframe(0), Some(0));
        assert_eq!(s.on_keyframe(3_600_000), Some(3_600_000));
    }

    #[test]
    fn u32_wraparound_is_continuous() {
        let start = u32::MAX - 3000;
        let ts: Vec<u32> = (0..6).map(|i| start.wrapping_add(i * 2000)).collect();
        let mut s = Scheduler::new(5);
        let offs: Vec<u64> = ts.iter().filter_map(|&t| s.on_keyframe(t)).collect();
        assert_eq!(offs, vec![0, 6000, 10000]);
        assert_eq!(s.reanchors(), 0);
    }
}
