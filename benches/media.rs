//! FLV/AVC parsing and AVCC → Annex B conversion on the fixtures, as throughput over all
//! video tag bytes of a fixture (criterion prints MB/s; 1 MiB = 2^20 bytes).
//!
//! - `media/flv_read/F`: `FlvReader` over the whole file (throughput: file bytes).
//! - `media/video_tags/F`: what ingest does with every video message: `parse_video_tag`,
//!   plus `parse_decoder_config` for sequence headers. This is all a non-keyframe costs
//!   after framing.
//! - `media/annex_b/F`: `scan_access_unit` + `to_annex_b` of every coded video tag into
//!   one reused buffer: the per-keyframe preparation the pool does, run on every frame to
//!   measure its speed.
//!
//! `cargo bench --bench media`; see `benches/support/mod.rs` for choosing fixtures.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use livesnap::media::avc;
use livesnap::media::flv::{self, FlvReader, PacketKind};

fn media(c: &mut Criterion) {
    let mut group = c.benchmark_group("media");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for fx in support::fixtures() {
        group.throughput(Throughput::Bytes(fx.data.len() as u64));
        group.bench_function(format!("flv_read/{}", fx.name), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for tag in FlvReader::new(black_box(fx.data.clone())).expect("header") {
                    n += tag.expect("tag").data.len();
                }
                n
            })
        });

        group.throughput(Throughput::Bytes(fx.video_bytes()));
        let video: Vec<_> = fx.video().map(|t| t.data.clone()).collect();
        group.bench_function(format!("video_tags/{}", fx.name), |b| {
            b.iter(|| {
                let mut keyframes = 0u32;
                for data in &video {
                    let tag = flv::parse_video_tag(black_box(data)).expect("video tag");
                    match tag.kind {
                        PacketKind::SequenceHeader => {
                            black_box(avc::parse_decoder_config(&tag.body).expect("record"));
                        }
                        PacketKind::Nalus if tag.keyframe => keyframes += 1,
                        _ => {}
                    }
                }
                keyframes
            })
        });

        // (body, length size, config) of every coded frame, with the config in force.
        let mut coded = Vec::new();
        let mut config = None;
        for data in &video {
            let tag = flv::parse_video_tag(data).expect("video tag");
            match tag.kind {
                PacketKind::SequenceHeader => {
                    config = Some(avc::parse_decoder_config(&tag.body).expect("record"))
                }
                PacketKind::Nalus => {
                    if let Some(cfg) = &config {
                        coded.push((tag.body, cfg.clone()));
                    }
                }
                _ => {}
            }
        }
        let coded_bytes: u64 = coded.iter().map(|(b, _)| b.len() as u64).sum();
        group.throughput(Throughput::Bytes(coded_bytes));
        let mut out = Vec::new();
        group.bench_function(format!("annex_b/{}", fx.name), |b| {
            b.iter(|| {
                let mut total = 0usize;
                for (body, cfg) in &coded {
                    let au = avc::scan_access_unit(black_box(body), cfg.length_size)
                        .expect("access unit");
                    black_box(au);
                    avc::to_annex_b(body, cfg.length_size, Some(cfg), &mut out).expect("annex b");
                    total += out.len();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, media);
criterion_main!(benches);
