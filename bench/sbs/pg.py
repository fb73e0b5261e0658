"""A throwaway PostgreSQL cluster for the harness, started the way the
tests start theirs (crates/portcullis/tests/it/pg_server.rs): Debian's
binaries, `initdb` into the run's work directory, a free loopback port, as
the unprivileged `postgres` user when the harness runs as root (the server
refuses root). No system service, no Docker. A watchdog shell between the
harness and the server shuts the server down when the harness goes away,
however it goes, so no cluster outlives its run.

Settings (see docs/benchmarks.md, "Postgres store and several instances"):
fsync stays on, as in production: what is measured is reads (key lookups),
and the only writes in a measured window are the gateways' batched
last-used times. The fill's WAL would trigger checkpoints part-way, so
`max_wal_size` is raised and the harness checkpoints once after the fill
instead. `shared_buffers` is 512MB (the default 128MB holds under half of a
million-key table and its indexes); `pg_stat_statements` is loaded so the
harness can count the statements the gateways send."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from procs import Proc, free_port

USER = "portcullis"


class Missing(RuntimeError):
    """PostgreSQL is not installed: the harness says so and stops."""


def pg_bin() -> Path:
    """The newest /usr/lib/postgresql/N/bin (Debian keeps it off PATH), or
    $PORTCULLIS_PG_BIN, as pg_server.rs looks for it."""
    env = os.environ.get("PORTCULLIS_PG_BIN")
    if env:
        if not (Path(env) / "postgres").is_file():
            raise Missing(f"PORTCULLIS_PG_BIN={env} holds no postgres binary")
        return Path(env)
    found = []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        for d in root.iterdir():
            if d.name.isdigit() and (d / "bin" / "postgres").is_file():
                found.append((int(d.name), d / "bin"))
    if not found:
        raise Missing("PostgreSQL is not installed (no /usr/lib/postgresql/N/bin/postgres): "
                      "run scripts/install-test-deps.sh as root, or set PORTCULLIS_PG_BIN")
    return max(found)[1]


def available() -> str | None:
    """None when a cluster can be started, else why not (one line)."""
    try:
        pg_bin()
    except Missing as e:
        return str(e)
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        return "running as root, and setpriv (util-linux) is missing to run PostgreSQL unprivileged"
    return None


def _unprivileged() -> str | None:
    """The user the server runs as: None when we are not root; else Debian's
    `postgres` (made by the package), or `nobody`."""
    if os.geteuid() != 0:
        return None
    for u in ("postgres", "nobody"):
        if subprocess.run(["id", u], capture_output=True).returncode == 0:
            return u
    raise Missing("running as root and there is no unprivileged user (postgres or nobody) "
                  "to run PostgreSQL as")


def _group(user: str) -> str:
    return subprocess.run(["id", "-gn", user], capture_output=True, text=True,
                          check=True).stdout.strip()


class Postgres(Proc):
    """A running cluster: `url(db)` for the gateways, `sql(db, …)` for the
    harness (psql over the Unix socket, which trusts local connections)."""

    def __init__(self, work: Path, *, shared_buffers: str = "512MB"):
        self.bin = pg_bin()
        run_as = _unprivileged()
        self.dir = work / "pg"
        self.dir.mkdir(parents=True, exist_ok=True)
        # The server's user must reach its directory inside the work dir
        # (mkdtemp makes that 0700).
        os.chmod(work, 0o755)
        self.password = secrets.token_urlsafe(18)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password)
        prefix: list[str] = []
        if run_as:
            group = _group(run_as)
            subprocess.run(["chown", "-R", f"{run_as}:{group}", str(self.dir)], check=True)
            prefix = ["setpriv", f"--reuid={run_as}", f"--regid={group}", "--clear-groups", "--"]
        data = self.dir / "data"
        r = subprocess.run(prefix + [str(self.bin / "initdb"), "-D", str(data), "-U", USER, "-E", "UTF8",
                                     "--no-sync", "--locale=C", "--auth-local=trust",
                                     "--auth-host=scram-sha-256", f"--pwfile={pwfile}"],
                           capture_output=True, text=True)
        pwfile.unlink()
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stdout}{r.stderr}")
        self.port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "max_connections": "200",
            "shared_buffers": shared_buffers,
            "max_wal_size": "4GB",
            "checkpoint_timeout": "30min",
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "top",
        }
        argv = prefix + [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port),
                         "-k", str(self.dir)]
        for k, v in settings.items():
            argv += ["-c", f"{k}={v}"]
        # The watchdog: runs postgres, and when its stdin closes (stop(), or
        # the harness exited however it did) asks for a fast shutdown.
        watchdog = ['sh', '-c', '"$@" & p=$!; trap \'kill -INT $p 2>/dev/null\' EXIT; '
                    'while read -r _; do :; done; kill -INT $p 2>/dev/null; wait $p', 'sh', *argv]
        self.name = "postgres"
        self.log = work / "postgres.log"
        self.argv = watchdog
        self.started = time.monotonic()
        with open(self.log, "wb") as out:
            self.p = subprocess.Popen(watchdog, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.PIPE, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"postgres exited during start-up:\n{self.tail()}")
            r = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", str(self.dir),
                                "-p", str(self.port)], capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres never took connections (30 s):\n{self.tail()}")

    def stop(self) -> None:
        if self.p.poll() is not None:
            return
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, 9)
            self.p.wait()

    def sql(self, db: str, statement: str) -> str:
        """One statement through psql (unaligned, tuples only)."""
        r = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                            "-h", str(self.dir), "-p", str(self.port), "-U", USER, "-d", db,
                            "-c", statement], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"psql {statement!r} failed: {r.stderr.strip()}")
        return r.stdout.strip()

    def create_db(self, name: str) -> str:
        """An empty database with pg_stat_statements; returns its URL."""
        self.sql("postgres", f"CREATE DATABASE {name}")
        self.sql(name, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return self.url(name)

    def url(self, db: str) -> str:
        return f"postgres://{USER}:{self.password}@127.0.0.1:{self.port}/{db}"

    def statements(self, db: str) -> dict:
        """Statement counts since the server started (pg_stat_statements),
        for this database: every statement but the harness's own reads of
        the statistics, key lookups by hash, and the verifier's batched
        last-used writes (statements and the rows they changed). `xact_commit` counts the
        harness's few transactions too."""
        row = self.sql(db, "SELECT coalesce(sum(s.calls), 0), "
                           "coalesce(sum(s.calls) FILTER (WHERE s.query LIKE '%FROM api_keys WHERE key_hash = $1%'), 0), "
                           "coalesce(sum(s.calls) FILTER (WHERE s.query LIKE 'UPDATE api_keys%SET last_used_at%'), 0), "
                           "coalesce(sum(s.rows) FILTER (WHERE s.query LIKE 'UPDATE api_keys%SET last_used_at%'), 0) "
                           "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                           f"WHERE d.datname = '{db}' AND s.query NOT LIKE '%pg_stat%'")
        total, lookups, touches, touched = (int(x) for x in row.split("|"))
        commits = int(self.sql(db, f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{db}'"))
        return {"statements": total, "key_lookups": lookups, "last_used_updates": touches,
                "last_used_rows": touched, "xact_commit": commits}

    def calls(self, db: str) -> dict[str, int]:
        """Calls per statement text in this database (pg_stat_statements)."""
        out: dict[str, int] = {}
        rows = self.sql(db, "SELECT s.calls, regexp_replace(s.query, '\\s+', ' ', 'g') "
                            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                            f"WHERE d.datname = '{db}' AND s.query NOT LIKE '%pg_stat%'")
        for line in rows.splitlines():
            n, _, q = line.partition("|")
            out[q[:120]] = out.get(q[:120], 0) + int(n)
        return out

    def size_mib(self, db: str) -> float:
        return round(int(self.sql(db, f"SELECT pg_database_size('{db}')")) / 2**20, 1)

    def settle(self, db: str) -> None:
        """After a bulk fill: VACUUM ANALYZE (hint bits, visibility map and
        statistics, as a store in service has them) and a checkpoint, so no
        background write-out from the fill lands in a measured run."""
        self.sql(db, "VACUUM (ANALYZE) api_keys")
        self.sql(db, "CHECKPOINT")

    def version(self) -> str:
        r = subprocess.run([str(self.bin / "postgres"), "--version"], capture_output=True, text=True)
        return r.stdout.strip()
