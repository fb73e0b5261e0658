"""Side-by-side benchmark: Portcullis against nginx and FastAPI, on one
machine, in one run. See docs/benchmarks.md ("Side by side") for what each
scenario measures and how to read the figures. Run it as bench/side-by-side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contenders as C  # noqa: E402
import keys as K  # noqa: E402
import load as L  # noqa: E402
import pg as PG  # noqa: E402
import procs as P  # noqa: E402
import report as R  # noqa: E402

SCENARIOS = ["valid_key", "open_loop", "unknown_flood", "login_flood", "jwt", "limiter", "store_1m",
             "store_1m_pg", "three_instances"]
# The scenarios that start a Postgres cluster.
PG_SCENARIOS = {"store_1m_pg", "three_instances"}


class Settings:
    def __init__(self, a: argparse.Namespace):
        smoke = a.smoke
        self.smoke = smoke
        self.reps = a.reps or (1 if smoke else 3)
        self.seconds = a.seconds or (1 if smoke else 10)
        self.warmup = 1 if smoke else 2
        self.connections = 16 if smoke else 64
        # Paced traffic: each connection sends one request every delay_ms,
        # so the stream's latency is read at a fixed, modest rate.
        self.paced_connections = 4 if smoke else 8
        self.paced_delay_ms = 10 if smoke else 4
        self.flood_connections = 16 if smoke else 64
        self.login_connections = 4 if smoke else 16
        self.flood_keys = 2_000 if smoke else 400_000
        self.store_keys = a.store_keys or (20_000 if smoke else 1_000_000)
        self.store_sample = 500 if smoke else 20_000
        self.mint_seconds = 1 if smoke else 6
        self.upstream_threads = 1
        # The gateway's event loops (server.threads), nginx's workers and
        # the hyper floor's loops: one per core unless --threads says.
        self.threads = a.threads or os.cpu_count() or 1
        self.threads_explicit = a.threads is not None
        # Open loop: a fixed rate well below saturation, over this many
        # connections, latency from each request's intended send time.
        self.open_rate = a.rate or (1000 if smoke else 5000)
        self.open_connections = 4 if smoke else 16
        self.open_seconds = self.seconds
        self.open_warmup = 0.5 if smoke else self.warmup
        # Floods come from other loopback addresses than the valid traffic
        # (127.0.0.1), as real ones would.
        self.flood_sources = {"unknown": "127.0.0.2", "bad_checksum": "127.0.0.3", "login": "127.0.0.4"}

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items()}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def measure(run: C.Running, traffic: L.Traffic, s: Settings, work: Path, *,
            seconds: float | None = None, connections: int | None = None,
            warmup: bool = True) -> dict:
    """One measured wrk run against `run`, with its CPU cost from /proc."""
    conns = connections or s.connections
    if warmup and s.warmup:
        L.run(traffic, connections=conns, seconds=s.warmup, workdir=work)
    pids = run.pids()
    cpu0 = P.cpu_seconds(pids)
    r = L.run(traffic, connections=conns, seconds=seconds or s.seconds, workdir=work)
    cpu = P.cpu_seconds(pids) - cpu0
    r["cpu_s"] = round(cpu, 3)
    r["cpu_s_per_10k"] = round(cpu / r["requests"] * 10_000, 4) if r["requests"] else None
    return r


def summarise(runs: list[dict]) -> dict:
    def med(k):
        vals = [r[k] for r in runs if r.get(k) is not None]
        return statistics.median(vals) if vals else None
    return {
        "rps": round(med("rps"), 1),
        "p50_us": med("p50_us"),
        "p99_us": med("p99_us"),
        "max_us": max(r["max_us"] for r in runs),
        "cpu_s_per_10k": med("cpu_s_per_10k"),
        "requests": sum(r["requests"] for r in runs),
        "non_2xx": sum(r["status_errors"] for r in runs),
        "socket_errors": sum(r["errors"] for r in runs),
        "reps": len(runs),
    }


def admin_stats(run: C.Running) -> dict | None:
    """The gateway's key-cache and store-lookup counters (GET /admin/v1/stats)."""
    port, key = run.extra.get("admin_port"), run.extra.get("admin_key")
    if not port:
        return None
    try:
        status, body = P.http(f"http://127.0.0.1:{port}/admin/v1/stats",
                              headers={"X-API-Key": key})
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


def valid_traffic(run: C.Running, **kw) -> L.Traffic:
    return L.Traffic(run.url, dict(run.headers), **kw)


# --- scenarios --------------------------------------------------------------

