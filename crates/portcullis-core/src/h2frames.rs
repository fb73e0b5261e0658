//! HTTP/2 frames as a client sends them, counted for floods.
//!
//! The HTTP/2 library answers every PING and SETTINGS frame and accepts
//! empty DATA, HEADERS and CONTINUATION frames, RST_STREAM and PRIORITY
//! frames without limit: a client can make a server spend its CPU
//! answering control frames forever (CVE-2019-9512 "Ping Flood",
//! CVE-2019-9515 "Settings Flood", CVE-2019-9518 "Empty Frames Flood").
//! [`H2Watch`] reads the frame headers of a connection's inbound bytes
//! (payloads are skipped, nothing is buffered beyond one 9-byte header)
//! and charges those frames to a token bucket: past the rate the
//! connection is told to go away with `ENHANCE_YOUR_CALM`
//! ([`goaway`]). Ordinary frames (HEADERS that carry a request, DATA with
//! bytes, WINDOW_UPDATE, GOAWAY) cost nothing.
//!
//! [`H2Out`] follows the frames the server writes, so a GOAWAY is only
//! ever written between two frames.
//!
//! Time comes from the caller (milliseconds on any monotonic clock).

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `ENHANCE_YOUR_CALM` (RFC 9113 §7).
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const WINDOW_UPDATE: u8 = 8;
/// A WINDOW_UPDATE granting less than this is charged: real clients grant
/// in large steps, a flood of one-byte grants costs the server a frame
/// each (and drips a stalled stream along).
const SMALL_WINDOW_UPDATE: u32 = 1024;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;

/// Which kind of frame flooded the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// PING frames.
    Ping,
    /// SETTINGS frames.
    Settings,
    /// RST_STREAM frames.
    Reset,
    /// PRIORITY frames.
    Priority,
    /// Empty DATA / HEADERS / CONTINUATION frames.
    Empty,
    /// Frames of types this server does not know.
    Unknown,
    /// WINDOW_UPDATE frames granting a few bytes each.
    WindowUpdate,
}

impl Flood {
    /// The reason written to the log.
    pub fn log_reason(self) -> &'static str {
        match self {
            Flood::Ping => "h2_ping_flood",
            Flood::Settings => "h2_settings_flood",
            Flood::Reset => "h2_reset_flood",
            Flood::Priority => "h2_priority_flood",
            Flood::Empty => "h2_empty_frame_flood",
            Flood::Unknown => "h2_unknown_frame_flood",
            Flood::WindowUpdate => "h2_window_update_flood",
        }
    }
}

#[derive(Debug)]
enum State {
    /// Matching the preface; this many bytes matched so far.
    Preface(usize),
    /// Reading a frame header; this many of its 9 bytes so far.
    Header([u8; 9], usize),
    /// Skipping this many payload bytes.
    Payload(u32),
    /// Reading a WINDOW_UPDATE's 4-byte increment.
    Window([u8; 4], usize),
    /// Not HTTP/2 (or the connection was already flagged): ignore bytes.
    Off,
}

/// The inbound side of one connection. See the module docs.
#[derive(Debug)]
pub struct H2Watch {
    state: State,
    /// Tokens, in thousandths.
    tokens: u64,
    burst: u64,
    per_ms: u64,
    last_ms: Option<u64>,
    last_stream: u32,
    flagged: Option<Flood>,
    h2: bool,
}

impl H2Watch {
    /// Counts control frames at `per_second` on average, with bursts of
    /// `burst` (0 `per_second` turns the limit off).
    pub fn new(per_second: u32, burst: u32) -> H2Watch {
        H2Watch {
            state: State::Preface(0),
            tokens: u64::from(burst) * 1000,
            burst: u64::from(burst) * 1000,
            per_ms: u64::from(per_second),
            last_ms: None,
            last_stream: 0,
            flagged: None,
            h2: false,
        }
    }

    /// Whether the connection opened with the HTTP/2 preface.
    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// The highest stream a client opened (for GOAWAY's last-stream-id).
    pub fn last_stream_id(&self) -> u32 {
        self.last_stream
    }

    /// The flood seen, if any.
    pub fn flagged(&self) -> Option<Flood> {
        self.flagged
    }

