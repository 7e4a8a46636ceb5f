//! What the `livesnap` binary runs: the server with signal handling, and the offline
//! snapshot of a recorded FLV file through the same ingest pipeline, signed image links,
//! and one retention sweep.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument;

use crate::config::Settings;
use crate::ingest::Ingest;
use crate::media::flv::FlvReader;
use crate::names::{self, StreamId};
use crate::node::Node;
use crate::server;

/// Runs the server until SIGINT/SIGTERM. First signal: stop accepting, close
/// connections, let snapshots in flight be stored within the grace period. A second
/// signal exits at once. SIGHUP reloads what can change without a restart and ends
/// nothing: the config file's rules, relays, `[access]`, `[[auth]]` and hooks (when the
/// node was started from a file, `file`: [`server::Running::reload_config`]), the RTMPS
/// certificate and the rule store ([`server::Running::reload_now`]).
pub async fn serve(settings: Settings, file: Option<server::ConfigFile>) -> Result<(), String> {
    let running = server::start(settings).await.map_err(|e| e.to_string())?;
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = reload_on_hangup(&running, file.as_ref()) => {}
    }
    tracing::info!("shutting down: no new connections; storing snapshots in flight");
    let grace = running.node.settings.shutdown_grace;
    tokio::select! {
        done = running.shutdown() => {
            if done {
                tracing::info!("shutdown complete");
            } else {
                tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period over; exiting");
            }
        }
        _ = wait_for_signal() => tracing::warn!("second signal: exiting now"),
    }
    Ok(())
}

/// Answers every SIGHUP with a reload; never returns (nor when SIGHUP cannot be watched,
/// which is logged: the signal then keeps its default action).
async fn reload_on_hangup(running: &server::Running, file: Option<&server::ConfigFile>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                while hup.recv().await.is_some() {
                    tracing::info!(
                        "SIGHUP: loading the config file, the RTMPS certificate and the rule store again"
                    );
                    match file {
                        Some(file) => reload_config(running, file).await,
                        None => tracing::info!(
                            "started without a config file: the embedded default stays"
                        ),
                    }
                    running.reload_now();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP cannot be watched; it will end the process")
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (running, file);
    std::future::pending::<()>().await
}

/// Reads the config file again and logs what it changed, what waits for a restart, or
/// why it changed nothing.
async fn reload_config(running: &server::Running, file: &server::ConfigFile) {
    let path = file.path.display();
    match running.reload_config(file).await {
        Ok(r) => {
            tracing::info!(
                %path,
                rules = r.rules,
                relays = r.relays,
                auth_entries = r.auth_entries,
                "config file reloaded: its rules, relays, [access], [[auth]] and hooks apply from the next publish"
            );
            if !r.restart_only.is_empty() {
                tracing::warn!(
                    %path,
                    sections = %r.restart_only.join(", "),
                    "the config file changed in sections a reload does not apply; they take effect at the next restart"
                );
            }
        }
        Err(e) => tracing::error!(
            %path,
            error = %e,
            "config file not reloaded; the configuration in force stays"
        ),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `sign-image`: a signed image link to `path` (`/img/…`) valid for `ttl` seconds
/// (`[links] default_ttl_secs` when `None`) from `now`.
pub fn sign_image(
    settings: &Settings,
    path: &str,
    ttl: Option<u64>,
    now: u64,
) -> Result<String, String> {
    let signer = settings
        .links
        .as_ref()
        .ok_or("the configuration has no [links] section with a key")?;
    signer.issue(path, ttl, now).map_err(|e| e.to_string())
}

/// `sweep`: one retention pass over the configured storage (config rules and the rule
/// store's), as the node task runs it. `dry_run` deletes nothing and claims nothing.
/// Returns one line per object deleted (or that would be): `KEY<TAB>STORAGE<TAB>RULE<TAB>REASON`,
/// and a summary.
pub async fn sweep(settings: Settings, dry_run: bool) -> Result<(Vec<String>, String), String> {
    let node = Node::build(settings, crate::clock::system()).map_err(|e| e.to_string())?;
    if let Some(shared) = &node.shared_rules {
        shared.start(node.shutdown.clone()).await;
    }
    let report = crate::retention::Sweeper::new(node.clone())
        .pass(dry_run)
        .await;
    node.shutdown.cancel();
    let lines = report
        .doomed
        .iter()
        .map(|d| {
            format!(
                "{}\t{}\t{}\t{}",
                d.key,
                d.storage,
                d.rule,
                d.reason.as_str()
            )
        })
        .collect();
    let summary = format!(
        "{} {} object(s); streams swept {}, skipped {} (claimed elsewhere), failed {}; objects examined {}",
        if dry_run { "would delete" } else { "deleted" },
        report.doomed.len(),
        report.swept,
        report.skipped,
        report.failed,
        report.examined
    );
    if report.failed > 0 {
        return Err(format!("{summary} (see the log for the failures)"));
    }
    Ok((lines, summary))
}

/// Feeds a recorded FLV file through the ingest path as if it were published, waits
/// for each due snapshot to finish before the next (nothing is dropped for speed),
/// and stores the JPEGs under the matching rule.
pub async fn snapshot_file(
    settings: Settings,
    file: PathBuf,
    domain: String,
    app: String,
    stream: String,
) -> Result<(), String> {
    let id = names::publish_request(&format!("{app}?vhost={domain}"), &stream, None)
        .map_err(|e| e.to_string())?
        .id;
    let data = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let node = Node::build(settings, crate::clock::system()).map_err(|e| e.to_string())?;
    let span = tracing::info_span!("file", domain = %id.domain, app = %id.app, stream = %id.stream);
    feed_file(node, id, data, &file).instrument(span).await
}

async fn feed_file(
    node: std::sync::Arc<Node>,
    id: StreamId,
    data: Vec<u8>,
    file: &std::path::Path,
) -> Result<(), String> {
    let mut ingest = Ingest::start(&node, id.clone(), "0.0.0.0:0".parse().expect("addr"))
        .map_err(|e| e.to_string())?;
    if ingest.live().rule.is_none() {
        return Err(format!(
            "no snapshot rule matches domain {:?}, app {:?}",
            id.domain, id.app
        ));
    }
    let stats = ingest.live().stats.clone();
    let reader =
        FlvReader::new(Bytes::from(data)).map_err(|e| format!("{}: {e}", file.display()))?;
    for tag in reader {
        let tag = tag.map_err(|e| format!("{}: {e}", file.display()))?;
        if tag.tag_type != 9 {
            continue;
        }
        ingest.on_video(tag.timestamp_ms, tag.data).await;
        // Offline there is no hurry: let each due snapshot finish before going on.
        while stats.finished.load(Ordering::Relaxed) < stats.due.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    drop(ingest);
    node.tasks.close();
    node.tasks.wait().await;
    // The events of the file (snapshots, unpublish) are delivered before the process exits.
    let deadline = tokio::time::Instant::now() + node.settings.shutdown_grace;
    node.notify.drain(deadline).await;
    tracing::info!(stream = %id, stats = %stats.summary(), "file done");
    if stats.stored.load(Ordering::Relaxed) == 0 {
        return Err(format!("no snapshot was stored ({})", stats.summary()));
    }
    Ok(())
}
