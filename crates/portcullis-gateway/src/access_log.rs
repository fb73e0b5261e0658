//! The access log line. With `log.format = "json"` it is written straight
//! into the log's batch buffer, in the very shape the JSON subscriber
//! gives every other event (`timestamp`, `level`, `message`, the fields,
//! `target`), but without going through `tracing`'s field visitors and
//! formatter: at tens of thousands of requests a second those cost more
//! than the rest of the line's work (measured with `bench/side-by-side`).
//! With `format = "text"` it is an ordinary `tracing` event.
//!
//! The log level still decides: the line is written only when
//! `portcullis::access` is enabled at `info`, as before.

use crate::logwriter::BatchLog;
use portcullis_core::time::civil_from_days;
use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// What one access-log line says.
pub struct Line<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency_us: u64,
    pub client_ip: IpAddr,
    pub key_id: &'a str,
    pub principal: &'a str,
    pub reason: &'a str,
    pub tls: bool,
    /// The W3C trace id (32 lowercase hex digits) and this hop's span id
    /// (16): the `traceparent` the upstream was given.
    pub trace_id: &'a str,
    pub span_id: &'a str,
}

thread_local! {
    // One line's bytes, reused: no allocation per request once warm.
    static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Writes `line` to `sink` as JSON, or as a `tracing` event without one.
pub fn emit(sink: Option<&BatchLog>, line: &Line<'_>) {
    if !tracing::enabled!(target: "portcullis::access", tracing::Level::INFO) {
        return;
    }
    let Some(sink) = sink else {
        tracing::info!(
            target: "portcullis::access",
            request_id = line.request_id,
            method = line.method,
            path = line.path,
            route = line.route,
            status = line.status,
            latency_us = line.latency_us,
            client_ip = %line.client_ip,
            key_id = line.key_id,
            principal = line.principal,
            reason = line.reason,
            tls = line.tls,
            trace_id = line.trace_id,
            span_id = line.span_id,
            "request"
        );
        return;
    };
    BUF.with(|b| {
        // Re-entered only if writing panicked half-way; then skip the line
        // rather than panic again.
        let Ok(mut b) = b.try_borrow_mut() else {
            return;
        };
        b.clear();
        json(line, SystemTime::now(), &mut b);
        sink.append(&b);
    });
}

/// The JSON line, newline-terminated, as the `tracing` JSON subscriber
/// (flattened event) would write it.
pub fn json(l: &Line<'_>, now: SystemTime, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(now, out);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\"");
    field_str(out, b",\"request_id\":\"", l.request_id);
    field_str(out, b",\"method\":\"", l.method);
    field_str(out, b",\"path\":\"", l.path);
    field_str(out, b",\"route\":\"", l.route);
    out.extend_from_slice(b",\"status\":");
    decimal(out, u64::from(l.status));
    out.extend_from_slice(b",\"latency_us\":");
    decimal(out, l.latency_us);
    out.extend_from_slice(b",\"client_ip\":\"");
    ip(out, l.client_ip);
    out.push(b'"');
    field_str(out, b",\"key_id\":\"", l.key_id);
    field_str(out, b",\"principal\":\"", l.principal);
    field_str(out, b",\"reason\":\"", l.reason);
    out.extend_from_slice(if l.tls {
        b",\"tls\":true"
    } else {
        b",\"tls\":false"
    });
    field_str(out, b",\"trace_id\":\"", l.trace_id);
    field_str(out, b",\"span_id\":\"", l.span_id);
    out.extend_from_slice(b",\"target\":\"portcullis::access\"}\n");
}

/// One string field: `head` is its `,"name":"`, whole (one copy, not
/// three, for each of the line's nine string fields).
fn field_str(out: &mut Vec<u8>, head: &[u8], v: &str) {
    out.extend_from_slice(head);
    escape(out, v);
    out.push(b'"');
}

/// The bytes JSON strings must escape (RFC 8259 §7): control characters,
/// quote and backslash. A table, so the scan is one load per byte.
static ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// JSON string escaping (RFC 8259 §7): quote, backslash and control
/// characters; everything else (UTF-8 included) as is. Runs of bytes that
/// need nothing are copied whole: most fields are all such bytes.
fn escape(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        if !ESCAPED[usize::from(c)] {
            continue;
        }
        out.extend_from_slice(&b[from..i]);
        from = i + 1;
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]),
        }
    }
    out.extend_from_slice(&b[from..]);
}

