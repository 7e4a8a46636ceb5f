//! The events the node reports to callbacks (`notify`): one typed enum, serialised by
//! serde into the JSON bodies documented in `docs/api.md` ("Callbacks"). Every event
//! names its stream and carries its time twice, as RFC 3339 (`time`) and Unix seconds
//! (`timestamp`).

use serde::Serialize;

use crate::clock::rfc3339;
use crate::names::StreamId;

/// A point in time as events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct At {
    pub time: String,
    pub timestamp: u64,
}

impl At {
    pub fn unix(timestamp: u64) -> At {
        At {
            time: rfc3339(timestamp),
            timestamp,
        }
    }
}

/// One event. The JSON object has `"event": "<variant in snake_case>"` and the fields
/// of the variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A publish was accepted.
    Publish(ClientEvent),
    /// A publish ended (the client unpublished, disconnected or was closed).
    Unpublish {
        #[serde(flatten)]
        client: ClientEvent,
        duration_secs: u64,
        bytes: u64,
        /// Snapshots stored.
        snapshots: u64,
        snapshots_dropped: u64,
        snapshots_failed: u64,
    },
    /// A player started playing a live stream (after every admission check).
    Play(ClientEvent),
    /// A play ended (the player stopped or disconnected, the publish ended, or the player
    /// was closed for lagging).
    PlayDone {
        #[serde(flatten)]
        client: ClientEvent,
        duration_secs: u64,
        /// Media bytes sent to the player (payloads, without RTMP chunk headers).
        bytes: u64,
    },
    /// A snapshot was stored (at least one of its objects).
    Snapshot(SnapshotEvent),
    /// A relay target accepted the upstream publish of a live stream.
    RelayStart {
        #[serde(flatten)]
        stream: StreamId,
        /// The target URL, secrets redacted.
        target: String,
        #[serde(flatten)]
        at: At,
    },
    /// An upstream publish that was up ended: `reason` is "unpublished" (the publish
    /// ended and the upstream publish was finished) or the error that broke it (the relay
    /// then reconnects with backoff).
    RelayStop {
        #[serde(flatten)]
        stream: StreamId,
        target: String,
        #[serde(flatten)]
        at: At,
        reason: String,
        /// Media bytes sent on this connection.
        sent_bytes: u64,
    },
    /// A health condition started or ended (`crate::health`); `time` is when.
    Health {
        #[serde(flatten)]
        stream: StreamId,
        /// `black`, `frozen`, `no_keyframe`, `no_video` or `decode_failing`.
        condition: &'static str,
        /// `start` or `end`.
        state: &'static str,
        #[serde(flatten)]
        at: At,
    },
    /// A rule's review endpoint judged a stored snapshot (see the `review` module).
    Review {
        #[serde(flatten)]
        stream: StreamId,
        /// The snapshot object reviewed.
        object: String,
        /// Where the verdict is stored (`_livesnap/review/{object}.json`).
        review_object: String,
        labels: Vec<ReviewLabel>,
        /// A label reached the rule's `review_kick` score: the publish was stopped.
        kicked: bool,
        #[serde(flatten)]
        at: At,
    },
}

/// The fields every publish and play event has: the stream, the client's address and
/// when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientEvent {
    #[serde(flatten)]
    pub stream: StreamId,
    pub peer: String,
    #[serde(flatten)]
    pub at: At,
}

impl ClientEvent {
    pub fn new(stream: StreamId, peer: impl ToString, unix: u64) -> ClientEvent {
        ClientEvent {
            stream,
            peer: peer.to_string(),
            at: At::unix(unix),
        }
    }
}

/// One label of a review verdict: a name and a score in 0..=1.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReviewLabel {
    pub name: String,
    pub score: f64,
}

/// The fields of a `snapshot` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotEvent {
    #[serde(flatten)]
    pub stream: StreamId,
    pub storage: String,
    pub overwrite_object: Option<String>,
    pub sequence_object: Option<String>,
    pub size: usize,
    pub width: u32,
    pub height: u32,
    /// When the snapshot was taken (its `{UnixTimestamp}`), RFC 3339.
    pub create_time: String,
    pub timestamp: u64,
    /// The `{Sequence}` number every output of this snapshot was stored under, when the
    /// rule counts with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The rule's `outputs` stored for this snapshot, in their order (absent for a rule
    /// without outputs; the fields above are output 0's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputEvent>,
}

