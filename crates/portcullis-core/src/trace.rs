//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): reading a
//! client's `traceparent`, and the one Portcullis passes on.
//!
//! A request is one span of a trace: Portcullis continues the client's
//! trace (same trace id and flags, a new span id for its own hop) or, when
//! the client sent none or a malformed one, starts a new trace. The upstream
//! sees Portcullis's span as its parent, and the access log names both ids,
//! so logs, metrics and the upstream's traces line up.
//!
//! The header is attacker-chosen bytes: parsed strictly, as the spec says a
//! receiver must (§3.2.2–3.2.3): exactly lowercase hex of the right widths,
//! no all-zero id, version `ff` refused, a future version read for its
//! first four fields only. Anything else starts a new trace; it never
//! refuses a request.

use http::{HeaderMap, HeaderName};

/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The most `tracestate` passed on, in bytes over all its lines: the
/// spec's 512 (§3.3.1.5), beyond which whole entries may be dropped;
/// Portcullis drops the header rather than pick entries.
pub const MAX_TRACESTATE: usize = 512;
/// The most list members a `tracestate` may have (§3.3.1.1).
const MAX_MEMBERS: usize = 32;

/// One span's identity: its trace, its own id and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace's id; never all zero.
    pub trace_id: [u8; 16],
    /// The span's id (a `traceparent`'s `parent-id`); never all zero.
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

/// The sampled flag.
pub const SAMPLED: u8 = 0x01;

