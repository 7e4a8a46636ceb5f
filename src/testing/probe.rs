//! Looking at a running node from outside: values in its `/metrics` text (Prometheus
//! text format, as `metrics` renders it), a process's resident memory, a free loopback
//! address to give it. No HTTP client here: callers fetch `/metrics` their own way.

use std::net::SocketAddr;

/// The value of the sample written exactly as `sample` (a name, with its labels if it has
/// any: `livesnap_snapshots_dropped_total{reason="queue_full"}`); `None` when absent.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The sum of every sample of metric `name`, whatever its labels (0 when absent). For a
/// histogram or summary, name the series: `…_count`, `…_sum`.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once("} ")?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// Resident set size of process `pid` (`VmRSS` of `/proc/<pid>/status`), in bytes; `None`
/// when it cannot be read (the process is gone, or not Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// An address on 127.0.0.1 whose port was free a moment ago (bound to 0, then released):
/// another process may take it before the caller binds it.
pub fn free_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP livesnap_snapshots_taken Snapshots.\n\
        # TYPE livesnap_snapshots_taken counter\n\
        livesnap_snapshots_taken_total 7\n\
        livesnap_snapshots_taken_total_other 100\n\
        livesnap_snapshots_dropped_total{reason=\"queue_full\"} 2\n\
        livesnap_snapshots_dropped_total{reason=\"odd} label\"} 3\n\
        livesnap_publishes_active 1\n";

    #[test]
    fn metrics_by_sample_and_by_name() {
        assert_eq!(metric(TEXT, "livesnap_snapshots_taken_total"), Some(7.0));
        assert_eq!(
            metric(
                TEXT,
                "livesnap_snapshots_dropped_total{reason=\"queue_full\"}"
            ),
            Some(2.0)
        );
        assert_eq!(metric(TEXT, "livesnap_snapshots_dropped_total"), None);
        assert_eq!(metric_sum(TEXT, "livesnap_snapshots_taken_total"), 7.0);
        assert_eq!(metric_sum(TEXT, "livesnap_snapshots_dropped_total"), 5.0);
        assert_eq!(metric_sum(TEXT, "livesnap_missing"), 0.0);
    }

    #[test]
    fn own_rss_is_readable() {
        let rss = rss_bytes(std::process::id());
        if cfg!(target_os = "linux") {
            assert!(rss.unwrap() > 0);
        }
    }
}
