//! `[credentials]`: where API keys are read from.

use super::value::nonempty;
use super::{ConfigError, cerr};
use portcullis_core::credential::CredentialNames;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    api_key_header: Option<String>,
    api_key_query: Option<String>,
    api_key_cookie: Option<String>,
    allow_query_keys: Option<bool>,
}

/// The header, query parameter and cookie keys are read from, and whether
/// routes may read keys from the query at all.
pub(super) fn parse(c: &RawCredentials) -> Result<(CredentialNames, bool), ConfigError> {
    let header = c
        .api_key_header
        .clone()
        .unwrap_or_else(|| "X-API-Key".into());
    let header = http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
        cerr(
            "credentials.api_key_header",
            format!("{header:?} is not a header name"),
        )
    })?;
    if [
        http::header::AUTHORIZATION,
        http::header::COOKIE,
        http::header::HOST,
    ]
    .contains(&header)
    {
        return Err(cerr(
            "credentials.api_key_header",
            "must not be Authorization, Cookie or Host",
        ));
    }
    let names = CredentialNames {
        header,
        query: nonempty(
            "credentials.api_key_query",
            c.api_key_query.clone(),
            "api_key",
        )?,
        cookie: nonempty(
            "credentials.api_key_cookie",
            c.api_key_cookie.clone(),
            "api_key",
        )?,
        ..CredentialNames::default()
    };
    let allow_query = c.allow_query_keys.unwrap_or(false);
    Ok((names, allow_query))
}
