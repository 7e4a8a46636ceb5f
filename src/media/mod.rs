//! Media parsing: FLV video tags, AVC decoder configuration records, AVCC → Annex B
//! conversion and SPS parsing. Pure functions over bytes; no I/O, no decoding.

pub mod avc;
pub mod flv;
pub mod sps;
