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
    /// Players of one stream at most. Default 500.
    pub max_players_per_stream: usize,
    /// Bytes of a stream's newest media kept for its players: the most a player may
    /// lag before it skips to the newest keyframe. Default 16777216 (16 MiB).
    pub window_bytes: usize,
}

impl Default for PlayConfig {
    fn default() -> Self {
        PlayConfig {
            enabled: true,
            max_players_per_stream: 500,
            window_bytes: 16 << 20,
        }
    }
}

impl PlayConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_players_per_stream == 0 {
            return Err(invalid(
                "play.max_players_per_stream",
                "must be at least 1 (set play.enabled = false to refuse players)",
            ));
        }
        if !(1 << 20..=1 << 30).contains(&self.window_bytes) {
            return Err(invalid(
                "play.window_bytes",
                format!(
                    "{} is outside 1048576..=1073741824 (1 MiB to 1 GiB)",
                    self.window_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The bounds of each publish's hub.
    pub fn hub_limits(&self) -> HubLimits {
        HubLimits {
            window_bytes: self.window_bytes,
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
            window_bytes: 1000,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "play.window_bytes");
    }
}
