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

/// The README's quickstart, command for command: its `sh` blocks under
/// "## Run" with `cargo run --release [-q] --` replaced by the built
/// binary, the quickstart config copied to a temp dir with free ports, and
/// `serve` started in the background. Each `curl -i` must answer the
/// status its comment promises. (The seed app's two commands are the seed
/// app's own tests.)
#[test]
fn the_readme_quickstart_runs() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let run = readme
        .split("\n## Run\n")
        .nth(1)
        .and_then(|r| r.split("\n## ").next())
        .expect("README has a ## Run section");
    let mut blocks = Vec::new();
    let mut lines = run.lines();
    while let Some(l) = lines.next() {
        if l.trim_end() == "```sh" {
            let mut b = String::new();
            for l in lines.by_ref() {
                if l.trim_end() == "```" {
                    break;
                }
                b.push_str(l);
                b.push('\n');
            }
            blocks.push(b);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let cfg = std::fs::read_to_string(root.join("examples/quickstart.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{admin}"));
    std::fs::write(dir.path().join("quickstart.toml"), cfg).unwrap();
    let adapt = |cmd: &str| {
        cmd.replace("cargo run --release -q --", BIN)
            .replace("cargo run --release --", BIN)
            .replace("examples/quickstart.toml", "quickstart.toml")
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
    };
    let mut script = String::from("set -eu\n");
    let mut server = None;
    let mut expected = Vec::new();
    for b in blocks
        .iter()
        .filter(|b| !b.contains("seed_app") && !b.contains(":8000"))
    {
        for line in b.split_inclusive('\n') {
            if line.contains(" serve ") {
                let cmd = adapt(line.trim());
                assert!(script.len() > 8, "serve comes after init");
                // Run what came before (init), then start the server.
                run_bash(&script, dir.path());
                script = String::from("set -eu\n");
                server = Some(
                    std::process::Command::new("bash")
                        .args(["-c", &format!("exec {cmd}")])
                        .current_dir(dir.path())
                        .env_remove("PORTCULLIS_CONFIG")
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .unwrap(),
                );
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                    assert!(std::time::Instant::now() < deadline, "serve did not listen");
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                continue;
            }
            if line.trim_start().starts_with("curl -i")
                && let Some(code) = line
                    .split('#')
                    .nth(1)
                    .and_then(|c| c.split_whitespace().next())
            {
                expected.push(code.to_owned());
            }
            script.push_str(&adapt(line));
        }
        script.push('\n');
    }
    let out = run_bash(&script, dir.path());
    if let Some(mut s) = server {
        let _ = s.kill();
        let _ = s.wait();
    }
    // Bodies end without a newline: a status line may follow one.
    let got: Vec<String> = out
        .split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(got, expected, "{out}");
    assert_eq!(expected.len(), 3, "{script}");
}

fn run_bash(script: &str, dir: &Path) -> String {
    let o = std::process::Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{script}\n--- stdout\n{out}\n--- stderr\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}
