//! Publishing a recording: an FLV file's audio and video tags as RTMP messages, sent
//! through `rtmp::client::Publisher` at a given speed (0 = as fast as the connection
//! takes them), timestamps shifted by an offset, optionally in a loop.
//!
//! Owns reading the file ([`Recording`]), pacing ([`ReplayOptions`]) and counting what went
//! out ([`Sent`]). The RTMP side is the library client's: this module only dials TCP in
//! [`connect`], and services the server's input while it waits between messages, as
//! `Publisher`'s contract asks. Script tags (`onMetaData`) are not sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

use crate::media::flv::{self, FlvReader, MediaError, PacketKind};
use crate::rtmp::client::Publisher;
use crate::rtmp::client::{ClientError, ClientOptions, Endpoint, EndpointError, MediaKind};

/// Timestamp step between two loops when the file has fewer than two video frames.
const DEFAULT_FRAME_MS: u32 = 33;

/// One audio or video tag of a recording.
#[derive(Debug, Clone)]
pub struct Tag {
    pub kind: MediaKind,
    /// The file's timestamp, in ms.
    pub timestamp: u32,
    /// The FLV tag body, sent as the message payload unchanged.
    pub payload: Bytes,
    /// An AVC coded keyframe (what the snapshot scheduler looks at; sequence headers are
    /// not).
    pub keyframe: bool,
}

/// An FLV file's audio and video tags, in file order.
#[derive(Debug, Clone)]
pub struct Recording {
    tags: Vec<Tag>,
    loop_ms: u32,
}

/// Why a recording could not be read or published.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Flv {
        path: PathBuf,
        #[source]
        source: MediaError,
    },
    #[error("{path}: no audio or video tags")]
    Empty { path: PathBuf },
    #[error(transparent)]
    Url(#[from] EndpointError),
    #[error("{url}: rtmps:// is not supported here")]
    Tls { url: String },
    #[error("connect to {authority}: {source}")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Recording {
    /// Reads an FLV file (`path` names it in errors).
    pub fn load(path: impl AsRef<Path>) -> Result<Recording, ReplayError> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| ReplayError::Read {
            path: path.to_owned(),
            source,
        })?;
        Recording::parse(Bytes::from(data), path)
    }

    /// Parses FLV bytes; tag bodies share `data`.
    pub fn from_flv(data: Bytes) -> Result<Recording, ReplayError> {
        Recording::parse(data, Path::new("(FLV bytes)"))
    }

    fn parse(data: Bytes, path: &Path) -> Result<Recording, ReplayError> {
        let flv_err = |source| ReplayError::Flv {
            path: path.to_owned(),
            source,
        };
        let mut tags = Vec::new();
        // (previous video timestamp, smallest positive step between video frames)
        let mut video = (None::<u32>, 0u32);
        for tag in FlvReader::new(data).map_err(flv_err)? {
            let tag = tag.map_err(flv_err)?;
            let kind = match tag.tag_type {
                8 => MediaKind::Audio,
                9 => MediaKind::Video,
                _ => continue,
            };
            let keyframe = kind == MediaKind::Video
                && flv::parse_video_tag(&tag.data)
                    .is_ok_and(|v| v.keyframe && v.kind == PacketKind::Nalus);
            if kind == MediaKind::Video {
                if let Some(prev) = video.0 {
                    let step = tag.timestamp_ms.saturating_sub(prev);
                    if step > 0 && (video.1 == 0 || step < video.1) {
                        video.1 = step;
                    }
                }
                video.0 = Some(tag.timestamp_ms);
            }
            tags.push(Tag {
                kind,
                timestamp: tag.timestamp_ms,
                payload: tag.data,
                keyframe,
            });
        }
        let (Some(first), Some(last)) = (tags.first(), tags.last()) else {
            return Err(ReplayError::Empty {
                path: path.to_owned(),
            });
        };
        let step = if video.1 > 0 {
            video.1
        } else {
            DEFAULT_FRAME_MS
        };
        let loop_ms = last.timestamp.wrapping_sub(first.timestamp) + step;
        Ok(Recording { tags, loop_ms })
    }

    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }

    /// Timestamp distance from one loop to the next: the span of the file plus one video
    /// frame interval, so that a loop continues where the last one ended.
    pub fn loop_ms(&self) -> u32 {
        self.loop_ms
    }

    /// Keyframes in one pass.
    pub fn keyframes(&self) -> usize {
        self.tags.iter().filter(|t| t.keyframe).count()
    }
}

