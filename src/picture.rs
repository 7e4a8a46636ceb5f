//! Pictures made on request from stored or in-memory JPEGs: decoding with mozjpeg's
//! DCT scaling (1/2, 1/4, 1/8 when the target is small enough: most of the decode is
//! skipped), the RGB resize (`fast_image_resize`), JPEG or WebP encoding, sprite
//! sheets of tiles, and the small byte-bounded `Cache` of results the HTTP side keeps.
//! The box arithmetic of `width` / `height` / `fit` is the outputs' own
//! (`snapshot::resize::Layout::plan`), so a `latest.jpg?width=320` and a rule's 320-px
//! output have the same size; WebP goes through `snapshot::webp`.
//!
//! No I/O: callers hand in bytes and get bytes. The work is
//! CPU-bound: callers run it on blocking threads, never on the async runtime. mozjpeg
//! reports errors by panicking; every entry point catches that and returns
//! [`PictureError`].

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fast_image_resize as fr;
use mozjpeg::{ColorSpace, Compress, Decompress};

/// The largest width or height a request may ask for.
pub const MAX_SIDE: u32 = 4096;
/// The largest source picture decoded (pixels): beyond it the stored object is refused.
pub const MAX_SOURCE_PIXELS: u64 = 8192 * 8192;

pub use crate::rules::output::{Fit, Format};
pub use crate::snapshot::resize::Layout;

/// `scale`, `pad` or `crop`.
pub fn parse_fit(s: &str) -> Option<Fit> {
    match s {
        "scale" => Some(Fit::Scale),
        "pad" => Some(Fit::Pad),
        "crop" => Some(Fit::Crop),
        _ => None,
    }
}

/// A requested picture: `width` and/or `height` (neither: the picture's size), how
/// to fit, the format and its quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resize {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    pub format: Format,
    pub quality: u8,
}

impl Resize {
    /// A canonical text of the request, for cache keys and ETags.
    pub fn canonical(&self) -> String {
        let side = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        format!(
            "w{}h{}{}q{}{}",
            side(self.width),
            side(self.height),
            self.fit.as_str(),
            self.quality,
            self.format.as_str()
        )
    }
}

/// Output pixels per source pixel of a layout.
fn factor(l: &Layout) -> f64 {
    (f64::from(l.dst[2]) / l.src[2]).max(f64::from(l.dst[3]) / l.src[3])
}

fn round_side(v: f64) -> u32 {
    (v.round() as u32).clamp(1, MAX_SIDE)
}

/// The layout of a `sw`×`sh` picture for `r` (the outputs' rules: nothing is ever
/// upscaled).
pub fn layout(sw: u32, sh: u32, r: &Resize) -> Layout {
    Layout::plan(sw, sh, r.width, r.height, r.fit)
}

/// The layout of a `sw`×`sh` picture in an exact `bw`×`bh` box (`pad` or `crop`;
/// `scale` stretches), growing the picture when needed (storyboard tiles).
pub fn box_layout(sw: u32, sh: u32, bw: u32, bh: u32, fit: Fit) -> Layout {
    let (fw, fh) = (f64::from(sw.max(1)), f64::from(sh.max(1)));
    let (bwf, bhf) = (f64::from(bw), f64::from(bh));
    match fit {
        Fit::Pad => {
            let s = (bwf / fw).min(bhf / fh);
            let (iw, ih) = (round_side(fw * s).min(bw), round_side(fh * s).min(bh));
            Layout {
                width: bw,
                height: bh,
                src: [0.0, 0.0, fw, fh],
                dst: [(bw - iw) / 2, (bh - ih) / 2, iw, ih],
            }
        }
        Fit::Crop => {
            let s = (bwf / fw).max(bhf / fh);
            let (cw, ch) = ((bwf / s).min(fw), (bhf / s).min(fh));
            Layout {
                width: bw,
                height: bh,
                src: [(fw - cw) / 2.0, (fh - ch) / 2.0, cw, ch],
                dst: [0, 0, bw, bh],
            }
        }
        Fit::Scale => Layout {
            width: bw,
            height: bh,
            src: [0.0, 0.0, fw, fh],
            dst: [0, 0, bw, bh],
        },
    }
}

