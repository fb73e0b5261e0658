//! Secrets from the environment, or from a file the environment names.
//!
//! Container platforms hand secrets to a process as files (Docker and
//! Kubernetes secrets, systemd credentials), and the convention is
//! `NAME_FILE=/path`: every secret Portcullis reads from a variable `NAME`
//! is also read from the file `NAME_FILE` names. The file must not be
//! readable by its group or by others (it is a secret), and one trailing
//! newline is dropped (editors add one). Setting both is refused: which
//! one wins would be a guess.

use portcullis_core::Secret;

/// Why a secret could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SecretEnvError {
    /// Both `NAME` and `NAME_FILE` are set.
    #[error("set {0} or {0}_FILE, not both")]
    Both(String),
    /// `NAME_FILE` names a file that cannot be read.
    #[error("{var}_FILE: cannot read {path}: {reason}")]
    Unreadable {
        /// The variable.
        var: String,
        /// The path it names.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// The file is readable by its group or by others.
    #[error("{var}_FILE: {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    Exposed {
        /// The variable.
        var: String,
        /// The path it names.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The variable or the file holds no secret (not UTF-8, or empty).
    #[error("{0} is empty or not UTF-8")]
    Empty(String),
}

/// The secret in `var`, or in the file `var_FILE` names; `Ok(None)` when
/// neither is set. `lookup` reads a variable (`std::env::var` in a
/// process; a fixed list in tests).
pub fn read(
    var: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret<String>>, SecretEnvError> {
    let file_var = format!("{var}_FILE");
    match (lookup(var), lookup(&file_var)) {
        (Some(_), Some(_)) => Err(SecretEnvError::Both(var.to_owned())),
        (Some(v), None) if v.is_empty() => Err(SecretEnvError::Empty(var.to_owned())),
        (Some(v), None) => Ok(Some(Secret::new(v))),
        (None, Some(path)) => read_file(var, &path).map(Some),
        (None, None) => Ok(None),
    }
}

/// [`read`] from the process's environment.
pub fn from_process(var: &str) -> Result<Option<Secret<String>>, SecretEnvError> {
    read(var, |n| std::env::var(n).ok())
}

fn read_file(var: &str, path: &str) -> Result<Secret<String>, SecretEnvError> {
    use std::os::unix::fs::PermissionsExt;
    let unreadable = |e: std::io::Error| SecretEnvError::Unreadable {
        var: var.to_owned(),
        path: path.to_owned(),
        reason: e.kind().to_string(),
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretEnvError::Exposed {
            var: var.to_owned(),
            path: path.to_owned(),
            mode,
        });
    }
    let bytes = std::fs::read(path).map_err(unreadable)?;
    let mut text =
        String::from_utf8(bytes).map_err(|_| SecretEnvError::Empty(format!("{var}_FILE")))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(SecretEnvError::Empty(format!("{var}_FILE")));
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn from_the_variable_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "from-a-file-0123456789\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = f.to_str().unwrap();
        assert_eq!(
            read("S", env(&[("S", "plain")])).unwrap().unwrap().expose(),
            "plain"
        );
        assert_eq!(
            read("S", env(&[("S_FILE", p)])).unwrap().unwrap().expose(),
            "from-a-file-0123456789"
        );
        assert!(read("S", env(&[])).unwrap().is_none());
        assert!(matches!(
            read("S", env(&[("S", "x"), ("S_FILE", p)])),
            Err(SecretEnvError::Both(_))
        ));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read("S", env(&[("S_FILE", p)])).unwrap_err();
        assert!(
            matches!(e, SecretEnvError::Exposed { mode: 0o640, .. }),
            "{e}"
        );
        // The message names the file and the fix, never the secret.
        assert!(!e.to_string().contains("from-a-file"), "{e}");
        let e = read("S", env(&[("S_FILE", "/nonexistent/s")])).unwrap_err();
        assert!(matches!(e, SecretEnvError::Unreadable { .. }), "{e}");
        std::fs::write(&f, "\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(matches!(
            read("S", env(&[("S_FILE", p)])),
            Err(SecretEnvError::Empty(v)) if v == "S_FILE"
        ));
    }
}
