//! Serving live streams to RTMP players: the `[play]` settings and the decision whether
//! a play may start. The media itself flows from the publish's [`crate::hub::Hub`]; the
//! connection task writes it out (`rtmp::conn`).

use serde::Deserialize;

use crate::error::{invalid, Invalid};
use crate::hub::HubLimits;

/// `[play]`: whether and how this node serves its live streams to RTMP players.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PlayConfig {
    /// Serve live streams to RTMP players (`rtmp://node/app/stream`). Default true.
    pub enabled: bool,
    /// Once `[[auth]]` exists, players need a signed URL unless this is true. Default false.
    pub public: bool,
    /// Bytes of a stream's newest media kept for its players (shared, not copied per
    /// player): the most a player may lag before it skips to the newest keyframe.
    /// Default 4194304 (4 MiB).
    pub player_queue_bytes: usize,
    /// A player that stays behind (keeps skipping, or takes nothing) this long is
    /// closed. Default 10.
    pub lag_close_secs: u64,
    /// Players of one stream at most. Default 500.
    pub max_players_per_stream: usize,
    /// Players on this node at most. Default 5000.
    pub max_players: usize,
    /// Keep each stream's newest group of pictures, so a new player (or a relay target
    /// that reconnects) starts at once with a picture. Off: a stream whose readers keep
    /// up holds almost nothing (no keyframe for on-demand snapshots either), and a new
    /// reader, or an on-demand snapshot, waits for the next keyframe. Default true.
    pub gop_cache: bool,
    /// A play of a stream that is not live waits this long for its publish to start
    /// (0..=3600; 0: refused at once with `NetStream.Play.StreamNotFound`), and a player
    /// whose publish ends waits as long for the next one (0: closed when it ends).
    /// Default 0.
    pub wait_for_publish_secs: u64,
}

impl Default for PlayConfig {
    fn default() -> Self {
        PlayConfig {
            enabled: true,
            public: false,
            player_queue_bytes: 4 << 20,
            lag_close_secs: 10,
            max_players_per_stream: 500,
            max_players: 5000,
            gop_cache: true,
            wait_for_publish_secs: 0,
        }
    }
}

impl PlayConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, v) in [
            ("play.max_players_per_stream", self.max_players_per_stream),
            ("play.max_players", self.max_players),
        ] {
            if v == 0 {
                return Err(invalid(
                    key,
                    "must be at least 1 (set play.enabled = false to refuse players)",
                ));
            }
        }
        if !(64 << 10..=1 << 30).contains(&self.player_queue_bytes) {
            return Err(invalid(
                "play.player_queue_bytes",
                format!(
                    "{} is outside 65536..=1073741824 (64 KiB to 1 GiB)",
                    self.player_queue_bytes
                ),
            ));
        }
        for (key, v, range) in [
            (
                "play.wait_for_publish_secs",
                self.wait_for_publish_secs,
                0..=3600,
            ),
            ("play.lag_close_secs", self.lag_close_secs, 1..=3600),
        ] {
            if !range.contains(&v) {
                return Err(invalid(
                    key,
                    format!("{v} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        Ok(())
    }

    /// How long a player may stay behind before it is closed.
    pub fn lag_close(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lag_close_secs)
    }

    /// The bounds of each publish's hub.
    pub fn hub_limits(&self) -> HubLimits {
        HubLimits {
            window_bytes: self.player_queue_bytes,
            gop_cache: self.gop_cache,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_key() {
        PlayConfig::default().validate().unwrap();
        let e = PlayConfig {
            max_players_per_stream: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "play.max_players_per_stream");
        let e = PlayConfig {
            player_queue_bytes: 1000,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "play.player_queue_bytes");
        let e = PlayConfig {
            lag_close_secs: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "play.lag_close_secs");
        let e = PlayConfig {
            wait_for_publish_secs: 3601,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "play.wait_for_publish_secs");
    }
}