/// Why a picture could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PictureError {
    #[error("the stored picture is not a JPEG that can be decoded: {0}")]
    Decode(String),
    #[error("the stored picture is {width}x{height}, larger than {MAX_SOURCE_PIXELS} pixels")]
    TooLarge { width: u64, height: u64 },
    #[error("resizing failed: {0}")]
    Resize(String),
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
    #[error("WebP encoding failed: {0}")]
    Webp(String),
}

/// An RGB picture, 3 bytes a pixel, rows packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgb {
    pub fn black(width: u32, height: u32) -> Rgb {
        Rgb {
            width,
            height,
            data: vec![0; width as usize * height as usize * 3],
        }
    }

    /// Copies `src` into this picture with its top-left corner at (x, y) (clipped).
    pub fn paste(&mut self, src: &Rgb, x: u32, y: u32) {
        let w = src.width.min(self.width.saturating_sub(x)) as usize;
        for row in 0..src.height.min(self.height.saturating_sub(y)) as usize {
            let s = row * src.width as usize * 3;
            let d = ((y as usize + row) * self.width as usize + x as usize) * 3;
            self.data[d..d + w * 3].copy_from_slice(&src.data[s..s + w * 3]);
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown error".into())
}

/// The size a JPEG's header declares.
pub fn jpeg_size(jpeg: &[u8]) -> Result<(u32, u32), PictureError> {
    catch_unwind(AssertUnwindSafe(|| {
        Decompress::new_mem(jpeg).map(|d| (d.width() as u32, d.height() as u32))
    }))
    .map_err(|p| PictureError::Decode(panic_text(&*p)))?
    .map_err(|e| PictureError::Decode(e.to_string()))
}

/// Decodes `jpeg` to RGB, at 1/8, 1/4, 1/2 or full size: the smallest of them that
/// is still at least `factor` times the picture's size (DCT scaling: the decoder
/// skips the work). Returns the picture and the scale it was decoded at. Callers
/// ask for twice the scale they need ([`render`]): a 4:2:0 picture's colour planes
/// are half its size, and decoding them smaller than the target blurs colour edges.
pub fn decode_scaled(jpeg: &[u8], factor: f64) -> Result<(Rgb, f64), PictureError> {
    let run = || -> Result<(Rgb, f64), PictureError> {
        let mut d = Decompress::new_mem(jpeg).map_err(|e| PictureError::Decode(e.to_string()))?;
        let (w, h) = (d.width() as u64, d.height() as u64);
        if w * h > MAX_SOURCE_PIXELS || w == 0 || h == 0 {
            return Err(PictureError::TooLarge {
                width: w,
                height: h,
            });
        }
        let num = [1u8, 2, 4]
            .into_iter()
            .find(|&n| f64::from(n) / 8.0 >= factor)
            .unwrap_or(8);
        d.scale(num);
        let mut started = d.rgb().map_err(|e| PictureError::Decode(e.to_string()))?;
        let (dw, dh) = (started.width() as u32, started.height() as u32);
        let data = started
            .read_scanlines::<u8>()
            .map_err(|e| PictureError::Decode(e.to_string()))?;
        // A truncated file still gives its rows (grey); the picture is what it is.
        let _ = started.finish();
        if data.len() != dw as usize * dh as usize * 3 {
            return Err(PictureError::Decode("short scanlines".into()));
        }
        Ok((
            Rgb {
                width: dw,
                height: dh,
                data,
            },
            f64::from(dw) / w as f64,
        ))
    };
    catch_unwind(AssertUnwindSafe(run)).map_err(|p| PictureError::Decode(panic_text(&*p)))?
}

/// Resizes the part `src` (x, y, w, h in `pic`'s pixels) of `pic` to `w`×`h`.
pub fn resize_rgb(pic: &Rgb, src: [f64; 4], w: u32, h: u32) -> Result<Rgb, PictureError> {
    let err = |e: &dyn std::fmt::Display| PictureError::Resize(e.to_string());
    let from = fr::images::ImageRef::new(pic.width, pic.height, &pic.data, fr::PixelType::U8x3)
        .map_err(|e| err(&e))?;
    let mut to = fr::images::Image::new(w, h, fr::PixelType::U8x3);
    let opts = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom))
        .crop(src[0], src[1], src[2], src[3]);
    fr::Resizer::new()
        .resize(&from, &mut to, &opts)
        .map_err(|e| err(&e))?;
    Ok(Rgb {
        width: w,
        height: h,
        data: to.into_vec(),
    })
}

