//! Storyboards: timeline hover previews of a stream's stored sequence snapshots.
//!
//! - `GET /api/v1/streams/{domain}/{app}/{stream}/storyboard.vtt?start_time=&end_time=
//!   &tile=160x90&columns=10`: a WebVTT file, one cue per tile, times relative to
//!   `start_time`, each cue's text `storyboard.jpg?SAME_QUERY#xywh=x,y,w,h` (a URL
//!   relative to the VTT's, as hls.js, video.js and Plyr expect).
//! - `GET …/storyboard.jpg` with the same parameters: the sprite sheet, tiles of
//!   `tile` (each snapshot letterboxed into it), `columns` a row.
//! - Signed (`/img/…/storyboard.vtt?…&exp=&sig=`, see `links`): the same without the
//!   token; the VTT's sprite URL then carries its own signature, with the same expiry.
//!
//! The snapshots are found as the snapshot query finds them (`snapshots::
//! candidate_templates`, `storage::catalog::scan`), so storyboards work for ended
//! streams and on every node. Bounded: the range ([`snapshots::MAX_RANGE_SECS`]), the
//! tiles of a sheet ([`MAX_TILES`], evenly sampled when more snapshots are stored), the
//! tile and sheet sizes; sheets are kept in the `images::Pictures` cache, keyed by
//! the parameters and the keys found (a new snapshot in the range makes a new sheet).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;

use super::error::{ApiError, ApiResult};
use super::images::{self, image_response};
use super::params::Params;
use super::snapshots;
use super::streams::stream_id;
use super::ApiState;
use crate::links::STORYBOARD_PARAMS;
use crate::names::StreamId;
use crate::picture::{self, Cached, Format, Grid};
use crate::storage::catalog::Found;

/// The most tiles in one sheet; more snapshots in the range are sampled evenly.
pub const MAX_TILES: u32 = 200;
/// The largest width or height of a sheet.
pub const MAX_SHEET_SIDE: u32 = 8192;
/// Tile sides: 16..=640 pixels.
pub const TILE_SIDES: std::ops::RangeInclusive<u32> = 16..=640;
/// Stored snapshots read at once for one sheet.
const READS_AT_ONCE: usize = 8;

/// A storyboard request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    pub start: u64,
    pub end: u64,
    pub tile_w: u32,
    pub tile_h: u32,
    pub columns: u32,
}

impl Board {
    /// The most tiles one sheet of this board holds.
    pub fn max_tiles(&self) -> u32 {
        let rows = (MAX_SHEET_SIDE / self.tile_h).max(1);
        MAX_TILES.min(rows * self.columns)
    }

    fn canonical(&self) -> String {
        format!(
            "{}-{}-{}x{}-{}",
            self.start, self.end, self.tile_w, self.tile_h, self.columns
        )
    }
}

/// Parses and bounds the storyboard parameters.
pub fn parse(p: &Params) -> ApiResult<Board> {
    let start = p.time("start_time")?;
    let end = p.time("end_time")?;
    if end <= start {
        return Err(ApiError::invalid("end_time", "must be after start_time"));
    }
    if end - start > snapshots::MAX_RANGE_SECS {
        return Err(ApiError::invalid(
            "end_time",
            format!(
                "the range may cover {} s at most, got {} s",
                snapshots::MAX_RANGE_SECS,
                end - start
            ),
        ));
    }
    let (tile_w, tile_h) = match p.get("tile") {
        None => (160, 90),
        Some(v) => {
            let bad = || {
                ApiError::invalid(
                    "tile",
                    format!(
                        "must be WIDTHxHEIGHT, each {}..={}, got {v:?}",
                        TILE_SIDES.start(),
                        TILE_SIDES.end()
                    ),
                )
            };
            let (w, h) = v.split_once('x').ok_or_else(bad)?;
            let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
            if !TILE_SIDES.contains(&w) || !TILE_SIDES.contains(&h) {
                return Err(bad());
            }
            (w, h)
        }
    };
    let columns = p.int_in("columns", 10, 1..=100)? as u32;
    if columns * tile_w > MAX_SHEET_SIDE {
        return Err(ApiError::invalid(
            "columns",
            format!(
                "{columns} columns of {tile_w} px exceed the largest sheet width ({MAX_SHEET_SIDE} px)"
            ),
        ));
    }
    Ok(Board {
        start,
        end,
        tile_w,
        tile_h,
        columns,
    })
}

/// `n` items evenly sampled from `items` (all of them when there are not more).
pub fn sample<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * items.len() / n].clone()).collect()
}