    /// Follows `bytes`, read at `now_ms`; returns the flood when this
    /// chunk crossed the limit.
    pub fn feed(&mut self, mut bytes: &[u8], now_ms: u64) -> Option<Flood> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return None,
                State::Preface(have) => {
                    let want = PREFACE.get(*have..).unwrap_or(&[]);
                    let n = want.len().min(bytes.len());
                    if bytes.get(..n) != want.get(..n) {
                        self.state = State::Off;
                        return None;
                    }
                    *have += n;
                    bytes = bytes.get(n..).unwrap_or(&[]);
                    if *have == PREFACE.len() {
                        self.h2 = true;
                        self.state = State::Header([0; 9], 0);
                    }
                }
                State::Header(h, have) => {
                    if fill(h, have, &mut bytes) {
                        let h = *h;
                        if let Some(f) = self.frame(&h, now_ms) {
                            self.flagged = Some(f);
                            self.state = State::Off;
                            return Some(f);
                        }
                    }
                }
                State::Window(w, have) => {
                    if fill(w, have, &mut bytes) {
                        let inc = u32::from_be_bytes(*w) & 0x7fff_ffff;
                        self.state = State::Header([0; 9], 0);
                        if inc < SMALL_WINDOW_UPDATE
                            && let Some(f) = self.charge(Flood::WindowUpdate, now_ms)
                        {
                            self.flagged = Some(f);
                            self.state = State::Off;
                            return Some(f);
                        }
                    }
                }
                State::Payload(left) => {
                    let n = (*left as usize).min(bytes.len());
                    // n <= *left, a u32.
                    *left -= n as u32;
                    bytes = bytes.get(n..).unwrap_or(&[]);
                    if *left == 0 {
                        self.state = State::Header([0; 9], 0);
                    }
                }
            }
        }
        None
    }

    /// Charges one frame header; the state moves to its payload.
    fn frame(&mut self, h: &[u8; 9], now_ms: u64) -> Option<Flood> {
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        self.state = if len == 0 {
            State::Header([0; 9], 0)
        } else if kind == WINDOW_UPDATE && len == 4 {
            State::Window([0; 4], 0)
        } else {
            State::Payload(len)
        };
        if kind == HEADERS && stream % 2 == 1 && stream > self.last_stream {
            self.last_stream = stream;
        }
        let charged = match kind {
            PING => Some(Flood::Ping),
            SETTINGS => Some(Flood::Settings),
            RST_STREAM => Some(Flood::Reset),
            PRIORITY => Some(Flood::Priority),
            DATA if len == 0 && flags & END_STREAM == 0 => Some(Flood::Empty),
            HEADERS | CONTINUATION if len == 0 => Some(Flood::Empty),
            k if k > CONTINUATION => Some(Flood::Unknown),
            _ => None,
        }?;
        self.charge(charged, now_ms)
    }

    /// Takes a token for one frame of kind `charged`; the flood when none
    /// is left.
    fn charge(&mut self, charged: Flood, now_ms: u64) -> Option<Flood> {
        if self.per_ms == 0 {
            return None;
        }
        // Refill: per_ms thousandths of a token per millisecond is
        // per_ms tokens a second.
        let elapsed = self.last_ms.map_or(0, |l| now_ms.saturating_sub(l));
        self.last_ms = Some(now_ms);
        self.tokens = (self.tokens + elapsed.saturating_mul(self.per_ms)).min(self.burst);
        if self.tokens < 1000 {
            return Some(charged);
        }
        self.tokens -= 1000;
        None
    }
}

/// The outbound side: where the server's frames begin and end.
#[derive(Debug, Default)]
pub struct H2Out {
    header: [u8; 9],
    have: usize,
    left: u32,
}

impl H2Out {
    /// Follows bytes the server wrote.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = (self.left as usize).min(bytes.len());
                // n <= self.left, a u32.
                self.left -= n as u32;
                bytes = bytes.get(n..).unwrap_or(&[]);
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            if let (Some(dst), Some(src)) = (
                self.header.get_mut(self.have..self.have + n),
                bytes.get(..n),
            ) {
                dst.copy_from_slice(src);
            }
            self.have += n;
            bytes = bytes.get(n..).unwrap_or(&[]);
            if self.have == 9 {
                self.have = 0;
                self.left = u32::from_be_bytes([0, self.header[0], self.header[1], self.header[2]]);
            }
        }
    }

    /// Whether the next byte written would start a frame.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.left == 0
    }
}

/// A GOAWAY frame (RFC 9113 §6.8) naming `last_stream` and `code`.
pub fn goaway(last_stream: u32, code: u32) -> [u8; 17] {
    let mut f = [0u8; 17];
    f[2] = 8; // length
    f[3] = 7; // GOAWAY
    f[9..13].copy_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    f[13..17].copy_from_slice(&code.to_be_bytes());
    f
}