/// `jpeg` decoded and placed by `l`: the output picture.
pub fn render(jpeg: &[u8], sw: u32, sh: u32, l: &Layout) -> Result<Rgb, PictureError> {
    let (pic, k) = decode_scaled(jpeg, 2.0 * factor(l))?;
    // The decoded size may round: map the source rectangle by each axis' own ratio.
    let kx = f64::from(pic.width) / f64::from(sw.max(1));
    let ky = f64::from(pic.height) / f64::from(sh.max(1));
    debug_assert!(k > 0.0);
    let src = [
        l.src[0] * kx,
        l.src[1] * ky,
        (l.src[2] * kx).min(f64::from(pic.width)),
        (l.src[3] * ky).min(f64::from(pic.height)),
    ];
    let [dx, dy, dw, dh] = l.dst;
    let same = src == [0.0, 0.0, f64::from(pic.width), f64::from(pic.height)]
        && (dw, dh) == (pic.width, pic.height);
    let inner = if same {
        pic
    } else {
        resize_rgb(&pic, src, dw, dh)?
    };
    if (dx, dy, dw, dh) == (0, 0, l.width, l.height) {
        return Ok(inner);
    }
    let mut out = Rgb::black(l.width, l.height);
    out.paste(&inner, dx, dy);
    Ok(out)
}

/// Encodes an RGB picture as a baseline JPEG at `quality` (1–100), without chroma
/// subsampling (4:4:4): these are small pictures, where halving the colour planes
/// again after the resize would blur every colour edge; it costs a few bytes.
pub fn encode_jpeg(pic: &Rgb, quality: u8) -> Result<Vec<u8>, PictureError> {
    let run = || -> Result<Vec<u8>, PictureError> {
        let err = |e: std::io::Error| PictureError::Encode(e.to_string());
        let mut c = Compress::new(ColorSpace::JCS_RGB);
        // Resets every parameter (`jpeg_set_defaults`), so it comes first.
        c.set_fastest_defaults();
        c.set_size(pic.width as usize, pic.height as usize);
        c.set_quality(f32::from(quality.clamp(1, 100)));
        c.set_chroma_sampling_pixel_sizes((1, 1), (1, 1));
        let cap = (pic.data.len() / 8).max(1024);
        let mut started = c.start_compress(Vec::with_capacity(cap)).map_err(err)?;
        started.write_scanlines(&pic.data).map_err(err)?;
        started.finish().map_err(err)
    };
    catch_unwind(AssertUnwindSafe(run)).map_err(|p| PictureError::Encode(panic_text(&*p)))?
}

/// Encodes an RGB picture in `format` at `quality`.
pub fn encode(pic: &Rgb, format: Format, quality: u8) -> Result<Vec<u8>, PictureError> {
    match format {
        Format::Jpeg => encode_jpeg(pic, quality),
        Format::Webp => {
            crate::snapshot::webp::encode_webp_rgb(&pic.data, pic.width, pic.height, quality)
                .map_err(|e| PictureError::Webp(e.to_string()))
        }
    }
}

/// A resized picture, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resized {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// `jpeg` resized and encoded for `r` (decode, resize, encode).
pub fn resize_jpeg(jpeg: &[u8], r: &Resize) -> Result<Resized, PictureError> {
    let (sw, sh) = jpeg_size(jpeg)?;
    let l = layout(sw, sh, r);
    let pic = render(jpeg, sw, sh, &l)?;
    Ok(Resized {
        bytes: encode(&pic, r.format, r.quality)?,
        width: pic.width,
        height: pic.height,
    })
}

