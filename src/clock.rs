//! Wall-clock time in one place: "now" in Unix seconds behind the [`Clock`] trait (so
//! tests can set the time), and RFC 3339 formatting and parsing of Unix seconds.
//!
//! Media timing never uses this clock: a stream's schedule runs on its own timestamps
//! (`snapshot::scheduler`). This is for what a person or another system reads: event
//! times, signature expiry, `{UnixTimestamp}` anchors, API times.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current Unix time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> u64;
}

/// A shared clock, as the node hands it out.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        unix_now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(unix: u64) -> ManualClock {
        ManualClock(AtomicU64::new(unix))
    }

    pub fn set(&self, unix: u64) {
        self.0.store(unix, Ordering::Relaxed);
    }

    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The system clock as a [`SharedClock`].
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// Seconds since the Unix epoch by the system clock (0 if the clock is before 1970).
/// Code that runs inside a node takes the node's [`Clock`] instead.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds of a `SystemTime` (0 before 1970).
pub fn unix_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Formats Unix seconds as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (the days-from-civil inverse).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses an RFC 3339 time (`2026-11-01T08:00:00Z`; an offset is converted to UTC,
/// fractions of a second are dropped) into Unix seconds; `None` when it is not one or
/// is before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let t: opendal::raw::Timestamp = s.parse().ok()?;
    u64::try_from(t.into_inner().as_second()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1641311904), "2022-01-04T15:58:24Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_round_trips() {
        for t in [0, 1_700_000_000, 951_782_400, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.75Z"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
    }

    #[test]
    fn manual_clock_moves_when_told() {
        let c = ManualClock::new(100);
        assert_eq!(c.now_unix(), 100);
        c.advance(5);
        assert_eq!(c.now_unix(), 105);
        c.set(7);
        assert_eq!(c.now_unix(), 7);
    }
}
