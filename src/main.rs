//! The `livesnap` command: `serve` (the default), `check-config`, `sign-url`,
//! `sign-image`, `snapshot` and `sweep`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use livesnap::config::{Config, ConfigError, Settings};

/// The server's Rust allocations go through mimalloc. An edge allocates a buffer per RTMP
/// message on the connection's thread and frees it, a group of pictures at a time, from
/// whichever thread reads last; glibc's malloc spent a tenth of a relaying edge's CPU on
/// that (bin walks, consolidation, heap trims and the page faults after them), and its
/// cost varied by a fifth from run to run. With mimalloc, 50 relayed streams took 18 %
/// less CPU (median of three interleaved runs); with transparent huge pages off (below)
/// its RSS is back to glibc's. The codecs' C allocations are unaffected. See
/// docs/performance.md, "Relay CPU and memory round" and "Transparent huge pages off".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for them on its
/// arenas (`madvise(MADV_HUGEPAGE)`), and after it returns idle pages to the system the
/// next allocation there faults in a whole 2 MiB page, which the kernel zeroes first:
/// on a relaying edge with one stream that zeroing was 39 % of the process's CPU. With
/// 4 KiB pages a refault clears only what is touched. The snapshot path lost nothing
/// (200 snapshotted streams: mean decode 7.3 vs 7.9 ms, encode 3.3 vs 3.7 ms without
/// them). Linux only; elsewhere a no-op.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
        // A kernel older than 3.15 refuses it; then nothing changes, which is harmless.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Raises this process's soft limit on open files to its hard limit. A node holds a file
/// descriptor per connection (publishers, players, each relay target, HTTP clients) and a
/// few more for storage writes; the soft limit most systems start a service with (1024
/// under systemd) would have accepts fail with EMFILE well before `[limits]
/// max_connections`. Returns the soft limit in force afterwards (`None` when it cannot
/// be read). Unix only.
fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write only the struct passed.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            // An unlimited hard limit cannot be the soft one for files: ask for a million.
            let want = if lim.rlim_max == libc::RLIM_INFINITY {
                1 << 20
            } else {
                lim.rlim_max
            };
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max,
            };
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = want;
            }
        }
        // rlim_t is u64 on 64-bit targets only.
        #[allow(clippy::unnecessary_cast)]
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// Descriptors a node needs beyond `[limits] max_connections`: listeners, HTTP clients,
/// storage writes, logs (each relay target adds one per relayed stream on top).
const OPEN_FILES_HEADROOM: u64 = 256;

