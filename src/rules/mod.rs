//! Snapshot rules: the shape a rule is written in and its validation (`spec`), the
//! validated [`Rule`], the lookup that picks the rule for a publish ([`RuleSet`]), the
//! rules in force on this node ([`RuleBook`]) and the rule document shared by every
//! node (`shared`).
//!
//! A rule is keyed by (domain, app), each a name or `*`, and may name one stream of a
//! named app; the first match wins: (domain, app, stream) → (domain, app) →
//! (domain, *) → (*, app, stream) → (*, app) → (*, *) (the domain decides first). A
//! publish takes its rule once, at its start; this module never touches live streams.
//!
//! Keys: a rule alone is checked by `spec` (each template tells its stream, is
//! unambiguous, stays out of livesnap's folders, and its overwrite and sequence
//! templates never meet); [`keys_apart`] checks two rules that write to one storage
//! target: an overwrite key of one is never a sequence key of the other, and no key is
//! rendered for two different streams.

pub mod output;
pub mod shared;
pub mod spec;

use std::sync::{Arc, RwLock};

use crate::storage::key_language::Language;
use crate::storage::template::{Template, Var};
pub use spec::RuleSpec;

pub use crate::names::ANY;

/// A validated snapshot rule, immutable once built.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The rule as written (what the API shows and the rule document stores).
    pub spec: RuleSpec,
    pub interval_secs: u32,
    pub overwrite_object: Option<Template>,
    pub sequence_object: Option<Template>,
    /// The outputs after output 0 (the rule's own templates), as `spec.outputs` lists them.
    pub outputs: Vec<output::Output>,
}

impl Rule {
    pub fn domain(&self) -> &str {
        &self.spec.domain
    }

    pub fn app(&self) -> &str {
        &self.spec.app
    }

    /// The one stream the rule is for, if it names one.
    pub fn stream(&self) -> Option<&str> {
        self.spec.stream.as_deref()
    }

    /// (domain, app, stream): what makes a rule unique among the rules in force.
    pub fn scope_key(&self) -> (&str, &str, Option<&str>) {
        (self.domain(), self.app(), self.stream())
    }

    /// The name of the storage target the rule writes to.
    pub fn storage(&self) -> &str {
        &self.spec.storage
    }

    /// URL receiving a POST for each stored snapshot.
    pub fn callback(&self) -> Option<&str> {
        self.spec.callback.as_deref()
    }

    /// Whether the sequence template counts with `{Sequence}` (which must then continue
    /// from what is already stored).
    pub fn uses_sequence(&self) -> bool {
        self.numbering_template().is_some()
    }

    /// The template whose stored keys give the stream's next `{Sequence}`: the first
    /// sequence template that renders it (output 0's, then the outputs' in order). Every
    /// output of a snapshot shares the number this one settles on.
    pub fn numbering_template(&self) -> Option<&Template> {
        self.sequence_templates()
            .into_iter()
            .find(|t| t.has_var(Var::Sequence))
    }

    /// Every sequence template of the rule, output 0's first.
    pub fn sequence_templates(&self) -> Vec<&Template> {
        self.sequence_object
            .iter()
            .chain(
                self.outputs
                    .iter()
                    .filter_map(|o| o.sequence_object.as_ref()),
            )
            .collect()
    }
}

impl Rule {
    /// The rule's templates with their field names, each as the language of the keys it
    /// renders under this rule.
    fn languages(&self) -> Vec<(&'static str, Language)> {
        let scope = self.spec.scope();
        // Outputs' templates count as their kind (`keys_apart` compares kinds).
        let outputs = self.outputs.iter().flat_map(|o| {
            [
                ("overwrite_object", &o.overwrite_object),
                ("sequence_object", &o.sequence_object),
            ]
        });
        [
            ("overwrite_object", &self.overwrite_object),
            ("sequence_object", &self.sequence_object),
        ]
        .into_iter()
        .chain(outputs)
        .filter_map(|(f, t)| Some((f, Language::of(t.as_ref()?, scope))))
        .collect()
    }

    /// Whether one of the rule's templates can render `key`.
    pub fn renders(&self, key: &str) -> bool {
        self.languages().iter().any(|(_, l)| l.contains(key))
    }

    /// `domain "a.com", app "*"` (`, stream "cam7"`), for messages.
    pub fn describe(&self) -> String {
        describe_scope(self.domain(), self.app(), self.stream())
    }
}

/// `domain "a.com", app "live"`, and `, stream "cam7"` for a stream rule.
pub fn describe_scope(domain: &str, app: &str, stream: Option<&str>) -> String {
    match stream {
        Some(s) => format!("domain {domain:?}, app {app:?}, stream {s:?}"),
        None => format!("domain {domain:?}, app {app:?}"),
    }
}

