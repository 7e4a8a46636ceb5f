//! Snapshot rules: the validated model and the lookup that picks the rule for a
//! publish. A rule is keyed by (domain, app), each a name or `*`; the most specific
//! match wins: (domain, app) → (domain, *) → (*, app) → (*, *).

pub mod store;
pub mod template;

use std::collections::HashMap;
use std::sync::Arc;

use template::{Template, Var};

/// The wildcard for a rule's domain or app.
pub const ANY: &str = "*";

/// A validated snapshot rule, immutable once built.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub domain: String,
    pub app: String,
    pub interval_secs: u32,
    pub storage: String,
    pub overwrite_object: Option<Template>,
    pub sequence_object: Option<Template>,
    /// URL receiving a POST for each stored snapshot.
    pub callback: Option<String>,
}

impl Rule {
    /// Whether the sequence template counts with `{Sequence}` (which must then continue
    /// from what is already stored).
    pub fn uses_sequence(&self) -> bool {
        self.sequence_object
            .as_ref()
            .is_some_and(|t| t.has_var(Var::Sequence))
    }
}

/// All rules in force, with O(1) lookup.
#[derive(Debug, Default, Clone)]
pub struct RuleSet {
    by_key: HashMap<(String, String), Arc<Rule>>,
}

impl RuleSet {
    /// Builds the set; the caller has checked that (domain, app) pairs are unique.
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> RuleSet {
        RuleSet {
            by_key: rules
                .into_iter()
                .map(|r| ((r.domain.clone(), r.app.clone()), Arc::new(r)))
                .collect(),
        }
    }

    /// The rule for a publish on (domain, app), most specific first; `None` means the
    /// stream is ingested without snapshots.
    pub fn lookup(&self, domain: &str, app: &str) -> Option<Arc<Rule>> {
        [(domain, app), (domain, ANY), (ANY, app), (ANY, ANY)]
            .into_iter()
            .find_map(|(d, a)| self.by_key.get(&(d.to_string(), a.to_string())))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(domain: &str, app: &str, interval: u32) -> Rule {
        Rule {
            domain: domain.into(),
            app: app.into(),
            interval_secs: interval,
            storage: "default".into(),
            overwrite_object: Some(Template::parse("{AppName}/{StreamName}.jpg").unwrap()),
            sequence_object: None,
            callback: None,
        }
    }

    #[test]
    fn most_specific_rule_wins() {
        let set = RuleSet::new([
            rule("*", "*", 1),
            rule("*", "live", 2),
            rule("a.com", "*", 3),
            rule("a.com", "live", 4),
        ]);
        let iv = |d, a| set.lookup(d, a).map(|r| r.interval_secs);
        assert_eq!(iv("a.com", "live"), Some(4));
        assert_eq!(iv("a.com", "other"), Some(3));
        assert_eq!(iv("b.com", "live"), Some(2));
        assert_eq!(iv("b.com", "other"), Some(1));
    }

    #[test]
    fn no_match_means_no_snapshots() {
        let set = RuleSet::new([rule("a.com", "live", 5)]);
        assert!(set.lookup("a.com", "live").is_some());
        assert!(set.lookup("a.com", "vod").is_none());
        assert!(set.lookup("b.com", "live").is_none());
        assert!(RuleSet::default().lookup("x", "y").is_none());
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
}
