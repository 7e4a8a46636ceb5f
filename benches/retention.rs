//! The retention sweeper's cost on a local folder: a dry pass over 10 streams of 10,000
//! sequence objects each (finding the streams, then listing and judging 100,000 objects, 90,000 of them
//! outside the window; nothing deleted), and a
//! real pass deleting 1,000 objects of a stream of 2,000 (planted again before each
//! pass, outside the timing). Results in `docs/performance.md`, "Retention".

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use livesnap::clock::ManualClock;
use livesnap::config::Config;
use livesnap::node::Node;
use livesnap::retention::Sweeper;

const NOW: u64 = 1_800_000_000;

fn node(root: &std::path::Path, clock: Arc<ManualClock>) -> Arc<Node> {
    let text = format!(
        r#"
[snapshot]
workers = 1
[storage.store]
scheme = "fs"
root = "{}"
[[rules]]
domain = "*"
app = "live"
interval_secs = 5
storage = "store"
sequence_object = "{{AppName}}/{{StreamName}}/{{UnixTimestamp}}.jpg"
retain_count = 1000
[retention]
enabled = false
sweep_secs = 60
max_listed_per_pass = 1000000
max_deletes_per_pass = 1000000
"#,
        root.display()
    );
    let settings = Config::parse(&text).unwrap().validate().unwrap();
    Node::build(settings, clock).unwrap()
}

fn plant(root: &std::path::Path, stream: &str, times: std::ops::Range<u64>) {
    let dir = root.join("live").join(stream);
    std::fs::create_dir_all(&dir).unwrap();
    for t in times {
        std::fs::write(dir.join(format!("{t}.jpg")), b"j").unwrap();
    }
}

fn retention(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("retention");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));

    let dir = tempfile::tempdir().unwrap();
    for s in 0..10 {
        plant(dir.path(), &format!("cam{s}"), NOW - 10_000..NOW);
    }
    let clock = Arc::new(ManualClock::new(NOW));
    let n = rt.block_on(async { node(dir.path(), clock.clone()) });
    let sweeper = Sweeper::new(n);
    group.bench_function("dry_pass_10_streams_100k_objects", |b| {
        b.iter(|| {
            let r = rt.block_on(sweeper.pass(true));
            // The listing that finds streams (files and folders), then each stream's.
            assert!(r.examined >= 200_000, "{}", r.examined);
            assert_eq!(r.doomed.len(), 90_000);
        })
    });

    let dir = tempfile::tempdir().unwrap();
    plant(dir.path(), "cam", NOW - 1000..NOW);
    let n = rt.block_on(async { node(dir.path(), clock.clone()) });
    let sweeper = Sweeper::new(n);
    group.bench_function("pass_deleting_1000_of_2000_objects", |b| {
        b.iter_batched(
            || {
                plant(dir.path(), "cam", NOW - 2000..NOW - 1000);
                clock.advance(60);
            },
            |()| {
                let r = rt.block_on(sweeper.pass(false));
                assert_eq!(r.doomed.len(), 1000);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, retention);
criterion_main!(benches);