def sc_valid_key(s, work, build, ctx) -> dict:
    """Every contender, valid key, closed-loop load, alternating reps."""
    order = ctx["contenders"]
    runs: dict[str, list[dict]] = {c.name: [] for c in order}
    for rep in range(s.reps):
        rotated = order[rep % len(order):] + order[:rep % len(order)]
        for c in rotated:
            log(f"valid_key rep {rep + 1}/{s.reps}: {c.name}")
            runs[c.name].append(measure(c, valid_traffic(c), s, work))
    out = {}
    for c in order:
        out[c.name] = {
            "summary": summarise(runs[c.name]),
            "runs": runs[c.name],
            "startup_s": round(c.startup_s, 3),
            "idle_rss_kib": c.idle_rss_kib,
            "peak_rss_kib": P.peak_rss_kib(c.pids()),
        }
    return {"contenders": out, "order": [c.name for c in order]}


# Every contender valid_key can run, in the order they run.
CONTENDERS = ["upstream", "hyper-floor", "nginx", "portcullis", "nginx+verify", "fastapi-1w", "fastapi-2w",
              "seed_app"]

# The contenders the open-loop scenario runs, in this order (those started).
OPEN_LOOP = ["upstream", "nginx", "hyper-floor", "portcullis", "nginx+verify"]


def sc_open_loop(s, work, build, ctx) -> dict:
    """A fixed rate well below saturation (openloop, latency from each
    request's intended send time), each contender in turn, alternating
    reps; what each adds over the bare upstream at p50 and p99."""
    order = [c for name in OPEN_LOOP for c in ctx["contenders"] if c.name == name]
    runs: dict[str, list[dict]] = {c.name: [] for c in order}
    for rep in range(s.reps):
        rotated = order[rep % len(order):] + order[:rep % len(order)]
        for c in rotated:
            log(f"open_loop rep {rep + 1}/{s.reps}: {c.name} at {s.open_rate} req/s")
            pids = c.pids()
            cpu0 = P.cpu_seconds(pids)
            r = L.openloop_run(build.bins["openloop"], valid_traffic(c), rate=s.open_rate,
                               connections=s.open_connections, seconds=s.open_seconds,
                               warmup=s.open_warmup)
            cpu = P.cpu_seconds(pids) - cpu0
            # The CPU was spent over warm-up and measured run alike.
            total = r["requests"] * (s.open_seconds + s.open_warmup) / s.open_seconds if r["requests"] else 0
            r["cpu_s_per_10k"] = round(cpu / total * 10_000, 4) if total else None
            runs[c.name].append(r)

    def med(name, k):
        vals = [r[k] for r in runs[name] if r.get(k) is not None]
        return statistics.median(vals) if vals else None
    out = {}
    for c in order:
        n = c.name
        out[n] = {"p50_us": med(n, "p50_us"), "p90_us": med(n, "p90_us"), "p99_us": med(n, "p99_us"),
                  "p999_us": med(n, "p999_us"), "max_us": max(r["max_us"] for r in runs[n]),
                  "rps": med(n, "rps"), "cpu_s_per_10k": med(n, "cpu_s_per_10k"),
                  "send_late_p99_us": med(n, "send_late_p99_us"),
                  "errors": sum(r["errors"] for r in runs[n]),
                  "non_2xx": sum(r["non_2xx"] for r in runs[n]), "runs": runs[n]}
    base = out.get("upstream")
    if base:
        for n, v in out.items():
            # Per rep, then the median: each rep's runs sit close in time.
            for k in ("p50", "p99"):
                added = [r[f"{k}_us"] - b[f"{k}_us"] for r, b in zip(runs[n], runs["upstream"])]
                v[f"added_{k}_us"] = statistics.median(added) if added else None
    return {"rate": s.open_rate, "connections": s.open_connections, "seconds": s.open_seconds,
            "contenders": out, "order": [c.name for c in order]}


def _flood(s, work, gw: C.Running, flood: L.Traffic, flood_conns: int, label: str,
           source: str, build: C.Build) -> dict:
    paced = valid_traffic(gw, delay_ms=s.paced_delay_ms)
    log(f"{label}: baseline (paced valid traffic alone)")
    base = measure(gw, paced, s, work, connections=s.paced_connections)
    stats0 = admin_stats(gw)
    log(f"{label}: flood from {source} + paced valid traffic from 127.0.0.1")
    bg = L.openloop_start(build.bins["openloop"], flood, connections=flood_conns,
                          seconds=s.seconds + 1, source=source)
    time.sleep(0.5)
    during = measure(gw, paced, s, work, connections=s.paced_connections, warmup=False)
    fl = L.openloop_finish(bg)
    stats1 = admin_stats(gw)
    out = {
        "baseline": base,
        "during": during,
        "flood": fl,
        "flood_source": source,
        "p99_ratio": round(during["p99_us"] / base["p99_us"], 2) if base["p99_us"] else None,
        "p50_ratio": round(during["p50_us"] / base["p50_us"], 2) if base["p50_us"] else None,
    }
    if stats0 and stats1:
        out["store_key_lookups"] = stats1["store_key_lookups"] - stats0["store_key_lookups"]
    return out


