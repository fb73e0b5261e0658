//! Helpers shared by the fuzz targets: how raw fuzz input is cut into the
//! pieces a parser is handed (lines, header maps, chunk sizes).
//!
//! Inputs are kept line-oriented text wherever the parser reads text, so
//! the committed seeds in `fuzz/seeds/<target>/` stay readable and easy to
//! write by hand.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Splits on `\n`, dropping one trailing `\r` from each line.
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// The bytes as text: UTF-8 as is, anything else lossily (a parser taking
/// `&str` never sees invalid UTF-8, so nothing is lost by this).
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// One `Name: value` line as a header, when both halves are valid. The
/// value keeps every byte after the first `:` except leading spaces, so
/// trailing whitespace and obs-text reach the parsers.
pub fn header_line(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = line.split_at(colon);
    let value = &value[1..];
    let start = value.iter().position(|&b| b != b' ').unwrap_or(value.len());
    let name = HeaderName::from_bytes(name).ok()?;
    let value = HeaderValue::from_bytes(&value[start..]).ok()?;
    Some((name, value))
}

/// A header map from `Name: value` lines, in order, repeats kept; lines
/// that are not valid headers are skipped.
pub fn header_map<'a>(lines: impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines.filter_map(header_line) {
        map.append(name, value);
    }
    map
}

/// A small deterministic generator (xorshift64), for choices that must
/// repeat exactly when a crash is replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds from up to 8 bytes; never zero.
    pub fn new(seed: &[u8]) -> Rng {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for &b in seed.iter().take(8) {
            s = s.rotate_left(8) ^ u64::from(b);
        }
        Rng(s | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Cuts `data` into consecutive pieces whose sizes are drawn from `rng`:
/// mostly small (0–8 bytes, including empty reads), sometimes larger.
pub fn chunks<'a>(data: &'a [u8], rng: &mut Rng) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = match rng.below(4) {
            0 => rng.below(64),
            _ => rng.below(9),
        }
        .min(rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    out
}
