//! The config error, and the redaction of what it quotes: errors name
//! values, and a value may be a secret.

/// A config error: the key path and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Where (`routes[0].auth`), or the file.
    pub path: String,
    /// What.
    pub message: String,
}

pub(super) fn cerr(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: without_passwords(&message.into()),
    }
}

/// A message with the userinfo of every `scheme://user:password@host` in
/// it redacted by the store's own rule ([`portcullis::store::redact_url`]):
/// errors quote values, and a URL's password is a secret.
fn without_passwords(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("://") {
        // The authority ends at the first '/', '?', '#', quote or space.
        let tail = &rest[i + 3..];
        let end = i
            + 3
            + tail
                .find(['/', '?', '#', '"', '\'', ' ', '`'])
                .unwrap_or(tail.len());
        out.push_str(&portcullis::store::redact_url(&rest[..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A serde message without the value it quotes (`invalid type: string
/// "…", expected u64`): a secret pasted under the wrong key must not be
/// printed back.
pub(super) fn without_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("string \"") {
        let (head, tail) = rest.split_at(i + "string \"".len());
        out.push_str(head);
        match tail.rfind("\", expected") {
            Some(j) => {
                out.push('…');
                rest = &tail[j..];
            }
            None => {
                out.push_str("…\"");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_not_echoed() {
        assert_eq!(
            without_passwords(
                "bad \"postgres://u:pw@h:5/db\" and redis://:x@r/0 and http://h:1/a@b"
            ),
            "bad \"postgres://[REDACTED]@h:5/db\" and redis://[REDACTED]@r/0 and http://h:1/a@b"
        );
    }
}
