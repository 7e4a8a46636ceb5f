//! `template`: object-key templates (`rules::template`): `Template::parse`, `render`,
//! `list_prefix` and `match_key`, with fuzzed names.
//!
//! Layout: [`fields`] — template, domain, app, stream, a stored key to match, the Unix
//! timestamp and the sequence number (the last two as decimal text).
//!
//! Invariants: no panic; every key `render` returns stays under its root: shorter than
//! `MAX_KEY_LEN`, no leading `/`, no empty, `.` or `..` segment, no control character or
//! backslash (checked here independently of `check_key`), whatever the names; with names
//! that pass `names` validation (as every name does before it reaches a template),
//! `render` fails only for length; a rendered key matches back (`match_key`) to values
//! that render the same key, and starts with its `list_prefix`.

use livesnap::names;
use livesnap::storage::template::{Template, Vars, MAX_KEY_LEN};

use super::input::fields;

pub fn run(data: &[u8]) {
    let [source, domain, app, stream, key, ts, seq] = fields::<7>(data);
    let Ok(template) = Template::parse(&source) else {
        return;
    };
    let vars = Vars {
        domain: &domain,
        app: &app,
        stream: &stream,
        unix_timestamp: ts.parse().unwrap_or(1_700_000_000),
        sequence: seq.parse().unwrap_or(1),
    };
    // Arbitrary stored keys: must not panic (and must not take forever).
    let _ = template.match_key(&key, &domain, &app, &stream);
    let _ = template.list_prefix(&domain, &app, &stream);

    let valid = names::normalize_domain(&domain).as_deref() == Ok(domain.as_str())
        && names::validate_app(&app).is_ok()
        && names::validate_stream(&stream).is_ok();
    let rendered = match template.render(&vars) {
        Ok(k) => k,
        Err(e) => {
            assert!(
                !valid || e.key.len() >= MAX_KEY_LEN,
                "validated names rendered to a refused key {:?}",
                e.key
            );
            return;
        }
    };
    assert_under_root(&rendered);
    if !valid {
        return;
    }
    let prefix = template.list_prefix(&domain, &app, &stream);
    assert!(
        rendered.starts_with(&prefix),
        "{rendered:?} not under {prefix:?}"
    );
    let Some((ts, seq)) = template.match_key(&rendered, &domain, &app, &stream) else {
        panic!("{rendered:?} does not match back");
    };
    let again = Vars {
        unix_timestamp: ts.unwrap_or(0),
        sequence: seq.unwrap_or(0),
        ..vars
    };
    assert_eq!(template.render(&again).as_ref(), Ok(&rendered));
}

fn assert_under_root(key: &str) {
    assert!(key.len() < MAX_KEY_LEN, "{key:?} too long");
    assert!(!key.starts_with('/'), "{key:?} absolute");
    assert!(
        !key.chars().any(|c| c.is_control() || c == '\\'),
        "{key:?} has a control character or a backslash"
    );
    for segment in key.split('/') {
        assert!(
            !matches!(segment, "" | "." | ".."),
            "{key:?} has segment {segment:?}"
        );
    }
}
