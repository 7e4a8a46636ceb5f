//! Storage settings: the `[storage.NAME]` table as written (an opendal scheme, our
//! timeout and retries, the scheme's own options passed through) and its validation.
//! opendal ignores unknown option keys silently, so each scheme's keys are listed here
//! and a typo is an error naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{invalid, Invalid};

/// A storage target: an opendal scheme, our own settings, and the scheme's options
/// passed through to opendal (checked against the keys the scheme knows).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StorageConfig {
    /// opendal scheme: "fs", "s3", "oss" or "memory".
    pub scheme: String,
    /// Seconds one storage operation may take before it is retried. Default 10.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries of a failed storage operation. Default 2.
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// Everything else: the scheme's own options.
    #[serde(flatten)]
    pub options: BTreeMap<String, toml::Value>,
}

fn default_timeout_secs() -> u64 {
    10
}
fn default_retries() -> usize {
    2
}

/// The options each scheme accepts (opendal 0.59's config fields). opendal ignores
/// unknown keys silently, so a typo would otherwise go unnoticed.
fn known_options(scheme: &str) -> Option<&'static [&'static str]> {
    Some(match scheme {
        "fs" => &["root"],
        "memory" => &["root"],
        "s3" => &[
            "root",
            "bucket",
            "enable_versioning",
            "endpoint",
            "region",
            "profile",
            "access_key_id",
            "secret_access_key",
            "session_token",
            "role_arn",
            "external_id",
            "role_session_name",
            "assume_role_duration_seconds",
            "assume_role_session_tags",
            "disable_config_load",
            "disable_ec2_metadata",
            "skip_signature",
            "allow_anonymous",
            "server_side_encryption",
            "server_side_encryption_aws_kms_key_id",
            "server_side_encryption_customer_algorithm",
            "server_side_encryption_customer_key",
            "server_side_encryption_customer_key_md5",
            "default_storage_class",
            "enable_virtual_host_style",
            "batch_max_operations",
            "delete_max_size",
            "disable_stat_with_override",
            "checksum_algorithm",
            "disable_write_with_if_match",
            "enable_write_with_append",
            "disable_list_objects_v2",
            "enable_request_payer",
            "default_acl",
        ],
        "oss" => &[
            "root",
            "endpoint",
            "presign_endpoint",
            "bucket",
            "addressing_style",
            "presign_addressing_style",
            "enable_versioning",
            "server_side_encryption",
            "server_side_encryption_key_id",
            "skip_signature",
            "allow_anonymous",
            "access_key_id",
            "access_key_secret",
            "security_token",
            "batch_max_operations",
            "delete_max_size",
            "role_arn",
            "role_session_name",
            "oidc_provider_arn",
            "oidc_token_file",
            "sts_endpoint",
            "external_id",
        ],
        _ => return None,
    })
}

fn required_options(scheme: &str) -> &'static [&'static str] {
    match scheme {
        "fs" => &["root"],
        "s3" => &["bucket"],
        "oss" => &["bucket", "endpoint"],
        _ => &[],
    }
}

/// A validated storage target, ready for `storage::build_operator`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSettings {
    pub name: String,
    pub scheme: String,
    pub timeout: Duration,
    pub retries: usize,
    pub options: BTreeMap<String, String>,
}

/// Checks one `[storage.NAME]` table: the name, the scheme, our own keys and every
/// option against the scheme's known options.
pub fn validate(name: &str, st: &StorageConfig) -> Result<StorageSettings, Invalid> {
    let key = |k: &str| format!("storage.{name}.{k}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid(
            format!("storage.{name}"),
            "a storage name is letters, digits, '_' and '-'",
        ));
    }
    let known = known_options(&st.scheme).ok_or_else(|| {
        invalid(
            key("scheme"),
            format!(
                "unknown scheme {:?} (this build has fs, s3, oss, memory)",
                st.scheme
            ),
        )
    })?;
    if !(1..=600).contains(&st.timeout_secs) {
        return Err(invalid(key("timeout_secs"), "must be 1..=600"));
    }
    if st.retries > 10 {
        return Err(invalid(key("retries"), "must be 0..=10"));
    }
    let mut options = BTreeMap::new();
    for (k, v) in &st.options {
        if st.scheme == "fs" && k == "atomic_write_dir" {
            return Err(invalid(
                key(k),
                format!(
                    "is managed by livesnap: objects are written under ROOT/{} and linked or \
                     renamed into place (a create-only object is linked, which never replaces \
                     one; opendal's own atomic write renames, which does); remove this option",
                    super::FS_TMP_DIR
                ),
            ));
        }
        if !known.contains(&k.as_str()) {
            return Err(invalid(
                key(k),
                format!("unknown option for scheme {:?}", st.scheme),
            ));
        }
        let v = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(invalid(
                    key(k),
                    format!(
                        "must be a string, integer or boolean, got {}",
                        other.type_str()
                    ),
                ))
            }
        };
        options.insert(k.clone(), v);
    }
    for req in required_options(&st.scheme) {
        if options.get(*req).is_none_or(|v| v.is_empty()) {
            return Err(invalid(
                key(req),
                format!("is required for scheme {:?}", st.scheme),
            ));
        }
    }
    Ok(StorageSettings {
        name: name.to_string(),
        scheme: st.scheme.clone(),
        timeout: Duration::from_secs(st.timeout_secs),
        retries: st.retries,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_atomic_write_dir_is_refused_with_the_reason() {
        let st: StorageConfig =
            toml::from_str("scheme = \"fs\"\nroot = \"/x\"\natomic_write_dir = \"/x/tmp\"\n")
                .unwrap();
        let e = validate("default", &st).unwrap_err().to_string();
        assert!(e.contains("storage.default.atomic_write_dir"), "{e}");
        assert!(e.contains("never replaces"), "{e}");
    }
}
