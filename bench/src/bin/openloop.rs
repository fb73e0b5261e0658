//! A small HTTP/1.1 load generator for bench/side-by-side, in two modes:
//!
//! - open loop (`--rate R`): requests go out on a fixed schedule, request
//!   `i` at `start + i / R`, spread over `--connections C` keep-alive
//!   connections (connection `k` sends requests `k`, `k + C`, …). Latency
//!   is measured from each request's *intended* send time, so a server
//!   that stalls is charged for the requests that queued behind the stall
//!   (no coordinated omission, as in wrk2).
//! - closed loop (no `--rate`): each connection sends its next request as
//!   soon as the last is answered; a flood.
//!
//! Unlike wrk it binds a source address (`--source 127.0.0.2`), so a flood
//! comes from another address than the valid traffic, as a real one would.
//!
//! Usage: `openloop --url http://IP:PORT/PATH [--rate R] [--connections C]
//! [--seconds S] [--warmup S] [--source IP] [-H 'Name: value']...
//! [--method M] [--body B] [--values FILE --vary-header NAME [--vary-prefix P]]`
//!
//! Prints one JSON line: requests, errors, non_2xx, requests written (warm-up
//! included), achieved rps, latency
//! percentiles (p50/p90/p99/p99.9/max, µs) and, in open loop, how late the
//! generator itself woke to send a request its connection was free for
//! (`send_late_p99_us`; when that is large the machine, not the server, is
//! behind, and the run says little).
//!
//! One blocking thread per connection: simple, and the sleep that paces
//! each connection is the kernel's high-resolution one.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Args {
    addr: SocketAddr,
    host: String,
    path: String,
    rate: Option<f64>,
    connections: usize,
    seconds: f64,
    warmup: f64,
    source: Option<IpAddr>,
    headers: Vec<String>,
    method: String,
    body: String,
    values: Vec<String>,
    vary_header: String,
    vary_prefix: String,
}

const USAGE: &str = "usage: openloop --url http://IP:PORT/PATH [--rate R] [--connections C] [--seconds S] \
[--warmup S] [--source IP] [-H 'Name: value']... [--method M] [--body B] \
[--values FILE --vary-header NAME [--vary-prefix P]]";

fn parse() -> Result<Args, String> {
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 80)),
        host: String::new(),
        path: String::new(),
        rate: None,
        connections: 16,
        seconds: 10.0,
        warmup: 0.0,
        source: None,
        headers: Vec::new(),
        method: "GET".into(),
        body: String::new(),
        values: Vec::new(),
        vary_header: String::new(),
        vary_prefix: String::new(),
    };
    let mut url = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut v = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        let num = |s: String| s.parse::<f64>().map_err(|_| format!("not a number: {s:?}"));
        match flag.as_str() {
            "--url" => url = Some(v()?),
            "--rate" => a.rate = Some(num(v()?)?).filter(|r| *r > 0.0),
            "--connections" | "-c" => a.connections = num(v()?)?.max(1.0) as usize,
            "--seconds" | "-d" => a.seconds = num(v()?)?,
            "--warmup" => a.warmup = num(v()?)?,
            "--source" => {
                a.source = Some(
                    v()?.parse()
                        .map_err(|_| "--source: not an IP".to_string())?,
                )
            }
            "-H" | "--header" => a.headers.push(v()?),
            "--method" => a.method = v()?,
            "--body" => a.body = v()?,
            "--values" => {
                let f = v()?;
                let text = std::fs::read_to_string(&f).map_err(|e| format!("--values {f}: {e}"))?;
                a.values = text
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--vary-header" => a.vary_header = v()?,
            "--vary-prefix" => a.vary_prefix = v()?,
            _ => return Err(format!("unknown argument {flag:?}; {USAGE}")),
        }
    }
    let url = url.ok_or_else(|| format!("--url is required; {USAGE}"))?;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs: {url}"))?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    a.addr = hostport
        .parse()
        .map_err(|_| format!("the URL's host must be IP:PORT: {hostport}"))?;
    a.host = hostport.to_owned();
    a.path = if path.is_empty() {
        "/".into()
    } else {
        path.into()
    };
    if !a.vary_header.is_empty() && a.values.is_empty() {
        return Err("--vary-header needs a non-empty --values file".into());
    }
    Ok(a)
}

/// The bytes of request `i` (the varying header takes value `i`).
fn request(a: &Args, i: usize) -> Vec<u8> {
    let mut r = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", a.method, a.path, a.host);
    for h in &a.headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if !a.vary_header.is_empty() {
        let v = &a.values[i % a.values.len()];
        r.push_str(&format!("{}: {}{}\r\n", a.vary_header, a.vary_prefix, v));
    }
    if !a.body.is_empty() || a.method != "GET" {
        r.push_str(&format!("Content-Length: {}\r\n", a.body.len()));
    }
    r.push_str("\r\n");
    r.push_str(&a.body);
    r.into_bytes()
}

