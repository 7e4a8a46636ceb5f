//! FLV video tag bodies (what an RTMP video message carries) and a small in-memory FLV file reader.
//!
//! Owns: the shared [`MediaError`] of `media`, [`parse_video_tag`] (legacy FLV and Enhanced RTMP headers)
//! and [`FlvReader`] (for the offline snapshot command and tests). Pure functions over bytes: no I/O, no
//! decoding, every length checked, no panic on any input. Payloads are zero-copy slices of the input.
//! Must not touch: AVC payload internals (see `avc`) or parameter-set syntax (see `sps`).

use bytes::Bytes;
use thiserror::Error;

/// Every error of `media`, each naming the offending value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MediaError {
    // --- FLV / RTMP video tags ---
    /// A video tag body shorter than its header requires.
    #[error("video tag of {len} bytes is truncated: its header needs {need}")]
    TagTooShort { len: usize, need: usize },
    /// The file does not start with `FLV`.
    #[error("not an FLV file: signature {0:02x?}, expected \"FLV\"")]
    FlvSignature([u8; 3]),
    /// The FLV header's data offset is below 9 or beyond the file.
    #[error("FLV header data offset {offset} is invalid for a file of {file_len} bytes")]
    FlvDataOffset { offset: u32, file_len: usize },
    /// The file ends inside a tag header, tag body or PreviousTagSize field.
    #[error("FLV truncated at byte {offset}: need {need} more bytes, {remaining} left")]
    FlvTruncated {
        offset: usize,
        need: usize,
        remaining: usize,
    },
    /// A PreviousTagSize field that does not match the tag before it.
    #[error("FLV PreviousTagSize at byte {offset} is {found}, expected {expected}")]
    PreviousTagSize {
        offset: usize,
        found: u32,
        expected: u32,
    },

    // --- AVC decoder configuration record and access units ---
    /// The AVCDecoderConfigurationRecord is shorter than its fixed fields.
    #[error("AVC decoder configuration record of {len} bytes is truncated: need {need}")]
    ConfigTooShort { len: usize, need: usize },
    /// AVCDecoderConfigurationRecord.configurationVersion other than 1.
    #[error("AVC decoder configuration record version {0}, expected 1")]
    ConfigVersion(u8),
    /// A NAL unit length size that is not 1, 2 or 4 bytes.
    #[error("NAL unit length size {0} is not 1, 2 or 4")]
    LengthSize(u8),
    /// A decoder configuration record without any SPS.
    #[error("AVC decoder configuration record has no SPS")]
    NoSps,
    /// A parameter set whose length is 0 or runs past the end of the record.
    #[error(
        "{kind} #{index} in the decoder configuration record: length {len}, {remaining} bytes left"
    )]
    ParamSetLength {
        kind: &'static str,
        index: usize,
        len: usize,
        remaining: usize,
    },
    /// A parameter set entry that holds a NAL unit of another type.
    #[error("{kind} #{index} in the decoder configuration record has NAL type {nal_type}")]
    ParamSetType {
        kind: &'static str,
        index: usize,
        nal_type: u8,
    },
    /// An AVCC NAL unit whose length prefix is cut off.
    #[error("NAL length prefix at byte {offset} truncated: {length_size}-byte prefix, {remaining} bytes left")]
    NalLengthTruncated {
        offset: usize,
        length_size: u8,
        remaining: usize,
    },
    /// An AVCC NAL unit of length 0 or longer than what follows it.
    #[error("NAL unit at byte {offset} has length {len}, {remaining} bytes left")]
    NalLength {
        offset: usize,
        len: u32,
        remaining: usize,
    },

    // --- SPS ---
    /// `parse_sps` was given another NAL unit type (or an empty slice: type 0).
    #[error("expected an SPS (NAL type 7), got NAL type {0}")]
    NotSps(u8),
    /// The SPS ends before a mandatory field.
    #[error("SPS truncated while reading {field}")]
    SpsTruncated { field: &'static str },
    /// An SPS field outside its legal range.
    #[error("SPS field {field} = {value} is out of range")]
    SpsField { field: &'static str, value: u64 },
    /// A chroma format other than 4:2:0 (0 monochrome, 2 4:2:2, 3 4:4:4), or separate colour planes (reported as 3).
    #[error("chroma_format_idc {0} is not supported: only 4:2:0 (1) is")]
    ChromaFormat(u32),
    /// A bit depth other than 8 (the decoder path is 8-bit only).
    #[error("bit depth luma {luma} / chroma {chroma} is not supported: only 8-bit is")]
    BitDepth { luma: u32, chroma: u32 },
    /// Frame cropping that removes the whole picture.
    #[error("SPS cropping of {crop_x}x{crop_y} pixels exceeds the coded size {coded_width}x{coded_height}")]
    Cropping {
        coded_width: u64,
        coded_height: u64,
        crop_x: u64,
        crop_y: u64,
    },
    /// A picture of width or height 0 or above 8192.
    #[error("picture size {width}x{height} is outside 1..=8192")]
    Dimensions { width: u64, height: u64 },
}

/// Video codec signalled by a video tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// Legacy codec id 7, or Enhanced RTMP FourCC `avc1`.
    Avc,
    /// Enhanced RTMP FourCC `hvc1`, or the widespread non-standard legacy codec id 12.
    Hevc,
    /// Enhanced RTMP FourCC `av01`.
    Av1,
    /// Enhanced RTMP FourCC `vp09`.
    Vp9,
    /// Any other legacy codec id (e.g. 2 Sorenson H.263, 4 VP6) or FourCC (as a big-endian u32).
    /// `Other(0)` when an Enhanced RTMP tag signals no codec (a command frame or multitrack tag).
    Other(u32),
}