/// `n` in decimal, without `core::fmt` (it is on every request's path).
fn decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(portcullis_core::decimal::digits(n, &mut [0u8; 20]));
}

/// `n` in exactly `width` decimal digits, zero-padded (the high digits
/// dropped if it has more: never here, the callers' values fit).
fn padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 8];
    let w = width.min(digits.len());
    for d in digits[..w].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[..w]);
}

/// The client address as `IpAddr`'s `Display` writes it.
fn ip(out: &mut Vec<u8>, addr: IpAddr) {
    let mut buf = [0u8; portcullis_core::net::ADDRESS_MAX];
    out.extend_from_slice(portcullis_core::net::write_address(addr, &mut buf));
}

/// `2026-11-23T09:18:26.071019Z`: RFC 3339 in UTC with microseconds, as
/// `tracing_subscriber`'s default timer writes it.
fn timestamp(now: SystemTime, out: &mut Vec<u8>) {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    padded(out, u64::try_from(y).unwrap_or(0), 4);
    out.push(b'-');
    padded(out, u64::from(m), 2);
    out.push(b'-');
    padded(out, u64::from(day), 2);
    out.push(b'T');
    padded(out, rem / 3600, 2);
    out.push(b':');
    padded(out, rem % 3600 / 60, 2);
    out.push(b':');
    padded(out, rem % 60, 2);
    out.push(b'.');
    padded(out, u64::from(d.subsec_micros()), 6);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn line() -> Line<'static> {
        Line {
            request_id: "abcdEFGH-1f",
            method: "GET",
            path: "/data/\"odd\"\\\u{1}é",
            route: "/data/**",
            status: 200,
            latency_us: 1234,
            client_ip: "2001:db8::1".parse().unwrap(),
            key_id: "key_123",
            principal: "alice",
            reason: "allowed",
            tls: true,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            span_id: "00f067aa0ba902b7",
        }
    }

    proptest::proptest! {
        /// The hand-written digits say what `core::fmt` would.
        /// (Addresses: `portcullis_core::net`'s property test.)
        #[test]
        fn numbers_and_times_match_fmt(
            n in proptest::prelude::any::<u64>(),
            micros in 0u64..253_402_300_799_999_999,
        ) {
            let mut out = Vec::new();
            decimal(&mut out, n);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
            let t = UNIX_EPOCH + Duration::from_micros(micros);
            let mut out = Vec::new();
            timestamp(t, &mut out);
            let secs = micros / 1_000_000;
            let (y, m, day) = civil_from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            let want = format!(
                "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                micros % 1_000_000
            );
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    proptest::proptest! {
        /// Any string reads back as itself from the JSON written, and
        /// no byte but those RFC 8259 requires is escaped.
        #[test]
        fn escaped_strings_read_back_as_themselves(v in "\\PC*|[\\x00-\\x7f]*") {
            let mut out = Vec::new();
            escape(&mut out, &v);
            let json = format!("\"{}\"", String::from_utf8(out).unwrap());
            let back: String = serde_json::from_str(&json).unwrap();
            proptest::prop_assert_eq!(&back, &v);
            let plain = v.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\');
            proptest::prop_assert_eq!(plain, json.len() == v.len() + 2);
        }
    }

    #[test]
    fn the_line_is_json_with_the_subscribers_shape() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_425_506_071_019);
        let mut out = Vec::new();
        json(&line(), t, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2026-11-23T09:18:26.071019Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request");
        assert_eq!(v["target"], "portcullis::access");
        assert_eq!(v["path"], "/data/\"odd\"\\\u{1}é");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_us"], 1234);
        assert_eq!(v["client_ip"], "2001:db8::1");
        assert_eq!(v["tls"], true);
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["span_id"], "00f067aa0ba902b7");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 17, "{keys:?}");
    }
}
