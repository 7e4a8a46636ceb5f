//! Snapshot pipeline: when a keyframe is due (`scheduler`), decode it with openh264
//! (`decode`), encode it with mozjpeg (`encode`), on a bounded worker pool (`pool`).

pub mod decode;
pub mod encode;
pub mod pool;
pub mod scheduler;
pub mod stats;
pub mod store;
