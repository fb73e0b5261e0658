//! The docs are tested: every ```toml block in the README, docs/ and the
//! examples' READMEs loads with `portcullis config check` (certificate
//! paths pointed at generated files), unless its first line marks it
//! `# fragment: …` — then it must still be valid TOML.

use crate::harness::*;
use std::path::{Path, PathBuf};

fn markdown_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "examples"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "md") {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    files
}

/// (line, block) for each ```toml block.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, l)) = lines.next() {
        if l.trim_end() == "```toml" {
            let mut block = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim_end() == "```" {
                    break;
                }
                block.push_str(l);
                block.push('\n');
            }
            out.push((i + 1, block));
        }
    }
    out
}

/// Points every `"….pem"` value at a generated certificate or key.
fn with_test_certs(block: &str, dir: &Path) -> String {
    let certs = make_certs(dir, "doc", &["localhost"]);
    let mut out = String::new();
    for line in block.lines() {
        let l = match (line.find('"'), line.rfind(".pem\"")) {
            (Some(a), Some(b)) if a < b => {
                let file = if line.trim_start().starts_with("key") {
                    &certs.key
                } else {
                    &certs.cert
                };
                format!("{}\"{}{}", &line[..a], path_str(file), &line[b + 4..])
            }
            _ => line.to_owned(),
        };
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[test]
fn every_toml_block_in_the_docs_loads() {
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, block) in toml_blocks(&text) {
            let at = format!("{}:{line}", file.display());
            if block.starts_with("# fragment") {
                block
                    .parse::<toml::Table>()
                    .unwrap_or_else(|e| panic!("{at}: a fragment that is not TOML: {e}"));
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let cfg = dir.path().join("c.toml");
            std::fs::write(&cfg, with_test_certs(&block, dir.path())).unwrap();
            let o = std::process::Command::new(BIN)
                .args(["config", "check", "--config"])
                .arg(&cfg)
                .current_dir(dir.path())
                .env_remove("PORTCULLIS_CONFIG")
                .env(
                    "PORTCULLIS_JWT_SECRET",
                    "a-doc-test-secret-of-more-than-32-bytes",
                )
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{at}: the documented config does not load (mark it `# fragment: why` if it is one):\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            checked += 1;
        }
    }
    // The example configs, whole.
    for e in std::fs::read_dir(repo_root().join("examples"))
        .unwrap()
        .flatten()
    {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let o = std::process::Command::new(BIN)
            .args(["config", "check", "--config"])
            .arg(&p)
            .current_dir(dir.path())
            .env_remove("PORTCULLIS_CONFIG")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} blocks checked");
}