/// Two rules whose templates can render one key (see [`keys_apart`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} of the rule for {rule} and {other_field} of the rule for {other} (storage {storage:?}) can both render the key {key:?} {how}")]
pub struct KeyClash {
    /// The template field of the rule checked (`overwrite_object`, `sequence_object`).
    pub field: &'static str,
    pub rule: String,
    pub other_field: &'static str,
    pub other: String,
    pub storage: String,
    /// An example key both render.
    pub key: String,
    how: &'static str,
}

/// Whether two rules that write to the same storage keep their keys apart: no
/// overwrite key of one can be a sequence key of the other (it would be replaced), and
/// no key can be rendered for two different streams (see `storage::key_language` for
/// what makes two streams one). The error names both templates and an example key.
pub fn keys_apart(a: &Rule, b: &Rule) -> Result<(), Box<KeyClash>> {
    for (fa, la) in a.languages() {
        for (fb, lb) in b.languages() {
            let clash = if fa == fb {
                la.key_of_two_streams(&lb)
                    .map(|k| (k, "for two different streams"))
            } else {
                la.common_key(&lb)
                    .map(|k| (k, "as an overwrite object and a sequence object"))
            };
            if let Some((key, how)) = clash {
                return Err(Box::new(KeyClash {
                    field: fa,
                    rule: a.describe(),
                    other_field: fb,
                    other: b.describe(),
                    storage: a.storage().to_string(),
                    key,
                    how,
                }));
            }
        }
    }
    Ok(())
}

/// [`keys_apart`] against each of `others` that writes to the same place as `rule`
/// (`same_place` compares storage target names) and is not for the same (domain, app,
/// stream).
pub fn keys_apart_from_all<'a>(
    rule: &Rule,
    others: impl IntoIterator<Item = &'a Rule>,
    same_place: impl Fn(&str, &str) -> bool,
) -> Result<(), Box<KeyClash>> {
    others
        .into_iter()
        .filter(|o| o.scope_key() != rule.scope_key())
        .filter(|o| same_place(rule.storage(), o.storage()))
        .try_for_each(|o| keys_apart(rule, o))
}

/// A set of rules with O(1) lookup: a publish's rule is `lookup(domain, app, stream)`
/// (see the module doc for the order). A layer over [`crate::names::ByScope`], which
/// relay configs use at the (domain, app) level only.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    by_scope: crate::names::ByScope<Rule>,
}

impl RuleSet {
    /// Builds the set; the caller has checked that (domain, app, stream) scopes are
    /// unique.
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> RuleSet {
        RuleSet {
            by_scope: crate::names::ByScope::from_streams(rules.into_iter().map(|r| {
                (
                    r.spec.domain.clone(),
                    r.spec.app.clone(),
                    r.spec.stream.clone(),
                    Arc::new(r),
                )
            })),
        }
    }

    /// The rule for a publish of `stream` on (domain, app), first match winning:
    /// (domain, app, stream), (domain, app), (domain, *), (*, app, stream), (*, app),
    /// (*, *).
    pub fn lookup(&self, domain: &str, app: &str, stream: &str) -> Option<Arc<Rule>> {
        self.by_scope.lookup_stream(domain, app, stream)
    }

    /// The rule of every stream of (domain, app), stream rules left out: (domain, app),
    /// (domain, *), (*, app), (*, *).
    pub fn lookup_app(&self, domain: &str, app: &str) -> Option<Arc<Rule>> {
        self.by_scope.lookup(domain, app)
    }

    pub fn len(&self) -> usize {
        self.by_scope.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_scope.is_empty()
    }
}

/// The rules in force on this node, replaced as a whole when the shared document or the
/// config file (a reload) changes. Cheap to read: a publish takes an `Arc` of the set at
/// its start.
///
/// It also holds the config file's rules, the base every stored rule is checked against,
/// and the config rules a reload replaced or removed since the start (their sequence
/// templates still name where snapshots were stored).
#[derive(Debug, Default)]
pub struct RuleBook {
    current: RwLock<Current>,
}

#[derive(Debug, Default)]
struct Current {
    set: Arc<RuleSet>,
    config: Arc<[Rule]>,
    retired: Arc<[Rule]>,
}

