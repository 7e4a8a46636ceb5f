//! A snapshot rule as written: the one shape shared by the config file's `[[rules]]`,
//! the rule API's JSON and the shared rule document, and its validation into a
//! [`Rule`]. Errors name the key (`rules[2].interval_secs`).

use serde::{Deserialize, Serialize};

use super::output::{Output, OutputSpec};
use super::{Rule, ANY};
use crate::error::{invalid, Invalid};
use crate::health::HealthOverride;
use crate::names;
use crate::storage::key_language::{Language, Scope};
use crate::storage::template::{Template, Var, RESERVED_FOLDERS};

/// Seconds between snapshots a rule may ask for.
pub const INTERVAL_SECS: std::ops::RangeInclusive<i64> = 5..=3600;

/// A snapshot rule as written. (`Default` gives an invalid rule, only a base for
/// struct literals: `RuleSpec { domain, app, interval_secs, .., ..Default::default() }`.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A host name, or "*" for every domain.
    pub domain: String,
    /// An app name, or "*" for every app.
    pub app: String,
    /// One stream (exact name) of a named app, or absent for every stream of the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Seconds between snapshots, 5..=3600.
    pub interval_secs: i64,
    /// Name of a `[storage.NAME]` target.
    pub storage: String,
    /// Key template replaced at every snapshot.
    #[serde(default)]
    pub overwrite_object: Option<String>,
    /// Key template producing a new object at every snapshot.
    #[serde(default)]
    pub sequence_object: Option<String>,
    /// URL receiving a POST for each stored snapshot of this rule.
    #[serde(default)]
    pub callback: Option<String>,
    /// Moderation endpoint: stored snapshots are POSTed to it (the JPEG itself) and its
    /// verdict stored and sent as a `review` event (see the `review` module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_url: Option<String>,
    /// Review every Nth stored snapshot (1..=10000). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_every: Option<u32>,
    /// Stop the publish when a verdict's label reaches this score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_kick: Option<ReviewKick>,
    /// Health thresholds for this rule's streams, replacing the node's `[health]` ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthOverride>,
    /// Exact-time snapshots: the frame at each due time, decoded forward from the last
    /// keyframe, instead of the first keyframe at or after it. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exact: bool,
    /// Retention of sequence objects: those older than this many seconds are deleted by
    /// the sweeper (`retention`), the newest of a stream always kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_secs: Option<u64>,
    /// Retention of sequence objects: only the newest this many of a stream are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_count: Option<u64>,
    /// More pictures of every snapshot (sizes, formats, quality); see `rules::output`.
    /// The rule's own templates are output 0 and may be left out when these are given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputSpec>,
}

/// Seconds of sequence objects a rule may keep with `retain_secs` (a minute to ten years).
pub const RETAIN_SECS: std::ops::RangeInclusive<u64> = 60..=315_360_000;
/// Sequence objects per stream a rule may keep with `retain_count`.
pub const RETAIN_COUNT: std::ops::RangeInclusive<u64> = 1..=10_000_000;

/// A rule's `review_kick`: stop the publish when `label` scores at least `score`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewKick {
    pub label: String,
    pub score: f64,
}

// Scores are validated finite (0..=1) before a rule exists, so equality is total.
impl Eq for ReviewKick {}

impl RuleSpec {
    /// The moderation settings: a valid URL; `review_every` and `review_kick` only with
    /// one, within their ranges.
    fn check_review(&self, key: &impl Fn(&str) -> String) -> Result<(), Invalid> {
        match &self.review_url {
            Some(u) => names::check_http_url(u).map_err(|m| invalid(key("review_url"), m))?,
            None => {
                for (name, set) in [
                    ("review_every", self.review_every.is_some()),
                    ("review_kick", self.review_kick.is_some()),
                ] {
                    if set {
                        return Err(invalid(key(name), "needs review_url"));
                    }
                }
            }
        }
        if let Some(n) = self.review_every {
            if !(1..=10_000).contains(&n) {
                return Err(invalid(
                    key("review_every"),
                    format!("must be 1..=10000, got {n}"),
                ));
            }
        }
        if let Some(k) = &self.review_kick {
            if k.label.is_empty() || k.label.len() > 64 {
                return Err(invalid(key("review_kick.label"), "must be 1..=64 bytes"));
            }
            if !(k.score.is_finite() && (0.0..=1.0).contains(&k.score)) {
                return Err(invalid(
                    key("review_kick.score"),
                    format!("must be within 0..=1, got {}", k.score),
                ));
            }
        }
        Ok(())
    }

