//! Environment overrides: `PORTCULLIS_<SECTION>__<KEY>` variables set keys
//! over the file, and any other `PORTCULLIS_*` variable is refused with a
//! hint, so a typo never goes unnoticed.

use super::{ConfigError, cerr};

/// The config's sections, as `PORTCULLIS_<SECTION>__<KEY>` names them.
const SECTIONS: &[&str] = &[
    "server",
    "store",
    "credentials",
    "cache",
    "log",
    "upstream",
    "tokens",
    "sessions",
    "brute_force",
    "rate_limit",
    "tls",
    "cors",
    "security_headers",
    "metrics",
    "abuse",
];

/// Refuses `PORTCULLIS_*` variables Portcullis does not read: a typo
/// (`PORTCULLIS_SERVER_LISTEN`, one underscore) must not be ignored
/// silently. `PORTCULLIS_<SECTION>__<KEY>` names are checked by the
/// config reader itself; the others must be `PORTCULLIS_CONFIG`, the
/// store URL's variable or the HS256 secret's (each with its `_FILE`).
pub(super) fn check_names(env: &[(String, String)], secret_var: &str) -> Result<(), ConfigError> {
    let file_var = format!("{secret_var}_FILE");
    let url_file_var = format!("{}_FILE", super::store::URL_VAR);
    for (k, _) in env {
        let Some(rest) = k.strip_prefix("PORTCULLIS_") else {
            continue;
        };
        if rest.contains("__")
            || k == "PORTCULLIS_CONFIG"
            || k == secret_var
            || *k == file_var
            || k == super::store::URL_VAR
            || *k == url_file_var
        {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let hint = SECTIONS
            .iter()
            .filter(|s| lower.starts_with(&format!("{s}_")))
            .max_by_key(|s| s.len())
            .map(|s| {
                format!(
                    "PORTCULLIS_{}__{}",
                    s.to_ascii_uppercase(),
                    &rest[s.len() + 1..]
                )
            })
            .unwrap_or_else(|| {
                let known = [
                    "PORTCULLIS_CONFIG",
                    secret_var,
                    file_var.as_str(),
                    super::store::URL_VAR,
                    url_file_var.as_str(),
                ];
                known
                    .iter()
                    .min_by_key(|n| edit_distance(k, n))
                    .map_or_else(String::new, |n| (*n).to_owned())
            });
        return Err(cerr(
            k.as_str(),
            format!(
                "not a variable Portcullis reads; did you mean {hint}? (settings are PORTCULLIS_<SECTION>__<KEY>, two underscores)"
            ),
        ));
    }
    Ok(())
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            let del = prev[j + 1] + 1;
            let ins = cur[j] + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `PORTCULLIS_SERVER__LISTEN=…` sets `server.listen`. Values are read as
/// TOML when they parse (numbers, booleans, arrays) and as strings otherwise.
pub(super) fn apply(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("PORTCULLIS_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section == "routes" {
            return Err(cerr(
                k,
                "routes cannot be set from the environment; write them in the config file",
            ));
        }
        let value = format!("v = {v}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(v.clone()));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(t) = entry.as_table_mut() else {
            return Err(cerr(k, format!("{section} is not a section")));
        };
        t.insert(key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::load_str;

    #[test]
    fn unknown_portcullis_variables_are_refused_with_a_hint() {
        let env = |k: &str| vec![(k.to_owned(), "x".to_owned())];
        let e = load_str("", "t", &env("PORTCULLIS_SERVER_LISTEN")).unwrap_err();
        assert!(e.message.contains("PORTCULLIS_SERVER__LISTEN"), "{e}");
        let e = load_str("", "t", &env("PORTCULLIS_RATE_LIMIT_BACKEND")).unwrap_err();
        assert!(e.message.contains("PORTCULLIS_RATE_LIMIT__BACKEND"), "{e}");
        let e = load_str("", "t", &env("PORTCULLIS_CONFG")).unwrap_err();
        assert!(e.message.contains("PORTCULLIS_CONFIG"), "{e}");
        let e = load_str("", "t", &env("PORTCULLIS_ROUTES")).unwrap_err();
        assert_eq!(e.path, "PORTCULLIS_ROUTES", "{e}");
        let e = load_str("", "t", &env("PORTCULLIS_SERVER__LISTN")).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
        for fine in [
            "PORTCULLIS_CONFIG",
            "PORTCULLIS_JWT_SECRET",
            "PORTCULLIS_JWT_SECRET_FILE",
            "OTHER_THING",
        ] {
            assert!(load_str("", "t", &env(fine)).is_ok(), "{fine}");
        }
    }
}