/// The stored snapshots of `id` in the board's range (one a second, sampled to the
/// board's tile cap), in time order: the snapshot query's search.
async fn find(state: &ApiState, id: &StreamId, b: &Board) -> ApiResult<Vec<Found>> {
    // One tile a snapshot: its output 0 (the first JPEG of its outputs).
    let mut found: Vec<Found> = snapshots::search(state, id, b.start, b.end)
        .await?
        .into_iter()
        .filter_map(|g| {
            g.members
                .into_iter()
                .find(|f| Format::of_key(&f.key) == Some(Format::Jpeg))
        })
        .collect();
    // One tile a second (cue times are in seconds): the first found of each.
    found.dedup_by_key(|f| f.unix);
    Ok(sample(&found, b.max_tiles() as usize))
}

/// `HH:MM:SS.mmm`.
fn vtt_time(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.000",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The WebVTT text: tile `i` from its snapshot's time (the first from `start_time`)
/// to the next one's (the last to `end_time`), pointing into `sprite_url`.
pub fn vtt_text(b: &Board, found: &[Found], sprite_url: &str) -> String {
    let grid = Grid {
        tile_w: b.tile_w,
        tile_h: b.tile_h,
        columns: b.columns,
        count: found.len() as u32,
    };
    let mut out = String::from("WEBVTT\n");
    for (i, f) in found.iter().enumerate() {
        let from = if i == 0 { 0 } else { f.unix - b.start };
        let to = found.get(i + 1).map_or(b.end, |n| n.unix) - b.start;
        if to <= from {
            continue;
        }
        let (x, y, w, h) = grid.tile(i as u32);
        out.push_str(&format!(
            "\n{} --> {}\n{sprite_url}#xywh={x},{y},{w},{h}\n",
            vtt_time(from),
            vtt_time(to)
        ));
    }
    out
}

/// The query without `exp` and `sig` (what the sprite URL repeats).
fn board_query(uri: &Uri) -> String {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && k != "exp" && k != "sig"
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn etag_of(parts: &[&str]) -> String {
    use md5::Digest;
    let mut h = md5::Md5::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    format!("\"{}\"", crate::util::hex(&h.finalize()))
}

/// The VTT response; `sign` is the expiry to sign the sprite URL with (signed links).
async fn serve_vtt(
    state: &ApiState,
    id: &StreamId,
    b: &Board,
    uri: &Uri,
    headers: &HeaderMap,
    sign: Option<u64>,
) -> ApiResult<Response> {
    let found = find(state, id, b).await?;
    let query = board_query(uri);
    let sprite = match sign {
        None => format!("storyboard.jpg?{query}"),
        Some(exp) => {
            let path = uri
                .path()
                .strip_suffix("storyboard.vtt")
                .map(|p| format!("{p}storyboard.jpg?{query}"))
                .ok_or_else(|| ApiError::internal("not a storyboard path"))?;
            let signed = images::signer(state)?.sign_at(&path, exp);
            let rel = signed.rsplit_once('/').map_or(signed.as_str(), |(_, r)| r);
            rel.to_string()
        }
    };
    let text = vtt_text(b, &found, &sprite);
    let etag = etag_of(&[&text]);
    let mut resp = image_response(headers, "text/vtt; charset=utf-8", &etag, &[], || {
        Bytes::from(text)
    });
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=10"),
    );
    Ok(resp)
}

/// The sprite sheet response.
async fn serve_jpg(
    state: &ApiState,
    id: &StreamId,
    b: &Board,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let found = find(state, id, b).await?;
    if found.is_empty() {
        return Err(ApiError::not_found(format!(
            "no stored snapshot of {id} in the range"
        )));
    }
    let mut parts = vec![id.to_string(), b.canonical()];
    parts.extend(
        found
            .iter()
            .map(|f| format!("{}/{}/{:?}", f.storage, f.key, f.size)),
    );
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let etag = etag_of(&parts);
    let extra = [("x-livesnap-tiles", found.len().to_string())];
    if images::etag_matches(headers, &etag) {
        return Ok(image_response(
            headers,
            "image/jpeg",
            &etag,
            &extra,
            Bytes::new,
        ));
    }
    let quality = state.node.settings.quality;
    let key = format!("storyboard\n{etag}");
    let grid = Grid {
        tile_w: b.tile_w,
        tile_h: b.tile_h,
        columns: b.columns,
        count: found.len() as u32,
    };
    let made = state
        .pictures
        .cache
        .get_or_make(&key, || async {
            let jobs: Vec<_> = found
                .iter()
                .map(|f| {
                    let target = state.node.targets.get(&f.storage).cloned();
                    (target, f.storage.clone(), f.key.clone())
                })
                .collect();
            let reads = jobs.into_iter().map(|(target, storage, key)| async move {
                let Some(t) = target else {
                    return Bytes::new();
                };
                match t.op.read(&key).await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        tracing::warn!(key, storage, error = %e, "storyboard tile not read");
                        Bytes::new()
                    }
                }
            });
            let jpegs: Vec<Bytes> = futures::stream::iter(reads)
                .buffered(READS_AT_ONCE)
                .collect()
                .await;
            let (sheet, failed) = state
                .pictures
                .run(move || picture::sprite(&jpegs, &grid, quality))
                .await?;
            for (i, e) in failed {
                tracing::debug!(tile = i, error = %e, "storyboard tile left black");
            }
            let (width, height) = grid.size();
            Ok::<_, ApiError>(Cached {
                body: Bytes::from(sheet),
                etag: etag.clone(),
                width,
                height,
            })
        })
        .await?;
    let mut resp = image_response(headers, "image/jpeg", &etag, &extra, || made.body);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=10"),
    );
    Ok(resp)
}

