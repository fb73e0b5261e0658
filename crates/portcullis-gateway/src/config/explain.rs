//! What `portcullis config check` prints: the listeners, the store and
//! each route in words.

use super::{Config, Upstream};
use http::Method;

/// The explanation `portcullis config check` prints.
pub fn explain(c: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "listen        {}", c.listen);
    let _ = writeln!(s, "admin_listen  {}", c.admin_listen);
    let _ = writeln!(
        s,
        "store         {}",
        portcullis::store::redact_url(&c.store_url)
    );
    let tp: Vec<String> = c.trusted_proxies.iter().map(|t| format!("{t:?}")).collect();
    let _ = writeln!(
        s,
        "trusted proxies: {}",
        if tp.is_empty() {
            "none".into()
        } else {
            c.trusted_proxies.len().to_string()
        }
    );
    let _ = writeln!(s, "routes ({}):", c.routes.len());
    for r in &c.routes {
        let methods = r.methods.as_ref().map_or("any method".to_owned(), |m| {
            m.iter().map(Method::as_str).collect::<Vec<_>>().join(",")
        });
        let auth = if r.policy.schemes.is_public() {
            "public (no credential)".to_owned()
        } else {
            format!(
                "one of {}",
                r.policy
                    .schemes
                    .schemes()
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let scopes = if r.policy.scopes.is_empty() {
            "none".to_owned()
        } else {
            r.policy.scopes.to_space_separated()
        };
        let up = match &r.upstream {
            Upstream::Demo => "built-in demo".to_owned(),
            Upstream::Http {
                origin, base_path, ..
            } => format!("{origin}{base_path}"),
        };
        let _ = writeln!(
            s,
            "  [{}] {} {}\n      auth: {}\n      scopes: {}\n      upstream: {} (timeout {}s)",
            r.index,
            methods,
            r.path,
            auth,
            scopes,
            up,
            r.timeout.as_secs()
        );
    }
    if c.routes.is_empty() {
        let _ = writeln!(s, "  none: every request gets 404");
    }
    s
}