/// How to replay a recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOptions {
    /// Multiple of real time (positive and finite); 0 sends as fast as the connection
    /// takes it.
    pub speed: f64,
    /// Added to every timestamp.
    pub ts_offset: u32,
    /// Passes over the file, timestamps continued by [`Recording::loop_ms`] each time;
    /// 0 loops until an error (or until the future is dropped: replay is cancel-safe in
    /// the sense of `Publisher::send`).
    pub loops: u32,
}

impl Default for ReplayOptions {
    /// One pass in real time, timestamps as in the file.
    fn default() -> Self {
        ReplayOptions {
            speed: 1.0,
            ts_offset: 0,
            loops: 1,
        }
    }
}

impl ReplayOptions {
    /// One pass at `speed` (0 = as fast as possible), timestamps as in the file.
    pub fn speed(speed: f64) -> ReplayOptions {
        ReplayOptions {
            speed,
            ..ReplayOptions::default()
        }
    }
}

/// What a replay sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sent {
    /// Audio and video messages.
    pub frames: u64,
    /// Of which AVC keyframes.
    pub keyframes: u64,
    /// Bytes written to the connection meanwhile (chunk headers included).
    pub bytes: u64,
    /// Timestamp of the last message sent (offset included).
    pub last_timestamp: u32,
    pub elapsed: Duration,
}

impl Sent {
    /// Send rate in bits per second (0 when nothing took any time).
    pub fn bits_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.bytes as f64 * 8.0 / secs
        } else {
            0.0
        }
    }
}

/// Sends `rec` on `publisher` as `opts` says. Between messages it waits in
/// `Publisher::service`, so pings are answered and a server's error status or close
/// ends the replay with an error.
pub async fn replay<S>(
    publisher: &mut Publisher<S>,
    rec: &Recording,
    opts: ReplayOptions,
) -> Result<Sent, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let start = Instant::now();
    let bytes_before = publisher.stats().bytes_out;
    let first = rec.tags.first().map_or(0, |t| t.timestamp);
    let mut sent = Sent::default();
    let mut pass = 0u32;
    while opts.loops == 0 || pass < opts.loops {
        let pass_offset = u64::from(pass) * u64::from(rec.loop_ms);
        for tag in &rec.tags {
            // Stream time since the first tag of the first pass.
            let stream_ms = pass_offset + u64::from(tag.timestamp.wrapping_sub(first));
            if opts.speed > 0.0 {
                let due = start + Duration::from_secs_f64(stream_ms as f64 / 1e3 / opts.speed);
                wait_until(publisher, due).await?;
            }
            let ts = tag
                .timestamp
                .wrapping_add(opts.ts_offset)
                .wrapping_add(pass_offset as u32);
            publisher.send(tag.kind, ts, &tag.payload).await?;
            sent.frames += 1;
            sent.keyframes += u64::from(tag.keyframe);
            sent.last_timestamp = ts;
        }
        pass = pass.saturating_add(1);
    }
    sent.bytes = publisher.stats().bytes_out - bytes_before;
    sent.elapsed = start.elapsed();
    Ok(sent)
}

/// Services the server's input until `due`.
async fn wait_until<S>(publisher: &mut Publisher<S>, due: Instant) -> Result<(), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let sleep = sleep_until(due);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            () = &mut sleep => return Ok(()),
            r = publisher.service() => r?,
        }
    }
}

/// Dials `url` (`rtmp://host[:port]/app`) over TCP (no Nagle) and publishes `stream_key`
/// on it.
pub async fn connect(
    url: &str,
    stream_key: &str,
    opts: ClientOptions,
) -> Result<Publisher<TcpStream>, ReplayError> {
    let endpoint = Endpoint::parse(url)?;
    if endpoint.tls {
        return Err(ReplayError::Tls {
            url: url.to_owned(),
        });
    }
    let authority = endpoint.authority();
    let connect_err = |source| ReplayError::Connect {
        authority: authority.clone(),
        source,
    };
    let sock = TcpStream::connect(&authority).await.map_err(connect_err)?;
    sock.set_nodelay(true).map_err(connect_err)?;
    Ok(Publisher::publish(sock, &endpoint, stream_key, opts).await?)
}