impl RuleBook {
    /// A book whose rules are the config file's `config`.
    pub fn new(config: Vec<Rule>) -> RuleBook {
        RuleBook {
            current: RwLock::new(Current {
                set: Arc::new(RuleSet::new(config.iter().cloned())),
                config: config.into(),
                retired: Arc::new([]),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Current> {
        self.current.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The rules in force now.
    pub fn get(&self) -> Arc<RuleSet> {
        self.read().set.clone()
    }

    /// The config file's rules in force, in file order.
    pub fn config(&self) -> Arc<[Rule]> {
        self.read().config.clone()
    }

    /// The config rules in force, then those a reload replaced or removed (each rule
    /// once): whose sequence templates may hold snapshots.
    pub fn config_with_retired(&self) -> Vec<Rule> {
        let c = self.read();
        c.config.iter().chain(c.retired.iter()).cloned().collect()
    }

    /// Replaces the rules in force; live streams keep theirs until they publish again.
    pub fn set(&self, rules: RuleSet) {
        self.write().set = Arc::new(rules);
    }

    /// Replaces the config file's rules and, in the same step, the rules in force (the
    /// caller computed `rules` from `config`). A config rule no longer in force is kept
    /// as retired.
    pub fn set_config(&self, config: Vec<Rule>, rules: RuleSet) {
        let mut c = self.write();
        let mut retired: Vec<Rule> = c.retired.to_vec();
        for old in c.config.iter() {
            if !config.contains(old) && !retired.contains(old) {
                retired.push(old.clone());
            }
        }
        retired.retain(|r| !config.contains(r));
        *c = Current {
            set: Arc::new(rules),
            config: config.into(),
            retired: retired.into(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(domain: &str, app: &str, interval: i64) -> Rule {
        RuleSpec {
            domain: domain.into(),
            app: app.into(),
            interval_secs: interval,
            storage: "default".into(),
            overwrite_object: Some("{AppName}/{StreamName}.jpg".into()),
            ..Default::default()
        }
        .validate("rule", |_| true)
        .unwrap()
    }

    #[test]
    fn most_specific_rule_wins() {
        let set = RuleSet::new([
            rule("*", "*", 5),
            rule("*", "live", 6),
            rule("a.com", "*", 7),
            rule("a.com", "live", 8),
        ]);
        let iv = |d, a| set.lookup(d, a, "cam").map(|r| r.interval_secs);
        assert_eq!(iv("a.com", "live"), Some(8));
        assert_eq!(iv("a.com", "other"), Some(7));
        assert_eq!(iv("b.com", "live"), Some(6));
        assert_eq!(iv("b.com", "other"), Some(5));
    }

    #[test]
    fn no_match_means_no_snapshots() {
        let set = RuleSet::new([rule("a.com", "live", 5)]);
        assert!(set.lookup("a.com", "live", "cam").is_some());
        assert!(set.lookup("a.com", "vod", "cam").is_none());
        assert!(set.lookup("b.com", "live", "cam").is_none());
        assert!(RuleSet::default().lookup("x", "y", "z").is_none());
    }

    #[test]
    fn sequence_detection() {
        let mut r = rule("*", "*", 5);
        assert!(!r.uses_sequence());
        r.sequence_object = Some(Template::parse("{StreamName}/{UnixTimestamp}.jpg").unwrap());
        assert!(!r.uses_sequence());
        r.sequence_object = Some(Template::parse("{StreamName}/{Sequence}.jpg").unwrap());
        assert!(r.uses_sequence());
    }

    fn rule_with(app: &str, storage: &str, ow: &str) -> Result<Rule, crate::error::Invalid> {
        RuleSpec {
            domain: "*".into(),
            app: app.into(),
            interval_secs: 5,
            storage: storage.into(),
            overwrite_object: Some(ow.into()),
            ..Default::default()
        }
        .validate("rule", |_| true)
    }

    #[test]
    fn a_rule_for_one_app_may_spell_or_leave_out_its_app() {
        for ow in [
            "{StreamName}.jpg",
            "{AppName}{StreamName}.jpg",
            "x/{StreamName}.jpg",
        ] {
            assert!(rule_with("live", "s", ow).is_ok(), "{ow}");
        }
        let e = rule_with("*", "s", "{AppName}{StreamName}.jpg").unwrap_err();
        assert_eq!(e.key, "rule.overwrite_object");
        assert!(e.message.contains("\"aaa.jpg\""), "{}", e.message);
    }

    #[test]
    fn keys_apart_names_both_rules_and_a_key() {
        let every = rule_with("*", "s", "{AppName}/{StreamName}.jpg").unwrap();
        let live = rule_with("live", "s", "{AppName}/{StreamName}.jpg").unwrap();
        assert_eq!(keys_apart(&every, &live), Ok(()));
        let spelled = rule_with("vod", "s", "live/{StreamName}.jpg").unwrap();
        let clash = keys_apart(&spelled, &every).unwrap_err();
        assert_eq!(
            clash.to_string(),
            "overwrite_object of the rule for domain \"*\", app \"vod\" and overwrite_object of the rule for domain \"*\", app \"*\" (storage \"s\") can both render the key \"live/a.jpg\" for two different streams"
        );
        assert_eq!(clash.field, "overwrite_object");
        let elsewhere = rule_with("vod", "t", "live/{StreamName}.jpg").unwrap();
        assert!(keys_apart_from_all(&elsewhere, [&every, &live], |a, b| a == b).is_ok());
        assert!(keys_apart_from_all(&spelled, [&every, &live], |a, b| a == b).is_err());
        assert!(keys_apart_from_all(&spelled, [&spelled], |a, b| a == b).is_ok());
    }

    fn stream_rule(
        domain: &str,
        app: &str,
        stream: &str,
        ow: &str,
    ) -> Result<Rule, crate::error::Invalid> {
        let mut spec = rule("*", "*", 5).spec;
        spec.domain = domain.into();
        spec.app = app.into();
        spec.stream = Some(stream.into());
        spec.overwrite_object = Some(ow.into());
        spec.validate("rule", |_| true)
    }

    #[test]
    fn stream_rules_take_the_six_level_order() {
        let ow = "{AppName}/{StreamName}.jpg";
        let rows = [
            stream_rule("a.com", "live", "cam7", ow).unwrap(),
            rule("a.com", "live", 8),
            rule("a.com", "*", 7),
            stream_rule("*", "live", "cam7", ow).unwrap(),
            rule("*", "live", 6),
            rule("*", "*", 5),
        ];
        for first in 0..rows.len() {
            let set = RuleSet::new(rows[first..].iter().cloned());
            let got = set.lookup("a.com", "live", "cam7").unwrap();
            assert_eq!(got.spec, rows[first].spec, "rows {}..", first + 1);
        }
        let set = RuleSet::new(rows.iter().cloned());
        assert_eq!(
            set.len(),
            6,
            "a stream rule and its app's rule are two entries"
        );
        let iv = |d, a, s| set.lookup(d, a, s).map(|r| r.interval_secs);
        assert_eq!(iv("a.com", "live", "cam8"), Some(8));
        assert_eq!(iv("b.com", "live", "cam8"), Some(6));
        assert_eq!(
            set.lookup("b.com", "live", "cam7").unwrap().stream(),
            Some("cam7")
        );
    }

    #[test]
    fn stream_rules_are_validated() {
        // A stream rule may leave {StreamName} out: its keys are its stream's.
        assert!(stream_rule("*", "live", "cam7", "cams/seven.jpg").is_ok());
        assert!(rule_with("live", "s", "cams/seven.jpg").is_err());
        let e = stream_rule("*", "*", "cam7", "{AppName}/{StreamName}.jpg").unwrap_err();
        assert_eq!(e.key, "rule.stream");
        let e = stream_rule("*", "live", "a/b", "{StreamName}.jpg").unwrap_err();
        assert_eq!(e.key, "rule.stream");
        let e = stream_rule("*", "live", "_livesnap", "_livesnap/x.jpg").unwrap_err();
        assert_eq!(e.key, "rule.stream", "a name publish would refuse");
        let e = stream_rule("*", "live", "cam7", "_livesnap/{StreamName}.jpg").unwrap_err();
        assert_eq!(
            e.key, "rule.overwrite_object",
            "reserved folders stay reserved"
        );
    }

    #[test]
    fn stream_rules_keep_their_keys_apart() {
        let app = rule_with("live", "s", "{AppName}/{StreamName}.jpg").unwrap();
        // The same template for one stream of the app: the keys are that stream's.
        let same = stream_rule("*", "live", "cam7", "{AppName}/{StreamName}.jpg").unwrap();
        assert_eq!(keys_apart(&same, &app), Ok(()));
        // A literal key the app rule renders for the stream "snap".
        let fixed = stream_rule("*", "live", "cam7", "live/snap.jpg").unwrap();
        let clash = keys_apart(&fixed, &app).unwrap_err();
        assert_eq!(clash.key, "live/snap.jpg");
        assert!(clash.rule.contains("stream \"cam7\""), "{}", clash.rule);
        // Two stream rules of one app with one literal key.
        let other = stream_rule("*", "live", "cam8", "live/snap.jpg").unwrap();
        assert!(keys_apart(&fixed, &other).is_err());
        let apart = stream_rule("*", "live", "cam8", "live/cam8-only.jpg").unwrap();
        assert!(keys_apart_from_all(&fixed, [&apart], |a, b| a == b).is_ok());
        // The rule itself (same scope) is not checked against itself.
        assert!(keys_apart_from_all(&fixed, [&fixed], |a, b| a == b).is_ok());
    }

    /// The commented stream rule of config.example.toml, uncommented, is valid beside
    /// the example's active rule.
    #[test]
    fn the_example_stream_rule_is_valid() {
        let text = include_str!("../../config.example.toml");
        let start = text
            .find("# stream = \"cam7\"")
            .expect("a stream rule example");
        let start = text[..start].rfind("# [[rules]]").unwrap();
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with("# "))
            .skip(1)
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let spec: RuleSpec = toml::from_str(&block).unwrap();
        let rule = spec.validate("rules[1]", |s| s == "default").unwrap();
        assert_eq!(rule.scope_key(), ("*", "live", Some("cam7")));
        let every = RuleSpec {
            domain: "*".into(),
            app: "*".into(),
            sequence_object: Some("{AppName}/{StreamName}/{UnixTimestamp}.jpg".into()),
            ..rule_with("*", "default", "{AppName}/{StreamName}.jpg")
                .unwrap()
                .spec
        }
        .validate("rules[0]", |_| true)
        .unwrap();
        assert_eq!(keys_apart(&rule, &every), Ok(()));
    }

    #[test]
    fn outputs_share_the_number_of_the_first_template_that_counts() {
        use output::{Format, OutputSpec};
        let rule = |seq0: Option<&str>| {
            RuleSpec {
                domain: "*".into(),
                app: "live".into(),
                stream: None,
                interval_secs: 5,
                storage: "s".into(),
                overwrite_object: None,
                sequence_object: seq0.map(Into::into),
                callback: None,
                review_url: None,
                review_every: None,
                review_kick: None,
                health: None,
                exact: false,
                retain_secs: None,
                retain_count: None,
                outputs: vec![
                    OutputSpec {
                        sequence_object: Some("{StreamName}/t/{UnixTimestamp}.webp".into()),
                        format: Some(Format::Webp),
                        width: Some(320),
                        ..OutputSpec::default()
                    },
                    OutputSpec {
                        sequence_object: Some("{StreamName}/s/{Sequence}.jpg".into()),
                        width: Some(100),
                        ..OutputSpec::default()
                    },
                ],
            }
            .validate("rule", |_| true)
            .unwrap()
        };
        let only_outputs = rule(None);
        assert!(only_outputs.uses_sequence());
        let numbering = only_outputs.numbering_template().map(Template::as_str);
        assert_eq!(numbering, Some("{StreamName}/s/{Sequence}.jpg"));
        assert_eq!(only_outputs.sequence_templates().len(), 2);
        let with_own = rule(Some("{StreamName}/{Sequence}.jpg"));
        let numbering = with_own.numbering_template().map(Template::as_str);
        assert_eq!(numbering, Some("{StreamName}/{Sequence}.jpg"));
        // Every template of the rule counts in the checks against other rules.
        assert!(with_own.renders("cam/t/1700000000.webp"));
        assert!(!rule_with("live", "s", "{StreamName}.jpg")
            .unwrap()
            .renders("cam/t/1700000000.webp"));
    }

    #[test]
    fn the_book_swaps_whole_sets() {
        let book = RuleBook::new(vec![rule("*", "*", 5)]);
        let before = book.get();
        book.set(RuleSet::default());
        assert_eq!(before.len(), 1, "a reader keeps the set it took");
        assert!(book.get().is_empty());
    }

    #[test]
    fn a_config_reload_swaps_the_set_and_remembers_the_rules_it_ended() {
        let (a, b, c) = (
            rule("*", "*", 5),
            rule("*", "live", 10),
            rule("*", "tv", 60),
        );
        let book = RuleBook::new(vec![a.clone(), b.clone()]);
        let taken = book.get();
        book.set_config(
            vec![a.clone(), c.clone()],
            RuleSet::new([a.clone(), c.clone()]),
        );
        assert_eq!(taken.len(), 2, "a reader keeps the set it took");
        assert_eq!(book.config().to_vec(), vec![a.clone(), c.clone()]);
        assert!(book.get().lookup("d", "tv", "s").is_some());
        assert_eq!(
            book.get()
                .lookup("d", "live", "s")
                .unwrap()
                .spec
                .interval_secs,
            5
        );
        assert_eq!(
            book.config_with_retired(),
            vec![a.clone(), c.clone(), b.clone()]
        );
        // A retired rule that comes back is in force again, and listed once.
        book.set_config(vec![b.clone()], RuleSet::new([b.clone()]));
        assert_eq!(book.config_with_retired(), vec![b, a, c]);
    }
}