/// The grid of a sprite sheet: `count` tiles of `tile_w`×`tile_h`, `columns` a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub tile_w: u32,
    pub tile_h: u32,
    pub columns: u32,
    pub count: u32,
}

impl Grid {
    /// The sheet's size.
    pub fn size(&self) -> (u32, u32) {
        let cols = self.columns.min(self.count).max(1);
        let rows = self.count.div_ceil(self.columns.max(1)).max(1);
        (cols * self.tile_w, rows * self.tile_h)
    }

    /// Where tile `i` is: (x, y, w, h).
    pub fn tile(&self, i: u32) -> (u32, u32, u32, u32) {
        let (col, row) = (i % self.columns, i / self.columns);
        (
            col * self.tile_w,
            row * self.tile_h,
            self.tile_w,
            self.tile_h,
        )
    }
}

/// The tiles of a sheet that could not be made, by index, and why.
pub type TileFailures = Vec<(usize, PictureError)>;

/// A sprite sheet: each JPEG letterboxed (`pad`) into its tile of `grid`, in order;
/// a picture that cannot be decoded leaves its tile black (and is named in the
/// returned list of failures, by index).
pub fn sprite(
    jpegs: &[Bytes],
    grid: &Grid,
    quality: u8,
) -> Result<(Vec<u8>, TileFailures), PictureError> {
    let (w, h) = grid.size();
    let mut sheet = Rgb::black(w, h);
    let mut failed = Vec::new();
    for (i, jpeg) in jpegs.iter().enumerate() {
        let tile = jpeg_size(jpeg).and_then(|(sw, sh)| {
            let l = box_layout(sw, sh, grid.tile_w, grid.tile_h, Fit::Pad);
            render(jpeg, sw, sh, &l)
        });
        match tile {
            Ok(t) => {
                let (x, y, _, _) = grid.tile(i as u32);
                sheet.paste(&t, x, y);
            }
            Err(e) => failed.push((i, e)),
        }
    }
    Ok((encode_jpeg(&sheet, quality)?, failed))
}

/// A cached result: the body and its ETag (and the picture's size, when it is one).
#[derive(Debug, Clone)]
pub struct Cached {
    pub body: Bytes,
    pub etag: String,
    pub width: u32,
    pub height: u32,
}

/// A small cache of made pictures, bounded in bytes and entries, least recently used
/// out first. Concurrent requests for one key wait for one making of it.
#[derive(Debug)]
pub struct Cache {
    inner: Mutex<Inner>,
    max_bytes: usize,
    max_entries: usize,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Slot>,
    bytes: usize,
    tick: u64,
    hits: u64,
    misses: u64,
}

#[derive(Debug)]
struct Slot {
    cell: Arc<tokio::sync::OnceCell<Cached>>,
    used: u64,
    size: usize,
}

/// Hits and misses so far, and what is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub bytes: usize,
}