/// Publishes `rec` once under `url` + `stream_key` as `opts` says, then finishes the
/// publish (FCUnpublish, deleteStream, close): what a test's publisher does.
pub async fn publish(
    url: &str,
    stream_key: &str,
    rec: &Recording,
    opts: ReplayOptions,
) -> Result<Sent, ReplayError> {
    let mut publisher = connect(url, stream_key, ClientOptions::default()).await?;
    let sent = replay(&mut publisher, rec, opts).await?;
    publisher.finish().await?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name)
    }

    #[test]
    fn a_fixture_loads_with_its_keyframes_and_loop_length() {
        let rec = Recording::load(fixture("baseline_640x360_gop1s.flv")).unwrap();
        assert!(rec.tags().iter().any(|t| t.kind == MediaKind::Video));
        assert!(
            rec.keyframes() >= 2,
            "a 1 s GOP fixture has several keyframes"
        );
        let last = rec.tags().last().unwrap().timestamp - rec.tags()[0].timestamp;
        assert!(rec.loop_ms() > last && rec.loop_ms() <= last + 100);
    }

    #[tokio::test]
    async fn replay_sends_every_tag_with_offset_and_loops() {
        let rec = Recording::load(fixture("baseline_640x360_gop1s.flv")).unwrap();
        let (io, peer) = crate::testing::peer::spawn(Default::default());
        let endpoint = Endpoint::parse("rtmp://127.0.0.1/live").unwrap();
        let mut publisher = Publisher::publish(io, &endpoint, "cam", ClientOptions::default())
            .await
            .unwrap();
        let opts = ReplayOptions {
            speed: 0.0,
            ts_offset: 1000,
            loops: 2,
        };
        let sent = replay(&mut publisher, &rec, opts).await.unwrap();
        publisher.finish().await.unwrap();
        let got = peer.await.unwrap();
        assert_eq!(got.error, None);

        let n = rec.tags().len() as u64;
        assert_eq!(sent.frames, 2 * n);
        assert_eq!(sent.keyframes, 2 * rec.keyframes() as u64);
        let media: usize = got.video().count() + got.audio_count();
        assert_eq!(media as u64, sent.frames);
        assert!(
            sent.bytes
                > rec
                    .tags()
                    .iter()
                    .map(|t| t.payload.len() as u64)
                    .sum::<u64>()
        );

        let videos: Vec<&Tag> = rec
            .tags()
            .iter()
            .filter(|t| t.kind == MediaKind::Video)
            .collect();
        let expected: Vec<(u32, &[u8])> = [0, rec.loop_ms()]
            .iter()
            .flat_map(|pass| {
                videos
                    .iter()
                    .map(move |t| (t.timestamp + 1000 + pass, &t.payload[..]))
            })
            .collect();
        assert_eq!(got.video().collect::<Vec<_>>(), expected);
        let last = rec.tags().last().unwrap().timestamp;
        assert_eq!(sent.last_timestamp, last + 1000 + rec.loop_ms());
    }

    #[tokio::test]
    async fn replay_keeps_to_the_timestamps_at_the_given_speed() {
        let rec = Recording::load(fixture("baseline_640x360_gop1s.flv")).unwrap();
        let span = rec.tags().last().unwrap().timestamp - rec.tags()[0].timestamp;
        const SPEED: f64 = 10.0;
        let (io, peer) = crate::testing::peer::spawn(Default::default());
        let endpoint = Endpoint::parse("rtmp://127.0.0.1/live").unwrap();
        let mut publisher = Publisher::publish(io, &endpoint, "cam", ClientOptions::default())
            .await
            .unwrap();
        let sent = replay(&mut publisher, &rec, ReplayOptions::speed(SPEED))
            .await
            .unwrap();
        publisher.finish().await.unwrap();
        assert_eq!(peer.await.unwrap().error, None);
        let expected = Duration::from_secs_f64(f64::from(span) / 1e3 / SPEED);
        // Late on a loaded machine, never early.
        assert!(
            sent.elapsed >= expected && sent.elapsed < expected + Duration::from_secs(1),
            "{:?} for {span} ms of stream at speed {SPEED}",
            sent.elapsed
        );
        assert!(sent.bits_per_sec() > 0.0);
    }

    #[test]
    fn missing_and_bad_files_are_errors_naming_the_file() {
        let e = Recording::load("/nonexistent/x.flv").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.flv"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.flv");
        std::fs::write(&bad, b"not an flv").unwrap();
        let e = Recording::load(&bad).unwrap_err();
        assert!(matches!(e, ReplayError::Flv { .. }), "{e:?}");
        assert!(e.to_string().contains("bad.flv"), "{e}");
    }
}
