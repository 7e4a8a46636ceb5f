//! Object-key templates: parsing and validation at config time, rendering per
//! snapshot, and matching stored keys back (to continue `{Sequence}` after a restart
//! and to find a stream's snapshots).
//!
//! A rendered variable never contains `/`: `{AppName}` renders each `/` of an app name
//! as [`APP_SEPARATOR`] (`~`, a character no name may contain), so app `live/cam1`
//! renders `live~cam1` and the key's folders are the template's own. Whether two
//! templates can render one key is decided in `key_language`.

use std::fmt;

/// Longest template and longest rendered key, in bytes (exclusive).
pub const MAX_KEY_LEN: usize = 256;

/// Top-level folders that belong to livesnap itself (the rule document and storage
/// probes under `_livesnap/`, the fs temp folder): no template may render a key in them.
pub const RESERVED_FOLDERS: [&str; 2] = ["_livesnap", super::FS_TMP_DIR];

/// What `{AppName}` renders in place of each `/` of an app name. No app, stream or
/// domain name may contain it (see `crate::names`), so the rendering is reversible and
/// a rendered variable never adds a folder level.
pub const APP_SEPARATOR: char = '~';

/// The app name as `{AppName}` renders it: `/` replaced by [`APP_SEPARATOR`].
pub fn render_app(app: &str) -> std::borrow::Cow<'_, str> {
    if app.contains('/') {
        std::borrow::Cow::Owned(app.replace('/', "~"))
    } else {
        std::borrow::Cow::Borrowed(app)
    }
}

/// A template variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Domain,
    AppName,
    StreamName,
    UnixTimestamp,
    Sequence,
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        Some(match name {
            "Domain" => Var::Domain,
            "AppName" => Var::AppName,
            "StreamName" => Var::StreamName,
            "UnixTimestamp" => Var::UnixTimestamp,
            "Sequence" => Var::Sequence,
            _ => return None,
        })
    }

    /// The variable's name as written in a template, without braces.
    pub fn name(self) -> &'static str {
        match self {
            Var::Domain => "Domain",
            Var::AppName => "AppName",
            Var::StreamName => "StreamName",
            Var::UnixTimestamp => "UnixTimestamp",
            Var::Sequence => "Sequence",
        }
    }

    /// Variables whose value changes from one snapshot to the next.
    pub fn is_numeric(self) -> bool {
        matches!(self, Var::UnixTimestamp | Var::Sequence)
    }
}

/// One part of a parsed template: literal text or a variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    Var(Var),
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("must be shorter than {MAX_KEY_LEN} bytes")]
    TooLong,
    #[error("must end in \".jpg\"")]
    NotJpg,
    /// An output's template whose extension is not its format's.
    #[error("must end in {0:?} (its output's format)")]
    WrongExtension(&'static str),
    #[error("has an unknown variable {{{0}}} (known: {{Domain}}, {{AppName}}, {{StreamName}}, {{UnixTimestamp}}, {{Sequence}})")]
    UnknownVar(String),
    #[error("has an unbalanced '{{' or '}}'")]
    Unbalanced,
    #[error("must not start with '/'")]
    LeadingSlash,
    #[error("has the path segment {0:?}: '.', '..' and empty segments are not allowed")]
    BadSegment(String),
    #[error("has a control character or a backslash")]
    BadChar,
    #[error("must contain {{UnixTimestamp}} or {{Sequence}} so that each snapshot gets a new key")]
    NotSequential,
}

/// A parsed, validated object-key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// The values a template is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub domain: &'a str,
    pub app: &'a str,
    pub stream: &'a str,
    pub unix_timestamp: u64,
    pub sequence: u64,
}

/// A rendered key that failed the final check (cannot happen with validated names; kept
/// as a guard so that no code path writes outside the root).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rendered key {key:?} is not a safe relative key")]
pub struct UnsafeKey {
    pub key: String,
}

