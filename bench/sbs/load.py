"""Load from wrk (Debian's package): one process per traffic stream, a
Lua script written for each run so a fixed request stays wrk's static fast
path, and the result read from one JSON line the script prints."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Prints the run's figures as one line; latencies are in microseconds.
_DONE = r'''
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
'''


@dataclass
class Traffic:
    """One stream of requests: a URL, headers, and how each request varies."""
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    body: str | None = None
    # Each request takes the next line of this file as the value of
    # `vary_header` (prefixed by `vary_prefix`), cycling.
    values_file: Path | None = None
    vary_header: str = ""
    vary_prefix: str = ""
    # Each connection waits this long between its requests (paced traffic,
    # whose latency is read while another stream floods the server).
    delay_ms: int = 0
    # Append the `access_token` of each 200 answer to this file.
    save_tokens: Path | None = None


def _lua(t: Traffic) -> str:
    def q(s: str) -> str:
        return json.dumps(s)  # a JSON string is a valid Lua string literal here

    out = [f"wrk.method = {q(t.method)}"]
    for k, v in t.headers.items():
        out.append(f"wrk.headers[{q(k)}] = {q(v)}")
    if t.body is not None:
        out.append(f"wrk.body = {q(t.body)}")
    if t.values_file is not None:
        out.append(f'''
local values, n, i = {{}}, 0, 0
for line in io.lines({q(str(t.values_file))}) do n = n + 1; values[n] = line end
function init(args)
  -- Threads start at different places in the list.
  i = (tonumber(wrk.thread:get("offset")) or 0) % n
end
function request()
  i = i % n + 1
  wrk.headers[{q(t.vary_header)}] = {q(t.vary_prefix)} .. values[i]
  return wrk.format()
end''')
    if t.delay_ms:
        out.append(f"function delay() return {int(t.delay_ms)} end")
    if t.save_tokens is not None:
        out.append(f'''
local saved = io.open({q(str(t.save_tokens))}, "a")
saved:setvbuf("line")
function response(status, headers, body)
  if status == 200 then
    local tok = body:match('"access_token"%s*:%s*"([^"]+)"')
    if tok then saved:write(tok, "\\n") end
  end
end''')
    out.append(_DONE)
    return "\n".join(out)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run(t: Traffic, *, connections: int, seconds: float, workdir: Path,
        threads: int = 1) -> dict:
    """Runs wrk to completion and returns its figures."""
    return finish(start(t, connections=connections, seconds=seconds, workdir=workdir,
                        threads=threads))


def start(t: Traffic, *, connections: int, seconds: float, workdir: Path,
          threads: int = 1) -> subprocess.Popen:
    """Starts wrk in the background; finish with `finish`."""
    script = workdir / f"wrk-{abs(hash((t.url, t.method, str(t.values_file), t.delay_ms, t.body)))}.lua"
    script.write_text(_lua(t))
    argv = ["wrk", f"-t{threads}", f"-c{max(connections, threads)}",
            f"-d{max(1, round(seconds))}s", "--timeout=5s", "-s", str(script), t.url]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.argv = argv  # type: ignore[attr-defined]
    return p


def finish(p: subprocess.Popen) -> dict:
    try:
        out, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return _parse(subprocess.CompletedProcess(p.args, p.returncode, out, err), p.argv)  # type: ignore[attr-defined]


def _parse(r: subprocess.CompletedProcess, argv: list[str]) -> dict:
    for line in r.stdout.splitlines():
        if line.startswith("WRKJSON "):
            d = json.loads(line[len("WRKJSON "):])
            d["rps"] = d["requests"] / (d["duration_us"] / 1e6) if d["duration_us"] else 0.0
            d["errors"] = d["connect_errors"] + d["read_errors"] + d["write_errors"] + d["timeouts"]
            return d
    raise RuntimeError(f"wrk gave no figures (exit {r.returncode}): {' '.join(argv)}\n{r.stdout}\n{r.stderr}")


# --- openloop (bench/src/bin/openloop.rs) ---------------------------------------
# Fixed-rate load that corrects for coordinated omission, and floods from a
# chosen source address (wrk cannot bind one). Same Traffic, same figures
# (requests, rps, p50_us, p99_us, …) as wrk's.

def _openloop_argv(binary: Path, t: Traffic, *, connections: int, seconds: float,
                   rate: float | None = None, warmup: float = 0, source: str | None = None) -> list[str]:
    argv = [str(binary), "--url", t.url, "--connections", str(connections), "--seconds", str(seconds),
            "--method", t.method]
    if rate:
        argv += ["--rate", str(rate)]
    if warmup:
        argv += ["--warmup", str(warmup)]
    if source:
        argv += ["--source", source]
    for k, v in t.headers.items():
        argv += ["-H", f"{k}: {v}"]
    if t.body is not None:
        argv += ["--body", t.body]
    if t.values_file is not None:
        argv += ["--values", str(t.values_file), "--vary-header", t.vary_header]
        if t.vary_prefix:
            argv += ["--vary-prefix", t.vary_prefix]
    return argv


def openloop_start(binary: Path, t: Traffic, **kw) -> subprocess.Popen:
    """Starts openloop in the background (a flood when `rate` is None)."""
    argv = _openloop_argv(binary, t, **kw)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.argv = argv  # type: ignore[attr-defined]
    return p


def openloop_finish(p: subprocess.Popen) -> dict:
    try:
        out, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    for line in out.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            d["status_errors"] = d["non_2xx"]
            return d
    raise RuntimeError(f"openloop gave no figures (exit {p.returncode}): "
                       f"{' '.join(p.argv)}\n{out}\n{err}")  # type: ignore[attr-defined]


def openloop_run(binary: Path, t: Traffic, **kw) -> dict:
    return openloop_finish(openloop_start(binary, t, **kw))