/// What a video tag's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// Decoder configuration (AVCDecoderConfigurationRecord for AVC).
    SequenceHeader,
    /// Coded frames (AVCC length-prefixed NAL units for AVC).
    Nalus,
    /// End of sequence: no payload.
    EndOfSequence,
    /// Anything else: metadata, commands, multitrack, codecs without packet types.
    Other,
}

/// A parsed video tag header with its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoTag {
    /// Frame type 1 (keyframe). Sequence headers are sent with frame type 1 too: check `kind`.
    pub keyframe: bool,
    pub codec: VideoCodec,
    pub kind: PacketKind,
    /// Presentation minus decode time in ms (signed 24-bit); 0 where the format carries none.
    pub composition_time: i32,
    /// AVCDecoderConfigurationRecord for a sequence header, AVCC NAL units for `Nalus`; a zero-copy
    /// slice of the input.
    pub body: Bytes,
}

const FOURCC_AVC: u32 = u32::from_be_bytes(*b"avc1");
const FOURCC_HEVC: u32 = u32::from_be_bytes(*b"hvc1");
const FOURCC_AV1: u32 = u32::from_be_bytes(*b"av01");
const FOURCC_VP9: u32 = u32::from_be_bytes(*b"vp09");

/// Parses the body of an RTMP video message (= an FLV VIDEODATA tag body).
///
/// Legacy header: `frame type (4 bits) | codec id (4 bits)`; for AVC (7) and HEVC (12) then a packet type
/// byte and a signed 24-bit composition time. Enhanced RTMP (bit 7 of byte 0 set): `frame type (3 bits) |
/// packet type (4 bits)`, optional ModEx blocks (skipped), then a FourCC; `CodedFrames` carries a composition
/// time for `avc1`/`hvc1` only, `CodedFramesX` never does.
pub fn parse_video_tag(data: &Bytes) -> Result<VideoTag, MediaError> {
    let first = *data
        .first()
        .ok_or(MediaError::TagTooShort { len: 0, need: 1 })?;
    if first & 0x80 != 0 {
        return parse_enhanced(data, first);
    }
    let frame_type = first >> 4;
    let keyframe = frame_type == 1;
    let codec = match first & 0x0f {
        7 => VideoCodec::Avc,
        12 => VideoCodec::Hevc,
        id => VideoCodec::Other(u32::from(id)),
    };
    // Frame type 5 is a video info/command frame (e.g. seek markers): one command byte, no packet type.
    if frame_type == 5 || !matches!(codec, VideoCodec::Avc | VideoCodec::Hevc) {
        return Ok(VideoTag {
            keyframe,
            codec,
            kind: PacketKind::Other,
            composition_time: 0,
            body: data.slice(1..),
        });
    }
    need(data, 5)?;
    let kind = match data[1] {
        0 => PacketKind::SequenceHeader,
        1 => PacketKind::Nalus,
        2 => PacketKind::EndOfSequence,
        _ => PacketKind::Other,
    };
    Ok(VideoTag {
        keyframe,
        codec,
        kind,
        composition_time: si24(&data[2..5]),
        body: data.slice(5..),
    })
}

