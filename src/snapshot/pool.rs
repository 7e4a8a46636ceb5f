//! The bounded decode/encode pool: a fixed set of worker threads (never the async
//! runtime) that turn a due keyframe into a JPEG.
//!
//! Each stream owns a `Slot` holding at most one pending keyframe: a newer keyframe
//! replaces an older one that no worker has started yet ("latest keyframe wins"), and
//! the replaced one is counted as dropped. A slot is queued at most once and processed
//! by one worker at a time, so a stream's snapshots come out in order. The queue thus
//! never holds more entries than there are live streams.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc as tmpsc;

use crate::media::avc::{self, AvcConfig};
use crate::media::sps;
use crate::metrics::Metrics;
use crate::snapshot::decode::{KeyframeDecoder, YuvFrame};
use crate::snapshot::encode::{ColorInfo, ColorMatrix, JpegEncoder};
use crate::snapshot::stats::StreamStats;

/// A keyframe that is due for a snapshot.
pub struct Job {
    /// The AVCC access unit (FLV video tag body after the 5-byte AVC header).
    pub body: Bytes,
    /// The sequence header in force when the keyframe arrived.
    pub config: Arc<AvcConfig>,
    /// `{UnixTimestamp}` of this snapshot.
    pub unix_ts: u64,
    /// When the keyframe came off the socket.
    pub arrived: Instant,
}

/// A finished snapshot, on its way to storage.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub jpeg: Bytes,
    pub width: u32,
    pub height: u32,
    pub unix_ts: u64,
    pub arrived: Instant,
}

/// Why a keyframe gave no picture.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("AVC data: {0}")]
    Media(#[from] crate::media::flv::MediaError),
    #[error("no SPS in the sequence header or the keyframe")]
    NoSps,
    #[error("no PPS in the sequence header or the keyframe")]
    NoPps,
    #[error("picture {width}x{height} exceeds limits.max_picture_pixels = {max}")]
    TooLarge { width: u32, height: u32, max: u64 },
    #[error("decode: {0}")]
    Decode(#[from] crate::snapshot::decode::DecodeError),
    #[error("encode: {0}")]
    Encode(#[from] crate::snapshot::encode::EncodeError),
    #[error("worker panicked: {0}")]
    Panicked(String),
}

#[derive(Default)]
struct SlotState {
    pending: Option<Job>,
    scheduled: bool,
}

/// A stream's place in the pool.
pub struct Slot {
    state: Mutex<SlotState>,
    sink: tmpsc::Sender<Snapshot>,
    pub stats: Arc<StreamStats>,
    /// Log context of the stream (peer, domain, app, stream).
    pub span: tracing::Span,
}

impl Slot {
    pub fn new(
        sink: tmpsc::Sender<Snapshot>,
        stats: Arc<StreamStats>,
        span: tracing::Span,
    ) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::default()),
            sink,
            stats,
            span,
        })
    }
}

/// The worker pool. Cloning shares it.
#[derive(Clone)]
pub struct Pool {
    tx: mpsc::Sender<Arc<Slot>>,
    metrics: Arc<Metrics>,
}

impl Pool {
    /// Starts `workers` threads. They stop once every `Pool` clone is dropped and the
    /// queue is drained.
    pub fn start(workers: usize, quality: u8, max_pixels: u64, metrics: Arc<Metrics>) -> Pool {
        let (tx, rx) = mpsc::channel::<Arc<Slot>>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("livesnap-snap-{i}"))
                .spawn(move || Worker::new(quality, max_pixels, metrics).run(&rx, i))
                .expect("spawn snapshot worker");
        }
        Pool { tx, metrics }
    }

    /// Hands a due keyframe to the pool. Never blocks on decoding: if the stream's
    /// previous keyframe is still waiting, it is replaced and counted as dropped.
    pub fn submit(&self, slot: &Arc<Slot>, job: Job) {
        let mut st = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.pending.replace(job).is_some() {
            slot.stats.dropped_busy.fetch_add(1, Ordering::Relaxed);
            slot.stats.finished.fetch_add(1, Ordering::Relaxed);
            self.metrics.dropped("pool_busy");
            slot.span.in_scope(|| {
                tracing::debug!("snapshot pool busy: older pending keyframe replaced")
            });
        }
        if !st.scheduled {
            st.scheduled = true;
            let _ = self.tx.send(slot.clone());
        }
    }
}

/// Keyframe → JPEG, with its decoder, encoder and buffers kept for reuse. Each pool
/// worker owns one; the on-demand snapshot of the admin API makes its own.
pub struct Renderer {
    decoder: KeyframeDecoder,
    encoder: JpegEncoder,
    frame: YuvFrame,
    annex_b: Vec<u8>,
    params_key: Vec<u8>,
    max_pixels: u64,
    /// Decode and encode time of the last successful `render`.
    pub last_timings: (std::time::Duration, std::time::Duration),
}