/// `GET /api/v1/streams/{domain}/{app}/{stream}/storyboard.vtt`
pub async fn vtt(
    State(state): State<ApiState>,
    uri: Uri,
    Path((d, a, s)): Path<(String, String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let b = parse(&Params::new(query, STORYBOARD_PARAMS)?)?;
    let id = stream_id(d, a, s)?;
    serve_vtt(&state, &id, &b, &uri, &headers, None).await
}

/// `GET /api/v1/streams/{domain}/{app}/{stream}/storyboard.jpg`
pub async fn jpg(
    State(state): State<ApiState>,
    Path((d, a, s)): Path<(String, String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let b = parse(&Params::new(query, STORYBOARD_PARAMS)?)?;
    let id = stream_id(d, a, s)?;
    serve_jpg(&state, &id, &b, &headers).await
}

fn signed_params(query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> ApiResult<Params> {
    let mut allowed = STORYBOARD_PARAMS.to_vec();
    allowed.extend(["exp", "sig"]);
    Params::new(query, &allowed)
}

/// `GET /img/{domain}/{app}/{stream}/storyboard.vtt?…&exp=&sig=`
pub async fn signed_vtt(
    State(state): State<ApiState>,
    uri: Uri,
    Path((d, a, s)): Path<(String, String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    images::verify(&state, &uri)?;
    let p = signed_params(query)?;
    let b = parse(&p)?;
    let exp: u64 = p
        .required("exp")?
        .parse()
        .map_err(|_| ApiError::invalid("exp", "not a number"))?;
    let id = stream_id(d, a, s)?;
    serve_vtt(&state, &id, &b, &uri, &headers, Some(exp)).await
}

/// `GET /img/{domain}/{app}/{stream}/storyboard.jpg?…&exp=&sig=`
pub async fn signed_jpg(
    State(state): State<ApiState>,
    uri: Uri,
    Path((d, a, s)): Path<(String, String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    images::verify(&state, &uri)?;
    let b = parse(&signed_params(query)?)?;
    let id = stream_id(d, a, s)?;
    serve_jpg(&state, &id, &b, &headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(times: &[u64]) -> Vec<Found> {
        times
            .iter()
            .map(|&t| Found {
                storage: "s".into(),
                key: format!("k{t}"),
                unix: t,
                size: None,
            })
            .collect()
    }

    #[test]
    fn cues_cover_the_range_with_tile_fragments() {
        let b = Board {
            start: 1000,
            end: 1020,
            tile_w: 160,
            tile_h: 90,
            columns: 2,
        };
        let text = vtt_text(&b, &found(&[1002, 1007, 1012]), "storyboard.jpg?q=1");
        assert_eq!(
            text,
            "WEBVTT\n\n\
             00:00:00.000 --> 00:00:07.000\nstoryboard.jpg?q=1#xywh=0,0,160,90\n\n\
             00:00:07.000 --> 00:00:12.000\nstoryboard.jpg?q=1#xywh=160,0,160,90\n\n\
             00:00:12.000 --> 00:00:20.000\nstoryboard.jpg?q=1#xywh=0,90,160,90\n"
        );
        assert_eq!(vtt_time(3_723), "01:02:03.000");
    }

    #[test]
    fn sampling_is_even_and_bounded() {
        let v: Vec<u32> = (0..10).collect();
        assert_eq!(sample(&v, 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(sample(&v, 20), v);
        let b = Board {
            start: 0,
            end: 1,
            tile_w: 640,
            tile_h: 640,
            columns: 10,
        };
        assert_eq!(b.max_tiles(), 120);
    }
}