/// Warns when the open-file limit is below what the connection cap lets in.
fn check_open_file_limit(limit: Option<u64>, settings: &Settings) {
    let Some(limit) = limit else { return };
    let wanted = settings.limits.max_connections as u64 + OPEN_FILES_HEADROOM;
    if limit < wanted {
        tracing::warn!(
            open_files = limit,
            wanted,
            "the open file limit is below limits.max_connections + {OPEN_FILES_HEADROOM}: \
             connections past it cannot be accepted (EMFILE); raise it (LimitNOFILE= in a \
             systemd unit, ulimit -n) or lower limits.max_connections"
        );
    } else {
        tracing::debug!(open_files = limit, "open file limit");
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "livesnap",
    version,
    about = "RTMP ingest with keyframe-only JPEG snapshots"
)]
struct Cli {
    /// Configuration file (TOML). Without it the embedded default is used.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log format: text or json (overrides log.format).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the configuration and exit (non-zero, naming the key, if invalid).
    CheckConfig,
    /// Print a publish URL signed for `[[auth]]` (auth_key=timestamp-0-0-md5hash).
    SignUrl {
        /// rtmp://host[:port]/app/stream[?query]
        url: String,
        /// The signing key (the server's primary or secondary key).
        #[arg(long)]
        key: String,
        /// The server's validity_secs, to print when the URL expires.
        #[arg(long, default_value_t = 1800)]
        valid_secs: u64,
        /// Sign at this Unix time instead of now.
        #[arg(long)]
        timestamp: Option<u64>,
    },
    /// Print a signed image link (`[links]` key of the config): PATH?exp=..&sig=..
    SignImage {
        /// The link path: /img/DOMAIN/APP/STREAM/latest.jpg or
        /// /img/DOMAIN/APP/STREAM/object/KEY (an app's `/` written %2F).
        path: String,
        /// Lifetime in seconds (default: links.default_ttl_secs; at most
        /// links.max_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// One retention pass: delete the sequence objects outside their rule's
    /// retain_secs / retain_count, printing each key (KEY, STORAGE, RULE, REASON).
    Sweep {
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Take snapshots of a recorded FLV file through the same pipeline, offline.
    Snapshot {
        /// The FLV file.
        file: PathBuf,
        /// App name used for the rule lookup and the key templates.
        #[arg(long, default_value = "live")]
        app: String,
        /// Stream name (default: the file's stem).
        #[arg(long)]
        stream: Option<String>,
        /// Domain used for the rule lookup and the key templates.
        #[arg(long, default_value = livesnap::names::DEFAULT_DOMAIN)]
        domain: String,
    },
}

fn load(cli: &Cli) -> Result<(Config, Settings), ConfigError> {
    let config = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default(),
    };
    let mut settings = config.validate()?;
    if let Some(f) = &cli.log_format {
        settings.log.format = f.clone();
    }
    Ok((config, settings))
}

/// Logs to stderr; text logs are coloured only when stderr is a terminal (a file, a
/// pipe or journald gets plain text) and NO_COLOR is not set.
fn init_logging(settings: &Settings) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_writer(std::io::stderr);
    if settings.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    if let Some(Command::SignUrl {
        url,
        key,
        valid_secs,
        timestamp,
    }) = &cli.command
    {
        let ts = timestamp.unwrap_or_else(livesnap::clock::unix_now);
        return match livesnap::auth::sign_url(url, key, ts) {
            Ok(signed) => {
                println!("{signed}");
                eprintln!(
                    "valid until {} (timestamp {ts} + validity_secs {valid_secs})",
                    livesnap::clock::rfc3339(ts.saturating_add(*valid_secs))
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("livesnap: {e}");
                ExitCode::from(2)
            }
        };
    }
    let (config, settings) = match load(&cli) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("livesnap: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match &cli.command {
        Some(Command::CheckConfig) => {
            println!(
                "configuration OK: {} storage target(s), {} rule(s)",
                settings.storage.len(),
                settings.static_rules.len()
            );
            ExitCode::SUCCESS
        }
        Some(Command::SignUrl { .. }) => unreachable!("handled above"),
        Some(Command::SignImage { path, ttl }) => {
            match livesnap::cli::sign_image(&settings, path, *ttl, livesnap::clock::unix_now()) {
                Ok(link) => {
                    println!("{link}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("livesnap: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Sweep { dry_run }) => {
            init_logging(&settings);
            let threads = settings.runtime_threads;
            match run_async(threads, livesnap::cli::sweep(settings, *dry_run)) {
                Ok((lines, summary)) => {
                    for l in lines {
                        println!("{l}");
                    }
                    eprintln!("livesnap: {summary}");
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        None | Some(Command::Serve) => {
            let open_files = raise_open_file_limit();
            init_logging(&settings);
            check_open_file_limit(open_files, &settings);
            // SIGHUP reads the file again; the embedded default has none.
            let file = cli.config.clone().map(|path| livesnap::server::ConfigFile {
                path,
                started: config,
            });
            exit_code(run_async(
                settings.runtime_threads,
                livesnap::cli::serve(settings, file),
            ))
        }
        Some(Command::Snapshot {
            file,
            app,
            stream,
            domain,
        }) => {
            init_logging(&settings);
            let stream = stream.clone().unwrap_or_else(|| {
                file.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "file".into())
            });
            exit_code(run_async(
                settings.runtime_threads,
                livesnap::cli::snapshot_file(
                    settings,
                    file.clone(),
                    domain.clone(),
                    app.clone(),
                    stream,
                ),
            ))
        }
    }
}

/// Threads the runtime may start for blocking work (file storage I/O, folder listings,
/// on-request pictures). Tokio's default (512) lets a burst of storage writes — several
/// objects per snapshot with `outputs`, at hundreds of streams — leave that many threads
/// and their memory behind; past the cap, blocking work waits for a thread.
const MAX_BLOCKING_THREADS: usize = 64;

/// The multi-threaded runtime, with `threads` workers (`server.runtime_threads`), or
/// tokio's default when `None`: one per core, or `TOKIO_WORKER_THREADS`.
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n);
    }
    b.enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
}

/// Runs `fut` to completion on a fresh [`runtime`]. A runtime that cannot start, or an
/// error from `fut`, is printed and becomes the failure exit code.
fn run_async<T>(
    threads: Option<usize>,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, ExitCode> {
    let rt = runtime(threads).map_err(|e| {
        eprintln!("livesnap: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })?;
    rt.block_on(fut).map_err(|e| {
        eprintln!("livesnap: {e}");
        ExitCode::FAILURE
    })
}

/// The exit code of a command that prints nothing more on success.
fn exit_code(r: Result<(), ExitCode>) -> ExitCode {
    r.map_or_else(|code| code, |()| ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_has_the_configured_threads() {
        assert_eq!(runtime(Some(1)).unwrap().metrics().num_workers(), 1);
        assert_eq!(runtime(Some(3)).unwrap().metrics().num_workers(), 3);
        // Left out: tokio's own choice, TOKIO_WORKER_THREADS or one per core.
        let expected = match std::env::var("TOKIO_WORKER_THREADS") {
            Ok(n) => n.parse().unwrap(),
            Err(_) => std::thread::available_parallelism().unwrap().get(),
        };
        assert_eq!(runtime(None).unwrap().metrics().num_workers(), expected);
    }
}