impl Template {
    /// Parses and validates a template.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        if source.len() < MAX_KEY_LEN && !source.ends_with(".jpg") {
            return Err(TemplateError::NotJpg);
        }
        Self::parse_ending(source, ".jpg")
    }

    /// Parses a template whose keys must end in `extension` (an output's format: ".jpg",
    /// ".webp").
    pub fn parse_ending(source: &str, extension: &'static str) -> Result<Template, TemplateError> {
        if source.len() >= MAX_KEY_LEN {
            return Err(TemplateError::TooLong);
        }
        if !source.ends_with(extension) || source.len() == extension.len() {
            return Err(TemplateError::WrongExtension(extension));
        }
        if source.starts_with('/') {
            return Err(TemplateError::LeadingSlash);
        }
        if source.chars().any(|c| c.is_control() || c == '\\') {
            return Err(TemplateError::BadChar);
        }
        let mut parts = Vec::new();
        let mut rest = source;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Lit(rest.to_string()));
                    break;
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Lit(rest[..i].to_string()));
                    }
                    if rest.as_bytes()[i] == b'}' {
                        return Err(TemplateError::Unbalanced);
                    }
                    let after = &rest[i + 1..];
                    let end = after.find('}').ok_or(TemplateError::Unbalanced)?;
                    let name = &after[..end];
                    if name.contains('{') {
                        return Err(TemplateError::Unbalanced);
                    }
                    let var =
                        Var::parse(name).ok_or_else(|| TemplateError::UnknownVar(name.into()))?;
                    parts.push(Part::Var(var));
                    rest = &after[end + 1..];
                }
            }
        }
        // Segment check on the literal skeleton: variables render to validated,
        // non-empty names without '/', so a segment made only of literals decides.
        let skeleton: String = parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.as_str(),
                Part::Var(_) => "v",
            })
            .collect();
        if let Some(seg) = skeleton
            .split('/')
            .find(|seg| seg.is_empty() || *seg == "." || *seg == "..")
        {
            return Err(TemplateError::BadSegment(seg.to_string()));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// Parses a template that must produce a new key for each snapshot.
    pub fn parse_sequential(source: &str) -> Result<Template, TemplateError> {
        Self::sequential(Template::parse(source)?)
    }

    /// [`parse_sequential`](Self::parse_sequential) for keys ending in `extension`.
    pub fn parse_sequential_ending(
        source: &str,
        extension: &'static str,
    ) -> Result<Template, TemplateError> {
        Self::sequential(Template::parse_ending(source, extension)?)
    }

    fn sequential(t: Template) -> Result<Template, TemplateError> {
        if !t.has_var(Var::UnixTimestamp) && !t.has_var(Var::Sequence) {
            return Err(TemplateError::NotSequential);
        }
        Ok(t)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn has_var(&self, v: Var) -> bool {
        self.parts.contains(&Part::Var(v))
    }

    /// The parsed parts, in order (for `key_language`).
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Renders the key. Names in `vars` must already be validated (see `crate::names`);
    /// the result is checked once more so that it can never leave the storage root.
    pub fn render(&self, vars: &Vars<'_>) -> Result<String, UnsafeKey> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => self.push_var(&mut out, *v, vars),
            }
        }
        check_key(&out)?;
        Ok(out)
    }

    fn push_var(&self, out: &mut String, v: Var, vars: &Vars<'_>) {
        use std::fmt::Write;
        match v {
            Var::Domain => out.push_str(vars.domain),
            Var::AppName => out.push_str(&render_app(vars.app)),
            Var::StreamName => out.push_str(vars.stream),
            Var::UnixTimestamp => {
                let _ = write!(out, "{}", vars.unix_timestamp);
            }
            Var::Sequence => {
                let _ = write!(out, "{}", vars.sequence);
            }
        }
    }

    /// The fixed part of the keys this template renders for one stream, up to the last
    /// `/` before the first per-snapshot variable: the prefix to list under.
    pub fn list_prefix(&self, domain: &str, app: &str, stream: &str) -> String {
        let (fixed, _) = self.fixed_prefix(domain, app, stream);
        match fixed.rfind('/') {
            Some(i) => fixed[..=i].to_string(),
            None => String::new(),
        }
    }

    /// The rendered text before the first per-snapshot variable, and that variable
    /// (`None` when the template has none). Keys of this stream all start with it; when
    /// the variable is `{UnixTimestamp}` with a fixed number of digits, they sort by time.
    pub fn fixed_prefix(&self, domain: &str, app: &str, stream: &str) -> (String, Option<Var>) {
        let vars = Vars {
            domain,
            app,
            stream,
            unix_timestamp: 0,
            sequence: 0,
        };
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) if v.is_numeric() => return (out, Some(*v)),
                Part::Var(v) => self.push_var(&mut out, *v, &vars),
            }
        }
        (out, None)
    }

    /// Matches a stored key against this template for one stream; returns the
    /// (UnixTimestamp, Sequence) values it carries (`None` for a variable the template
    /// lacks) or `None` when the key was not rendered from it for that stream.
    pub fn match_key(
        &self,
        key: &str,
        domain: &str,
        app: &str,
        stream: &str,
    ) -> Option<(Option<u64>, Option<u64>)> {
        let mut ts = None;
        let mut seq = None;
        let app = render_app(app);
        if self.match_from(key.as_bytes(), 0, [domain, &app, stream], &mut ts, &mut seq) {
            Some((ts, seq))
        } else {
            None
        }
    }

    /// Whether `key` (a suffix of the stored key) matches the parts from `part` on, with
    /// the values read so far in `ts` and `seq`. A numeric variable that occurs again must
    /// repeat its value: that is what `render` writes, and it bounds the backtracking to
    /// the first occurrence of each of the two (without it, `{Sequence}` 12 times against
    /// 40 digits and no match ran for minutes; see fuzz/artifacts-regressions/template/).
    fn match_from(
        &self,
        key: &[u8],
        part: usize,
        names: [&str; 3],
        ts: &mut Option<u64>,
        seq: &mut Option<u64>,
    ) -> bool {
        let Some(p) = self.parts.get(part) else {
            return key.is_empty();
        };
        let fixed = match p {
            Part::Lit(s) => Some(s.as_str()),
            Part::Var(Var::Domain) => Some(names[0]),
            Part::Var(Var::AppName) => Some(names[1]),
            Part::Var(Var::StreamName) => Some(names[2]),
            Part::Var(_) => None,
        };
        if let Some(f) = fixed {
            return key.starts_with(f.as_bytes())
                && self.match_from(&key[f.len()..], part + 1, names, ts, seq);
        }
        let bound = match p {
            Part::Var(Var::UnixTimestamp) => *ts,
            _ => *seq,
        };
        if let Some(v) = bound {
            let v = v.to_string();
            return key.starts_with(v.as_bytes())
                && self.match_from(&key[v.len()..], part + 1, names, ts, seq);
        }
        // A numeric variable: 1..=20 digits; try the longest run first, then shorter.
        let digits = key
            .iter()
            .take(20)
            .take_while(|b| b.is_ascii_digit())
            .count();
        for n in (1..=digits).rev() {
            // `render` writes no leading zero: "007" was not rendered from a variable.
            if n > 1 && key[0] == b'0' {
                continue;
            }
            let Ok(v) = std::str::from_utf8(&key[..n]).unwrap_or("x").parse::<u64>() else {
                continue;
            };
            let (mut t2, mut s2) = (*ts, *seq);
            match p {
                Part::Var(Var::UnixTimestamp) => t2 = Some(v),
                _ => s2 = Some(v),
            }
            if self.match_from(&key[n..], part + 1, names, &mut t2, &mut s2) {
                *ts = t2;
                *seq = s2;
                return true;
            }
        }
        false
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The final guard on every key before it reaches storage: relative, no empty, `.` or
/// `..` segment, no control character or backslash, shorter than 256 bytes.
pub fn check_key(key: &str) -> Result<(), UnsafeKey> {
    let bad = key.is_empty()
        || key.len() >= MAX_KEY_LEN
        || key.starts_with('/')
        || key.chars().any(|c| c.is_control() || c == '\\')
        || key
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        Err(UnsafeKey { key: key.into() })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(ts: u64, seq: u64) -> Vars<'a> {
        Vars {
            domain: "example.com",
            app: "live",
            stream: "cam1",
            unix_timestamp: ts,
            sequence: seq,
        }
    }

    #[test]
    fn renders_every_variable() {
        let t = Template::parse("{Domain}/{AppName}/{StreamName}/{UnixTimestamp}-{Sequence}.jpg")
            .unwrap();
        assert_eq!(
            t.render(&vars(1700000000, 7)).unwrap(),
            "example.com/live/cam1/1700000000-7.jpg"
        );
        let t = Template::parse("{AppName}/{StreamName}.jpg").unwrap();
        assert_eq!(t.render(&vars(1, 2)).unwrap(), "live/cam1.jpg");
    }

    #[test]
    fn app_folders_render_as_one_segment() {
        let t = Template::parse("{AppName}/{StreamName}.jpg").unwrap();
        let v = Vars {
            app: "live/cam1",
            stream: "1700000000",
            ..vars(0, 0)
        };
        // Not "live/cam1/1700000000.jpg", a key of app "live", stream "cam1".
        assert_eq!(t.render(&v).unwrap(), "live~cam1/1700000000.jpg");
        let t = Template::parse("{AppName}/{StreamName}/{Sequence}.jpg").unwrap();
        let key = t
            .render(&Vars {
                app: "a/b/c",
                ..vars(0, 9)
            })
            .unwrap();
        assert_eq!(key, "a~b~c/cam1/9.jpg");
        assert_eq!(t.list_prefix("d", "a/b/c", "cam1"), "a~b~c/cam1/");
        assert_eq!(
            t.match_key(&key, "d", "a/b/c", "cam1"),
            Some((None, Some(9)))
        );
        assert_eq!(t.match_key("a/b/c/cam1/9.jpg", "d", "a/b/c", "cam1"), None);
        assert_eq!(render_app("live"), "live");
    }

    #[test]
    fn rejects_bad_templates() {
        use TemplateError::*;
        let cases = [
            ("{AppName}.png", NotJpg),
            ("{AppName}/{Foo}.jpg", UnknownVar("Foo".into())),
            ("{AppName/x.jpg", Unbalanced),
            ("x}.jpg", Unbalanced),
            ("{{AppName}}.jpg", Unbalanced),
            ("/abs/{StreamName}.jpg", LeadingSlash),
            ("../{StreamName}.jpg", BadSegment("..".into())),
            ("a/./{StreamName}.jpg", BadSegment(".".into())),
            ("a//{StreamName}.jpg", BadSegment("".into())),
            ("a/\n{StreamName}.jpg", BadChar),
            ("a\\{StreamName}.jpg", BadChar),
        ];
        for (src, want) in cases {
            assert_eq!(Template::parse(src), Err(want), "{src}");
        }
        let long = format!("{}.jpg", "a".repeat(252));
        assert_eq!(Template::parse(&long), Err(TooLong));
        assert!(Template::parse(&format!("{}.jpg", "a".repeat(251))).is_ok());
        assert_eq!(
            Template::parse_sequential("{AppName}/{StreamName}.jpg"),
            Err(NotSequential)
        );
        assert!(Template::parse_sequential("{AppName}/{Sequence}.jpg").is_ok());
    }

    #[test]
    fn rendered_keys_stay_under_root() {
        assert!(check_key("a/b.jpg").is_ok());
        for bad in ["", "/a.jpg", "a/../b.jpg", "a//b.jpg", "./a.jpg", "a\0.jpg"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        // A stream name that was never validated cannot escape either.
        let t = Template::parse("{AppName}/{StreamName}.jpg").unwrap();
        let v = Vars {
            stream: "..",
            ..vars(0, 0)
        };
        // "live/...jpg" is one segment "...jpg": harmless, and allowed.
        assert_eq!(t.render(&v).unwrap(), "live/...jpg");
        let t = Template::parse("{AppName}/{StreamName}/x.jpg").unwrap();
        assert!(t.render(&v).is_err());
    }

    #[test]
    fn matches_keys_back() {
        let t = Template::parse("{AppName}/{StreamName}/{UnixTimestamp}-{Sequence}.jpg").unwrap();
        assert_eq!(t.list_prefix("d", "live", "cam1"), "live/cam1/");
        let key = t.render(&vars(1700000000, 42)).unwrap();
        assert_eq!(
            t.match_key(&key, "example.com", "live", "cam1"),
            Some((Some(1700000000), Some(42)))
        );
        assert_eq!(t.match_key(&key, "example.com", "live", "cam2"), None);
        assert_eq!(
            t.match_key("live/cam1/17-x.jpg", "example.com", "live", "cam1"),
            None
        );
        // Another stream whose name extends this one's is not mistaken for it.
        let t = Template::parse("{AppName}/{StreamName}{Sequence}.jpg").unwrap();
        assert_eq!(t.list_prefix("d", "live", "cam"), "live/");
        assert_eq!(
            t.match_key("live/cam12.jpg", "d", "live", "cam"),
            Some((None, Some(12)))
        );
        assert_eq!(t.match_key("live/camx12.jpg", "d", "live", "cam"), None);
        assert_eq!(
            t.fixed_prefix("d", "live", "cam"),
            ("live/cam".to_string(), Some(Var::Sequence))
        );
        // Adjacent numeric variables: backtracking finds a split.
        let t = Template::parse("{Sequence}{UnixTimestamp}.jpg").unwrap();
        assert!(t.match_key("123.jpg", "d", "a", "s").is_some());
        // Leading zeros are never rendered, so such keys are not this template's; found
        // by the `template` fuzz target ("{Sequence}{UnixTimestamp}.jpg" matched a key
        // as a sequence number and a timestamp of "0000", which renders another key).
        let t = Template::parse("{AppName}/{Sequence}.jpg").unwrap();
        assert_eq!(t.match_key("live/007.jpg", "d", "live", "s"), None);
        assert_eq!(
            t.match_key("live/0.jpg", "d", "live", "s"),
            Some((None, Some(0)))
        );
        let t = Template::parse("{Sequence}{UnixTimestamp}.jpg").unwrap();
        let key = "77777777777121700000000.jpg";
        let (ts, seq) = t.match_key(key, "d", "a", "s").unwrap();
        let v = Vars {
            unix_timestamp: ts.unwrap(),
            sequence: seq.unwrap(),
            ..vars(0, 0)
        };
        assert_eq!(t.render(&v).unwrap(), key);
        // A variable used twice must carry the same value twice (fuzz target `template`).
        let t = Template::parse("{Sequence}/{Sequence}.jpg").unwrap();
        assert_eq!(t.match_key("5/6.jpg", "d", "a", "s"), None);
        assert_eq!(t.match_key("5/5.jpg", "d", "a", "s"), Some((None, Some(5))));
        // Many adjacent numeric variables: a key that does not match fails fast instead
        // of backtracking exponentially (fuzz target `template`).
        let t = Template::parse(&format!("{}.jpg", "{Sequence}".repeat(12))).unwrap();
        let digits = "1".repeat(40);
        assert_eq!(t.match_key(&format!("{digits}x.jpg"), "d", "a", "s"), None);
        let key = format!("{}.jpg", "12".repeat(12));
        assert_eq!(t.match_key(&key, "d", "a", "s"), Some((None, Some(12))));
        assert_eq!(t.list_prefix("d", "a", "s"), "");
    }
}