fn connect(a: &Args) -> std::io::Result<TcpStream> {
    let s = match a.source {
        None => TcpStream::connect_timeout(&a.addr, Duration::from_secs(5))?,
        // std cannot bind before connecting; a one-off tokio socket can.
        Some(src) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?;
            let tcp = rt.block_on(async {
                let s = tokio::net::TcpSocket::new_v4()?;
                s.bind(SocketAddr::new(src, 0))?;
                s.connect(a.addr).await
            })?;
            let s = tcp.into_std()?;
            s.set_nonblocking(false)?;
            s
        }
    };
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response; returns its status and whether the server closes
/// the connection after it (`Connection: close`, as nginx says on a
/// keep-alive connection's 1000th request). `buf` keeps bytes past it.
fn response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed mid-response");
    let mut chunk = [0u8; 16384];
    let mut fill = |s: &mut TcpStream, buf: &mut Vec<u8>| -> std::io::Result<()> {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(eof());
        }
        buf.extend_from_slice(&chunk[..n]);
        Ok(())
    };
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let close = head
        .lines()
        .any(|l| l.starts_with("connection:") && l.contains("close"));
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        let mut at = head_end;
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[at..], b"\r\n") {
                    break at + i;
                }
                fill(s, buf)?;
            };
            let size_text = String::from_utf8_lossy(&buf[at..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            // The chunk, its CRLF; the last chunk's CRLF ends the body
            // (no trailers expected from these servers).
            let end = line_end + 2 + size + 2;
            while buf.len() < end {
                fill(s, buf)?;
            }
            at = end;
            if size == 0 {
                break;
            }
        }
        buf.drain(..at);
    } else {
        let len: usize = header("content-length:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            fill(s, buf)?;
        }
        buf.drain(..head_end + len);
    }
    Ok((status, close))
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    late_us: Vec<u32>,
    errors: u64,
    non_2xx: u64,
    /// Requests written, warm-up included: what the server may have read.
    written: u64,
}

fn worker(a: Arc<Args>, k: usize, start: Instant, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16384);
    let end = start + Duration::from_secs_f64(a.warmup + a.seconds);
    let measured_from = start + Duration::from_secs_f64(a.warmup);
    let mut j = 0usize;
    loop {
        let i = j * a.connections + k;
        j += 1;
        let intended = match a.rate {
            Some(r) => start + Duration::from_secs_f64(i as f64 / r),
            None => Instant::now(),
        };
        if intended >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        // How late this thread woke for a request it was free to send on
        // time: the generator's own delay (a busy machine), apart from the
        // delay a slow previous response causes (the server's).
        let mut woke_late = None;
        if intended > now {
            std::thread::sleep(intended - now);
            woke_late = Some(intended.elapsed());
        }
        let sent = Instant::now();
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match connect(&a) {
                Ok(s) => conn.insert(s),
                Err(_) => {
                    t.errors += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let ok = s.write_all(&request(&a, i)).and_then(|_| {
            t.written += 1;
            response(s, &mut buf)
        });
        let done = Instant::now();
        if let Ok((_, true)) = ok {
            // The next request goes on a new connection, as a browser's would.
            conn = None;
            buf.clear();
        }
        if intended < measured_from {
            if ok.is_err() {
                conn = None;
                buf.clear();
            }
            continue;
        }
        match ok {
            Ok((status, _)) => {
                if !(200..300).contains(&status) {
                    t.non_2xx += 1;
                }
                let from = if a.rate.is_some() { intended } else { sent };
                t.latencies_us
                    .push((done - from).as_micros().min(u32::MAX as u128) as u32);
                if let Some(l) = woke_late {
                    t.late_us.push(l.as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Err(_) => {
                t.errors += 1;
                conn = None;
                buf.clear();
            }
        }
    }
    t
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("openloop: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    // A moment for every thread to start before the first intended send.
    let start = Instant::now() + Duration::from_millis(50);
    let handles: Vec<_> = (0..a.connections)
        .map(|k| {
            let (a, stop) = (a.clone(), stop.clone());
            std::thread::spawn(move || worker(a, k, start, stop))
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        match h.join() {
            Ok(t) => {
                all.latencies_us.extend(t.latencies_us);
                all.late_us.extend(t.late_us);
                all.errors += t.errors;
                all.non_2xx += t.non_2xx;
                all.written += t.written;
            }
            Err(_) => all.errors += 1,
        }
    }
    all.latencies_us.sort_unstable();
    all.late_us.sort_unstable();
    let n = all.latencies_us.len();
    let mean = if n > 0 {
        all.latencies_us.iter().map(|&x| x as f64).sum::<f64>() / n as f64
    } else {
        0.0
    };
    let l = &all.latencies_us;
    println!(
        "{{\"mode\":\"{}\",\"rate\":{},\"connections\":{},\"seconds\":{},\"requests\":{},\"errors\":{},\
\"non_2xx\":{},\"rps\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\
\"mean_us\":{:.1},\"send_late_p50_us\":{},\"send_late_p99_us\":{},\"written\":{}}}",
        if a.rate.is_some() { "open" } else { "closed" },
        a.rate.unwrap_or(0.0),
        a.connections,
        a.seconds,
        n,
        all.errors,
        all.non_2xx,
        n as f64 / a.seconds,
        pct(l, 50.0),
        pct(l, 90.0),
        pct(l, 99.0),
        pct(l, 99.9),
        l.last().copied().unwrap_or(0),
        mean,
        pct(&all.late_us, 50.0),
        pct(&all.late_us, 99.0),
        all.written,
    );
    ExitCode::SUCCESS
}
