//! Fuzzing regressions on stable Rust: replays every committed fuzz input — the corpora
//! under `fuzz/corpus/<target>/` and the minimised crashes under
//! `fuzz/artifacts-regressions/<target>/` — through the very checks the cargo-fuzz
//! targets run (`fuzz/src/targets/`, compiled here as a module), and keeps each crash
//! fuzzing found as a named case with what it was. See docs/fuzzing.md.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/src/targets/mod.rs"]
mod targets;

#[path = "../fuzz/src/seeds/mod.rs"]
mod seeds;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn target(name: &str) -> targets::Run {
    targets::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, run)| run)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// Files of `fuzz/<kind>/<target>/`, sorted; none when the folder does not exist.
fn inputs(kind: &str, name: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every committed input of a target; fails listing each input that fails.
fn replay(name: &str) {
    let run = target(name);
    let corpus = inputs("corpus", name);
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{name}/ is empty: regenerate the seeds (docs/fuzzing.md)"
    );
    let mut failures = Vec::new();
    for path in corpus.iter().chain(&inputs("artifacts-regressions", name)) {
        let data = std::fs::read(path).expect("read input");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("?");
            failures.push(format!("{}: {message}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn handshake_inputs() {
    replay("handshake");
}

#[test]
fn framing_inputs() {
    replay("framing");
}

#[test]
fn amf0_inputs() {
    replay("amf0");
}

#[test]
fn session_inputs() {
    replay("session");
}

#[test]
fn flv_tag_inputs() {
    replay("flv_tag");
}

#[test]
fn sps_inputs() {
    replay("sps");
}

#[test]
fn keyframe_to_jpeg_inputs() {
    replay("keyframe_to_jpeg");
}

#[test]
fn template_inputs() {
    replay("template");
}

#[test]
fn auth_key_inputs() {
    replay("auth_key");
}

#[test]
fn proxy_header_inputs() {
    replay("proxy_header");
}

#[test]
fn x509_inputs() {
    replay("x509");
}

// Each input under fuzz/artifacts-regressions/ as a named case, with what it was (the
// replays above run them too; these name them and fail on their own).

/// `auth_key`: `sign_url` signed a 13-digit timestamp (`livesnap sign-url --timestamp`
/// takes any u64), and `check` then refused the URL it signed as malformed
/// (`parse_auth_key` takes at most 12 digits). Fixed in `auth::sign_url`.
#[test]
fn auth_key_sign_url_13_digit_timestamp() {
    let data = regression("auth_key", "sign_url_13_digit_timestamp");
    assert_eq!(data, b"\xff1\xffa\xff\xff\xff\xff1000001000100\xff1");
    target("auth_key")(&data);
}

/// `auth_key`: `sign_url` on a URL whose query already has an `auth_key` (re-signing a
/// signed URL) appended a second one; `check` reads the first, so the server refused the
/// URL it had just signed. Fixed in `auth::sign_url`, which now replaces it.
#[test]
fn auth_key_sign_url_keeps_old_auth_key() {
    let data = regression("auth_key", "sign_url_keeps_old_auth_key");
    assert!(data.ends_with(b"\xffauth_key"));
    target("auth_key")(&data);
}

/// `session`: connect, createStream, then two `publish` commands (cam1, cam0) in one
/// read. `Session` raised two `PublishRequested` events while only the last request was
/// pending, so the connection task's answer to the first (checked for cam1: name, auth,
/// hook) accepted cam0 in rml_rtmp. Fixed in `rtmp::session`: a `publish` while one is
/// pending is refused like a second publish.
#[test]
fn session_two_publish_requests_in_one_read() {
    let data = regression("session", "two_publish_requests_in_one_read");
    target("session")(&data);
}

/// The same input straight into `Session`: one request, then the connection closes.
#[test]
fn session_refuses_a_publish_while_one_is_pending() {
    use livesnap::rtmp::session::{Event, Session, SessionError, SessionLimits};
    let data = regression("session", "two_publish_requests_in_one_read");
    // Control byte 0 (accept, default limits), no cuts: the rest is the client's bytes.
    assert_eq!(data[..2], [0, 0]);
    let mut session = Session::new(SessionLimits::default()).expect("session");
    let mut events = Vec::new();
    let result = session.handle(&data[2..], &mut events);
    let requests = events
        .iter()
        .filter(|e| matches!(e, Event::PublishRequested { .. }))
        .count();
    assert_eq!(requests, 1, "{result:?}");
    assert!(
        matches!(result, Err(SessionError::SecondPublish)),
        "{result:?}"
    );
}

/// `template` (spotted while writing the target, reproduced through it): twelve adjacent
/// `{Sequence}` against a stored key of 40 digits that does not match: `match_key`
/// backtracked exponentially (minutes; it runs over every listed key when a publish
/// continues `{Sequence}`, and in the snapshot listing API). Fixed in
/// `Template::match_from`: a repeated variable must repeat its value, so only the first
/// occurrence of each numeric variable backtracks.
#[test]
fn template_match_key_adjacent_numbers_backtracking() {
    let data = regression("template", "match_key_adjacent_numbers_backtracking");
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        target("template")(&data);
        let _ = done.send(());
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the template target panicked or was still running after 20 s");
}

/// `template`: with `{Sequence}{UnixTimestamp}.jpg`, `match_key` read a rendered key as
/// a sequence number followed by the timestamp "0000", which renders another key: it took
/// digit runs with leading zeros, which `render` never writes (so a stray `cam/007.jpg`
/// counted as sequence 7). Fixed in `Template::match_from`.
#[test]
fn template_match_key_leading_zeros() {
    let data = regression("template", "match_key_leading_zeros");
    assert!(data.starts_with(b"{Sequence}{UnixTimestamp}.jpg"));
    target("template")(&data);
}

/// `template`: `{Sequence}{UnixTimestamp}.{UnixTimestamp}.jpg` — `match_key` let the two
/// `{UnixTimestamp}` match different numbers (the last one won), so the values it gave
/// back rendered another key. Fixed in `Template::match_from`: a repeated variable must
/// repeat its value.
#[test]
fn template_match_key_repeated_variable() {
    let data = regression("template", "match_key_repeated_variable");
    assert!(data.starts_with(b"{Sequence}{UnixTimestamp}.{UnixTimestamp}.jpg"));
    target("template")(&data);
}

fn regression(name: &str, file: &str) -> Vec<u8> {
    std::fs::read(
        fuzz_dir()
            .join("artifacts-regressions")
            .join(name)
            .join(file),
    )
    .expect("committed crash input")
}

/// Every committed crash input has its named case above.
#[test]
fn every_regression_input_is_named() {
    let source = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file!()))
        .expect("this file");
    for (name, _) in targets::ALL {
        for path in inputs("artifacts-regressions", name) {
            let file = path
                .file_name()
                .and_then(|f| f.to_str())
                .expect("file name");
            assert!(
                source.contains(&format!("regression(\"{name}\", \"{file}\")")),
                "fuzz/artifacts-regressions/{name}/{file} has no named test"
            );
        }
    }
}

/// Every target has a cargo-fuzz wrapper and a `[[bin]]`, and nothing else is there.
#[test]
fn targets_match_the_fuzz_crate() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("manifest");
    let mut wrappers: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz_targets")
        .map(|e| e.expect("entry").path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    wrappers.sort();
    let mut names: Vec<String> = targets::ALL.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(wrappers, names);
    for name in &names {
        assert!(
            manifest.contains(&format!(
                "name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\""
            )),
            "no [[bin]] for {name} in fuzz/Cargo.toml"
        );
    }
}

/// The seeds still build from the fixtures and pass their own target.
#[test]
fn seeds_build_and_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, file, data) in seeds::all(root) {
        let run = target(name);
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            panic!("seed {name}/{file} fails its target");
        }
    }
}

/// Every seed the builders make from the fixtures today is committed under
/// `fuzz/corpus/<target>/seed-*`, with the same length (handshake seeds carry random
/// bytes, so contents are not compared). With `LIVESNAP_WRITE_SEEDS=1` this test
/// regenerates them instead (docs/fuzzing.md).
#[test]
fn committed_seeds_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("LIVESNAP_WRITE_SEEDS").is_some() {
        let n = seeds::write_all(root).expect("write seeds");
        assert!(n > 0);
        return;
    }
    let all = seeds::all(root);
    assert!(!all.is_empty());
    for (target, name, bytes) in &all {
        let path = root
            .join("fuzz/corpus")
            .join(target)
            .join(format!("seed-{name}"));
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate with LIVESNAP_WRITE_SEEDS=1)",
                path.display()
            )
        });
        assert_eq!(
            committed.len(),
            bytes.len(),
            "{} differs from its builder",
            path.display()
        );
    }
}