/// Copies what fits from the front of `bytes` into `buf[*have..]`,
/// advancing both; true once `buf` is full. A frame header or a
/// WINDOW_UPDATE increment may arrive split across reads.
fn fill(buf: &mut [u8], have: &mut usize, bytes: &mut &[u8]) -> bool {
    let n = buf.len().saturating_sub(*have).min(bytes.len());
    if let (Some(dst), Some(src)) = (buf.get_mut(*have..*have + n), bytes.get(..n)) {
        dst.copy_from_slice(src);
    }
    *have += n;
    *bytes = bytes.get(n..).unwrap_or(&[]);
    *have == buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn only_connections_that_open_with_the_preface_are_followed() {
        let mut w = H2Watch::new(1, 1);
        assert_eq!(w.feed(b"GET / HTTP/1.1\r\n\r\n", 0), None);
        assert!(!w.is_h2());
        let ping = frame(PING, 0, 0, &[0; 8]);
        for _ in 0..100 {
            assert_eq!(w.feed(&ping, 0), None);
        }
    }

    #[test]
    fn a_ping_flood_is_flagged_and_ordinary_frames_are_free() {
        let mut w = H2Watch::new(10, 20);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(frame(HEADERS, 0x4, 1, &[0x82]));
        bytes.extend(frame(DATA, 0, 1, &[1, 2, 3]));
        bytes.extend(frame(HEADERS, 0x5, 3, &[0x82]));
        // Fed a byte at a time: headers split anywhere are still read.
        for b in &bytes {
            assert_eq!(w.feed(std::slice::from_ref(b), 0), None);
        }
        assert!(w.is_h2());
        assert_eq!(w.last_stream_id(), 3);
        let ping = frame(PING, 0, 0, &[0; 8]);
        let mut flagged_at = None;
        for i in 0..100 {
            if let Some(f) = w.feed(&ping, 0) {
                flagged_at = Some((i, f));
                break;
            }
        }
        // 20 of burst, one spent on SETTINGS.
        assert_eq!(flagged_at, Some((19, Flood::Ping)));
    }

    #[test]
    fn the_bucket_refills_with_time() {
        let mut w = H2Watch::new(10, 5);
        assert_eq!(w.feed(PREFACE, 0), None);
        let ping = frame(PING, 0, 0, &[0; 8]);
        // 10 a second forever is fine.
        for t in 0..1000u64 {
            assert_eq!(w.feed(&ping, t * 100), None, "{t}");
        }
    }

    #[test]
    fn empty_frames_count_and_end_stream_does_not() {
        let mut w = H2Watch::new(1, 3);
        assert_eq!(w.feed(PREFACE, 0), None);
        assert_eq!(w.feed(&frame(DATA, END_STREAM, 1, &[]), 0), None);
        assert_eq!(w.feed(&frame(DATA, END_STREAM, 1, &[]), 0), None);
        assert_eq!(w.feed(&frame(DATA, END_STREAM, 1, &[]), 0), None);
        assert_eq!(w.feed(&frame(DATA, END_STREAM, 1, &[]), 0), None);
        let empty = frame(DATA, 0, 1, &[]);
        assert_eq!(w.feed(&empty, 0), None);
        assert_eq!(w.feed(&empty, 0), None);
        assert_eq!(w.feed(&empty, 0), None);
        assert_eq!(w.feed(&empty, 0), Some(Flood::Empty));
    }

    #[test]
    fn small_window_updates_count_and_large_ones_do_not() {
        let mut w = H2Watch::new(1, 3);
        assert_eq!(w.feed(PREFACE, 0), None);
        let big = frame(WINDOW_UPDATE, 0, 0, &65_535u32.to_be_bytes());
        for _ in 0..100 {
            assert_eq!(w.feed(&big, 0), None);
        }
        let small = frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes());
        // Split across reads too.
        assert_eq!(w.feed(&small[..11], 0), None);
        assert_eq!(w.feed(&small[11..], 0), None);
        assert_eq!(w.feed(&small, 0), None);
        assert_eq!(w.feed(&small, 0), None);
        assert_eq!(w.feed(&small, 0), Some(Flood::WindowUpdate));
    }

    #[test]
    fn out_follows_frame_boundaries() {
        let mut o = H2Out::default();
        assert!(o.at_boundary());
        let f = frame(DATA, 0, 1, &[7; 100]);
        o.feed(&f[..5]);
        assert!(!o.at_boundary());
        o.feed(&f[5..50]);
        assert!(!o.at_boundary());
        o.feed(&f[50..]);
        assert!(o.at_boundary());
        let g = goaway(5, ENHANCE_YOUR_CALM);
        assert_eq!(&g[..9], &[0, 0, 8, 7, 0, 0, 0, 0, 0]);
        assert_eq!(&g[9..], &[0, 0, 0, 5, 0, 0, 0, 0xb]);
    }
}
