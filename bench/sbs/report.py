"""Turns a run's results into a markdown report, SVG bar charts and a list
of the issue's targets, met or not. No plotting library: the charts are
plain SVG written here."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

BEGIN = "<!-- side-by-side:begin (written by bench/side-by-side --docs) -->"
END = "<!-- side-by-side:end -->"


def ms(us) -> str:
    if us is None:
        return "–"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us} µs"


def mib(kib) -> str:
    return "–" if not kib else f"{kib / 1024:.1f} MiB"


def num(x, digits=0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def cpu_us(summary: dict) -> float | None:
    """CPU µs per request from CPU seconds per 10k requests."""
    x = summary.get("cpu_s_per_10k")
    return x * 100 if x else None


# --- targets --------------------------------------------------------------------

def targets(res: dict) -> list[dict]:
    sc = res["scenarios"]
    out = []

    def add(name, target, measured, met):
        out.append({"target": name, "goal": target, "measured": measured, "met": met})

    vk = sc.get("valid_key", {}).get("contenders", {})
    if "portcullis" in vk and "nginx" in vk:
        p, n = vk["portcullis"]["summary"], vk["nginx"]["summary"]
        ratio = p["rps"] / n["rps"] if n["rps"] else 0
        add("Portcullis vs nginx, requests/s (issue 23)", "≥ 1×",
            f"{ratio:.2f}× ({num(p['rps'])} vs {num(n['rps'])})", ratio >= 1)
        add("Portcullis vs nginx, p99", "no worse", f"{ms(p['p99_us'])} vs {ms(n['p99_us'])}",
            p["p99_us"] <= n["p99_us"])
        pc, nc = cpu_us(p), cpu_us(n)
        if pc and nc:
            add("Portcullis vs nginx, CPU per request", "≤ 1×",
                f"{pc / nc:.2f}× ({pc:.1f} vs {nc:.1f} µs)", pc <= nc)
    if "portcullis" in vk and "hyper-floor" in vk:
        pc, fc = cpu_us(vk["portcullis"]["summary"]), cpu_us(vk["hyper-floor"]["summary"])
        if pc and fc:
            add("Portcullis vs the hyper floor, CPU per request", "≤ 1.15×",
                f"{pc / fc:.2f}× ({pc:.1f} vs {fc:.1f} µs)", pc <= 1.15 * fc)
    ol = sc.get("open_loop", {}).get("contenders", {})
    if "portcullis" in ol and ol["portcullis"].get("added_p99_us") is not None:
        p = ol["portcullis"]["added_p99_us"]
        n = ol.get("nginx", {}).get("added_p99_us")
        rate = sc["open_loop"]["rate"]
        add(f"p99 added over the upstream at {num(rate)} req/s (open loop)", "≤ nginx's and ≤ 250 µs",
            f"{ms(p)} (nginx {ms(n)})", p <= 250 and (n is None or p <= n))
    if "seed_app" in vk:
        fast = [vk[k]["summary"]["rps"] for k in ("fastapi-1w", "fastapi-2w") if k in vk]
        if fast:
            best = max(fast)
            ratio = vk["seed_app"]["summary"]["rps"] / best if best else 0
            add("seed_app vs FastAPI (best of 1 and 2 workers), /data requests/s", "≥ 20×",
                f"{ratio:.1f}× ({num(vk['seed_app']['summary']['rps'])} vs {num(best)})", ratio >= 20)
    if "portcullis" in vk:
        idle = vk["portcullis"]["idle_rss_kib"]
        add("Portcullis idle RSS", "≤ 30 MiB", mib(idle), idle <= 30 * 1024)
    uf = sc.get("unknown_flood")
    if uf:
        u = uf["unknown"]
        add("valid p99 during the unknown-key flood", "≤ 1.5× baseline",
            f"{u['p99_ratio']}× ({ms(u['baseline']['p99_us'])} → {ms(u['during']['p99_us'])})",
            u["p99_ratio"] is not None and u["p99_ratio"] <= 1.5)
        if "store_key_lookups" in u:
            # Every request the flood wrote, its warm-up and the ones a
            # blocked address's held connections never read included.
            sent = u["flood"].get("written", u["flood"]["requests"] + u.get("flood_connections", 0))
            distinct = min(sent, u["distinct_keys"])
            add("store queries for well-formed unknown keys", "≤ 1 per distinct key per negative-cache lifetime",
                f"{num(u['store_key_lookups'])} queries for ≤ {num(distinct)} distinct keys sent "
                f"({num(u['flood']['requests'])} answered)", u["store_key_lookups"] <= distinct)
        b = uf["bad_checksum"]
        add("valid p99 during the bad-checksum flood", "≤ 1.5× baseline",
            f"{b['p99_ratio']}× ({ms(b['baseline']['p99_us'])} → {ms(b['during']['p99_us'])})",
            b["p99_ratio"] is not None and b["p99_ratio"] <= 1.5)
        if "store_key_lookups" in b:
            add("store queries for checksum-invalid keys", "0",
                f"{b['store_key_lookups']} for {num(b['flood'].get('written', b['flood']['requests']))} requests sent",
                b["store_key_lookups"] == 0)
    lf = sc.get("login_flood")
    if lf:
        add("proxied p99 during the login (Argon2) flood", "≤ 2× baseline",
            f"{lf['p99_ratio']}× ({ms(lf['baseline']['p99_us'])} → {ms(lf['during']['p99_us'])})",
            lf["p99_ratio"] is not None and lf["p99_ratio"] <= 2)
    return out


# --- SVG ------------------------------------------------------------------------

COLOURS = {"portcullis": "#2b6cb0", "seed_app": "#2f855a", "nginx": "#718096",
           "hyper-floor": "#805ad5", "nginx+verify": "#4a5568",
           "upstream": "#a0aec0", "fastapi-1w": "#c05621", "fastapi-2w": "#dd6b20"}


def bar_svg(title: str, unit: str, bars: list[tuple[str, float, str]]) -> str:
    """A horizontal bar chart: (label, value, colour) per bar."""
    w, left, right, row = 640, 150, 110, 28
    h = 50 + row * len(bars) + 10
    top = max((v for _, v, _ in bars), default=1) or 1
    span = w - left - right
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           f'font-family="sans-serif" font-size="13">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="10" y="24" font-size="15" font-weight="bold">{escape(title)}</text>']
    for i, (label, v, colour) in enumerate(bars):
        y = 40 + i * row
        bw = max(1, v / top * span)
        out.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<rect x="{left}" y="{y + 4}" width="{bw:.1f}" height="{row - 8}" fill="{colour}"/>')
        shown = f"{v:,.0f} {unit}" if v >= 100 else f"{v:,.2f} {unit}"
        out.append(f'<text x="{left + bw + 6:.1f}" y="{y + 17}">{escape(shown)}</text>')
    out.append("</svg>\n")
    return "\n".join(out)


def plots(res: dict) -> dict[str, str]:
    out = {}
    vk = res["scenarios"].get("valid_key", {}).get("contenders", {})
    if vk:
        names = list(vk)
        out["valid-key-rps.svg"] = bar_svg(
            "Valid API key: requests per second (higher is better)", "req/s",
            [(n, vk[n]["summary"]["rps"], COLOURS.get(n, "#4a5568")) for n in names])
        out["valid-key-p99.svg"] = bar_svg(
            "Valid API key: p99 latency (lower is better)", "ms",
            [(n, vk[n]["summary"]["p99_us"] / 1000, COLOURS.get(n, "#4a5568")) for n in names])
    floods = []
    uf = res["scenarios"].get("unknown_flood")
    if uf:
        floods += [("no flood", uf["unknown"]["baseline"]["p99_us"], "#a0aec0"),
                   ("unknown-key flood", uf["unknown"]["during"]["p99_us"], "#2b6cb0"),
                   ("bad-checksum flood", uf["bad_checksum"]["during"]["p99_us"], "#4299e1")]
    lf = res["scenarios"].get("login_flood")
    if lf:
        floods += [("login flood", lf["during"]["p99_us"], "#c05621")]
    if floods:
        out["floods-p99.svg"] = bar_svg("Valid traffic's p99 under floods (lower is better)", "ms",
                                        [(n, v / 1000, c) for n, v, c in floods])
    return out


# --- markdown -------------------------------------------------------------------

def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(res: dict, *, plot_dir: Path | None, plot_link: str) -> str:
    m, s, sc = res["machine"], res["settings"], res["scenarios"]
    lines = [
        f"Run: {res['date']}, mode `{res['mode']}`, `{res['profile']}` binaries, "
        f"{s['reps']} alternating repetitions of {s['seconds']} s after a {s['warmup']} s warm-up, "
        f"wrk with 1 thread and {s['connections']} connections; took {res.get('elapsed_s', '?')} s.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"load average {', '.join(f'{x:.2f}' for x in m['load_avg_at_start'])} at the start "
        f"(a shared machine: load generator, contenders and upstream share its cores). "
        f"{m['rustc']}; {m['nginx']}; {m['wrk']}; {m['redis'].split(' sha')[0]}; "
        f"{m['python']}, {m['fastapi']}, {m['uvicorn']}.",
        "",
    ]
    if plot_dir is not None:
        for name, svg in plots(res).items():
            (plot_dir / name).write_text(svg)
    t = targets(res)
    if t:
        lines += ["**Targets**", "", _row(["target", "goal", "measured", "met"]), _row(["---"] * 4)]
        lines += [_row([x["target"], x["goal"], x["measured"], "yes" if x["met"] else "**no**"]) for x in t]
        lines.append("")
    vk = sc.get("valid_key")
    if vk:
        lines += ["**Valid API key** (`GET /data` with `X-API-Key`; closed loop)", "",
                  _row(["contender", "req/s", "p50", "p99", "max", "CPU s / 10k req", "CPU µs / req",
                        "idle RSS", "peak RSS", "start-up", "non-2xx"]), _row(["---"] * 11)]
        for n, c in vk["contenders"].items():
            x = c["summary"]
            cu = cpu_us(x)
            lines.append(_row([n, num(x["rps"]), ms(x["p50_us"]), ms(x["p99_us"]), ms(x["max_us"]),
                               num(x["cpu_s_per_10k"], 3), num(cu, 1) if cu else "–",
                               mib(c["idle_rss_kib"]), mib(c["peak_rss_kib"]),
                               f"{c['startup_s']:.2f} s" if c["startup_s"] else "–", x["non_2xx"]]))
        lines.append("")
        lines += ratio_lines(vk["contenders"])
        lines += [f"![requests per second]({plot_link}valid-key-rps.svg)",
                  f"![p99 latency]({plot_link}valid-key-p99.svg)", ""]
    ol = sc.get("open_loop")
    if ol:
        lines += [f"**Open loop** (`GET /data` with `X-API-Key` at a fixed {num(ol['rate'])} req/s over "
                  f"{ol['connections']} connections, `openloop`: latency from each request's intended "
                  f"send time, so stalls are not hidden; medians over the reps)", "",
                  _row(["contender", "p50", "p90", "p99", "p99.9", "max", "added p50", "added p99",
                        "CPU µs / req", "generator late p99", "errors", "non-2xx"]), _row(["---"] * 12)]
        for n, x in ol["contenders"].items():
            cu = x["cpu_s_per_10k"] * 100 if x.get("cpu_s_per_10k") else None
            lines.append(_row([n, ms(x["p50_us"]), ms(x["p90_us"]), ms(x["p99_us"]), ms(x["p999_us"]),
                               ms(x["max_us"]), ms(x.get("added_p50_us")), ms(x.get("added_p99_us")),
                               num(cu, 1) if cu else "–", ms(x.get("send_late_p99_us")), x["errors"],
                               x["non_2xx"]]))
        lines.append("")

    def flood_rows(label, f, extra=""):
        return [_row([label, ms(f["baseline"]["p50_us"]), ms(f["baseline"]["p99_us"]),
                      ms(f["during"]["p50_us"]), ms(f["during"]["p99_us"]), f"{f['p99_ratio']}×",
                      num(f["flood"]["rps"]), extra])]
    rows = []
    uf = sc.get("unknown_flood")
    if uf:
        rows += flood_rows("random well-formed unknown keys", uf["unknown"],
                           f"{num(uf['unknown'].get('store_key_lookups'))} store queries")
        rows += flood_rows("keys with a wrong checksum", uf["bad_checksum"],
                           f"{num(uf['bad_checksum'].get('store_key_lookups'))} store queries")
    lf = sc.get("login_flood")
    if lf:
        rows += flood_rows("`POST /oauth/token` password grant (Argon2id)", lf, "")
    if rows:
        lines += [f"**Floods** (paced valid traffic, {s['paced_connections']} connections × one request "
                  f"per {s['paced_delay_ms']} ms, alone and then beside a flood on "
                  f"{s['flood_connections']} (logins: {s['login_connections']}) more connections)", "",
                  _row(["flood", "valid p50 alone", "valid p99 alone", "valid p50 during", "valid p99 during",
                        "p99 ratio", "flood req/s", "store"]), _row(["---"] * 8)] + rows + [""]
        lines += [f"![p99 under floods]({plot_link}floods-p99.svg)", ""]
    j = sc.get("jwt")
    if j:
        lines += ["**Bearer JWT** (`GET /jwt`, EdDSA access tokens from `client_credentials`)", "",
                  _row(["tokens", "req/s", "p50", "p99", "CPU s / 10k req"]), _row(["---"] * 5)]
        f, r = j["first_sight"], j["repeated"]
        lines.append(_row([f"first sight ({num(f['distinct_tokens'])} tokens, "
                           f"{f['first_sight_share'] * 100:.0f}% of requests new)",
                           num(f["rps"]), ms(f["p50_us"]), ms(f["p99_us"]), num(f["cpu_s_per_10k"], 3)]))
        lines.append(_row(["one token, repeated", num(r["rps"]), ms(r["p50_us"]), ms(r["p99_us"]),
                           num(r["cpu_s_per_10k"], 3)]))
        lines.append("")
    lim = sc.get("limiter")
    if lim:
        lines += ["**Rate limiter** (valid key, `1000/second burst 1000000000`, so every request is counted and none refused)", "",
                  _row(["backend", "req/s", "p50", "p99", "CPU s / 10k req"]), _row(["---"] * 5)]
        for n, v in lim.items():
            x = v["summary"]
            lines.append(_row([n, num(x["rps"]), ms(x["p50_us"]), ms(x["p99_us"]), num(x["cpu_s_per_10k"], 3)]))
        lines.append("")
    st = sc.get("store_1m")
    if st:
        lines += [f"**Big store** ({num(st['keys'])} keys in SQLite, {st['db_mib']} MiB, written in "
                  f"{st['fill_s']} s by `bench-keys`; start-up to `/readyz` {st['startup_s']} s; idle RSS "
                  f"{mib(st['idle_rss_kib'])}, peak {mib(st['peak_rss_kib'])})", "",
                  _row(["pass", "req/s", "p50", "p99", "max"]), _row(["---"] * 5)]
        for label, x in ((f"{num(st['sampled_keys'])} sampled keys, first pass (store lookups)", st["first_pass"]),
                         ("the same keys, cached", st["cached"])):
            lines.append(_row([label, num(x["rps"]), ms(x["p50_us"]), ms(x["p99_us"]), ms(x["max_us"])]))
        lines.append("")
    lines += postgres_markdown(res)
    return "\n".join(lines) + "\n"


def _lookups(x: dict) -> str:
    """Store lookups of a pass: how many, and per second while they ran."""
    lk = x.get("store_lookups") or {}
    if not lk.get("lookups"):
        return "0"
    rate = f", {num(lk['per_s'])}/s over {lk['window_s']} s" if lk.get("per_s") else ""
    peak = f" (peak {num(lk['peak_per_s_500ms'])}/s)" if lk.get("peak_per_s_500ms") else ""
    return f"{num(lk['lookups'])}{rate}{peak}"


def _pg_rate(x: dict) -> str:
    """Postgres statements per second in a pass, and what they were."""
    if x.get("pg_statements_per_s") is None:
        return "–"
    secs = x["seconds"]
    rows = x.get("pg_last_used_rows")
    changed = f" changing {num(rows / secs)} rows" if rows is not None else ""
    return (f"{num(x['pg_statements'] / secs)} ({num(x['pg_key_lookups'] / secs)} lookups, "
            f"{num(x['pg_last_used_updates'] / secs, 1 if x['pg_last_used_updates'] < 10 * secs else 0)} "
            f"last-used{changed})")


def postgres_markdown(res: dict) -> list[str]:
    """The Postgres store beside SQLite's, and one gateway beside three."""
    sc = res["scenarios"]
    sq, pg, three = sc.get("store_1m"), sc.get("store_1m_pg"), sc.get("three_instances")
    lines: list[str] = []
    if pg or sq:
        lines += ["**One gateway, a store with many keys: SQLite and Postgres** (sampled keys spread over the "
                  "whole store; a first pass, where each key's first request asks the store, then the same "
                  "keys cached)", "",
                  _row(["store", "pass", "req/s", "p50", "p99", "max", "first-sight share",
                        "store lookups", "Postgres statements/s (key lookups, last-used writes)",
                        "Postgres CPU s / 10k req"]),
                  _row(["---"] * 10)]
        for name, st in (("SQLite", sq), ("Postgres", pg)):
            if not st:
                continue
            for label, x in (("first pass", st["first_pass"]), ("cached", st["cached"])):
                share = x.get("first_sight_share")
                lines.append(_row([
                    f"{name} ({num(st['keys'])} keys, {st['db_mib']} MiB)", label, num(x["rps"]),
                    ms(x["p50_us"]), ms(x["p99_us"]), ms(x["max_us"]),
                    f"{share * 100:.0f}%" if share is not None and label == "first pass" else "–",
                    _lookups(x), _pg_rate(x),
                    num(x.get("postgres_cpu_s_per_10k"), 3) if "postgres_cpu_s_per_10k" in x else "–"]))
        lines.append("")
        if pg:
            lines += [f"Postgres fill: {num(pg['keys'])} keys by `bench-keys` (COPY) in {pg['fill_s']} s; "
                      f"gateway start-up to `/readyz` {pg['startup_s']} s; idle RSS {mib(pg['idle_rss_kib'])}, "
                      f"peak {mib(pg['peak_rss_kib'])}; {pg.get('postgres', '')}.", ""]
    if three:
        lines += [f"**Three gateways, one Postgres store, one Redis for limits** ({num(three['keys'])} keys; "
                  f"the same total wrk connections, shared out between the instances; latency: the middle "
                  f"instance's p50, the slowest instance's p99 and max)", "",
                  _row(["instances", "pass", "req/s (sum)", "p50", "p99", "max", "first-sight share", "store lookups",
                        "Postgres statements/s (key lookups, last-used writes)", "gateways CPU s / 10k req",
                        "Postgres CPU s / 10k req"]),
                  _row(["---"] * 11)]
        for label, part in (("one", three["one"]), ("three", three["three"])):
            for pas in ("first_pass", "cached"):
                x = part[pas]
                lines.append(_row([
                    f"{label} ({'+'.join(str(c) for c in x['connections'])} connections)",
                    pas.replace("_", " "), num(x["rps"]), ms(x["p50_us"]), ms(x["p99_us"]), ms(x["max_us"]),
                    f"{x['first_sight_share'] * 100:.0f}%" if x.get("first_sight_share") is not None else "–",
                    _lookups(x), _pg_rate(x), num(x["gateway_cpu_s_per_10k"], 3),
                    num(x["postgres_cpu_s_per_10k"], 3)]))
        lines.append("")
    return lines


