//! W3C Trace Context: `trace::TraceContext::parse` / `from_headers` on a
//! client's `traceparent`, and `trace::tracestate_ok` on its `tracestate`.
//!
//! Input: lines. Line 1 is parsed as a `traceparent` value (raw bytes);
//! every line is also a `traceparent` header line and a `tracestate` line
//! of one request.
//!
//! Invariants:
//! - a parsed context has non-zero ids and writes back (version 00) as a
//!   value that parses to the same context; its hex ids are lowercase;
//! - a context continued from it keeps its trace id and flags;
//! - `from_headers` accepts only a request with exactly one line, and
//!   agrees with `parse` on that line;
//! - an accepted `tracestate` is at most 512 bytes over its lines.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis_core::trace::{MAX_TRACESTATE, TRACEPARENT, TRACESTATE, TraceContext, tracestate_ok};
use portcullis_fuzz::lines;

fuzz_target!(|data: &[u8]| {
    let all: Vec<&[u8]> = lines(data).take(40).collect();
    let first = all.first().copied().unwrap_or_default();
    if let Some(t) = TraceContext::parse(first) {
        assert!(t.trace_id != [0; 16] && t.span_id != [0; 8]);
        let written = t.header();
        assert_eq!(TraceContext::parse(&written), Some(t));
        assert!(written.iter().all(|b| !b.is_ascii_uppercase()));
        let c = TraceContext::next(Some(&t), [0; 16], [0; 8]);
        assert_eq!((c.trace_id, c.flags), (t.trace_id, t.flags));
        assert!(c.span_id != [0; 8]);
    }
    let mut h = HeaderMap::new();
    for l in &all {
        if let Ok(v) = HeaderValue::from_bytes(l) {
            h.append(TRACEPARENT, v.clone());
            h.append(TRACESTATE, v);
        }
    }
    let found = TraceContext::from_headers(&h);
    let lines: Vec<&HeaderValue> = h.get_all(TRACEPARENT).iter().collect();
    match lines.as_slice() {
        [one] => assert_eq!(found, TraceContext::parse(one.as_bytes())),
        _ => assert_eq!(found, None),
    }
    if tracestate_ok(&h) {
        let len: usize = h.get_all(TRACESTATE).iter().map(HeaderValue::len).sum();
        assert!(len <= MAX_TRACESTATE);
    }
});