/// One output of a `snapshot` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputEvent {
    /// Its position in the rule's `outputs` (0 is the first listed, i.e. after output 0).
    pub index: usize,
    pub overwrite_object: Option<String>,
    pub sequence_object: Option<String>,
    /// "jpeg" or "webp".
    pub format: &'static str,
    pub size: usize,
    pub width: u32,
    pub height: u32,
}

impl Event {
    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn body(e: &Event) -> Value {
        serde_json::from_slice(&e.to_json()).unwrap()
    }

    #[test]
    fn json_forms() {
        let id = StreamId::new("d.com", "live", "cam1");
        let e = Event::Publish(ClientEvent::new(id.clone(), "1.2.3.4:5", 1_700_000_000));
        assert_eq!(
            body(&e),
            json!({"event": "publish", "domain": "d.com", "app": "live", "stream": "cam1",
                   "peer": "1.2.3.4:5", "time": "2023-11-14T22:13:20Z", "timestamp": 1_700_000_000u64})
        );
        let e = Event::PlayDone {
            client: ClientEvent::new(id.clone(), "[::1]:6", 60),
            duration_secs: 59,
            bytes: 1234,
        };
        assert_eq!(
            body(&e),
            json!({"event": "play_done", "domain": "d.com", "app": "live", "stream": "cam1",
                   "peer": "[::1]:6", "time": "1970-01-01T00:01:00Z", "timestamp": 60u64,
                   "duration_secs": 59u64, "bytes": 1234u64})
        );
        let e = Event::Snapshot(SnapshotEvent {
            stream: id,
            storage: "default".into(),
            overwrite_object: Some("live/cam1.jpg".into()),
            sequence_object: None,
            size: 10,
            width: 640,
            height: 360,
            create_time: rfc3339(5),
            timestamp: 5,
            sequence: None,
            outputs: Vec::new(),
        });
        let b = body(&e);
        assert!(b.get("outputs").is_none() && b.get("sequence").is_none());
        assert_eq!(b["event"], "snapshot");
        assert_eq!(b["stream"], "cam1");
        assert_eq!(b["sequence_object"], Value::Null);
        assert_eq!(b["create_time"], "1970-01-01T00:00:05Z");
        let Event::Snapshot(mut s) = e else {
            unreachable!()
        };
        s.sequence = Some(7);
        s.outputs.push(OutputEvent {
            index: 0,
            overwrite_object: None,
            sequence_object: Some("live/cam1/7.webp".into()),
            format: "webp",
            size: 3,
            width: 320,
            height: 180,
        });
        let b = body(&Event::Snapshot(s));
        assert_eq!(b["sequence"], 7);
        assert_eq!(
            b["outputs"],
            json!([{"index": 0, "overwrite_object": null, "sequence_object": "live/cam1/7.webp",
                    "format": "webp", "size": 3, "width": 320, "height": 180}])
        );
        let e = Event::RelayStop {
            stream: StreamId::new("d.com", "live", "cam1"),
            target: "rtmp://o/live/cam1?auth_key=REDACTED".into(),
            at: At::unix(5),
            reason: "unpublished".into(),
            sent_bytes: 7,
        };
        let b = body(&e);
        assert_eq!(b["event"], "relay_stop");
        assert_eq!(b["stream"], "cam1");
        assert_eq!(b["target"], "rtmp://o/live/cam1?auth_key=REDACTED");
        assert_eq!(b["reason"], "unpublished");
        assert_eq!(b["sent_bytes"], 7);
    }

    #[test]
    fn health_json() {
        let e = Event::Health {
            stream: StreamId::new("d.com", "live", "cam1"),
            condition: "black",
            state: "start",
            at: At::unix(1_700_000_000),
        };
        assert_eq!(
            body(&e),
            json!({"event": "health", "condition": "black", "state": "start",
                   "domain": "d.com", "app": "live", "stream": "cam1",
                   "time": "2023-11-14T22:13:20Z", "timestamp": 1_700_000_000u64})
        );
    }
}