impl Cache {
    pub fn new(max_bytes: usize, max_entries: usize) -> Cache {
        Cache {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            max_entries: max_entries.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> CacheStats {
        let i = self.lock();
        CacheStats {
            hits: i.hits,
            misses: i.misses,
            entries: i.map.len(),
            bytes: i.bytes,
        }
    }

    /// The cached value of `key` if it is made.
    pub fn get(&self, key: &str) -> Option<Cached> {
        let mut i = self.lock();
        i.tick += 1;
        let tick = i.tick;
        let slot = i.map.get_mut(key)?;
        slot.used = tick;
        let v = slot.cell.get().cloned();
        if v.is_some() {
            i.hits += 1;
        }
        v
    }

    /// Puts a made value (replacing any).
    pub fn put(&self, key: String, v: Cached) {
        let cell = Arc::new(tokio::sync::OnceCell::new_with(Some(v.clone())));
        let mut i = self.lock();
        i.tick += 1;
        let tick = i.tick;
        if let Some(old) = i.map.insert(
            key.clone(),
            Slot {
                cell,
                used: tick,
                size: 0,
            },
        ) {
            i.bytes -= old.size;
        }
        self.account(&mut i, &key, &v);
    }

    fn account(&self, i: &mut Inner, key: &str, v: &Cached) {
        let size = v.body.len() + key.len() + v.etag.len() + 64;
        if let Some(slot) = i.map.get_mut(key) {
            if slot.size == 0 {
                slot.size = size;
                i.bytes += size;
            }
        }
        while (i.bytes > self.max_bytes || i.map.len() > self.max_entries) && i.map.len() > 1 {
            let Some(oldest) = i
                .map
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(s) = i.map.remove(&oldest) {
                i.bytes -= s.size;
            }
        }
        if i.bytes > self.max_bytes {
            // One value larger than the whole cache: not kept.
            if let Some(s) = i.map.remove(key) {
                i.bytes -= s.size;
            }
        }
    }

    /// The value of `key`, made by `make` when it is not cached (once, however many
    /// ask at the same time; an error is not cached).
    pub async fn get_or_make<F, Fut, E>(&self, key: &str, make: F) -> Result<Cached, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Cached, E>>,
    {
        let cell = {
            let mut i = self.lock();
            i.tick += 1;
            let tick = i.tick;
            let slot = i.map.entry(key.to_string()).or_insert_with(|| Slot {
                cell: Arc::new(tokio::sync::OnceCell::new()),
                used: tick,
                size: 0,
            });
            slot.used = tick;
            let cell = slot.cell.clone();
            if cell.initialized() {
                i.hits += 1;
            }
            cell
        };
        let mut made = false;
        let v = cell
            .get_or_try_init(|| {
                made = true;
                make()
            })
            .await?
            .clone();
        if made {
            let mut i = self.lock();
            i.misses += 1;
            // Still the slot this value was made in (not evicted and replaced since).
            if i.map.get(key).is_some_and(|s| Arc::ptr_eq(&s.cell, &cell)) {
                self.account(&mut i, key, &v);
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(w: Option<u32>, h: Option<u32>, fit: Fit) -> Resize {
        Resize {
            width: w,
            height: h,
            fit,
            format: Format::Jpeg,
            quality: 80,
        }
    }

    #[test]
    fn layouts_are_the_outputs_own() {
        let l = layout(1920, 1080, &r(Some(320), None, Fit::Scale));
        assert_eq!((l.width, l.height), (320, 180));
        let l = layout(640, 360, &r(Some(1280), None, Fit::Scale));
        assert_eq!((l.width, l.height), (640, 360));
        let l = layout(640, 360, &r(Some(200), Some(200), Fit::Pad));
        assert_eq!((l.width, l.height, l.dst), (200, 200, [0, 42, 200, 113]));
        let l = layout(640, 360, &r(Some(180), Some(180), Fit::Crop));
        assert_eq!(l.src, [140.0, 0.0, 360.0, 360.0]);
    }

    #[test]
    fn tiles_fill_their_exact_box() {
        // A small picture grows into a large tile; another shape is letterboxed.
        let l = box_layout(160, 90, 320, 180, Fit::Pad);
        assert_eq!((l.width, l.height, l.dst), (320, 180, [0, 0, 320, 180]));
        let l = box_layout(640, 480, 160, 90, Fit::Pad);
        assert_eq!((l.width, l.height, l.dst), (160, 90, [20, 0, 120, 90]));
        let l = box_layout(640, 480, 160, 90, Fit::Crop);
        assert_eq!(l.src, [0.0, 60.0, 640.0, 360.0]);
    }

    fn gradient(w: u32, h: u32) -> Rgb {
        let mut p = Rgb::black(w, h);
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 3) as usize;
                p.data[i] = (x * 255 / w) as u8;
                p.data[i + 1] = (y * 255 / h) as u8;
                p.data[i + 2] = 128;
            }
        }
        p
    }

    #[test]
    fn resize_round_trip_sizes_and_padding() {
        let jpeg = encode_jpeg(&gradient(640, 360), 90).unwrap();
        let out = resize_jpeg(&jpeg, &r(Some(320), None, Fit::Scale)).unwrap();
        assert_eq!((out.width, out.height), (320, 180));
        assert_eq!(jpeg_size(&out.bytes).unwrap(), (320, 180));
        let out = resize_jpeg(&jpeg, &r(Some(100), Some(100), Fit::Pad)).unwrap();
        assert_eq!(jpeg_size(&out.bytes).unwrap(), (100, 100));
        let webp = Resize {
            format: Format::Webp,
            ..r(Some(160), None, Fit::Scale)
        };
        let out = resize_jpeg(&jpeg, &webp).unwrap();
        assert_eq!((out.width, out.height), (160, 90));
        assert_eq!(&out.bytes[..4], b"RIFF");
        assert_eq!(&out.bytes[8..12], b"WEBP");
        // Small targets are decoded at 1/8 (640 → 80 ≥ 64); render asks for twice.
        let (pic, k) = decode_scaled(&jpeg, 64.0 / 640.0).unwrap();
        assert_eq!((pic.width, pic.height, k), (80, 45, 0.125));
        let (pic, _) = decode_scaled(&jpeg, 0.2).unwrap();
        assert_eq!(pic.width, 160);
        assert!(matches!(
            resize_jpeg(b"not a jpeg", &r(Some(10), None, Fit::Scale)),
            Err(PictureError::Decode(_))
        ));
    }

    #[test]
    fn sprites_place_tiles_in_rows() {
        let g = Grid {
            tile_w: 160,
            tile_h: 90,
            columns: 3,
            count: 4,
        };
        assert_eq!(g.size(), (480, 180));
        assert_eq!(g.tile(3), (0, 90, 160, 90));
        let one = Grid { count: 1, ..g };
        assert_eq!(one.size(), (160, 90));
        let jpeg = Bytes::from(encode_jpeg(&gradient(640, 360), 90).unwrap());
        let two = Grid { count: 2, ..g };
        let (sheet, failed) = sprite(&[jpeg.clone(), Bytes::from_static(b"x")], &two, 80).unwrap();
        assert_eq!(jpeg_size(&sheet).unwrap(), (320, 90));
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 1);
    }

    fn cached(n: usize) -> Cached {
        Cached {
            body: Bytes::from(vec![0u8; n]),
            etag: "\"e\"".into(),
            width: 1,
            height: 1,
        }
    }

    #[tokio::test]
    async fn the_cache_is_bounded_and_makes_once() {
        let c = Cache::new(10_000, 3);
        let v = c
            .get_or_make("a", || async { Ok::<_, ()>(cached(1000)) })
            .await
            .unwrap();
        assert_eq!(v.body.len(), 1000);
        let again = c
            .get_or_make::<_, _, ()>("a", || async { panic!("made twice") })
            .await
            .unwrap();
        assert_eq!(again.body.len(), 1000);
        assert_eq!(c.stats().hits, 1);
        assert_eq!(c.stats().misses, 1);
        // Errors are not kept.
        assert!(c.get_or_make("e", || async { Err(()) }).await.is_err());
        assert!(c.get("e").is_none());
        for k in ["b", "c", "d"] {
            c.put(k.into(), cached(1000));
        }
        let s = c.stats();
        assert!(s.entries <= 3, "{s:?}");
        assert!(c.get("a").is_none(), "the least recently used went first");
        // Bytes: a big value pushes the others out.
        c.put("big".into(), cached(9_000));
        assert!(c.stats().bytes <= 10_000, "{:?}", c.stats());
        assert!(c.get("big").is_some());
        // A value larger than the cache is not kept.
        c.put("huge".into(), cached(20_000));
        assert!(c.get("huge").is_none());
        assert!(c.stats().bytes <= 10_000);
    }
}
