"""Processes the harness starts: free ports, readiness, and what a process
tree costs, read from /proc (CPU seconds, resident and peak memory)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid: int) -> list[int]:
    """`pid` and every process below it (nginx workers, uvicorn workers)."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes, from /proc/PID/stat."""
    total = 0
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields after the name: state is [0]; utime and stime are fields
        # 14 and 15 of stat(5), so [11] and [12] here.
        total += int(f[11]) + int(f[12])
    return total / CLK_TCK


def _status_kib(pids: list[int], field: str) -> int:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def rss_kib(pids: list[int]) -> int:
    return _status_kib(pids, "VmRSS")


def peak_rss_kib(pids: list[int]) -> int:
    """Sum of each process's own peak (VmHWM): an upper bound for a tree."""
    return _status_kib(pids, "VmHWM")


class Proc:
    """A started server, its output in a file, stopped with SIGTERM."""

    def __init__(self, name: str, argv: list[str], *, env=None, cwd=None, log: Path,
                 stdin_text: str | None = None):
        self.name = name
        self.log = log
        self.argv = argv
        out = open(log, "wb")
        self.started = time.monotonic()
        self.p = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            start_new_session=True,
        )
        if stdin_text is not None:
            self.p.stdin.write(stdin_text.encode())
            self.p.stdin.close()
        out.close()

    @property
    def pid(self) -> int:
        return self.p.pid

    def pids(self) -> list[int]:
        return tree(self.p.pid)

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.p.poll() is not None:
            return
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()


def http(url: str, *, method="GET", headers=None, body: bytes | None = None,
         timeout=5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(proc: Proc, url: str, *, headers=None, want=200, timeout=60.0) -> float:
    """Polls `url` until it answers `want`; returns seconds since the start."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited during start-up:\n{proc.tail()}")
        try:
            status, _ = http(url, headers=headers, timeout=2)
            if status == want:
                return time.monotonic() - proc.started
            last = f"status {status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout}s ({last}):\n{proc.tail()}")