impl TraceContext {
    /// Reads a `traceparent` value, or `None` when it is not one.
    pub fn parse(v: &[u8]) -> Option<TraceContext> {
        // version "-" trace-id "-" parent-id "-" trace-flags: 2+1+32+1+16+1+2.
        if v.len() < 55 {
            return None;
        }
        let version = hex_byte(&v[0..2])?;
        if version == 0xff {
            return None;
        }
        // Version 00 is exactly 55 bytes; a later version may append
        // fields, after a dash (§3.2.4.1).
        if (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, b) in span_id.iter_mut().enumerate() {
            *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&v[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The request's single `traceparent`, when it has exactly one valid
    /// line (two lines are ambiguous: a new trace starts).
    pub fn from_headers(h: &HeaderMap) -> Option<TraceContext> {
        let mut all = h.get_all(TRACEPARENT).iter();
        let one = all.next()?;
        if all.next().is_some() {
            return None;
        }
        TraceContext::parse(one.as_bytes())
    }

    /// This hop's span in the trace `parent` belongs to, with `span_id`
    /// as its own id (an all-zero one is made non-zero); or, without a
    /// parent, a new trace `trace_id`, sampled (Portcullis records every
    /// request in its access log).
    pub fn next(parent: Option<&TraceContext>, trace_id: [u8; 16], span_id: [u8; 8]) -> Self {
        let span_id = nonzero(span_id);
        match parent {
            // Only the sampled bit is defined for version 00; others
            // are passed on as they came (§3.2.2.5 lets a version-00
            // writer clear unknown bits, but nothing requires it).
            Some(p) => TraceContext {
                trace_id: p.trace_id,
                span_id,
                flags: p.flags,
            },
            None => TraceContext {
                trace_id: nonzero(trace_id),
                span_id,
                flags: SAMPLED,
            },
        }
    }

    /// The version-00 `traceparent` naming this span as the parent.
    pub fn header(&self) -> [u8; 55] {
        let mut out = [0u8; 55];
        out[0] = b'0';
        out[1] = b'0';
        out[2] = b'-';
        hex_into(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        hex_into(&self.span_id, &mut out[36..52]);
        out[52] = b'-';
        hex_into(&[self.flags], &mut out[53..55]);
        out
    }

    /// The trace id in lowercase hex.
    pub fn trace_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex_into(&self.trace_id, &mut out);
        out
    }

    /// The span id in lowercase hex.
    pub fn span_hex(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        hex_into(&self.span_id, &mut out);
        out
    }
}

/// Whether the request's `tracestate` may be passed on beside a continued
/// `traceparent`: every line visible ASCII (and spaces), at most
/// [`MAX_TRACESTATE`] bytes in all, at most 32 list members, each
/// `key=value` with a key in the spec's alphabet. Otherwise it is dropped
/// (§3.3.1: a vendor's state is optional; a malformed one must not travel).
pub fn tracestate_ok(h: &HeaderMap) -> bool {
    let mut len = 0usize;
    let mut members = 0usize;
    for v in h.get_all(TRACESTATE) {
        len += v.len();
        if len > MAX_TRACESTATE {
            return false;
        }
        for m in v.as_bytes().split(|&b| b == b',') {
            let m = trim_ows(m);
            if m.is_empty() {
                continue;
            }
            members += 1;
            if members > MAX_MEMBERS || !member_ok(m) {
                return false;
            }
        }
    }
    true
}

/// `key "=" value` (§3.3.1.3): a key of lowercase letters, digits and
/// `_-*/@` starting with a letter or digit (at most 256 bytes); a value of
/// at most 256 printable bytes other than `,` and `=`, not ending in a
/// space.
fn member_ok(m: &[u8]) -> bool {
    let Some(eq) = m.iter().position(|&b| b == b'=') else {
        return false;
    };
    let (key, value) = (&m[..eq], &m[eq + 1..]);
    let key_ok = !key.is_empty()
        && key.len() <= 256
        && (key[0].is_ascii_lowercase() || key[0].is_ascii_digit())
        && key.iter().all(|&b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
        });
    let value_ok = !value.is_empty()
        && value.len() <= 256
        && value.last() != Some(&b' ')
        && value
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=');
    key_ok && value_ok
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn nonzero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id.iter().all(|&b| b == 0) {
        id[N - 1] = 1;
    }
    id
}

/// Two lowercase hex digits (the spec allows no uppercase).
fn hex_byte(s: &[u8]) -> Option<u8> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(digit(s[0])? << 4 | digit(s[1])?)
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specs_example_round_trips() {
        let t = TraceContext::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(t.flags, SAMPLED);
        assert_eq!(&t.header()[..], EXAMPLE.as_bytes());
        assert_eq!(&t.trace_hex()[..], b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(&t.span_hex()[..], b"00f067aa0ba902b7");
    }

    #[test]
    fn malformed_values_are_not_trace_contexts() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceContext::parse(bad.as_bytes()), None, "{bad}");
        }
        // A later version may append fields after a dash.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(TraceContext::parse(later.as_bytes()).is_some());
    }

    #[test]
    fn two_traceparent_lines_start_a_new_trace() {
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static(EXAMPLE));
        assert!(TraceContext::from_headers(&h).is_some());
        h.append(TRACEPARENT, HeaderValue::from_static(EXAMPLE));
        assert_eq!(TraceContext::from_headers(&h), None);
    }

    #[test]
    fn next_continues_or_starts() {
        let p = TraceContext::parse(EXAMPLE.as_bytes()).unwrap();
        let c = TraceContext::next(Some(&p), [9; 16], [7; 8]);
        assert_eq!(
            (c.trace_id, c.span_id, c.flags),
            (p.trace_id, [7; 8], p.flags)
        );
        let n = TraceContext::next(None, [0; 16], [0; 8]);
        assert!(n.trace_id != [0; 16] && n.span_id != [0; 8]);
        assert_eq!(n.flags, SAMPLED);
    }

    #[test]
    fn tracestate_is_passed_only_when_well_formed_and_small() {
        let mut h = HeaderMap::new();
        assert!(tracestate_ok(&h));
        h.append(
            TRACESTATE,
            HeaderValue::from_static("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"),
        );
        assert!(tracestate_ok(&h));
        h.append(TRACESTATE, HeaderValue::from_static("Bad=1"));
        assert!(!tracestate_ok(&h));
        let mut h = HeaderMap::new();
        h.insert(
            TRACESTATE,
            HeaderValue::from_str(&"a=b,".repeat(40)).unwrap(),
        );
        assert!(!tracestate_ok(&h));
        let mut h = HeaderMap::new();
        h.insert(
            TRACESTATE,
            HeaderValue::from_str(&format!("k={}", "v".repeat(600))).unwrap(),
        );
        assert!(!tracestate_ok(&h));
    }

    proptest::proptest! {
        /// Whatever bytes arrive, a value that parses is written back as a
        /// version-00 header that parses to the same context.
        #[test]
        fn whatever_parses_is_written_back_the_same(v in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            if let Some(t) = TraceContext::parse(&v) {
                proptest::prop_assert_eq!(TraceContext::parse(&t.header()), Some(t));
            }
        }

        /// Every context written is one a receiver accepts.
        #[test]
        fn every_context_written_parses(t in proptest::array::uniform16(proptest::num::u8::ANY),
                                        s in proptest::array::uniform8(proptest::num::u8::ANY),
                                        f in proptest::num::u8::ANY,
                                        continued in proptest::bool::ANY) {
            let parent = TraceContext { trace_id: [1; 16], span_id: [1; 8], flags: f };
            let c = TraceContext::next(continued.then_some(&parent), t, s);
            proptest::prop_assert_eq!(TraceContext::parse(&c.header()), Some(c));
        }
    }
}