    /// Validates the rule; `at` prefixes the keys of errors (`rules[2]`, `rule`), and
    /// `storage_exists` tells whether a storage target name is configured.
    pub fn validate(
        &self,
        at: &str,
        storage_exists: impl Fn(&str) -> bool,
    ) -> Result<Rule, Invalid> {
        let key = |k: &str| format!("{at}.{k}");
        names::check_scope(&self.domain, &self.app, at)?;
        names::check_stream_scope(&self.app, self.stream.as_deref(), at)?;
        if !INTERVAL_SECS.contains(&self.interval_secs) {
            return Err(invalid(
                key("interval_secs"),
                format!("must be 5..=3600, got {}", self.interval_secs),
            ));
        }
        if !storage_exists(&self.storage) {
            return Err(invalid(
                key("storage"),
                format!("no storage target named {:?} is configured", self.storage),
            ));
        }
        let overwrite_object = self
            .overwrite_object
            .as_deref()
            .map(|t| {
                Template::parse(t)
                    .map_err(|e| invalid(key("overwrite_object"), format!("{t:?} {e}")))
            })
            .transpose()?;
        let sequence_object = self
            .sequence_object
            .as_deref()
            .map(|t| {
                Template::parse_sequential(t)
                    .map_err(|e| invalid(key("sequence_object"), format!("{t:?} {e}")))
            })
            .transpose()?;
        if let Some(u) = &self.callback {
            names::check_http_url(u).map_err(|m| invalid(key("callback"), m))?;
        }
        self.check_review(&key)?;
        if let Some(h) = &self.health {
            // `key("health")` gives `{at}.health`; the override adds the field name.
            h.validate(at)?;
        }
        let outputs = self
            .outputs
            .iter()
            .enumerate()
            .map(|(i, o)| o.validate(&format!("{at}.outputs[{i}]")))
            .collect::<Result<Vec<Output>, Invalid>>()?;
        if overwrite_object.is_none() && sequence_object.is_none() && outputs.is_empty() {
            return Err(invalid(
                at,
                "needs overwrite_object, sequence_object or both",
            ));
        }
        self.check_keys(at, overwrite_object.as_ref(), sequence_object.as_ref())?;
        self.check_retention(&key)?;
        self.check_output_keys(
            at,
            overwrite_object.as_ref(),
            sequence_object.as_ref(),
            &outputs,
        )?;
        Ok(Rule {
            spec: self.clone(),
            interval_secs: self.interval_secs as u32,
            overwrite_object,
            sequence_object,
            outputs,
        })
    }

    /// `retain_secs` and `retain_count`: within their ranges, and only with a
    /// `sequence_object` (overwrite objects are never swept).
    fn check_retention(&self, key: &impl Fn(&str) -> String) -> Result<(), Invalid> {
        for (name, v, range) in [
            ("retain_secs", self.retain_secs, RETAIN_SECS),
            ("retain_count", self.retain_count, RETAIN_COUNT),
        ] {
            let Some(v) = v else { continue };
            if self.sequence_object.is_none() {
                return Err(invalid(
                    key(name),
                    "needs sequence_object (only sequence objects are swept)",
                ));
            }
            if !range.contains(&v) {
                return Err(invalid(
                    key(name),
                    format!("must be {}..={}, got {v}", range.start(), range.end()),
                ));
            }
        }
        Ok(())
    }

