//! What the list commands print: a table for people, or JSON for scripts.

use anyhow::Result;
use serde::Serialize;
use std::io::Write;

/// `items` as one JSON array (`--json`), else `header` and a `line` per
/// item.
pub(super) fn list<T: Serialize>(
    out: &mut impl Write,
    json: bool,
    items: &[T],
    header: &str,
    line: impl Fn(&T) -> String,
) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(items)?)?;
    } else {
        writeln!(out, "{header}")?;
        for item in items {
            writeln!(out, "{}", line(item))?;
        }
    }
    Ok(())
}

pub(super) fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

pub(super) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}