fn parse_enhanced(data: &Bytes, first: u8) -> Result<VideoTag, MediaError> {
    let frame_type = (first >> 4) & 0x07;
    let mut packet_type = first & 0x0f;
    let mut pos = 1;
    // ModEx (7): size-prefixed modifier data, then a byte holding the real packet type in its low bits.
    while packet_type == 7 {
        need(data, pos + 1)?;
        let mut size = usize::from(data[pos]) + 1;
        pos += 1;
        if size == 256 {
            need(data, pos + 2)?;
            size = usize::from(u16::from_be_bytes([data[pos], data[pos + 1]])) + 1;
            pos += 2;
        }
        pos += size;
        need(data, pos + 1)?;
        packet_type = data[pos] & 0x0f;
        pos += 1;
    }
    let other = |pos: usize| VideoTag {
        keyframe: frame_type == 1,
        codec: VideoCodec::Other(0),
        kind: PacketKind::Other,
        composition_time: 0,
        body: data.slice(pos..),
    };
    // A command frame (frame type 5) carries a command byte instead of a FourCC, except with Metadata (4);
    // Multitrack (6) needs a track loop we do not support.
    if (frame_type == 5 && packet_type != 4) || packet_type == 6 {
        need(data, pos)?;
        return Ok(other(pos));
    }
    need(data, pos + 4)?;
    let fourcc = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
    pos += 4;
    let codec = match fourcc {
        FOURCC_AVC => VideoCodec::Avc,
        FOURCC_HEVC => VideoCodec::Hevc,
        FOURCC_AV1 => VideoCodec::Av1,
        FOURCC_VP9 => VideoCodec::Vp9,
        other => VideoCodec::Other(other),
    };
    let mut composition_time = 0;
    let kind = match packet_type {
        0 => PacketKind::SequenceHeader,
        1 => {
            if matches!(codec, VideoCodec::Avc | VideoCodec::Hevc) {
                need(data, pos + 3)?;
                composition_time = si24(&data[pos..pos + 3]);
                pos += 3;
            }
            PacketKind::Nalus
        }
        2 => PacketKind::EndOfSequence,
        3 => PacketKind::Nalus,
        _ => PacketKind::Other,
    };
    Ok(VideoTag {
        keyframe: frame_type == 1,
        codec,
        kind,
        composition_time,
        body: data.slice(pos..),
    })
}

fn need(data: &[u8], need: usize) -> Result<(), MediaError> {
    if data.len() < need {
        return Err(MediaError::TagTooShort {
            len: data.len(),
            need,
        });
    }
    Ok(())
}

/// Signed 24-bit big-endian integer; `b` has exactly 3 bytes.
fn si24(b: &[u8]) -> i32 {
    (i32::from_be_bytes([b[0], b[1], b[2], 0])) >> 8
}

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

/// One tag of an FLV file.
#[derive(Debug, Clone, PartialEq)]
pub struct FlvTag {
    /// The whole TagType byte: 8 audio, 9 video, 18 script data. FLV 10.1 encrypted tags set bit 5 (0x20),
    /// so they never equal 8, 9 or 18 and callers skip them.
    pub tag_type: u8,
    /// Decode timestamp in ms, including the extended (upper) byte.
    pub timestamp_ms: u32,
    /// The tag body (for video: what [`parse_video_tag`] takes); a zero-copy slice of the file.
    pub data: Bytes,
}

/// Reads the tags of an in-memory FLV file, checking the header, every tag size and every
/// PreviousTagSize. Yields `Err` once at the first problem and then stops.
#[derive(Debug, Clone)]
pub struct FlvReader {
    data: Bytes,
    pos: usize,
    /// Size of the tag before `pos` (11 + data size), which the next PreviousTagSize must equal.
    previous_size: u32,
    /// Set after the last PreviousTagSize or the first error.
    done: bool,
}

const FLV_TAG_HEADER: usize = 11;

