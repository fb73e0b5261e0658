//! `portcullis store copy`: a SQLite deployment moved to Postgres with
//! the binary, every key kept. The printed report (a line per table and
//! a total, or JSON), a second copy that writes nothing, a gateway
//! serving from Postgres that accepts a key made before the copy, the
//! refusals (same store, a destination that has moved on), and no
//! password anywhere in what the command prints.

use crate::harness::*;
use crate::pg_server::{PG_PASSWORD, PgServer};

const ROUTES: &str =
    "[[routes]]\npath = \"/data\"\nupstream = \"demo\"\nauth = [\"api_key_header\"]\n";

const TABLES: [&str; 9] = [
    "api_keys",
    "users",
    "oauth_clients",
    "refresh_tokens",
    "sessions",
    "signing_keys",
    "secrets",
    "audit_events",
    "usage",
];

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The report's lines as (name, rows, new, sha256).
fn lines(stdout: &str) -> Vec<(String, u64, u64, String)> {
    stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "{l:?}");
            (
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].to_owned(),
            )
        })
        .collect()
}

#[test]
fn store_copy_moves_a_sqlite_deployment_to_postgres() {
    let files = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", files.path().join("old.db").display());
    let old = Env::on_store(&sqlite, "", ROUTES);
    old.init();
    let key = old.create_key(&["--name", "kept", "--scopes", "data:read"]);
    let revoked = old.create_key(&["--name", "gone"]);
    let o = old.cli(&["keys", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let gone_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "gone")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(old.cli(&["keys", "revoke", &gone_id]).status.success());
    old.add_user("ann", "correct horse battery", "data:read");
    old.add_client("reporting", "data:read", "client_credentials");

    let pg = PgServer::shared().fresh_db();
    let o = old.cli(&["store", "copy", "--from", &sqlite, "--to", &pg]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let report = lines(&out);
    let names: Vec<&str> = report.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(names[..9], TABLES);
    assert_eq!(names[9], "total");
    let row = |t: &str| report.iter().find(|l| l.0 == t).unwrap().clone();
    // init's admin key, "kept" and "gone".
    assert_eq!((row("api_keys").1, row("api_keys").2), (3, 3));
    assert_eq!(row("users").1, 1);
    assert_eq!(row("oauth_clients").1, 1);
    let total = row("total");
    assert_eq!(total.1, report[..9].iter().map(|l| l.1).sum::<u64>());
    assert_eq!(total.1, total.2, "everything was new");
    assert!(report.iter().all(|l| l.3.len() == 64));
    assert!(err.contains("postgres://[REDACTED]@"), "{err}");
    for s in [&out, &err] {
        assert!(!s.contains(PG_PASSWORD), "password printed: {s}");
    }

    // Again: nothing new, the same checksum; as JSON.
    let o = old.cli(&["store", "copy", "--from", &sqlite, "--to", &pg, "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(!out.contains(PG_PASSWORD) && !err.contains(PG_PASSWORD));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["new"], 0);
    assert_eq!(j["rows"], total.1);
    assert_eq!(j["sha256"], total.3.as_str());
    assert_eq!(j["tables"].as_array().unwrap().len(), TABLES.len());
    assert_eq!(j["tables"][0]["table"], "api_keys");
    assert!(j["to"].as_str().unwrap().contains("[REDACTED]"));

    // A gateway serving from Postgres accepts the key made on SQLite, and
    // still refuses the revoked one.
    let new = Env::on_store(&pg, "", ROUTES);
    let _srv = new.serve();
    let get = |k: &str| {
        client()
            .get(new.url("/data"))
            .header("X-API-Key", k)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(get(&key), 200);
    assert_eq!(get(&revoked), 401);

    // A key made on Postgres after the copy: the destination has moved
    // on, and copying again is refused, naming what differs, in one
    // line, and writes nothing.
    let later = new.create_key(&["--name", "later"]);
    assert_eq!(get(&later), 200);
    let o = old.cli(&["store", "copy", "--from", &sqlite, "--to", &pg]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("the destination already holds rows that differ from the source's"),
        "{err}"
    );
    assert!(
        err.contains("api_keys: 1 row the source does not have (first: id \""),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "audit_events: 1 row the source does not have (first: id {})",
            row("audit_events").1 + 1
        )),
        "{err}"
    );
    let o = new.cli(&["keys", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert!(!err.contains(PG_PASSWORD), "{err}");
}

#[test]
fn store_copy_refuses_one_store_named_twice() {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("one.db");
    let env = Env::on_store(&format!("sqlite://{}", path.display()), "", "");
    env.init();
    // The same file, spelled two ways.
    let same = format!("sqlite:{}/./one.db", files.path().display());
    let o = env.cli(&[
        "store",
        "copy",
        "--from",
        &format!("sqlite://{}", path.display()),
        "--to",
        &same,
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("name the same store"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // Both flags are required.
    let o = env.cli(&["store", "copy", "--from", &same]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--to"));
}
