//! One canonical spelling of a request path, decided before anything looks
//! at the path.
//!
//! A gateway that matches routes on one spelling of a path while the
//! upstream serves another is open: `/w/%70rivate/secret` is not
//! `/w/private/**` to a byte-comparing router, but it is to every server
//! that decodes its path (WSGI's `PATH_INFO`, Starlette, Go's `net/http`).
//! So the path is put in one form first, and routing, the decision
//! endpoint, the log and the forwarded request all use that form.
//!
//! The canonical form is the *decoded* path written with as few escapes as
//! possible: every `%XX` is decoded, and a byte is written literally when a
//! path may carry it literally (RFC 3986 `pchar`: unreserved, sub-delims
//! other than `;`, `:` and `@`), else as `%XX` with upper-case hex (space,
//! `"`, `<`, `>`, `?`, `#`, `[`, `]`, `^`, `` ` ``, `{`, `|`, `}` and every
//! non-ASCII byte). Two spellings that decode to the same bytes therefore
//! have one canonical form, and one that decodes differently has another:
//! matching canonical forms is matching what a decoding server sees.
//!
//! Spellings whose meaning differs between servers are refused, not
//! rewritten (RFC 3986 §6.2.2 and the gap between servers' readings):
//! - an encoded `/` (`%2F`): one server splits on it, another does not;
//! - `\`, literal or encoded: Windows servers and some proxies read `/`;
//! - `;`, literal or encoded: Java servers strip `;params` from segments;
//! - an encoded `.` and dot segments (`.`, `..`): removed by some servers
//!   before routing and by none after;
//! - an encoded `%` (`%25`): a second decoding would see another path;
//! - empty segments (`//`), except one trailing slash: merged by some;
//! - control characters (C0 with NUL, DEL, and C1 such as NEL U+0085),
//!   literal or encoded;
//! - escapes that do not decode to UTF-8 (overlong forms such as
//!   `%C0%AF`, lone continuation bytes, surrogates) and broken escapes;
//! - the four non-ASCII letters whose simple case mapping is ASCII (`İ`
//!   U+0130 lower-cases to `i`, `ı` U+0131 upper-cases to `I`, `ſ` U+017F
//!   to `S`, the Kelvin sign U+212A lower-cases to `k`): a case-insensitive
//!   server (ASP.NET, IIS, Java's `equalsIgnoreCase`) reads `/admın` as
//!   `/ADMIN`, which the route table, matching ASCII case insensitively,
//!   would not. These four are the whole list in Unicode's data.
//!
//! A path already in canonical form is returned borrowed: the common case
//! costs one scan and no allocation.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Does not start with `/`.
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BrokenEscape,
    /// `%2F`.
    EncodedSlash,
    /// `%2E`.
    EncodedDot,
    /// `%25`.
    EncodedPercent,
    /// `\` or `%5C`.
    Backslash,
    /// `;` or `%3B`.
    PathParameter,
    /// A byte below 0x20, or 0x7F, literal or encoded.
    ControlCharacter,
    /// The decoded bytes are not UTF-8.
    InvalidUtf8,
    /// A `.` or `..` segment.
    DotSegment,
    /// An empty segment other than one trailing slash.
    EmptySegment,
    /// A non-ASCII letter some servers case-fold to an ASCII one.
    CaseConfusable,
}

impl PathError {
    /// The reason written to the access log.
    pub fn log_reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::BrokenEscape => "path_broken_escape",
            PathError::EncodedSlash => "path_encoded_slash",
            PathError::EncodedDot => "path_encoded_dot",
            PathError::EncodedPercent => "path_encoded_percent",
            PathError::Backslash => "path_backslash",
            PathError::PathParameter => "path_parameter",
            PathError::ControlCharacter => "path_control_character",
            PathError::InvalidUtf8 => "path_invalid_utf8",
            PathError::DotSegment => "path_dot_segment",
            PathError::EmptySegment => "path_empty_segment",
            PathError::CaseConfusable => "path_case_confusable",
        }
    }

    /// The `detail` the client is told.
    pub fn detail(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "The request path must start with '/'",
            PathError::BrokenEscape => {
                "The request path has a '%' that is not followed by two hex digits"
            }
            PathError::EncodedSlash => "The request path must not contain an encoded '/' (%2F)",
            PathError::EncodedDot => "The request path must not contain an encoded '.' (%2E)",
            PathError::EncodedPercent => {
                "The request path must not contain an encoded '%' (%25): it would decode twice"
            }
            PathError::Backslash => "The request path must not contain '\\' or %5C",
            PathError::PathParameter => {
                "The request path must not contain ';' or %3B (path parameters)"
            }
            PathError::ControlCharacter => "The request path must not contain control characters",
            PathError::InvalidUtf8 => "The request path must decode to valid UTF-8",
            PathError::DotSegment => "The request path must not contain '.' or '..' segments",
            PathError::EmptySegment => "The request path must not contain empty segments ('//')",
            PathError::CaseConfusable => {
                "The request path must not contain U+0130, U+0131, U+017F or U+212A: servers case-fold them to ASCII letters"
            }
        }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for PathError {}