impl FlvReader {
    /// Checks the FLV header (`FLV`, data offset ≥ 9 and inside the file) and positions at the first
    /// PreviousTagSize (which must be 0).
    pub fn new(data: Bytes) -> Result<Self, MediaError> {
        if data.len() < 9 {
            return Err(MediaError::FlvTruncated {
                offset: 0,
                need: 9,
                remaining: data.len(),
            });
        }
        if &data[..3] != b"FLV" {
            return Err(MediaError::FlvSignature([data[0], data[1], data[2]]));
        }
        let offset = u32::from_be_bytes([data[5], data[6], data[7], data[8]]);
        if offset < 9 || offset as usize > data.len() {
            return Err(MediaError::FlvDataOffset {
                offset,
                file_len: data.len(),
            });
        }
        Ok(FlvReader {
            data,
            pos: offset as usize,
            previous_size: 0,
            done: false,
        })
    }

    fn next_tag(&mut self) -> Result<Option<FlvTag>, MediaError> {
        let remaining = self.data.len() - self.pos;
        if remaining < 4 {
            return Err(MediaError::FlvTruncated {
                offset: self.pos,
                need: 4,
                remaining,
            });
        }
        let p = self.pos;
        let found = u32::from_be_bytes([
            self.data[p],
            self.data[p + 1],
            self.data[p + 2],
            self.data[p + 3],
        ]);
        if found != self.previous_size {
            return Err(MediaError::PreviousTagSize {
                offset: p,
                found,
                expected: self.previous_size,
            });
        }
        let p = p + 4;
        let remaining = remaining - 4;
        if remaining == 0 {
            self.pos = p;
            return Ok(None);
        }
        if remaining < FLV_TAG_HEADER {
            return Err(MediaError::FlvTruncated {
                offset: p,
                need: FLV_TAG_HEADER,
                remaining,
            });
        }
        let header = &self.data[p..p + FLV_TAG_HEADER];
        let size = u24(&header[1..4]) as usize;
        let timestamp_ms = u24(&header[4..7]) | (u32::from(header[7]) << 24);
        let tag_type = header[0];
        if remaining - FLV_TAG_HEADER < size {
            return Err(MediaError::FlvTruncated {
                offset: p + FLV_TAG_HEADER,
                need: size,
                remaining: remaining - FLV_TAG_HEADER,
            });
        }
        let start = p + FLV_TAG_HEADER;
        self.pos = start + size;
        // size < 2^24, so this cannot overflow.
        self.previous_size = (FLV_TAG_HEADER + size) as u32;
        Ok(Some(FlvTag {
            tag_type,
            timestamp_ms,
            data: self.data.slice(start..start + size),
        }))
    }
}

impl Iterator for FlvReader {
    type Item = Result<FlvTag, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_tag().transpose();
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}