def ratio_lines(vk: dict) -> list[str]:
    """The ratios issue 23 names, from the closed-loop run."""
    p = vk.get("portcullis", {}).get("summary")
    if not p:
        return []
    out = []
    for other in ("nginx", "hyper-floor"):
        o = vk.get(other, {}).get("summary")
        if o and o["rps"] and cpu_us(o) and cpu_us(p):
            out.append(f"Portcullis / {other}: requests/s {p['rps'] / o['rps']:.2f}×, "
                       f"CPU per request {cpu_us(p) / cpu_us(o):.2f}×, p99 {p['p99_us'] / o['p99_us']:.2f}×.")
    v, n = vk.get("nginx+verify", {}).get("summary"), vk.get("nginx", {}).get("summary")
    if v and n and n["rps"] and cpu_us(v) and cpu_us(n):
        out.append(f"nginx + Portcullis's decision endpoint / nginx alone: requests/s {v['rps'] / n['rps']:.2f}×, "
                   f"CPU per request (nginx and the gateway together) {cpu_us(v) / cpu_us(n):.2f}×.")
    return [" ".join(out), ""] if out else []


def summary(res: dict) -> str:
    """A few lines for the terminal (and CI's log)."""
    out = [f"side-by-side ({res['mode']}, {res['profile']}): {len(res['scenarios'])} scenarios "
           f"in {res.get('elapsed_s', '?')} s"]
    for n, c in res["scenarios"].get("valid_key", {}).get("contenders", {}).items():
        x = c["summary"]
        out.append(f"  valid_key {n:<12} {x['rps']:>10,.0f} req/s  p99 {ms(x['p99_us']):>10}  "
                   f"non-2xx {x['non_2xx']}")
    sc = res["scenarios"]
    for n, x in sc.get("open_loop", {}).get("contenders", {}).items():
        out.append(f"  open_loop {n:<12} p50 {ms(x['p50_us']):>10}  p99 {ms(x['p99_us']):>10}  "
                   f"added p99 {ms(x.get('added_p99_us')):>10}  errors {x['errors']}")
    for name in ("store_1m", "store_1m_pg"):
        if name in sc:
            f, c = sc[name]["first_pass"], sc[name]["cached"]
            out.append(f"  {name:<15} first pass {f['rps']:>9,.0f} req/s p99 {ms(f['p99_us']):>10}  "
                       f"lookups {_lookups(f)}; cached {c['rps']:>9,.0f} req/s p99 {ms(c['p99_us'])}")
    if "three_instances" in sc:
        for label in ("one", "three"):
            for pas in ("first_pass", "cached"):
                x = sc["three_instances"][label][pas]
                out.append(f"  three_instances {label:<5} {pas:<10} {x['rps']:>9,.0f} req/s "
                           f"p99 {ms(x['p99_us']):>10}  lookups {_lookups(x)}  non-2xx {x['non_2xx']}")
    for t in targets(res):
        out.append(f"  target {'met' if t['met'] else 'NOT met'}: {t['target']}: {t['measured']} (goal {t['goal']})")
    return "\n".join(out)


def write_docs(res: dict, docs: Path) -> None:
    bench = docs / "bench"
    bench.mkdir(exist_ok=True)
    block = markdown(res, plot_dir=bench, plot_link="bench/")
    (bench / "results.json").write_text(__import__("json").dumps(res, indent=2) + "\n")
    page = docs / "benchmarks.md"
    text = page.read_text()
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: f"{BEGIN}\n{block}{END}", text,
                      flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{BEGIN}\n{block}{END}\n"
    page.write_text(text)
