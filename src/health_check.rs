//! The node's health check: once a second, every live stream's health
//! (`crate::health::StreamHealth`, fed by the snapshot pool) is evaluated with the
//! `[health]` thresholds and the stream's counters; each transition is logged, counted
//! (`livesnap_health_transitions_total`) and sent as a signed `health` event to the
//! stream's rule callback and the node's notify URL. A stream that left the registry
//! (unpublished, disconnected, kicked) has its active conditions ended. The gauges
//! `livesnap_health_active{condition}` are recounted on every pass.
//!
//! `server` starts it outside `node.tasks` (which tell when the publish work is done)
//! and awaits its end at shutdown, before the notifier drains, so the `end` events go out.
//!
//! It runs on a thread of its own, which sleeps between passes, not on the async
//! runtime: a 1 s timer there wakes a runtime thread twice a second (tokio moves a timer
//! that far out down its wheel in two steps) and hands the task across threads, which
//! was 13–14 ms of CPU a minute on an idle node, 4–6 % of what one relayed stream costs
//! (docs/performance.md, "The health check off the runtime").
//!
//! Touches nothing of the media flow: it reads counters and takes each stream's health
//! lock for a moment.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::unix_of;
use crate::events::{At, Event};
use crate::health::{Condition, Counters, HealthConfig, Transition};
use crate::live::LiveStream;
use crate::names::StreamId;
use crate::node::Node;

/// How often the check runs.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Starts the check, every [`PERIOD`] on its own thread, until `node.shutdown`; then it
/// ends every condition still active (the node's streams are ending). The receiver
/// completes when it has (at once when `health.enabled` is false; also if the thread
/// could not start or panicked, which is logged).
pub fn start(node: Arc<Node>) -> tokio::sync::oneshot::Receiver<()> {
    let (done, ended) = tokio::sync::oneshot::channel();
    let cfg = node.settings.health.clone();
    if !cfg.enabled {
        let _ = done.send(());
        return ended;
    }
    // The thread sleeps on this channel: a message (or the sender gone) is the shutdown.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let shutdown = node.shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = stop.send(());
    });
    let spawned = std::thread::Builder::new()
        .name("livesnap-health".into())
        .spawn(move || {
            run(&node, &cfg, &stopped);
            let _ = done.send(());
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the health check thread did not start: no health events");
    }
    ended
}

/// The thread's loop: a pass every [`PERIOD`] (on a fixed schedule; a late pass does not
/// shift the next ones) until `stopped` says so.
fn run(node: &Node, cfg: &HealthConfig, stopped: &std::sync::mpsc::Receiver<()>) {
    let mut known = HashMap::new();
    let mut next = std::time::Instant::now() + PERIOD;
    loop {
        let now = std::time::Instant::now();
        match stopped.recv_timeout(next.saturating_duration_since(now)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        check(node, cfg, &mut known);
        next += PERIOD;
        let now = std::time::Instant::now();
        if next <= now {
            next = now + PERIOD;
        }
    }
    let now = node.clock.now_unix();
    for (_, s) in known.drain() {
        report(node, &s, &s.stats.health.end(now));
    }
    for c in Condition::ALL {
        node.metrics.set_health_active(c.name(), 0);
    }
}

/// One pass over the live streams; `known` holds the streams of the previous pass.
pub fn check(node: &Node, cfg: &HealthConfig, known: &mut HashMap<StreamId, Arc<LiveStream>>) {
    let now = node.clock.now_unix();
    let mut seen = HashMap::new();
    let mut active = [0i64; Condition::ALL.len()];
    for s in node.registry.list() {
        let counters = Counters {
            video_frames: s.stats.video_frames.load(Ordering::Relaxed),
            keyframes: s.stats.keyframes.load(Ordering::Relaxed),
        };
        let own = s
            .rule
            .as_ref()
            .and_then(|r| r.spec.health.as_ref())
            .map(|o| o.apply(cfg));
        let cfg = own.as_ref().unwrap_or(cfg);
        if !cfg.enabled {
            // This rule turns health off for its streams.
            continue;
        }
        let t = s.stats.health.check(cfg, counters, unix_of(s.started), now);
        report(node, &s, &t);
        for (c, _) in s.stats.health.active() {
            active[c as usize] += 1;
        }
        seen.insert(s.id.clone(), s);
    }
    for (id, s) in known.drain() {
        if !seen.get(&id).is_some_and(|n| Arc::ptr_eq(n, &s)) {
            report(node, &s, &s.stats.health.end(now));
        }
    }
    *known = seen;
    for c in Condition::ALL {
        node.metrics.set_health_active(c.name(), active[c as usize]);
    }
}

fn report(node: &Node, s: &LiveStream, transitions: &[Transition]) {
    for t in transitions {
        let (condition, state) = (t.condition.name(), t.state());
        tracing::info!(
            domain = %s.id.domain,
            app = %s.id.app,
            stream = %s.id.stream,
            condition,
            state,
            "stream health"
        );
        node.metrics.health_transition(condition, state);
        let event = Event::Health {
            stream: s.id.clone(),
            condition,
            state,
            at: At::unix(t.at),
        };
        node.notify
            .send(&event, s.rule.as_deref().and_then(|r| r.callback()));
    }
}