def sc_unknown_flood(s, work, build, ctx) -> dict:
    gw = ctx["portcullis"]
    out = {}
    unknown = K.write(work / "unknown-keys.txt", s.flood_keys, K.well_formed)
    t = L.Traffic(gw.url, values_file=unknown, vary_header="X-API-Key")
    out["unknown"] = _flood(s, work, gw, t, s.flood_connections, "unknown_flood",
                            s.flood_sources["unknown"], build)
    out["unknown"]["distinct_keys"] = s.flood_keys
    out["unknown"]["flood_connections"] = s.flood_connections
    bad = K.write(work / "bad-checksum-keys.txt", min(s.flood_keys, 50_000), K.bad_checksum)
    t = L.Traffic(gw.url, values_file=bad, vary_header="X-API-Key")
    out["bad_checksum"] = _flood(s, work, gw, t, s.flood_connections, "bad_checksum_flood",
                                 s.flood_sources["bad_checksum"], build)
    return out


def sc_login_flood(s, work, build, ctx) -> dict:
    gw = ctx["portcullis"]
    pw = ctx["password"]
    body = f"grant_type=password&username=bench&password={pw}"
    t = L.Traffic(gw.url.replace("/data", "/oauth/token"), method="POST", body=body,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    return _flood(s, work, gw, t, s.login_connections, "login_flood", s.flood_sources["login"], build)


def sc_jwt(s, work, build, ctx) -> dict:
    gw = ctx["portcullis"]
    cid, secret = ctx["client"]
    tokens = work / "tokens.txt"
    tokens.write_text("")
    log("jwt: minting tokens (client_credentials)")
    mint = L.run(L.Traffic(gw.url.replace("/data", "/oauth/token"), method="POST",
                           body=f"grant_type=client_credentials&client_id={cid}&client_secret={secret}",
                           headers={"Content-Type": "application/x-www-form-urlencoded"},
                           save_tokens=tokens),
                 connections=s.login_connections, seconds=s.mint_seconds, workdir=work)
    toks = [t for t in tokens.read_text().splitlines() if t]
    if not toks:
        raise RuntimeError("no tokens were minted")
    jwt_url = gw.url.replace("/data", "/jwt")
    log(f"jwt: first sight ({len(toks)} tokens, each new to the gateway)")
    first = measure(gw, L.Traffic(jwt_url, values_file=tokens, vary_header="Authorization",
                                  vary_prefix="Bearer "), s, work, warmup=False)
    first["distinct_tokens"] = len(toks)
    first["first_sight_share"] = round(min(1.0, len(toks) / first["requests"]), 3)
    log("jwt: repeated token")
    rep = measure(gw, L.Traffic(jwt_url, {"Authorization": f"Bearer {toks[0]}"}), s, work)
    return {"mint": mint, "first_sight": first, "repeated": rep}


def sc_limiter(s, work, build, ctx) -> dict:
    redis, rport = C.start_redis(work)
    ctx["procs"].append(redis)
    cfg, port, admin = C.gateway_config(work, "portcullis-redis", ctx["upstream_port"],
                                        redis_url=f"redis://127.0.0.1:{rport}")
    creds = C.prepare_gateway(build, cfg)
    gw_r = C.start_gateway(build, work, "portcullis-redis", cfg, port, creds["key"])
    ctx["procs"].append(gw_r.proc)
    runs = {"memory": [], "redis": []}
    pair = [("memory", ctx["portcullis"]), ("redis", gw_r)]
    for rep in range(s.reps):
        for name, run in (pair if rep % 2 == 0 else pair[::-1]):
            log(f"limiter rep {rep + 1}/{s.reps}: {name}")
            runs[name].append(measure(run, valid_traffic(run), s, work))
    return {k: {"summary": summarise(v), "runs": v} for k, v in runs.items()}


def sc_store_1m(s, work, build, ctx) -> dict:
    cfg, port, admin = C.gateway_config(work, "portcullis-1m", ctx["upstream_port"])
    creds = C.prepare_gateway(build, cfg)
    sample = work / "store-sample.txt"
    log(f"store_1m: writing {s.store_keys} keys")
    t0 = time.monotonic()
    r = subprocess.run([str(build.bins["bench-keys"]), "--store", str(work / "portcullis-1m" / "portcullis.db"),
                        "--count", str(s.store_keys), "--sample", str(s.store_sample), "--out", str(sample),
                        "--scopes", "data:read"], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"bench-keys failed: {r.stderr.strip()}")
    fill_s = time.monotonic() - t0
    db_bytes = sum(p.stat().st_size for p in (work / "portcullis-1m").glob("portcullis.db*"))
    gw = C.start_gateway(build, work, "portcullis-1m", cfg, port, creds["key"])
    gw.extra.update(admin_port=admin, admin_key=creds["admin_key"])
    ctx["procs"].append(gw.proc)
    time.sleep(1)
    idle = P.rss_kib(gw.pids())
    log("store_1m: sampled keys, first pass (each key's first request asks the store)")
    t = L.Traffic(gw.url, values_file=sample, vary_header="X-API-Key")
    with StatsPoller([gw]) as poll:
        cold = measure(gw, t, s, work, seconds=max(1, s.seconds // 2), warmup=False)
    cold["store_lookups"] = poll.summary()
    seen = cold["store_lookups"].get("lookups", s.store_sample)
    cold["first_sight_share"] = round(min(1.0, seen / cold["requests"]), 3) if cold["requests"] else None
    log("store_1m: sampled keys, cached")
    warm = measure(gw, t, s, work)
    return {
        "keys": s.store_keys, "sampled_keys": s.store_sample, "fill_s": round(fill_s, 2),
        "db_mib": round(db_bytes / 2**20, 1), "startup_s": round(gw.startup_s, 3),
        "idle_rss_kib": idle, "first_pass": cold, "cached": warm,
        "peak_rss_kib": P.peak_rss_kib(gw.pids()),
    }


# --- Postgres: one store, one and three gateways --------------------------------

class StatsPoller:
    """Reads the gateways' store-lookup counters every 100 ms in the
    background, so a pass's lookups per second are measured over the time
    they actually happened (a first pass asks the store for each key once,
    early in the pass, then answers from the cache)."""

    def __init__(self, runs: list[C.Running], interval: float = 0.1):
        import threading
        self.runs, self.interval = runs, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def total(self) -> int | None:
        total = 0
        for r in self.runs:
            st = admin_stats(r)
            if st is None:
                return None
            total += st["store_key_lookups"]
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            v = self.total()
            if v is not None:
                self.samples.append((time.monotonic(), v))
            self._stop.wait(self.interval)

    def __enter__(self) -> "StatsPoller":
        v = self.total()
        if v is not None:
            self.samples.append((time.monotonic(), v))
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        v = self.total()
        if v is not None:
            self.samples.append((time.monotonic(), v))

    def summary(self) -> dict:
        """Lookups in the pass; the window from the last sample before the
        first lookup to the first sample after the last; lookups per second
        over that window, and the highest rate over any 0.5 s."""
        sm = self.samples
        if len(sm) < 2:
            return {}
        v0, vn = sm[0][1], sm[-1][1]
        total = vn - v0
        if total <= 0:
            return {"lookups": 0}
        # The readings themselves (seconds into the pass, lookups so far),
        # to see whether the lookups came steadily or in bursts.
        series = [[round(t - sm[0][0], 2), v - v0] for t, v in sm]
        start = max(t for t, v in sm if v == v0)
        end = min(t for t, v in sm if v == vn)
        window = end - start
        # A peak over 0.5 s says nothing new about a shorter burst.
        if window < 1.0:
            return {"lookups": total, "window_s": round(window, 2),
                    "per_s": round(total / window) if window > 0 else None, "series": series}
        peak = 0.0
        j = 0
        for i, (ti, vi) in enumerate(sm):
            j = max(j, i + 1)
            while j < len(sm) and sm[j][0] - ti < 0.5:
                j += 1
            if j < len(sm):
                peak = max(peak, (sm[j][1] - vi) / (sm[j][0] - ti))
        return {"lookups": total, "window_s": round(window, 2),
                "per_s": round(total / window) if window > 0 else None,
                "peak_per_s_500ms": round(peak) if peak else None, "series": series}


def _pg_cluster(work: Path, ctx: dict) -> PG.Postgres:
    """The run's one Postgres cluster, started on first use."""
    if "pg" not in ctx:
        log("postgres: starting a private cluster")
        ctx["pg"] = PG.Postgres(work)
        ctx["procs"].append(ctx["pg"])
    return ctx["pg"]


def _pg_store(s, work, build, ctx) -> dict:
    """The Postgres database with `store_keys` keys, filled once per run and
    shared by the Postgres scenarios. Two disjoint sets of `store_sample`
    sampled keys, each spread over the whole table: a gateway's first pass
    over a set is its first sight of those keys, so a scenario that has
    already driven one set through a gateway takes the other."""
    if "pg_store" in ctx:
        return ctx["pg_store"]
    pg = _pg_cluster(work, ctx)
    url = pg.create_db("bench1m")
    cfg, _, _ = C.gateway_config(work, "pg-init", ctx["upstream_port"], store_url=url)
    creds = C.prepare_gateway(build, cfg)
    both = work / "pg-sample-both.txt"
    log(f"postgres: writing {s.store_keys} keys")
    t0 = time.monotonic()
    r = subprocess.run([str(build.bins["bench-keys"]), "--store", url, "--count", str(s.store_keys),
                        "--sample", str(2 * s.store_sample), "--out", str(both), "--scopes", "data:read"],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"bench-keys (postgres) failed: {r.stderr.strip()}")
    fill_s = time.monotonic() - t0
    log("postgres: VACUUM done by bench-keys; CHECKPOINT")
    pg.sql("bench1m", "CHECKPOINT")
    keys = both.read_text().splitlines()
    sets = []
    for i in range(2):
        f = work / f"pg-sample-{i}.txt"
        f.write_text("\n".join(keys[i::2]) + "\n")
        os.chmod(f, 0o600)
        sets.append(f)
    both.unlink()
    ctx["pg_store"] = {"url": url, "db": "bench1m", "creds": creds, "samples": sets,
                       "fill_s": round(fill_s, 2), "db_mib": pg.size_mib("bench1m")}
    return ctx["pg_store"]


def _pg_gateway(build, work, ctx, name: str, url: str, creds: dict, *,
                redis_url: str | None = None) -> C.Running:
    cfg, port, admin = C.gateway_config(work, name, ctx["upstream_port"], store_url=url,
                                        redis_url=redis_url)
    gw = C.start_gateway(build, work, name, cfg, port, creds["key"])
    gw.extra.update(admin_port=admin, admin_key=creds["admin_key"])
    ctx["procs"].append(gw.proc)
    return gw


def _pass(pg: PG.Postgres, db: str, runs: list[C.Running], sample: Path, s, work, *,
          first: bool) -> dict:
    """One pass over `sample` on every gateway in `runs` at once (one wrk
    per gateway, the harness's connections shared out between them), with
    the gateways' and Postgres's CPU time, the store lookups the gateways
    counted and the statements Postgres counted."""
    seconds = max(1, s.seconds // 2) if first else s.seconds
    n = len(runs)
    conns = [s.connections // n + (1 if i < s.connections % n else 0) for i in range(n)]
    traffic = [L.Traffic(r.url, values_file=sample, vary_header="X-API-Key") for r in runs]
    warmups = 0
    if not first:
        # Warm up until a round asks the store nothing: a first pass on
        # several instances may end before each has seen every key. Each
        # wrk run walks the list from its start, so a round as long as the
        # measured pass reaches every key the pass will.
        poll = StatsPoller(runs)
        before = poll.total()
        for warmups in range(1, 4 if s.smoke else 7):
            warm = [L.start(t, connections=c, seconds=seconds, workdir=work) for t, c in zip(traffic, conns)]
            for w in warm:
                L.finish(w)
            after = poll.total()
            if before is None or after == before:
                break
            before = after
    gw_pids = [p for r in runs for p in r.pids()]
    cpu_gw0, cpu_pg0 = P.cpu_seconds(gw_pids), P.cpu_seconds(pg.pids())
    st0, calls0 = pg.statements(db), pg.calls(db)
    with StatsPoller(runs) as poll:
        started = [L.start(t, connections=c, seconds=seconds, workdir=work) for t, c in zip(traffic, conns)]
        each = [L.finish(w) for w in started]
    st1, calls1 = pg.statements(db), pg.calls(db)
    # The statements the pass sent most, so "statements/s" can be read.
    top = sorted(((n - calls0.get(q, 0), q) for q, n in calls1.items()), reverse=True)[:4]
    cpu_gw, cpu_pg = P.cpu_seconds(gw_pids) - cpu_gw0, P.cpu_seconds(pg.pids()) - cpu_pg0
    requests = sum(r["requests"] for r in each)
    duration = max(r["duration_us"] for r in each) / 1e6
    out = {
        "instances": n, "connections": conns, "seconds": seconds, "warmup_rounds": warmups,
        "rps": round(sum(r["rps"] for r in each), 1),
        # wrk's histograms cannot be merged: the slowest instance's p99 and
        # max, and the middle instance's p50.
        "p50_us": statistics.median(r["p50_us"] for r in each),
        "p99_us": max(r["p99_us"] for r in each),
        "max_us": max(r["max_us"] for r in each),
        "requests": requests,
        "non_2xx": sum(r["status_errors"] for r in each),
        "socket_errors": sum(r["errors"] for r in each),
        "gateway_cpu_s": round(cpu_gw, 3), "postgres_cpu_s": round(cpu_pg, 3),
        "gateway_cpu_s_per_10k": round(cpu_gw / requests * 10_000, 4) if requests else None,
        "postgres_cpu_s_per_10k": round(cpu_pg / requests * 10_000, 4) if requests else None,
        "store_lookups": poll.summary(),
        "pg_statements": st1["statements"] - st0["statements"],
        "pg_key_lookups": st1["key_lookups"] - st0["key_lookups"],
        "pg_last_used_updates": st1["last_used_updates"] - st0["last_used_updates"],
        "pg_last_used_rows": st1["last_used_rows"] - st0["last_used_rows"],
        "pg_commits": st1["xact_commit"] - st0["xact_commit"],
        "pg_statements_per_s": round((st1["statements"] - st0["statements"]) / duration) if duration else None,
        "pg_top_statements": [{"calls": n, "query": q} for n, q in top if n > 0],
        "each": each,
    }
    if first:
        keys = sum(1 for _ in open(sample))
        out["distinct_keys"] = keys
        # Each lookup is one key's first sight on one instance (concurrent
        # misses share one); without the counters, every key on every
        # instance is assumed reached.
        seen = out["store_lookups"].get("lookups", n * keys)
        out["first_sight_share"] = round(min(1.0, seen / requests), 3) if requests else None
    return out


def sc_store_1m_pg(s, work, build, ctx) -> dict:
    """store_1m on Postgres: one gateway, the first pass (every sampled
    key's first request asks the store) and the cached pass."""
    pg = _pg_cluster(work, ctx)
    st = _pg_store(s, work, build, ctx)
    gw = _pg_gateway(build, work, ctx, "portcullis-1m-pg", st["url"], st["creds"])
    time.sleep(1)
    idle = P.rss_kib(gw.pids())
    sample = st["samples"][0]
    log("store_1m_pg: sampled keys, first pass (each key's first request asks Postgres)")
    cold = _pass(pg, st["db"], [gw], sample, s, work, first=True)
    log("store_1m_pg: sampled keys, cached")
    warm = _pass(pg, st["db"], [gw], sample, s, work, first=False)
    out = {
        "keys": s.store_keys, "sampled_keys": s.store_sample, "fill_s": st["fill_s"],
        "db_mib": st["db_mib"], "startup_s": round(gw.startup_s, 3), "idle_rss_kib": idle,
        "first_pass": cold, "cached": warm, "peak_rss_kib": P.peak_rss_kib(gw.pids()),
        "postgres": pg.version(),
    }
    # Stopped so it costs nothing while the next scenarios run.
    gw.proc.stop()
    return out


def sc_three_instances(s, work, build, ctx) -> dict:
    """Three gateways on one Postgres store and one Redis for limits: one
    of them alone, then the three at once (a wrk per gateway)."""
    pg = _pg_cluster(work, ctx)
    st = _pg_store(s, work, build, ctx)
    redis, rport = C.start_redis(work)
    ctx["procs"].append(redis)
    rurl = f"redis://127.0.0.1:{rport}"
    gws = [_pg_gateway(build, work, ctx, f"portcullis-pg-{i + 1}", st["url"], st["creds"], redis_url=rurl)
           for i in range(3)]
    time.sleep(1)
    one_set, three_set = st["samples"]
    log("three_instances: one instance alone, first pass")
    one_first = _pass(pg, st["db"], gws[:1], one_set, s, work, first=True)
    log("three_instances: one instance alone, cached")
    one_cached = _pass(pg, st["db"], gws[:1], one_set, s, work, first=False)
    log("three_instances: three instances at once, first pass (keys new to all three)")
    three_first = _pass(pg, st["db"], gws, three_set, s, work, first=True)
    log("three_instances: three instances at once, cached")
    three_cached = _pass(pg, st["db"], gws, three_set, s, work, first=False)
    out = {
        "keys": s.store_keys, "sampled_keys": s.store_sample, "rate_limit": "redis",
        "one": {"first_pass": one_first, "cached": one_cached},
        "three": {"first_pass": three_first, "cached": three_cached},
        "idle_rss_kib": [P.rss_kib(g.pids()) for g in gws],
    }
    for g in gws:
        g.proc.stop()
    redis.stop()
    return out


RUNNERS = {
    "valid_key": sc_valid_key, "open_loop": sc_open_loop, "unknown_flood": sc_unknown_flood, "login_flood": sc_login_flood,
    "jwt": sc_jwt, "limiter": sc_limiter, "store_1m": sc_store_1m,
    "store_1m_pg": sc_store_1m_pg, "three_instances": sc_three_instances,
}


# --- set-up -------------------------------------------------------------------

def build_binaries(profile: str) -> None:
    argv = ["cargo", "build", "-p", "portcullis-gateway", "-p", "seed_app", "-p", "portcullis-bench", "--bins"]
    if profile == "release":
        argv.append("--release")
    log("building: " + " ".join(argv))
    subprocess.run(argv, cwd=C.ROOT, check=True)


def machine() -> dict:
    def cmd(*argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not found"
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    py = C.venv_python()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(int(mem) / 2**20, 1),
        "kernel": platform.release(), "load_avg_at_start": os.getloadavg(),
        "rustc": cmd("rustc", "--version"), "nginx": cmd(C.nginx_bin(), "-v"),
        "wrk": cmd("wrk", "-v"), "redis": cmd("redis-server", "--version"),
        "postgres": cmd(str(PG.pg_bin() / "postgres"), "--version") if PG.available() is None else "not found",
        "python": cmd(str(py), "--version"),
        "fastapi": cmd(str(py), "-c", "import fastapi; print('fastapi', fastapi.__version__)"),
        "uvicorn": cmd(str(py), "-c", "import uvicorn; print('uvicorn', uvicorn.__version__)"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/side-by-side", description=__doc__)
    ap.add_argument("--smoke", action="store_true",
                    help="a short run of every scenario on debug builds, to keep the harness working (CI)")
    ap.add_argument("--reps", type=int, help="alternating repetitions (default 3; smoke 1)")
    ap.add_argument("--seconds", type=int, help="seconds per measured run (default 10; smoke 1)")
    ap.add_argument("--threads", type=int,
                    help="the gateway's server.threads, nginx's worker_processes and the hyper floor's "
                         "loops (default: one per core; the gateway's own default when not given)")
    ap.add_argument("--contenders",
                    help="comma-separated contenders for valid_key and open_loop (default all: "
                         + ",".join(CONTENDERS) + ")")
    ap.add_argument("--rate", type=int, help="the open-loop scenario's fixed rate (default 5000/s; smoke 1000)")
    ap.add_argument("--store-keys", type=int, help="keys in the big store (default 1000000)")
    ap.add_argument("--only", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    ap.add_argument("--profile", choices=["release", "debug"], help="binaries to use (default release; smoke debug)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--out", type=Path, help="directory for results.json, results.md and the plots "
                    "(default bench/results, or a temporary directory with --smoke)")
    ap.add_argument("--docs", action="store_true",
                    help="also write the table and plots into docs/benchmarks.md and docs/bench/")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    a = ap.parse_args()
    s = Settings(a)
    only = a.only.split(",") if a.only else SCENARIOS
    bad = [x for x in only if x not in SCENARIOS]
    if bad:
        print(f"bench/side-by-side: unknown scenario {bad[0]!r}; choose from {', '.join(SCENARIOS)}",
              file=sys.stderr)
        return 2
    if not L.have_wrk():
        print("bench/side-by-side: wrk not found (apt-get install wrk, or scripts/install-test-deps.sh)",
              file=sys.stderr)
        return 2
    if PG_SCENARIOS & set(only):
        why = PG.available()
        if why:
            print(f"bench/side-by-side: the scenarios {', '.join(sorted(PG_SCENARIOS & set(only)))} "
                  f"need PostgreSQL: {why} (or leave them out with --only)", file=sys.stderr)
            return 2
    wanted = a.contenders.split(",") if a.contenders else CONTENDERS
    bad = [x for x in wanted if x not in CONTENDERS]
    if bad:
        print(f"bench/side-by-side: unknown contender {bad[0]!r}; choose from {', '.join(CONTENDERS)}",
              file=sys.stderr)
        return 2
    if "valid_key" in only and {"fastapi-1w", "fastapi-2w"} & set(wanted) and not C.venv_python().exists():
        print("bench/side-by-side: .venv missing: run scripts/install-test-deps.sh", file=sys.stderr)
        return 2
    profile = a.profile or ("debug" if a.smoke else "release")
    if not a.no_build:
        build_binaries(profile)
    target = Path(os.environ.get("CARGO_TARGET_DIR", C.ROOT / "target"))
    build = C.Build(target if target.is_absolute() else C.ROOT / target, profile)
    needed = {"portcullis", "bench-upstream", "openloop"}
    if "hyper-floor" in wanted:
        needed.add("hyper_floor")
    if "seed_app" in wanted and "valid_key" in only:
        needed.add("seed_app")
    if {"store_1m", "store_1m_pg", "three_instances"} & set(only):
        needed.add("bench-keys")
    if build.missing(needed):
        print(f"bench/side-by-side: not built: {', '.join(build.missing(needed))}", file=sys.stderr)
        return 2
    out_dir = a.out or (Path(tempfile.mkdtemp(prefix="pc-bench-out-")) if a.smoke else C.ROOT / "bench" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pc-bench-"))
    ctx: dict = {"procs": []}
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "smoke" if a.smoke else "full", "profile": profile,
        "machine": machine(), "settings": s.as_dict(), "scenarios": {},
    }
    started = time.monotonic()
    try:
        up, up_port = C.start_upstream(build, work, s.upstream_threads)
        ctx["procs"].append(up)
        ctx["upstream_port"] = up_port
        cfg, port, admin = C.gateway_config(work, "portcullis", up_port, users=True)
        creds = C.prepare_gateway(build, cfg)
        ctx["password"] = C.random_password()
        C.add_user(build, cfg, "bench", ctx["password"])
        ctx["client"] = C.add_client(build, cfg)
        gw = C.start_gateway(build, work, "portcullis", cfg, port, creds["key"],
                             threads=s.threads if s.threads_explicit else None)
        gw.extra.update(admin_port=admin, admin_key=creds["admin_key"])
        ctx["procs"].append(gw.proc)
        ctx["portcullis"] = gw
        runs = [C.Running("upstream", up, f"http://127.0.0.1:{up_port}/data", {"X-API-Key": creds["key"]})]
        starts = []
        both = bool({"valid_key", "open_loop"} & set(only))
        if both and "hyper-floor" in wanted:
            starts.append(lambda: C.start_hyper_floor(build, work, up_port, s.threads, creds["key"]))
        if both and "nginx" in wanted:
            starts.append(lambda: C.start_nginx(work, up_port, creds["key"], workers=s.threads))
        starts.append(lambda: gw)
        if both and "nginx+verify" in wanted:
            def verify() -> C.Running:
                r = C.start_nginx_verify(work, up_port, port, creds["key"], workers=s.threads)
                r.extra["also"] = [gw.proc]
                return r
            starts.append(verify)
        if "valid_key" in only:
            starts += [f for name, f in (("fastapi-1w", lambda: C.start_fastapi(work, 1)),
                                         ("fastapi-2w", lambda: C.start_fastapi(work, 2)),
                                         ("seed_app", lambda: C.start_seed_app(build, work)))
                       if name in wanted]
        for start in starts:
            r = start()
            if r is not gw:
                ctx["procs"].append(r.proc)
            runs.append(r)
        time.sleep(1)
        for r in runs:
            r.idle_rss_kib = P.rss_kib(r.pids())
        # The upstream and the gateway always run (the floods and the
        # other scenarios need them); --contenders leaves them out of the
        # comparisons only.
        ctx["contenders"] = [r for r in runs if r.name in wanted]
        for name in only:
            log(f"scenario {name}")
            results["scenarios"][name] = RUNNERS[name](s, work, build, ctx)
    except Exception:
        for p in ctx["procs"]:
            if not p.alive():
                print(f"--- {p.name} exited; its log:\n{p.tail(40)}", file=sys.stderr)
        raise
    finally:
        for p in reversed(ctx["procs"]):
            p.stop()
        if a.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    md = R.markdown(results, plot_dir=out_dir, plot_link="")
    (out_dir / "results.md").write_text(md)
    print(R.summary(results))
    log(f"results: {out_dir / 'results.json'}, {out_dir / 'results.md'}")
    if a.docs:
        R.write_docs(results, C.ROOT / "docs")
        log("docs/benchmarks.md and docs/bench/ updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
