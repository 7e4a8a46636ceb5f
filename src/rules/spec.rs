//! A snapshot rule as written: the one shape shared by the config file's `[[rules]]`,
//! the rule API's JSON and the shared rule document, and its validation into a
//! [`Rule`]. Errors name the key (`rules[2].interval_secs`).

use serde::{Deserialize, Serialize};

use super::{Rule, ANY};
use crate::error::{invalid, Invalid};
use crate::names;
use crate::storage::template::Template;

/// Seconds between snapshots a rule may ask for.
pub const INTERVAL_SECS: std::ops::RangeInclusive<i64> = 5..=3600;

/// A snapshot rule as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A host name, or "*" for every domain.
    pub domain: String,
    /// An app name, or "*" for every app.
    pub app: String,
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
}

impl RuleSpec {
    /// Validates the rule; `at` prefixes the keys of errors (`rules[2]`, `rule`), and
    /// `storage_exists` tells whether a storage target name is configured.
    pub fn validate(
        &self,
        at: &str,
        storage_exists: impl Fn(&str) -> bool,
    ) -> Result<Rule, Invalid> {
        let key = |k: &str| format!("{at}.{k}");
        if self.domain != ANY {
            let d = names::normalize_domain(&self.domain)
                .map_err(|e| invalid(key("domain"), format!("{:?} {e}", self.domain)))?;
            if d != self.domain {
                return Err(invalid(
                    key("domain"),
                    format!(
                        "{:?} must be written as {d:?} (lower case, no port)",
                        self.domain
                    ),
                ));
            }
        }
        if self.app != ANY {
            names::validate_app(&self.app)
                .map_err(|e| invalid(key("app"), format!("{:?} {e}", self.app)))?;
        }
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
        if overwrite_object.is_none() && sequence_object.is_none() {
            return Err(invalid(
                at,
                "needs overwrite_object, sequence_object or both",
            ));
        }
        Ok(Rule {
            spec: self.clone(),
            interval_secs: self.interval_secs as u32,
            overwrite_object,
            sequence_object,
        })
    }
}
