//! The good fixture's video tags, and a raw peer sending them.

use bytes::Bytes;
use livesnap::rtmp::framing::TYPE_VIDEO;

use crate::common::raw::{message, RawClient};
use crate::common::*;
use crate::harness::GOOD_FIXTURE;

/// Video tags of the good fixture: (timestamp, tag body).
pub fn fixture_video() -> Vec<(u32, Bytes)> {
    fixture_tags(GOOD_FIXTURE)
        .into_iter()
        .filter(|t| t.tag_type == 9)
        .map(|t| (t.timestamp_ms, t.data))
        .collect()
}

pub fn sequence_header(video: &[(u32, Bytes)]) -> Bytes {
    video
        .iter()
        .find(|(_, d)| d[..2] == [0x17, 0])
        .unwrap()
        .1
        .clone()
}

pub fn first_keyframe(video: &[(u32, Bytes)]) -> Bytes {
    video
        .iter()
        .find(|(_, d)| d[..2] == [0x17, 1])
        .unwrap()
        .1
        .clone()
}

/// Sends video tags on chunk stream 6; returns the payload bytes sent.
pub async fn send_video(c: &mut RawClient, sid: u32, tags: &[(u32, Bytes)]) -> u64 {
    let mut sent = 0;
    for (ts, data) in tags {
        c.send_message(6, &message(TYPE_VIDEO, sid, *ts, data.clone()))
            .await
            .unwrap();
        sent += data.len() as u64;
    }
    sent
}
