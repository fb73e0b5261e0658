//! `[store]`: where keys, users and the audit log live.

use super::{ConfigError, cerr};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    url: Option<String>,
}

/// The store's URL (`sqlite://…`).
pub(super) fn parse(s: &RawStore) -> Result<String, ConfigError> {
    let store_url = s
        .url
        .clone()
        .unwrap_or_else(|| "sqlite://portcullis.db".into());
    if !store_url.starts_with("sqlite:") {
        return Err(cerr(
            "store.url",
            "only sqlite://PATH is supported in this version",
        ));
    }
    Ok(store_url)
}
