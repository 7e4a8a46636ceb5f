//! The validation error shared by every module that owns settings or request fields:
//! the key it is about (`rules[2].interval_secs`, `storage.s3.bucket`) and why. Config
//! loading, the rule API and the CLI all report it as it is.

/// A setting that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

/// Shorthand for an [`Invalid`].
pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}