/// Fixture access shared by the tests of `media`.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A fixture with the video facts ffprobe reported for it (see `fixtures/README.md`).
    pub(crate) struct Fixture {
        pub(crate) name: &'static str,
        pub(crate) keyframes: usize,
        pub(crate) gop_ms: u32,
        /// (width, height) of each AVC sequence header, in order.
        pub(crate) sizes: &'static [(u32, u32)],
    }

    const fn fx(
        name: &'static str,
        keyframes: usize,
        gop_ms: u32,
        sizes: &'static [(u32, u32)],
    ) -> Fixture {
        Fixture {
            name,
            keyframes,
            gop_ms,
            sizes,
        }
    }

    pub(crate) const ALL: &[Fixture] = &[
        fx("baseline_640x360_gop1s.flv", 12, 1000, &[(640, 360)]),
        fx("high_1280x720_bframes_aac.flv", 10, 2000, &[(1280, 720)]),
        fx("high_1920x1080_gop2s.flv", 6, 2000, &[(1920, 1080)]),
        fx(
            "resolution_change.flv",
            12,
            1000,
            &[(640, 360), (1280, 720)],
        ),
        fx("bt709_bars_1280x720.flv", 8, 1000, &[(1280, 720)]),
        fx("long_gop_640x360.flv", 4, 8000, &[(640, 360)]),
    ];

    pub(crate) fn bytes(name: &str) -> Bytes {
        let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    pub(crate) fn tags(name: &str) -> Vec<FlvTag> {
        FlvReader::new(bytes(name))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// (timestamp, parsed tag) of every video tag.
    pub(crate) fn video(name: &str) -> Vec<(u32, VideoTag)> {
        tags(name)
            .into_iter()
            .filter(|t| t.tag_type == 9)
            .map(|t| (t.timestamp_ms, parse_video_tag(&t.data).unwrap()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(b: &[u8]) -> Result<VideoTag, MediaError> {
        parse_video_tag(&Bytes::copy_from_slice(b))
    }

    #[test]
    fn legacy_avc_header() {
        let t = tag(&[0x17, 0x01, 0xff, 0xff, 0xfe, 0xaa, 0xbb]).unwrap();
        assert!(t.keyframe);
        assert_eq!(
            (t.codec, t.kind, t.composition_time),
            (VideoCodec::Avc, PacketKind::Nalus, -2)
        );
        assert_eq!(&t.body[..], &[0xaa, 0xbb]);
        let t = tag(&[0x27, 0x01, 0x00, 0x00, 0x43]).unwrap();
        assert!(!t.keyframe);
        assert_eq!(t.composition_time, 67);
        assert!(t.body.is_empty());
        assert_eq!(
            tag(&[0x17, 0x00, 0, 0, 0, 1]).unwrap().kind,
            PacketKind::SequenceHeader
        );
        assert_eq!(
            tag(&[0x17, 0x02, 0, 0, 0]).unwrap().kind,
            PacketKind::EndOfSequence
        );
        assert_eq!(tag(&[0x17, 0x09, 0, 0, 0]).unwrap().kind, PacketKind::Other);
        // A legacy command frame (frame type 5) is short and has no packet type.
        let t = tag(&[0x57, 0x01]).unwrap();
        assert_eq!(
            (t.codec, t.kind, &t.body[..]),
            (VideoCodec::Avc, PacketKind::Other, &[1][..])
        );
    }

    #[test]
    fn body_is_a_zero_copy_slice() {
        let input = Bytes::from_static(&[0x17, 0x01, 0, 0, 0, 1, 2, 3]);
        let t = parse_video_tag(&input).unwrap();
        assert_eq!(t.body.as_ptr(), input[5..].as_ptr());
    }

    #[test]
    fn truncated_tags() {
        assert_eq!(tag(&[]), Err(MediaError::TagTooShort { len: 0, need: 1 }));
        for n in 1..5 {
            let b = [0x17, 0x01, 0, 0, 0];
            assert_eq!(
                tag(&b[..n]),
                Err(MediaError::TagTooShort { len: n, need: 5 })
            );
        }
        // Enhanced: FourCC cut off, composition time cut off, ModEx cut off.
        assert!(matches!(
            tag(&[0x91, b'h', b'v']),
            Err(MediaError::TagTooShort { need: 5, .. })
        ));
        assert!(matches!(
            tag(&[0x91, b'h', b'v', b'c', b'1', 0]),
            Err(MediaError::TagTooShort { need: 8, .. })
        ));
        assert!(matches!(
            tag(&[0x97, 3, 1, 2]),
            Err(MediaError::TagTooShort { .. })
        ));
        assert!(matches!(
            tag(&[0x97, 0xff, 0x01]),
            Err(MediaError::TagTooShort { need: 4, .. })
        ));
    }

    #[test]
    fn non_avc_legacy_codecs() {
        let t = tag(&[0x12, 0xaa]).unwrap();
        assert_eq!((t.codec, t.kind), (VideoCodec::Other(2), PacketKind::Other));
        assert_eq!(&t.body[..], &[0xaa]);
        // Codec id 12 (non-standard HEVC) has the AVC layout.
        let t = tag(&[0x1c, 0x00, 0, 0, 0, 1]).unwrap();
        assert_eq!(
            (t.codec, t.kind),
            (VideoCodec::Hevc, PacketKind::SequenceHeader)
        );
    }

    #[test]
    fn enhanced_rtmp_hevc_is_not_avc() {
        // Keyframe (1), CodedFrames (1), "hvc1", composition time 33, payload.
        let t = tag(&[0x91, b'h', b'v', b'c', b'1', 0, 0, 33, 0xde, 0xad]).unwrap();
        assert_eq!(t.codec, VideoCodec::Hevc);
        assert_ne!(t.codec, VideoCodec::Avc);
        assert!(t.keyframe);
        assert_eq!((t.kind, t.composition_time), (PacketKind::Nalus, 33));
        assert_eq!(&t.body[..], &[0xde, 0xad]);
        // Inter frame (2), SequenceStart (0).
        let t = tag(&[0xa0, b'h', b'v', b'c', b'1', 1, 2]).unwrap();
        assert!(!t.keyframe);
        assert_eq!(
            (t.codec, t.kind),
            (VideoCodec::Hevc, PacketKind::SequenceHeader)
        );
        assert_eq!(&t.body[..], &[1, 2]);
    }

    #[test]
    fn enhanced_rtmp_other_codecs_and_types() {
        // CodedFramesX (3): no composition time.
        let t = tag(&[0x93, b'a', b'v', b'c', b'1', 9]).unwrap();
        assert_eq!(
            (t.codec, t.kind, t.composition_time),
            (VideoCodec::Avc, PacketKind::Nalus, 0)
        );
        assert_eq!(&t.body[..], &[9]);
        // AV1 and VP9 CodedFrames carry no composition time.
        let t = tag(&[0x91, b'a', b'v', b'0', b'1', 9]).unwrap();
        assert_eq!((t.codec, &t.body[..]), (VideoCodec::Av1, &[9][..]));
        let t = tag(&[0xa1, b'v', b'p', b'0', b'9', 9]).unwrap();
        assert_eq!((t.codec, &t.body[..]), (VideoCodec::Vp9, &[9][..]));
        let t = tag(&[0x92, b'x', b'y', b'z', b'w']).unwrap();
        assert_eq!(
            (t.codec, t.kind),
            (
                VideoCodec::Other(u32::from_be_bytes(*b"xyzw")),
                PacketKind::EndOfSequence
            )
        );
        // Metadata (4).
        assert_eq!(
            tag(&[0x94, b'h', b'v', b'c', b'1', 2]).unwrap().kind,
            PacketKind::Other
        );
        // Command frame (5 << 4) and Multitrack (6): no FourCC.
        let t = tag(&[0xd1, 0x00]).unwrap();
        assert_eq!((t.codec, t.kind), (VideoCodec::Other(0), PacketKind::Other));
        assert_eq!(tag(&[0x96, 0x01]).unwrap().kind, PacketKind::Other);
    }

    #[test]
    fn enhanced_rtmp_modex_is_skipped() {
        // ModEx with 2 bytes of data, then CodedFrames (1) of hvc1.
        let t = tag(&[
            0x97, 1, 0xaa, 0xbb, 0x01, b'h', b'v', b'c', b'1', 0, 0, 5, 7,
        ])
        .unwrap();
        assert_eq!(
            (t.codec, t.kind, t.composition_time),
            (VideoCodec::Hevc, PacketKind::Nalus, 5)
        );
        assert_eq!(&t.body[..], &[7]);
        // 16-bit ModEx size: 0xff then (u16 + 1) = 300 bytes.
        let mut b = vec![0x97, 0xff, 0x01, 0x2b];
        b.extend([0u8; 300]);
        b.extend([0x00, b'a', b'v', b'c', b'1', 0x42]);
        let t = tag(&b).unwrap();
        assert_eq!(
            (t.codec, t.kind),
            (VideoCodec::Avc, PacketKind::SequenceHeader)
        );
        assert_eq!(&t.body[..], &[0x42]);
    }

    fn flv(tags: &[(u8, u32, &[u8])]) -> Vec<u8> {
        let mut f = b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        for &(ty, ts, data) in tags {
            f.push(ty);
            f.extend(&(data.len() as u32).to_be_bytes()[1..]);
            f.extend(&ts.to_be_bytes()[1..]);
            f.push((ts >> 24) as u8);
            f.extend([0, 0, 0]);
            f.extend(data);
            f.extend((11 + data.len() as u32).to_be_bytes());
        }
        f
    }

    fn read(f: Vec<u8>) -> Vec<Result<FlvTag, MediaError>> {
        FlvReader::new(Bytes::from(f)).unwrap().collect()
    }

    #[test]
    fn reader_reads_tags_with_extended_timestamps() {
        let got = read(flv(&[(18, 0, b"meta"), (9, 0x0123_4567, &[0x17, 1])]));
        let got: Vec<FlvTag> = got.into_iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].tag_type, &got[0].data[..]), (18, &b"meta"[..]));
        assert_eq!(got[1].timestamp_ms, 0x0123_4567);
        assert_eq!(&got[1].data[..], &[0x17, 1]);
        assert!(read(flv(&[])).is_empty());
    }

    #[test]
    fn reader_rejects_bad_headers() {
        let r = |b: &[u8]| FlvReader::new(Bytes::copy_from_slice(b)).err();
        assert_eq!(
            r(b"FLV\x01"),
            Some(MediaError::FlvTruncated {
                offset: 0,
                need: 9,
                remaining: 4
            })
        );
        assert_eq!(
            r(b"MP4\x01\x01\x00\x00\x00\x09"),
            Some(MediaError::FlvSignature(*b"MP4"))
        );
        assert_eq!(
            r(b"FLV\x01\x01\x00\x00\x00\x08"),
            Some(MediaError::FlvDataOffset {
                offset: 8,
                file_len: 9
            })
        );
        assert_eq!(
            r(b"FLV\x01\x01\xff\xff\xff\xff\x00\x00\x00\x00"),
            Some(MediaError::FlvDataOffset {
                offset: u32::MAX,
                file_len: 13
            })
        );
    }

    #[test]
    fn reader_rejects_every_truncation_and_bad_sizes() {
        let good = flv(&[(9, 40, &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65])]);
        for cut in 9..good.len() {
            let got = read(good[..cut].to_vec());
            if cut == 13 {
                assert!(got.is_empty(), "header + PreviousTagSize0 is an empty FLV");
                continue;
            }
            assert!(
                matches!(got.last(), Some(Err(MediaError::FlvTruncated { .. }))),
                "cut at {cut}: {got:?}"
            );
            assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
        }
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(
            read(bad).last(),
            Some(&Err(MediaError::PreviousTagSize {
                offset: n - 4,
                found: 20,
                expected: 21
            }))
        );
        // A tag size past the end of the file.
        let mut bad = good.clone();
        bad[14..17].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            read(bad)[..],
            [Err(MediaError::FlvTruncated {
                need: 0xff_ffff,
                ..
            })]
        ));
        let mut bad = good;
        bad[12] = 1;
        assert!(matches!(
            read(bad)[..],
            [Err(MediaError::PreviousTagSize { found: 1, .. })]
        ));
    }

    #[test]
    fn fixtures_every_tag_parses() {
        for f in fixtures::ALL {
            let (name, keyframes, gop_ms, headers) = (f.name, f.keyframes, f.gop_ms, f.sizes);
            let tags = fixtures::tags(name);
            assert_eq!(tags[0].tag_type, 18, "{name}: onMetaData first");
            let audio = tags.iter().filter(|t| t.tag_type == 8).count();
            assert_eq!(
                audio > 0,
                name.contains("aac"),
                "{name}: {audio} audio tags"
            );
            assert!(tags.iter().all(|t| matches!(t.tag_type, 8 | 9 | 18)));
            let video = fixtures::video(name);
            assert!(video.iter().all(|(_, v)| v.codec == VideoCodec::Avc));
            let count = |k| video.iter().filter(|(_, v)| v.kind == k).count();
            assert_eq!(count(PacketKind::SequenceHeader), headers.len(), "{name}");
            assert_eq!(count(PacketKind::EndOfSequence), 1, "{name}");
            assert_eq!(video.last().unwrap().1.kind, PacketKind::EndOfSequence);
            assert_eq!(count(PacketKind::Other), 0, "{name}");
            let keys: Vec<u32> = video
                .iter()
                .filter(|(_, v)| v.keyframe && v.kind == PacketKind::Nalus)
                .map(|(ts, _)| *ts)
                .collect();
            let expected: Vec<u32> = (0..keyframes as u32).map(|i| i * gop_ms).collect();
            assert_eq!(keys, expected, "{name}: keyframe timestamps");
            let b_frames = video.iter().any(|(_, v)| v.composition_time != 0);
            assert_eq!(
                b_frames,
                name.starts_with("high") || name.starts_with("bt709")
            );
            assert!(video.iter().all(|(_, v)| v.composition_time >= 0));
        }
    }

    #[test]
    fn fixture_resolution_change_has_second_header_at_6s() {
        let at: Vec<u32> = fixtures::video("resolution_change.flv")
            .into_iter()
            .filter(|(_, v)| v.kind == PacketKind::SequenceHeader)
            .map(|(ts, _)| ts)
            .collect();
        assert_eq!(at, [0, 6000]);
    }
}
