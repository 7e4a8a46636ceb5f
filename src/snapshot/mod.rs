//! The snapshot pipeline: when a keyframe is due (`scheduler`; or a frame between
//! keyframes, for exact-time rules: `exact`), the bounded worker
//! `pool` renders it (`render`: decode with openh264 in `decode`, resize in `resize`,
//! convert to the encoder's colour coding in `color`, encode with mozjpeg in `encode` or
//! libwebp in `webp`), and the stream's
//! `writer` stores it. `stats` are the per-stream counters all of them update.

pub mod color;
pub mod decode;
pub mod encode;
pub mod exact;
pub mod pool;
pub mod render;
pub mod resize;
pub mod scheduler;
pub mod stats;
pub mod webp;
pub mod writer;

#[cfg(test)]
mod testing;