    /// The scope the rule's templates render in: its domain, app and stream when it
    /// names them.
    pub fn scope(&self) -> Scope<'_> {
        Scope {
            domain: (self.domain != ANY).then_some(self.domain.as_str()),
            app: (self.app != ANY).then_some(self.app.as_str()),
            stream: self.stream.as_deref(),
        }
    }

    /// The key checks of the outputs' templates: each as [`check_keys`](Self::check_keys)
    /// checks output 0's, and no two templates of the rule (any outputs, output 0
    /// included) can render the same key.
    fn check_output_keys(
        &self,
        at: &str,
        overwrite: Option<&Template>,
        sequence: Option<&Template>,
        outputs: &[Output],
    ) -> Result<(), Invalid> {
        let mut all: Vec<(String, &Template)> = Vec::new();
        for (field, t) in [
            ("overwrite_object", overwrite),
            ("sequence_object", sequence),
        ] {
            if let Some(t) = t {
                all.push((format!("{at}.{field}"), t));
            }
        }
        for (i, o) in outputs.iter().enumerate() {
            let at = format!("{at}.outputs[{i}]");
            self.check_keys(&at, o.overwrite_object.as_ref(), o.sequence_object.as_ref())?;
            for (field, t) in [
                ("overwrite_object", &o.overwrite_object),
                ("sequence_object", &o.sequence_object),
            ] {
                if let Some(t) = t {
                    all.push((format!("{at}.{field}"), t));
                }
            }
        }
        let scope = self.scope();
        let langs: Vec<Language> = all.iter().map(|(_, t)| Language::of(t, scope)).collect();
        for (j, (field, t)) in all.iter().enumerate() {
            for (i, (other, u)) in all.iter().enumerate().take(j) {
                if let Some(k) = langs[i].common_key(&langs[j]) {
                    return Err(invalid(
                        field.clone(),
                        format!(
                            "{:?} and {other} {:?} can both render the key {k:?}: two outputs of one snapshot would write one object",
                            t.as_str(),
                            u.as_str()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The key checks of one rule: each template tells the stream it was rendered for
    /// (it renders `{StreamName}`, and `{AppName}` when the rule is for every app) and
    /// is unambiguous; the overwrite and sequence templates never render the same key;
    /// no key falls in livesnap's own folders. Errors name an example key.
    fn check_keys(
        &self,
        at: &str,
        overwrite: Option<&Template>,
        sequence: Option<&Template>,
    ) -> Result<(), Invalid> {
        let scope = self.scope();
        let mut langs = Vec::new();
        for (field, t) in [
            ("overwrite_object", overwrite),
            ("sequence_object", sequence),
        ] {
            let Some(t) = t else { continue };
            let key = format!("{at}.{field}");
            let src = t.as_str();
            // A stream rule's keys are its one stream's: it may leave {StreamName} out.
            if !t.has_var(Var::StreamName) && self.stream.is_none() {
                return Err(invalid(
                    key,
                    format!("{src:?} must contain {{StreamName}}, or streams of one app write the same keys"),
                ));
            }
            if self.app == ANY && !t.has_var(Var::AppName) {
                return Err(invalid(
                    key,
                    format!("{src:?} must contain {{AppName}} in a rule for every app (\"*\"), or streams of different apps write the same keys"),
                ));
            }
            let lang = Language::of(t, scope);
            if let Some(k) = lang.ambiguous_key() {
                return Err(invalid(
                    key,
                    format!("{src:?} can render the key {k:?} from two different sets of values (two streams, or two snapshots of one): separate the variables with '/' or with text their values cannot contain"),
                ));
            }
            for folder in RESERVED_FOLDERS {
                if let Some(k) = lang.common_key(&Language::prefix(&format!("{folder}/"))) {
                    return Err(invalid(
                        key,
                        format!("{src:?} can render the key {k:?}, in livesnap's own folder {folder:?}/"),
                    ));
                }
            }
            langs.push(lang);
        }
        if let [ow, seq] = &langs[..] {
            if let Some(k) = ow.common_key(seq) {
                return Err(invalid(
                    format!("{at}.sequence_object"),
                    format!(
                        "{:?} and overwrite_object {:?} can both render the key {k:?}: an overwrite would replace a sequence object",
                        sequence.map(Template::as_str).unwrap_or_default(),
                        overwrite.map(Template::as_str).unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(())
    }
}