/// May `b` appear literally in a canonical path segment? RFC 3986 `pchar`
/// less `;` (refused) and `%` (always an escape).
const fn literal(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'_' | b'~'
        | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'='
        | b':' | b'@')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A byte of the decoded path, and whether it came from an escape.
fn refuse(b: u8, escaped: bool) -> Result<(), PathError> {
    match b {
        b'\\' => Err(PathError::Backslash),
        b';' => Err(PathError::PathParameter),
        0..=0x1f | 0x7f => Err(PathError::ControlCharacter),
        b'/' if escaped => Err(PathError::EncodedSlash),
        b'.' if escaped => Err(PathError::EncodedDot),
        b'%' if escaped => Err(PathError::EncodedPercent),
        _ => Ok(()),
    }
}

/// The canonical form of `path` (the part of a request target before `?`),
/// or why it is refused. See the module docs for the rules.
pub fn canonicalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // First pass: decode into bytes, refusing as we go; note whether the
    // input was already canonical (then nothing is rebuilt).
    let mut decoded: Vec<u8> = Vec::new();
    let mut canonical = true;
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        let (b, escaped) = if c == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex);
            let lo = raw.get(i + 2).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BrokenEscape);
            };
            i += 3;
            ((hi << 4) | lo, true)
        } else {
            i += 1;
            (c, false)
        };
        refuse(b, escaped)?;
        // Canonical iff each byte is spelled the one way: literal where a
        // literal is allowed, an upper-case escape elsewhere.
        let spelled_right = if escaped {
            !literal(b)
                && b != b'/'
                && raw
                    .get(i - 2..i)
                    .is_some_and(|h| !h.iter().any(u8::is_ascii_lowercase))
        } else {
            literal(b) || b == b'/'
        };
        if canonical && !spelled_right {
            canonical = false;
            decoded.reserve(raw.len());
            // Everything before this byte was canonical: decode it again
            // cheaply from the input (it holds only literals and
            // upper-case escapes of bytes already checked).
            decode_checked(
                raw.get(..i - if escaped { 3 } else { 1 }).unwrap_or(&[]),
                &mut decoded,
            );
        }
        if !canonical {
            decoded.push(b);
        }
    }
    let bytes: &[u8] = if canonical { raw } else { &decoded };
    // Segments are split on literal '/' only: an encoded one was refused.
    check_segments(bytes)?;
    if canonical {
        // Literals (all ASCII) and escapes of non-literal bytes only; the
        // escapes' UTF-8 still has to be checked.
        if raw.contains(&b'%') {
            let mut all = Vec::with_capacity(raw.len());
            decode_checked(raw, &mut all);
            check_text(&all)?;
        }
        return Ok(Cow::Borrowed(path));
    }
    check_text(&decoded)?;
    let mut out = String::with_capacity(decoded.len() + 8);
    for &b in &decoded {
        if literal(b) || b == b'/' {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    Ok(Cow::Owned(out))
}

/// The decoded path must be UTF-8 without case-fold confusables.
fn check_text(decoded: &[u8]) -> Result<(), PathError> {
    let text = std::str::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)?;
    for c in text.chars() {
        match c {
            '\u{130}' | '\u{131}' | '\u{17f}' | '\u{212a}' => {
                return Err(PathError::CaseConfusable);
            }
            // C1 controls (NEL among them), as C0 ones are.
            '\u{80}'..='\u{9f}' => return Err(PathError::ControlCharacter),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes bytes already known to hold only literals and well-formed escapes.
fn decode_checked(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        if c == b'%'
            && let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
}

/// Refuses dot segments and empty segments (one trailing slash is allowed).
fn check_segments(decoded: &[u8]) -> Result<(), PathError> {
    let body = decoded.get(1..).unwrap_or(&[]);
    if body.is_empty() {
        return Ok(());
    }
    let mut segments = body.split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            b"." | b".." => return Err(PathError::DotSegment),
            b"" if !last => return Err(PathError::EmptySegment),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes a canonical path fully (for display and for tests): every
/// escape becomes its byte. `None` when `path` is not canonical UTF-8.
pub fn decode(path: &str) -> Option<String> {
    let mut out = Vec::with_capacity(path.len());
    decode_checked(path.as_bytes(), &mut out);
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> String {
        match canonicalize(p) {
            Ok(c) => c.into_owned(),
            Err(e) => panic!("{p}: {e:?}"),
        }
    }

    #[test]
    fn decodes_and_re_encodes_one_way() {
        assert_eq!(ok("/w/%70rivate/secret"), "/w/private/secret");
        assert_eq!(ok("/w/%70%72%69%76%61%74%65"), "/w/private");
        assert_eq!(ok("/a%7e%5F%2d"), "/a~_-");
        assert_eq!(ok("/v1/items%3AbatchGet"), "/v1/items:batchGet");
        assert_eq!(ok("/a%40b%21"), "/a@b!");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/a%3fb"), "/a%3Fb");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/café"), "/caf%C3%A9");
        assert_eq!(ok("/a\"b{c}"), "/a%22b%7Bc%7D");
        assert_eq!(ok("/a+b"), "/a+b");
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/a/b.c",
            "/a/..b",
            "/v1/x:y",
            "/a%20b",
            "/caf%C3%A9",
        ] {
            assert!(matches!(canonicalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn refuses_what_servers_read_differently() {
        for (p, e) in [
            ("a", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a/%2e%2e/b", PathError::EncodedDot),
            ("/a%2e", PathError::EncodedDot),
            ("/a%2541", PathError::EncodedPercent),
            ("/a\\b", PathError::Backslash),
            ("/a%5cb", PathError::Backslash),
            ("/w/private;x/s", PathError::PathParameter),
            ("/a%3bx", PathError::PathParameter),
            ("/a%00", PathError::ControlCharacter),
            ("/a%0d%0a", PathError::ControlCharacter),
            ("/a%7f", PathError::ControlCharacter),
            ("/a%C2%85", PathError::ControlCharacter),
            ("/a\u{9f}", PathError::ControlCharacter),
            ("/a%", PathError::BrokenEscape),
            ("/a%4", PathError::BrokenEscape),
            ("/a%zz", PathError::BrokenEscape),
            ("/a%u002f", PathError::BrokenEscape),
            ("/a%c0%af", PathError::InvalidUtf8),
            ("/a%C0%AF", PathError::InvalidUtf8),
            ("/a%80", PathError::InvalidUtf8),
            ("/a%ed%a0%80", PathError::InvalidUtf8),
            ("/adm%C4%B1n", PathError::CaseConfusable),
            ("/adm%C4%B0n", PathError::CaseConfusable),
            ("/adm\u{131}n", PathError::CaseConfusable),
            ("/a%C5%BF", PathError::CaseConfusable),
            ("/%E2%84%AA", PathError::CaseConfusable),
            ("/a/../b", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/..", PathError::DotSegment),
            ("/a/%41/..", PathError::DotSegment),
            ("/a//b", PathError::EmptySegment),
            ("//a", PathError::EmptySegment),
            ("/a//", PathError::EmptySegment),
        ] {
            assert_eq!(canonicalize(p), Err(e), "{p}");
        }
    }

    #[test]
    fn idempotent_on_examples() {
        for p in ["/w/%70rivate", "/a%3fb", "/café", "/a\"b", "/a%41%42/c/"] {
            let once = ok(p);
            assert_eq!(ok(&once), once, "{p}");
        }
    }
}

/// The promise, searched for: for any request path, every way a server
/// may decode it lands where the canonical form says, so the route
/// Portcullis checks is the route the upstream serves.
#[cfg(test)]
mod props {
    use super::*;
    use crate::route::{PathPattern, RouteMatch, RouteTable};
    use http::Method;
    use proptest::prelude::*;

    /// Percent-decodes every escape (bytes as they come, lossy UTF-8), as
    /// WSGI's `PATH_INFO` and most frameworks do.
    fn full_decode(p: &str) -> String {
        let mut out = Vec::new();
        decode_checked(p.as_bytes(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// RFC 3986 §5.2.4, on a decoded path.
    fn remove_dots(p: &str) -> String {
        let mut out: Vec<&str> = Vec::new();
        let segs: Vec<&str> = p.split('/').skip(1).collect();
        let n = segs.len();
        for (i, s) in segs.into_iter().enumerate() {
            match s {
                "." => {
                    if i + 1 == n {
                        out.push("");
                    }
                }
                ".." => {
                    out.pop();
                    if i + 1 == n {
                        out.push("");
                    }
                }
                s => out.push(s),
            }
        }
        format!("/{}", out.join("/"))
    }

    /// The ways servers read a path.
    fn server_readings(p: &str) -> Vec<(&'static str, String)> {
        let wsgi = full_decode(p);
        // Tomcat: `;params` stripped from each raw segment, then decoded,
        // then dot segments removed.
        let stripped: Vec<&str> = p
            .split('/')
            .map(|s| s.split(';').next().unwrap_or(""))
            .collect();
        let tomcat = remove_dots(&full_decode(&stripped.join("/")));
        // nginx: decoded, slashes merged, dot segments removed.
        let mut merged = wsgi.clone();
        while merged.contains("//") {
            merged = merged.replace("//", "/");
        }
        let nginx = remove_dots(&merged);
        // IIS: backslash is a slash.
        let iis = remove_dots(&wsgi.replace('\\', "/"));
        // A second decoding pass (a proxy and an app each decode).
        let twice = full_decode(&wsgi);
        vec![
            ("wsgi", wsgi),
            ("tomcat", tomcat),
            ("nginx", nginx),
            ("iis", iis),
            ("double", twice),
        ]
    }

    const PATTERNS: &[(&str, &str)] = &[
        ("/**", "public"),
        ("/w/**", "public"),
        ("/w/private/**", "protected"),
        ("/w/a:b", "protected"),
        ("/w/a@b/**", "protected"),
        ("/admin", "protected"),
        ("/w/x y/**", "protected"),
    ];

    fn table() -> RouteTable<&'static str> {
        let mut t = RouteTable::new();
        for (i, (p, _)) in PATTERNS.iter().enumerate() {
            let name = match i {
                0 => "root",
                1 => "w",
                2 => "private",
                3 => "colon",
                4 => "cafe",
                5 => "admin",
                _ => "space",
            };
            t.add(
                PathPattern::parse(&p.replace(' ', "%20")).unwrap(),
                None,
                name,
            );
        }
        t
    }

    /// The route a decoding server would serve for a decoded path: the
    /// same rule (exact beats prefix, longest prefix wins), on decoded
    /// patterns.
    fn decoded_route(t: &RouteTable<&'static str>, decoded: &str) -> &'static str {
        // Re-spell the decoded path canonically when it can be; a decoded
        // path that cannot be spelled canonically (it has `;`, `\`, dots)
        // matches no specific pattern (those have none of them), so only
        // the prefixes it starts with literally count.
        let spelled: String = decoded
            .bytes()
            .map(|b| {
                if literal(b) || b == b'/' {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        match t.find(&Method::GET, &spelled) {
            RouteMatch::Found(r) => r,
            _ => "none",
        }
    }

    /// Each character's one-to-one case mapping, as .NET's
    /// `ToUpperInvariant` and Java's `equalsIgnoreCase` use.
    fn simple_case(s: &str, upper: bool) -> String {
        s.chars()
            .map(|c| {
                // Java's and .NET's simple mapping of U+0130 is 'i'; Rust
                // only offers the full one (two characters).
                if c == '\u{130}' && !upper {
                    return 'i';
                }
                let mut m: Vec<char> = if upper {
                    c.to_uppercase().collect()
                } else {
                    c.to_lowercase().collect()
                };
                if m.len() == 1 { m.remove(0) } else { c }
            })
            .collect()
    }

    fn token() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "/",
            "w",
            "private",
            "admin",
            "a:b",
            "a%3Ab",
            "a%3ab",
            "caf",
            "é",
            "%C3%A9",
            "%c3%a9",
            "%70",
            "%72",
            "%69",
            "%2F",
            "%2f",
            "%2E",
            "%2e",
            ".",
            "..",
            ";",
            ";x",
            "%3B",
            "\\",
            "%5C",
            "%5c",
            "%25",
            "%2570",
            "%C0%AF",
            "%c0%ae",
            "%41",
            ":",
            "@",
            "%40",
            " ",
            "%20",
            "x y",
            "//",
            "%00",
            "x",
            "%",
            "%4",
            "?",
            "%3F",
            "+",
            "%2B",
            "~",
            "%7E",
            "%E2%80%AE",
            "\u{ff0f}",
        ])
    }

    fn request_path() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 0..14).prop_map(|ts| format!("/{}", ts.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        #[test]
        fn every_reading_lands_on_the_matched_route(p in request_path()) {
            let t = table();
            if let Ok(c) = canonicalize(&p) {
                let matched = match t.find(&Method::GET, &c) {
                    RouteMatch::Found(r) => *r,
                    _ => "none",
                };
                let decoded = full_decode(&c);
                for (server, reading) in server_readings(&p) {
                    // The strong form: every server reads the same path...
                    prop_assert_eq!(&reading, &decoded, "{} reads {:?} as {:?}", server, p, reading);
                    // ...so it serves the route Portcullis checked.
                    prop_assert_eq!(decoded_route(&t, &reading), matched, "{} via {:?}", server, p);
                }
                // Case-insensitive servers (Express, ASP.NET, IIS) compare
                // with simple case mappings: they must land on the route
                // Portcullis matched too.
                for folded in [simple_case(&decoded, true), simple_case(&decoded, false)] {
                    prop_assert_eq!(decoded_route(&t, &folded), matched, "case-folded {:?} via {:?}", folded, p);
                }
                // Express, ASP.NET and Spring serve `/x/` from `/x` and the
                // other way round.
                let slashless = match decoded.strip_suffix('/') {
                    Some(r) if !r.is_empty() => r.to_owned(),
                    _ => decoded.clone(),
                };
                for reading in [slashless, format!("{decoded}/")] {
                    if !reading.contains("//") {
                        prop_assert_eq!(decoded_route(&t, &reading), matched, "trailing slash {:?} via {:?}", reading, p);
                    }
                }
                // One form: canonical twice is the same, borrowed.
                prop_assert!(matches!(canonicalize(&c), Ok(Cow::Borrowed(x)) if x == c.as_ref()));
            } else {
                // Refused: nothing to check, nothing reached a route.
            }
        }

        #[test]
        fn spellings_of_one_path_share_one_form(p in request_path(), mask in any::<u64>()) {
            // Re-spell the canonical form: escape some literal bytes and
            // lower-case some hex; the canonical form must not change.
            if let Ok(c) = canonicalize(&p) {
                let mut respelled = String::new();
                let mut k = 0u32;
                let bytes = c.as_bytes();
                let mut i = 0;
                while let Some(&b) = bytes.get(i) {
                    k = (k + 1) % 64;
                    let flip = mask >> k & 1 == 1;
                    if b == b'%' {
                        let esc = &c[i..i + 3];
                        respelled.push_str(&if flip { esc.to_ascii_lowercase() } else { esc.to_owned() });
                        i += 3;
                        continue;
                    }
                    if flip && b != b'/' && b != b'.' {
                        respelled.push_str(&format!("%{b:02x}"));
                    } else {
                        respelled.push(char::from(b));
                    }
                    i += 1;
                }
                prop_assert_eq!(canonicalize(&respelled).map(Cow::into_owned), Ok(c.into_owned()));
            }
        }

        #[test]
        fn any_string_is_refused_or_canonical(p in "/\\PC{0,40}") {
            if let Ok(c) = canonicalize(&p) {
                prop_assert!(c.bytes().all(|b| literal(b) || b == b'/' || b == b'%' || b.is_ascii_hexdigit()));
                prop_assert!(!c.contains("//") && !c.contains(';') && !c.contains('\\'));
                prop_assert!(matches!(canonicalize(&c), Ok(Cow::Borrowed(_))));
            }
        }
    }
}