struct Worker {
    renderer: Renderer,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn new(quality: u8, max_pixels: u64, metrics: Arc<Metrics>) -> Worker {
        Worker {
            renderer: Renderer::new(quality, max_pixels),
            metrics,
        }
    }

    fn run(mut self, rx: &Mutex<mpsc::Receiver<Arc<Slot>>>, index: usize) {
        loop {
            let slot = {
                let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                match rx.recv() {
                    Ok(s) => s,
                    Err(_) => break,
                }
            };
            self.serve(&slot);
        }
        tracing::debug!(worker = index, "snapshot worker stopped");
    }

    /// Processes the slot's pending jobs until none is left, then unschedules it.
    fn serve(&mut self, slot: &Arc<Slot>) {
        loop {
            let job = {
                let mut st = slot.state.lock().unwrap_or_else(|p| p.into_inner());
                match st.pending.take() {
                    Some(j) => j,
                    None => {
                        st.scheduled = false;
                        return;
                    }
                }
            };
            let arrived = job.arrived;
            let unix_ts = job.unix_ts;
            let result = self.renderer.render(&job.body, &job.config);
            if result.is_ok() {
                let (d, e) = self.renderer.last_timings;
                self.metrics.decode_seconds.observe(d.as_secs_f64());
                self.metrics.encode_seconds.observe(e.as_secs_f64());
            }
            match result {
                Ok((jpeg, width, height)) => {
                    let snap = Snapshot {
                        jpeg,
                        width,
                        height,
                        unix_ts,
                        arrived,
                    };
                    if slot.sink.try_send(snap).is_err() {
                        slot.stats.dropped_backlog.fetch_add(1, Ordering::Relaxed);
                        slot.stats.finished.fetch_add(1, Ordering::Relaxed);
                        self.metrics.dropped("store_backlog");
                        slot.span
                            .in_scope(|| tracing::warn!("storage is behind: snapshot dropped"));
                    }
                }
                Err(e) => {
                    slot.stats.failed_decode.fetch_add(1, Ordering::Relaxed);
                    slot.stats.finished.fetch_add(1, Ordering::Relaxed);
                    self.metrics.failed("decode_error");
                    slot.span
                        .in_scope(|| tracing::warn!(error = %e, "snapshot failed"));
                }
            }
        }
    }
}

impl Renderer {
    pub fn new(quality: u8, max_pixels: u64) -> Renderer {
        Renderer {
            decoder: KeyframeDecoder::new(max_pixels),
            encoder: JpegEncoder::new(quality),
            frame: YuvFrame::new(),
            annex_b: Vec::new(),
            params_key: Vec::new(),
            max_pixels,
            last_timings: Default::default(),
        }
    }

    /// Decodes one keyframe (an AVCC access unit, with the sequence header in force)
    /// and encodes it as a JPEG: (jpeg, width, height). A panic inside either codec is
    /// caught and returned as an error.
    pub fn render(
        &mut self,
        body: &Bytes,
        config: &AvcConfig,
    ) -> Result<(Bytes, u32, u32), JobError> {
        catch_unwind(AssertUnwindSafe(|| self.render_inner(body, config)))
            .unwrap_or_else(|p| Err(JobError::Panicked(panic_message(&p))))
    }

    fn render_inner(
        &mut self,
        body: &Bytes,
        cfg: &AvcConfig,
    ) -> Result<(Bytes, u32, u32), JobError> {
        let au = avc::scan_access_unit(body, cfg.length_size)?;
        // In-band parameter sets win over the sequence header's.
        let sps_nal = au.sps.as_ref().or(cfg.sps.first()).ok_or(JobError::NoSps)?;
        let pps_nal = au.pps.as_ref().or(cfg.pps.first()).ok_or(JobError::NoPps)?;
        let info = sps::parse_sps(sps_nal)?;
        if u64::from(info.width) * u64::from(info.height) > self.max_pixels {
            return Err(JobError::TooLarge {
                width: info.width,
                height: info.height,
                max: self.max_pixels,
            });
        }
        self.params_key.clear();
        self.params_key.extend_from_slice(sps_nal);
        self.params_key.extend_from_slice(pps_nal);
        avc::to_annex_b(body, cfg.length_size, Some(cfg), &mut self.annex_b)?;
        let t0 = Instant::now();
        self.decoder
            .decode(&self.annex_b, &self.params_key, &mut self.frame)?;
        let t1 = Instant::now();
        let color = ColorInfo {
            matrix: match info.matrix {
                sps::Matrix::Bt709 => ColorMatrix::Bt709,
                sps::Matrix::Bt601 => ColorMatrix::Bt601,
            },
            full_range: info.full_range,
        };
        let jpeg = self.encoder.encode(&self.frame, color)?;
        self.last_timings = (t1 - t0, t1.elapsed());
        Ok((
            Bytes::from(jpeg),
            self.frame.width as u32,
            self.frame.height as u32,
        ))
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
