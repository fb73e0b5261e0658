//! HTTP Basic credentials (RFC 7617): parsing only.

use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The realm Portcullis names in its Basic challenges.
pub const CHALLENGE: &str = "Basic realm=\"portcullis\", charset=\"UTF-8\"";

/// Longest base64 credential read; anything longer is refused before
/// decoding (a name and a password of a sane size fit many times over).
pub const MAX_ENCODED: usize = 4096;

/// A user name and password from `Authorization: Basic`.
#[derive(Debug, Clone)]
pub struct BasicCredentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Secret<String>,
}

/// Why a Basic credential could not be read. All answer 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BasicError {
    /// Longer than [`MAX_ENCODED`].
    #[error("basic credentials too long")]
    TooLong,
    /// Not base64.
    #[error("basic credentials are not base64")]
    NotBase64,
    /// Not UTF-8 once decoded.
    #[error("basic credentials are not UTF-8")]
    NotUtf8,
    /// No `:` between name and password.
    #[error("basic credentials have no colon")]
    NoColon,
    /// The name is empty.
    #[error("basic credentials have an empty user name")]
    EmptyUser,
}

impl BasicError {
    /// The reason for the log.
    pub fn reason(self) -> &'static str {
        match self {
            BasicError::TooLong => "basic_too_long",
            BasicError::NotBase64 => "basic_not_base64",
            BasicError::NotUtf8 => "basic_not_utf8",
            BasicError::NoColon => "basic_no_colon",
            BasicError::EmptyUser => "basic_empty_user",
        }
    }
}

/// Parses the part of `Authorization: Basic …` after the scheme.
pub fn parse(encoded: &str) -> Result<BasicCredentials, BasicError> {
    let encoded = encoded.trim();
    if encoded.len() > MAX_ENCODED {
        return Err(BasicError::TooLong);
    }
    let raw = STANDARD
        .decode(encoded)
        .map_err(|_| BasicError::NotBase64)?;
    let text = String::from_utf8(raw).map_err(|_| BasicError::NotUtf8)?;
    // The name cannot hold a colon (RFC 7617 §2); the password may.
    let Some((user, pass)) = text.split_once(':') else {
        return Err(BasicError::NoColon);
    };
    if user.is_empty() {
        return Err(BasicError::EmptyUser);
    }
    Ok(BasicCredentials {
        username: user.to_owned(),
        password: Secret::new(pass.to_owned()),
    })
}

/// Encodes a name and password as `Basic …` (for clients and tests).
pub fn encode(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{username}:{password}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let c = parse("YWxpY2U6czNjcjN0OndpdGg6Y29sb25z").unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.password.expose(), "s3cr3t:with:colons");
        assert_eq!(parse("!!!").unwrap_err(), BasicError::NotBase64);
        assert_eq!(parse("YWxpY2U=").unwrap_err(), BasicError::NoColon);
        assert_eq!(parse("OnB3").unwrap_err(), BasicError::EmptyUser);
        assert_eq!(parse("/w==").unwrap_err(), BasicError::NotUtf8);
        assert_eq!(parse(&"A".repeat(5000)).unwrap_err(), BasicError::TooLong);
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert_eq!(encode("a", "b"), "Basic YTpi");
    }
}
