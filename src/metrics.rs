//! Node metrics in the Prometheus text format, from a registry owned by the node (no
//! process-global state, so several nodes in one test process count separately).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A label set with one `reason` (or `result`) label.
pub type Reason = Vec<(&'static str, &'static str)>;

fn reason(r: &'static str) -> Reason {
    vec![("reason", r)]
}

/// The `result` label of a reload: `ok` or `error`.
fn reload_result(ok: bool) -> Reason {
    vec![("result", if ok { "ok" } else { "error" })]
}

pub struct Metrics {
    registry: Registry,
    pub connections_accepted: Counter,
    pub connections_rejected: Family<Reason, Counter>,
    pub publishes_active: Gauge,
    pub bytes_received: Counter,
    pub keyframes: Counter,
    pub snapshots_taken: Counter,
    pub snapshots_dropped: Family<Reason, Counter>,
    pub snapshots_failed: Family<Reason, Counter>,
    pub decode_seconds: Histogram,
    pub encode_seconds: Histogram,
    pub store_seconds: Histogram,
    /// Keyframe arrival to its snapshot stored: "stored within 1 s" is checkable.
    pub snapshot_latency_seconds: Histogram,
    pub callbacks_delivered: Counter,
    pub callbacks_failed: Counter,
    pub callbacks_dropped: Counter,
    pub rule_store_reloads: Family<Reason, Counter>,
    /// RTMPS certificate loads after the files changed or on SIGHUP, by result.
    pub tls_reloads: Family<Reason, Counter>,
    /// Config file reloads (SIGHUP), by result.
    pub config_reloads: Family<Reason, Counter>,
    /// When the RTMPS certificate in use expires (its `notAfter`, Unix seconds); no series
    /// on a node without RTMPS.
    pub tls_certificate_expiry: Family<Reason, Gauge>,
    /// Create-only puts that found their key taken, by what followed.
    pub keys_taken: Family<Reason, Counter>,
    /// Create-only puts whose earlier, timed-out attempt had stored the object.
    pub creates_landed_earlier: Counter,
    /// Time publishers running ahead of real time waited for the snapshot queue.
    pub publisher_paced_seconds: Counter<f64, AtomicU64>,
    /// Bytes of due keyframes waiting in the snapshot pool's queues.
    pub snapshot_queued_bytes: Gauge,
    /// Exact mode: bytes of compressed frames kept since the streams' last keyframes.
    pub exact_gop_bytes: Gauge,
    /// Exact mode: snapshots that fell back to their keyframe, by reason.
    pub exact_fallbacks: Family<Reason, Counter>,
    /// Exact mode: frames decoded for snapshots (keyframes included).
    pub exact_frames_decoded: Counter,
    pub players_active: Gauge,
    /// Plays waiting for their stream's publish (before it starts, or between publishes).
    pub players_waiting: Gauge,
    pub bytes_played: Counter,
    pub player_skipped_bytes: Counter,
    /// Relay targets with an upstream publish up now.
    pub relay_connected: Gauge,
    pub relay_sent_bytes: Counter,
    pub relay_reconnects: Counter,
    pub relay_skipped_bytes: Counter,
    /// When the certificate an `rtmps://` relay target last presented expires (its
    /// `notAfter`, Unix seconds), by `target` (host:port, as configured).
    pub relay_certificate_expiry: Family<Vec<(&'static str, String)>, Gauge>,
    /// Live streams in each health condition (`condition` label).
    pub health_active: Family<Reason, Gauge>,
    /// Health transitions, by `condition` and `state` (start, end).
    pub health_transitions: Family<Reason, Counter>,
    /// Snapshot reviews by result: done, failed, dropped (queue full).
    pub reviews: Family<Reason, Counter>,
    /// Sequence objects deleted by the retention sweeper.
    pub retention_deleted: Counter,
    /// Retention sweeps of one stream, by result: run, skipped (claimed by another
    /// node in this period), failed.
    pub retention_sweeps: Family<Reason, Counter>,
    /// Keys the retention sweeper listed: to find streams, and each swept stream's.
    pub retention_examined: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("livesnap");
        let m = Metrics {
            connections_accepted: Counter::default(),
            connections_rejected: Family::default(),
            publishes_active: Gauge::default(),
            bytes_received: Counter::default(),
            keyframes: Counter::default(),
            snapshots_taken: Counter::default(),
            snapshots_dropped: Family::default(),
            snapshots_failed: Family::default(),
            // 0.5 ms .. ~4 s
            decode_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            encode_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            store_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            snapshot_latency_seconds: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
            ]),
            callbacks_delivered: Counter::default(),
            callbacks_failed: Counter::default(),
            callbacks_dropped: Counter::default(),
            rule_store_reloads: Family::default(),
            tls_reloads: Family::default(),
            config_reloads: Family::default(),
            tls_certificate_expiry: Family::default(),
            keys_taken: Family::default(),
            creates_landed_earlier: Counter::default(),
            publisher_paced_seconds: Counter::default(),
            snapshot_queued_bytes: Gauge::default(),
            exact_gop_bytes: Gauge::default(),
            exact_fallbacks: Family::default(),
            exact_frames_decoded: Counter::default(),
            players_active: Gauge::default(),
            players_waiting: Gauge::default(),
            bytes_played: Counter::default(),
            player_skipped_bytes: Counter::default(),
            relay_connected: Gauge::default(),
            relay_sent_bytes: Counter::default(),
            relay_reconnects: Counter::default(),
            relay_skipped_bytes: Counter::default(),
            relay_certificate_expiry: Family::default(),
            health_active: Family::default(),
            health_transitions: Family::default(),
            reviews: Family::default(),
            retention_deleted: Counter::default(),
            retention_sweeps: Family::default(),
            retention_examined: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "connections_accepted",
            "RTMP connections accepted",
            m.connections_accepted.clone(),
        );
        r.register(
            "connections_rejected",
            "RTMP connections refused or closed for a fault, by reason",
            m.connections_rejected.clone(),
        );
        r.register(
            "publishes_active",
            "Live publishes on this node",
            m.publishes_active.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes read from RTMP connections",
            m.bytes_received.clone(),
        );
        r.register(
            "players_active",
            "RTMP players being served",
            m.players_active.clone(),
        );
        r.register(
            "players_waiting",
            "RTMP plays waiting for their stream's publish (play.wait_for_publish_secs)",
            m.players_waiting.clone(),
        );
        r.register(
            "played_bytes",
            "Media payload bytes sent to RTMP players",
            m.bytes_played.clone(),
        );
        r.register(
            "player_skipped_bytes",
            "Media bytes players missed because they fell a whole window behind",
            m.player_skipped_bytes.clone(),
        );
        r.register(
            "relay_connected",
            "Relay targets with an upstream publish up",
            m.relay_connected.clone(),
        );
        r.register(
            "relay_sent_bytes",
            "Media payload bytes relayed to upstream targets",
            m.relay_sent_bytes.clone(),
        );
        r.register(
            "relay_reconnects",
            "Relay connection attempts after a target failed",
            m.relay_reconnects.clone(),
        );
        r.register(
            "relay_skipped_bytes",
            "Media bytes relay targets missed because they fell a whole window behind",
            m.relay_skipped_bytes.clone(),
        );
        r.register(
            "relay_certificate_expiry_timestamp_seconds",
            "When the certificate an rtmps:// relay target presented at its last handshake \
             expires (its notAfter), in Unix seconds, by target host:port",
            m.relay_certificate_expiry.clone(),
        );
        r.register("keyframes", "Video keyframes received", m.keyframes.clone());
        r.register(
            "snapshots_taken",
            "Snapshots stored",
            m.snapshots_taken.clone(),
        );
        r.register(
            "snapshots_dropped",
            "Due snapshots not taken, by reason",
            m.snapshots_dropped.clone(),
        );
        r.register(
            "snapshots_failed",
            "Snapshots that failed, by reason",
            m.snapshots_failed.clone(),
        );
        r.register(
            "decode_seconds",
            "openh264 keyframe decode time",
            m.decode_seconds.clone(),
        );
        r.register(
            "encode_seconds",
            "mozjpeg encode time",
            m.encode_seconds.clone(),
        );
        r.register(
            "store_seconds",
            "Time to store one snapshot (all its objects)",
            m.store_seconds.clone(),
        );
        r.register(
            "snapshot_latency_seconds",
            "Keyframe arrival to snapshot stored",
            m.snapshot_latency_seconds.clone(),
        );
        r.register(
            "callbacks_delivered",
            "Event callbacks delivered",
            m.callbacks_delivered.clone(),
        );
        r.register(
            "callbacks_failed",
            "Event callbacks given up after retries",
            m.callbacks_failed.clone(),
        );
        r.register(
            "callbacks_dropped",
            "Event callbacks dropped from a full queue",
            m.callbacks_dropped.clone(),
        );
        r.register(
            "rule_store_reloads",
            "Rule store reads, by result",
            m.rule_store_reloads.clone(),
        );
        r.register(
            "tls_reloads",
            "RTMPS certificate and key loaded again after their files changed or on SIGHUP, by \
             result: ok (new connections use them) or error (the previous pair stays in use)",
            m.tls_reloads.clone(),
        );
        r.register(
            "config_reloads",
            "Config file reloads on SIGHUP, by result: ok (its rules, relays, [access], [[auth]] \
             and hooks apply from the next publish) or error (nothing changed)",
            m.config_reloads.clone(),
        );
        r.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the RTMPS certificate in use expires (its notAfter), in Unix seconds",
            m.tls_certificate_expiry.clone(),
        );
        r.register(
            "keys_taken",
            "Create-only puts that found their key taken: sequence_next (moved to the next \
             number) or already_stored (a {UnixTimestamp} key: that second is stored)",
            m.keys_taken.clone(),
        );
        r.register(
            "creates_landed_earlier",
            "Create-only puts retried after a timeout whose earlier attempt had stored the object",
            m.creates_landed_earlier.clone(),
        );
        r.register(
            "publisher_paced_seconds",
            "Time publishers ahead of real time were not read, waiting for the snapshot queue",
            m.publisher_paced_seconds.clone(),
        );
        r.register(
            "snapshot_queued_bytes",
            "Bytes of due keyframes waiting in the snapshot queues",
            m.snapshot_queued_bytes.clone(),
        );
        r.register(
            "health_active",
            "Live streams currently in a health condition, by condition",
            m.health_active.clone(),
        );
        r.register(
            "health_transitions",
            "Health conditions started or ended, by condition and state",
            m.health_transitions.clone(),
        );
        r.register(
            "reviews",
            "Snapshot reviews by result: done, failed, dropped (queue full)",
            m.reviews.clone(),
        );
        r.register(
            "exact_gop_bytes",
            "Bytes of compressed frames kept since the last keyframe for exact-time snapshots",
            m.exact_gop_bytes.clone(),
        );
        r.register(
            "exact_fallbacks",
            "Exact-time snapshots that fell back to their keyframe, by reason: frame_cap, gop_bytes, decode_error",
            m.exact_fallbacks.clone(),
        );
        r.register(
            "exact_frames_decoded",
            "Frames decoded for exact-time snapshots, keyframes included",
            m.exact_frames_decoded.clone(),
        );
        r.register(
            "retention_deleted",
            "Sequence objects deleted by the retention sweeper",
            m.retention_deleted.clone(),
        );
        r.register(
            "retention_sweeps",
            "Retention sweeps of one stream, by result: run, skipped (claimed by another node), failed",
            m.retention_sweeps.clone(),
        );
        r.register(
            "retention_examined",
            "Keys listed by the retention sweeper (finding streams, and each swept stream's)",
            m.retention_examined.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn rejected(&self, why: &'static str) {
        self.connections_rejected.get_or_create(&reason(why)).inc();
    }

    /// Connections refused or closed for `why` so far.
    pub fn rejected_count(&self, why: &'static str) -> u64 {
        self.connections_rejected.get_or_create(&reason(why)).get()
    }

    /// Counts one exact-time snapshot that fell back to its keyframe.
    pub fn exact_fallback(&self, why: &'static str) {
        self.exact_fallbacks.get_or_create(&reason(why)).inc();
    }

    pub fn dropped(&self, why: &'static str) {
        self.snapshots_dropped.get_or_create(&reason(why)).inc();
    }

    /// Counts one review by result (`done`, `failed`, `dropped`).
    pub fn reviewed(&self, result: &'static str) {
        self.reviews.get_or_create(&vec![("result", result)]).inc();
    }

    /// Counts one retention sweep of a stream: `run`, `skipped` or `failed`.
    pub fn retention_sweep(&self, result: &'static str) {
        self.retention_sweeps
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    pub fn failed(&self, why: &'static str) {
        self.snapshots_failed.get_or_create(&reason(why)).inc();
    }

    pub fn key_taken(&self, why: &'static str) {
        self.keys_taken.get_or_create(&reason(why)).inc();
    }

    pub fn reload(&self, ok: bool) {
        self.rule_store_reloads
            .get_or_create(&reload_result(ok))
            .inc();
    }

    /// One load of the RTMPS certificate files (changed, or on SIGHUP): used (`ok`) or
    /// refused (`error`).
    pub fn tls_reload(&self, ok: bool) {
        self.tls_reloads.get_or_create(&reload_result(ok)).inc();
    }

    /// How many loads of the RTMPS certificate files ended `ok` (or `error`).
    pub fn tls_reload_count(&self, ok: bool) -> u64 {
        self.tls_reloads.get_or_create(&reload_result(ok)).get()
    }

    /// One reload of the config file: put in force (`ok`) or refused (`error`).
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads.get_or_create(&reload_result(ok)).inc();
    }

    /// How many config file reloads ended `ok` (or `error`).
    pub fn config_reload_count(&self, ok: bool) -> u64 {
        self.config_reloads.get_or_create(&reload_result(ok)).get()
    }

    /// The RTMPS certificate in use expires at `not_after` (Unix seconds).
    pub fn set_tls_certificate_expiry(&self, not_after: u64) {
        self.tls_certificate_expiry
            .get_or_create(&vec![("listener", "rtmps")])
            .set(i64::try_from(not_after).unwrap_or(i64::MAX));
    }

    /// The `rtmps://` relay target at `target` (host:port) presented a certificate that
    /// expires at `not_after` (Unix seconds).
    pub fn set_relay_certificate_expiry(&self, target: String, not_after: u64) {
        self.relay_certificate_expiry
            .get_or_create(&vec![("target", target)])
            .set(i64::try_from(not_after).unwrap_or(i64::MAX));
    }

    /// One health condition started (`"start"`) or ended (`"end"`).
    pub fn health_transition(&self, condition: &'static str, state: &'static str) {
        self.health_transitions
            .get_or_create(&vec![("condition", condition), ("state", state)])
            .inc();
    }

    /// Live streams now in `condition`.
    pub fn set_health_active(&self, condition: &'static str, streams: i64) {
        self.health_active
            .get_or_create(&vec![("condition", condition)])
            .set(streams);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.connections_accepted.inc();
        m.rejected("bad_name");
        m.rejected("bad_name");
        m.dropped("pool_busy");
        m.decode_seconds.observe(0.01);
        let text = m.render();
        assert!(
            text.contains("livesnap_connections_accepted_total 1"),
            "{text}"
        );
        assert!(
            text.contains("livesnap_connections_rejected_total{reason=\"bad_name\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("livesnap_snapshots_dropped_total{reason=\"pool_busy\"} 1"),
            "{text}"
        );
        assert!(text.contains("livesnap_decode_seconds_count 1"), "{text}");
        m.relay_sent_bytes.inc_by(10);
        m.relay_connected.inc();
        let text = m.render();
        assert!(
            text.contains("livesnap_relay_sent_bytes_total 10"),
            "{text}"
        );
        assert!(text.contains("livesnap_relay_connected 1"), "{text}");
        assert!(text.contains("livesnap_relay_reconnects_total 0"), "{text}");
        assert!(
            text.contains("livesnap_relay_skipped_bytes_total 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        m.health_transition("black", "start");
        m.set_health_active("black", 2);
        let text = m.render();
        assert!(
            text.contains(
                "livesnap_health_transitions_total{condition=\"black\",state=\"start\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("livesnap_health_active{condition=\"black\"} 2"),
            "{text}"
        );
    }
}
