//! Spotting request-smuggling forms on an HTTP/1 byte stream.
//!
//! Request smuggling needs two parsers to disagree about where a request
//! ends. hyper refuses most malformed framing itself, but a few ambiguous
//! forms it quietly resolves: with both `Content-Length` and
//! `Transfer-Encoding` it drops the length and reads the body as chunked;
//! it accepts `Transfer-Encoding: chunked` twice, and `Content-Length`
//! twice with equal values. Its reading is sound, but any proxy in front
//! of or behind us may read the same bytes differently, and such requests
//! only come from broken or hostile clients. So we refuse them all
//! (R-HTTP-1), and close the connection.
//!
//! hyper does not show us the raw head, so the gateway passes every byte
//! hyper reads through an [`H1Framer`] as well. The framer follows message
//! boundaries itself: it parses each request head with `httparse` (the
//! parser hyper uses), skips the body by its framing, and flags the
//! connection as soon as a head's framing is ambiguous. The head is parsed
//! before hyper hands the request to the service, so the flag is already
//! up when the handler for that request runs.
//!
//! Where the stream stops being plainly readable — a head too large, a
//! head or chunk hyper will refuse, an HTTP/2 preface, an upgrade to
//! another protocol — the framer stops following ("lost") rather than
//! guess, and never flags anything afterwards. Those are cases hyper
//! either refuses itself or hands off to something that is not HTTP/1.
//!
//! It sees every byte of every plain HTTP/1 connection, so it is cheap: a
//! head that arrives in one read is parsed in place, bodies are skipped by
//! counting, and only a head split across reads is copied, into one buffer
//! reused for the life of the connection.

/// Headers parsed per head. At least hyper's limit (100 by default), so a
/// head hyper accepts is never one we give up on.
const MAX_HEADERS: usize = 128;

/// What made a connection's framing ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// Both `Content-Length` and `Transfer-Encoding` (CL.TE / TE.CL).
    ContentLengthWithTransferEncoding,
    /// More than one `Transfer-Encoding` line.
    TransferEncodingRepeated,
    /// A `Transfer-Encoding` other than exactly `chunked`.
    TransferEncodingNotChunked,
    /// More than one `Content-Length` line, even with equal values.
    ContentLengthRepeated,
    /// A `Content-Length` that is not a plain decimal number.
    ContentLengthInvalid,
    /// `Upgrade: h2c`, cleartext HTTP/2, which we do not serve.
    H2cUpgrade,
}

impl Ambiguity {
    /// The reason written to the log.
    pub fn log_reason(self) -> &'static str {
        match self {
            Ambiguity::ContentLengthWithTransferEncoding => "cl_and_te",
            Ambiguity::TransferEncodingRepeated => "te_repeated",
            Ambiguity::TransferEncodingNotChunked => "te_not_chunked",
            Ambiguity::ContentLengthRepeated => "cl_repeated",
            Ambiguity::ContentLengthInvalid => "cl_invalid",
            Ambiguity::H2cUpgrade => "h2c_upgrade",
        }
    }
}

/// Where the framer is in the stream. The chunked states mirror hyper's
/// chunked decoder, so that where hyper would fail we stop following, and
/// where it goes on so do we.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests: empty lines are skipped (RFC 9112 §2.2).
    Idle,
    /// Inside a head, waiting for the empty line that ends it.
    Head,
    /// A `Content-Length` body with this many bytes still to come.
    Body(u64),
    /// Expecting the first hex digit of a chunk size.
    ChunkStart,
    /// Reading a chunk size.
    ChunkSize(u64),
    /// Spaces or tabs after a chunk size.
    ChunkSpace(u64),
    /// A chunk extension, up to its CR.
    ChunkExt(u64),
    /// The LF ending a chunk-size line.
    ChunkSizeLf(u64),
    /// Chunk data with this many bytes still to come.
    ChunkData(u64),
    /// The CR after chunk data.
    ChunkDataCr,
    /// The LF after chunk data.
    ChunkDataLf,
    /// At the start of a trailer line, or of the empty line ending them.
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// The LF ending a trailer line.
    TrailerLf,
    /// The LF of the empty line ending the message.
    EndLf,
    /// No longer following the stream.
    Lost,
}

/// How far the head scan is towards the empty line that ends a head:
/// `\n\n` or `\n\r\n`, as httparse accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEnd {
    /// Inside a line.
    Text,
    /// Just after an LF.
    Lf,
    /// Just after an LF and a CR.
    LfCr,
}

/// What a complete head says about what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// httparse wants more bytes, though the scan saw an end.
    Partial,
    /// The body (or none) to skip; the next state.
    Next(State),
    /// Framing we refuse.
    Ambiguous(Ambiguity),
    /// A head hyper will refuse, or a switch away from HTTP/1.
    Stop,
}

/// Follows the request heads on one HTTP/1 connection's byte stream.
#[derive(Debug)]
pub struct H1Framer {
    state: State,
    line: LineEnd,
    /// A head split across reads, so far. Empty otherwise.
    head: Vec<u8>,
    max_head: usize,
    flagged: Option<Ambiguity>,
}

impl H1Framer {
    /// `max_head`: the largest head it will buffer while waiting for its
    /// end (beyond that it stops following the stream — hyper refuses such
    /// heads itself with 431). Give at least hyper's own buffer limit.
    pub fn new(max_head: usize) -> H1Framer {
        H1Framer {
            state: State::Idle,
            line: LineEnd::Text,
            head: Vec::new(),
            max_head,
            flagged: None,
        }
    }

    /// Feeds the next bytes read from the connection. Returns the
    /// ambiguity the first time one is found (and None on every later
    /// call).
    pub fn feed(&mut self, bytes: &[u8]) -> Option<Ambiguity> {
        let mut rest = bytes;
        while !rest.is_empty() && self.following() {
            rest = match self.step(rest) {
                Ok(rest) => rest,
                Err(a) => {
                    self.flagged = Some(a);
                    self.lose();
                    return Some(a);
                }
            };
        }
        None
    }

    /// Whether an ambiguity has been found.
    pub fn flagged(&self) -> Option<Ambiguity> {
        self.flagged
    }

    /// False once the framer has flagged the connection or stopped
    /// following it; feeding it more is then a no-op the caller may skip.
    pub fn following(&self) -> bool {
        self.state != State::Lost
    }

    /// Consumes a prefix of `bytes` in the current state and returns the
    /// rest.
    fn step<'b>(&mut self, bytes: &'b [u8]) -> Result<&'b [u8], Ambiguity> {
        Ok(match self.state {
            State::Idle => self.skip_empty_lines(bytes),
            State::Head => return self.read_head(bytes),
            State::Body(left) => self.skip(bytes, left, State::Body, State::Idle),
            State::ChunkData(left) => self.skip(bytes, left, State::ChunkData, State::ChunkDataCr),
            State::TrailerLine | State::ChunkExt(_) => self.skip_to_cr(bytes),
            other => match bytes.split_first() {
                Some((&b, rest)) => {
                    self.state = chunk_byte(other, b);
                    rest
                }
                None => bytes,
            },
        })
    }

    /// Skips the empty lines a client may send before a request line;
    /// the first other byte starts a head.
    fn skip_empty_lines<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        match bytes.iter().position(|b| !matches!(b, b'\r' | b'\n')) {
            Some(start) => {
                self.state = State::Head;
                self.line = LineEnd::Text;
                &bytes[start..]
            }
            None => &[],
        }
    }

    /// Skips up to `left` body bytes, by counting.
    fn skip<'b>(
        &mut self,
        bytes: &'b [u8],
        left: u64,
        more: fn(u64) -> State,
        done: State,
    ) -> &'b [u8] {
        let n = usize::try_from(left).map_or(bytes.len(), |l| l.min(bytes.len()));
        // n <= bytes.len(), and usize fits in u64 on every target we build.
        let left = left - n as u64;
        self.state = if left == 0 { done } else { more(left) };
        &bytes[n..]
    }

    /// Skips the content of a trailer line or chunk extension, up to the
    /// CR (or the LF an extension may not hold) that the byte-wise states
    /// then judge.
    fn skip_to_cr<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let stop = |b: &u8| match self.state {
            State::ChunkExt(_) => matches!(b, b'\r' | b'\n'),
            _ => *b == b'\r',
        };
        let Some(i) = bytes.iter().position(stop) else {
            return &[];
        };
        match bytes[i..].split_first() {
            Some((&b, rest)) => {
                self.state = chunk_byte(self.state, b);
                rest
            }
            None => &[],
        }
    }

    /// Scans for the end of the head, parses the head when it has one, and
    /// moves on to its body.
    fn read_head<'b>(&mut self, bytes: &'b [u8]) -> Result<&'b [u8], Ambiguity> {
        let Some(end) = self.scan_head_end(bytes) else {
            self.keep(bytes);
            return Ok(&[]);
        };
        let (part, rest) = bytes.split_at(end);
        let verdict = if self.head.is_empty() && part.len() <= self.max_head {
            // The steady path: the whole head is in this read.
            let v = judge_head(part);
            if v == Verdict::Partial {
                self.head.extend_from_slice(part);
            }
            v
        } else if self.head.len().saturating_add(part.len()) <= self.max_head {
            self.head.extend_from_slice(part);
            judge_head(&self.head)
        } else {
            Verdict::Stop
        };
        if verdict != Verdict::Partial {
            self.head.clear();
        }
        match verdict {
            Verdict::Partial => {
                self.line = LineEnd::Lf;
                Ok(rest)
            }
            Verdict::Next(state) => {
                self.state = state;
                Ok(rest)
            }
            Verdict::Ambiguous(a) => Err(a),
            Verdict::Stop => {
                self.lose();
                Ok(&[])
            }
        }
    }

    /// The length of `bytes` up to and including the LF of the empty line
    /// that ends the head, carrying the scan across reads.
    fn scan_head_end(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            self.line = match (self.line, b) {
                (LineEnd::Lf | LineEnd::LfCr, b'\n') => return Some(i + 1),
                (_, b'\n') => LineEnd::Lf,
                (LineEnd::Lf, b'\r') => LineEnd::LfCr,
                _ => LineEnd::Text,
            };
        }
        None
    }

    /// Keeps the start of a head that continues in the next read; gives up
    /// past `max_head`.
    fn keep(&mut self, bytes: &[u8]) {
        if self.head.len().saturating_add(bytes.len()) > self.max_head {
            self.lose();
        } else {
            self.head.extend_from_slice(bytes);
        }
    }

    /// Stops following, and frees the head buffer: a lost or flagged
    /// connection does no more work.
    fn lose(&mut self) {
        self.state = State::Lost;
        self.head = Vec::new();
    }
}

/// One byte of chunked framing outside data, extensions and trailer
/// content, as hyper's decoder reads it.
fn chunk_byte(state: State, b: u8) -> State {
    match (state, b) {
        (State::ChunkStart, _) => hex(b).map_or(State::Lost, State::ChunkSize),
        (State::ChunkSize(n), b' ' | b'\t') => State::ChunkSpace(n),
        (State::ChunkSize(n), _) => match hex(b) {
            // More than 16 hex digits overflow, which hyper refuses.
            Some(d) => n
                .checked_mul(16)
                .and_then(|n| n.checked_add(d))
                .map_or(State::Lost, State::ChunkSize),
            None => after_size(n, b),
        },
        (State::ChunkSpace(n), b' ' | b'\t') => State::ChunkSpace(n),
        (State::ChunkSpace(n), _) => after_size(n, b),
        (State::ChunkExt(n), b'\r') => State::ChunkSizeLf(n),
        // A bare LF in an extension: hyper refuses it.
        (State::ChunkExt(_), b'\n') => State::Lost,
        (State::ChunkExt(n), _) => State::ChunkExt(n),
        (State::ChunkSizeLf(0), b'\n') => State::TrailerStart,
        (State::ChunkSizeLf(n), b'\n') => State::ChunkData(n),
        (State::ChunkDataCr, b'\r') => State::ChunkDataLf,
        (State::ChunkDataLf, b'\n') => State::ChunkStart,
        (State::TrailerStart, b'\r') => State::EndLf,
        (State::TrailerLine, b'\r') => State::TrailerLf,
        (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
        (State::TrailerLf, b'\n') => State::TrailerStart,
        (State::EndLf, b'\n') => State::Idle,
        // Anything else is a chunk hyper refuses.
        _ => State::Lost,
    }
}

/// After the size digits: an extension, the end of the line, or a
/// malformed line.
fn after_size(n: u64, b: u8) -> State {
    match b {
        b';' => State::ChunkExt(n),
        b'\r' => State::ChunkSizeLf(n),
        _ => State::Lost,
    }
}

fn hex(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

/// Parses one complete head (leading empty lines already skipped) and
/// decides what follows it.
fn judge_head(head: &[u8]) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(httparse::Status::Partial) => return Verdict::Partial,
        // Too many headers, bad syntax, HTTP/2's preface (hyper refuses
        // those), or a head ending before the scan thought it did (cannot
        // happen; not guessed at).
        Ok(httparse::Status::Complete(_)) | Err(_) => return Verdict::Stop,
    }
    judge_framing(&req)
}

/// Counts what a parsed head says about framing and applies the rules in
/// order: the first ambiguity found is the one reported.
fn judge_framing(req: &httparse::Request<'_, '_>) -> Verdict {
    let mut te: Option<&[u8]> = None;
    let (mut te_lines, mut cl_lines) = (0usize, 0usize);
    let mut cl: Option<&[u8]> = None;
    let (mut upgrade, mut h2c) = (false, false);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te_lines += 1;
            te = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            cl_lines += 1;
            cl = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
            h2c |= h
                .value
                .split(|b| *b == b',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case(b"h2c"));
        }
    }
    if te_lines > 0 && cl_lines > 0 {
        return Verdict::Ambiguous(Ambiguity::ContentLengthWithTransferEncoding);
    }
    if te_lines > 1 {
        return Verdict::Ambiguous(Ambiguity::TransferEncodingRepeated);
    }
    if te.is_some_and(|v| !trim_ows(v).eq_ignore_ascii_case(b"chunked")) {
        return Verdict::Ambiguous(Ambiguity::TransferEncodingNotChunked);
    }
    if cl_lines > 1 {
        return Verdict::Ambiguous(Ambiguity::ContentLengthRepeated);
    }
    let length = match cl.map(content_length) {
        Some(None) => return Verdict::Ambiguous(Ambiguity::ContentLengthInvalid),
        Some(Some(n)) => n,
        None => 0,
    };
    if h2c {
        return Verdict::Ambiguous(Ambiguity::H2cUpgrade);
    }
    // hyper honours Upgrade only on HTTP/1.1, and CONNECT on any version;
    // after either the bytes may belong to another protocol.
    if (upgrade && req.version == Some(1)) || req.method == Some("CONNECT") {
        return Verdict::Stop;
    }
    Verdict::Next(match (te, length) {
        (Some(_), _) => State::ChunkStart,
        (None, 0) => State::Idle,
        (None, n) => State::Body(n),
    })
}

/// A `Content-Length` value: decimal digits only, fitting in u64. No
/// sign, no list, not empty.
fn content_length(value: &[u8]) -> Option<u64> {
    let digits = trim_ows(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Strips optional whitespace (spaces and tabs) from both ends.
fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| matches!(b, b' ' | b'\t');
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const MAX: usize = 8192;

    /// Feeds `stream` in one piece; the first ambiguity, if any.
    fn whole(stream: &[u8]) -> Option<Ambiguity> {
        let mut f = H1Framer::new(MAX);
        let got = f.feed(stream);
        assert_eq!(got, f.flagged());
        got
    }

    /// Feeds `stream` in pieces cut at `cuts`; the first ambiguity, if
    /// any, checking it is reported exactly once.
    fn pieces(stream: &[u8], cuts: impl Iterator<Item = usize>) -> (Option<Ambiguity>, H1Framer) {
        let mut f = H1Framer::new(MAX);
        let mut reported = Vec::new();
        let mut at = 0;
        for len in cuts {
            let end = (at + len).min(stream.len());
            reported.extend(f.feed(&stream[at..end]));
            at = end;
            if at == stream.len() {
                break;
            }
        }
        reported.extend(f.feed(&stream[at..]));
        assert!(reported.len() <= 1, "reported twice: {reported:?}");
        assert_eq!(reported.first().copied(), f.flagged());
        (f.flagged(), f)
    }

    fn byte_at_a_time(stream: &[u8]) -> (Option<Ambiguity>, H1Framer) {
        pieces(stream, std::iter::repeat(1))
    }

    /// A small deterministic generator, so the random splits repeat.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    fn random_splits(stream: &[u8], seed: u64) -> (Option<Ambiguity>, H1Framer) {
        let mut rng = XorShift(seed);
        let cuts: Vec<usize> = (0..stream.len()).map(|_| rng.below(40)).collect();
        pieces(stream, cuts.into_iter())
    }

    /// Every way of feeding `stream` gives `want`.
    fn all_ways(stream: &[u8], want: Option<Ambiguity>) {
        assert_eq!(whole(stream), want, "whole");
        assert_eq!(byte_at_a_time(stream).0, want, "byte at a time");
        for seed in 1..50 {
            assert_eq!(random_splits(stream, seed).0, want, "seed {seed}");
        }
    }

    fn head(lines: &str) -> Vec<u8> {
        format!("POST /x HTTP/1.1\r\nHost: a.example.com\r\n{lines}\r\n").into_bytes()
    }

    #[test]
    fn cl_te_in_either_order() {
        let a = Some(Ambiguity::ContentLengthWithTransferEncoding);
        all_ways(
            &head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            a,
        );
        all_ways(
            &head("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
            a,
        );
        all_ways(
            &head("transfer-encoding: chunked\r\nCONTENT-LENGTH: 5\r\n"),
            a,
        );
    }

    #[test]
    fn transfer_encoding_forms() {
        all_ways(
            &head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Some(Ambiguity::TransferEncodingRepeated),
        );
        for v in [
            "chunked, identity",
            "xchunked",
            "identity",
            "identity, chunked",
            "gzip",
        ] {
            assert_eq!(
                whole(&head(&format!("Transfer-Encoding: {v}\r\n"))),
                Some(Ambiguity::TransferEncodingNotChunked),
                "{v}"
            );
        }
        // Optional whitespace and case are not ambiguous.
        let ok = head("Transfer-Encoding:\tchunked \t\r\n");
        let mut stream = ok.clone();
        stream.extend_from_slice(b"0\r\n\r\n");
        all_ways(&stream, None);
        assert_eq!(whole(&head("Transfer-Encoding: CHUNKED\r\n")), None);
    }

    #[test]
    fn content_length_forms() {
        all_ways(
            &head("Content-Length: 4\r\nContent-Length: 4\r\n"),
            Some(Ambiguity::ContentLengthRepeated),
        );
        all_ways(
            &head("Content-Length: 4\r\nContent-Length: 5\r\n"),
            Some(Ambiguity::ContentLengthRepeated),
        );
        for v in [
            "+4",
            "4, 4",
            "-1",
            "0x10",
            "",
            "4 4",
            "18446744073709551616",
        ] {
            assert_eq!(
                whole(&head(&format!("Content-Length: {v}\r\n"))),
                Some(Ambiguity::ContentLengthInvalid),
                "{v:?}"
            );
        }
        let mut ok = head("Content-Length:  4 \r\n");
        ok.extend_from_slice(b"abcd");
        all_ways(&ok, None);
    }

    #[test]
    fn h2c_upgrade_is_flagged() {
        all_ways(
            &head(
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
            ),
            Some(Ambiguity::H2cUpgrade),
        );
        assert_eq!(
            whole(&head("Upgrade: websocket, H2C\r\n")),
            Some(Ambiguity::H2cUpgrade)
        );
    }

    /// Three requests whose bodies hold header-like text, in every body
    /// framing, with empty lines between them.
    fn good_stream() -> Vec<u8> {
        let mut s = Vec::new();
        let smuggle = "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        let cl_body = format!("GET /inner HTTP/1.1\r\n{smuggle}");
        s.extend_from_slice(
            format!(
                "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{cl_body}",
                cl_body.len()
            )
            .as_bytes(),
        );
        s.extend_from_slice(b"\r\n");
        s.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
        // Chunked, with extensions, a chunk of header-like text, and
        // trailers.
        let chunk = format!("POST / HTTP/1.1\r\n{smuggle}");
        s.extend_from_slice(
            format!(
                "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                 {:x};name=\"v\";x=1\r\n{chunk}\r\n\
                 3 \t;ext\r\n\r\n\n\r\n\
                 A\r\n0123456789\r\n\
                 0;last\r\nX-Trailer: Transfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n",
                chunk.len()
            )
            .as_bytes(),
        );
        // A chunked body without trailers, then HTTP/1.0 with a body.
        s.extend_from_slice(
            b"POST /d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n\
              POST /e HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
        );
        s
    }

    #[test]
    fn a_keep_alive_stream_is_followed_through_bodies() {
        let s = good_stream();
        all_ways(&s, None);
        let (_, f) = byte_at_a_time(&s);
        assert_eq!(f.state, State::Idle);
        assert!(f.following());
    }

    #[test]
    fn a_smuggling_head_after_good_requests_is_flagged() {
        let mut s = good_stream();
        s.extend_from_slice(&head("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"));
        s.extend_from_slice(b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
        all_ways(&s, Some(Ambiguity::ContentLengthWithTransferEncoding));
    }

    #[test]
    fn flagged_is_reported_once_and_then_nothing_is_done() {
        let mut f = H1Framer::new(MAX);
        let bad = head("Content-Length: 1\r\nContent-Length: 1\r\n");
        assert_eq!(f.feed(&bad), Some(Ambiguity::ContentLengthRepeated));
        assert!(!f.following());
        assert_eq!(f.feed(&bad), None);
        assert_eq!(f.feed(&head("Transfer-Encoding: x\r\n")), None);
        assert_eq!(f.flagged(), Some(Ambiguity::ContentLengthRepeated));
    }

    #[test]
    fn a_head_beyond_max_head_stops_following() {
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        big.resize(MAX + 10, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        big.extend_from_slice(&head("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n"));
        for (got, f) in [byte_at_a_time(&big), random_splits(&big, 7)] {
            assert_eq!(got, None);
            assert!(!f.following());
        }
        assert_eq!(whole(&big), None);
        // A head of exactly max_head is still followed.
        let mut exact = b"GET / HTTP/1.1\r\nX: ".to_vec();
        exact.resize(MAX - 4, b'a');
        exact.extend_from_slice(b"\r\n\r\n");
        exact.extend_from_slice(&head("Transfer-Encoding: chunked, x\r\n"));
        assert_eq!(whole(&exact), Some(Ambiguity::TransferEncodingNotChunked));
        assert_eq!(
            byte_at_a_time(&exact).0,
            Some(Ambiguity::TransferEncodingNotChunked)
        );
    }

    #[test]
    fn upgrades_and_connect_stop_following() {
        let bad = head("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n");
        let mut ws =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                .to_vec();
        ws.extend_from_slice(&bad);
        let (got, f) = byte_at_a_time(&ws);
        assert_eq!(got, None);
        assert!(!f.following());
        assert_eq!(whole(&ws), None);

        let mut connect = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_vec();
        connect.extend_from_slice(&bad);
        assert_eq!(whole(&connect), None);

        // hyper ignores Upgrade on HTTP/1.0, so the stream stays HTTP/1.
        let mut old = b"GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n".to_vec();
        old.extend_from_slice(&bad);
        assert_eq!(
            whole(&old),
            Some(Ambiguity::ContentLengthWithTransferEncoding)
        );
    }

    #[test]
    fn streams_hyper_refuses_stop_following_without_a_flag() {
        let bad = head("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n");
        let cases: [&[u8]; 7] = [
            // HTTP/2 prior-knowledge preface.
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            // Bad chunk size, bare LF after a size, data without CRLF.
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n",
            // A chunk size overflowing u64.
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
            // obs-fold and a space before the colon.
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length : 1\r\n\r\n",
        ];
        for case in cases {
            let mut s = case.to_vec();
            s.extend_from_slice(&bad);
            let (got, f) = byte_at_a_time(&s);
            assert_eq!(got, None, "{:?}", String::from_utf8_lossy(case));
            assert!(!f.following(), "{:?}", String::from_utf8_lossy(case));
        }
        // More headers than we parse.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        many.extend_from_slice(&bad);
        assert_eq!(whole(&many), None);
    }

    #[test]
    fn bare_lf_heads_and_leading_empty_lines_are_followed() {
        let mut s = b"\r\n\n\r\nGET / HTTP/1.1\nHost: a\n\n".to_vec();
        s.extend_from_slice(b"\r\nPOST / HTTP/1.1\nContent-Length: 2\n\nhi");
        s.extend_from_slice(&head(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ));
        all_ways(&s, Some(Ambiguity::TransferEncodingRepeated));
    }

    #[test]
    fn a_huge_content_length_is_counted_not_buffered() {
        let mut f = H1Framer::new(MAX);
        assert_eq!(
            f.feed(&head("Content-Length: 18446744073709551615\r\n")),
            None
        );
        let chunk = vec![b'T'; 65536];
        for _ in 0..16 {
            assert_eq!(f.feed(&chunk), None);
        }
        assert_eq!(f.state, State::Body(u64::MAX - 16 * 65536));
        assert!(f.head.capacity() < MAX);
    }

    #[test]
    fn a_head_in_one_read_is_not_copied() {
        let mut f = H1Framer::new(MAX);
        let mut s = good_stream();
        s.extend_from_slice(&good_stream());
        assert_eq!(f.feed(&s), None);
        assert_eq!(f.head.capacity(), 0);
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let alphabet =
            b"\r\n :;,0123456789abcdefABCDEF\tGETPOST/HTTP1.Transfer-EncodingchunkedContent-Length";
        let seeds: [&[u8]; 3] = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            b"",
        ];
        for round in 0..2000 {
            let mut s = seeds[round % seeds.len()].to_vec();
            for _ in 0..rng.below(300) {
                let b = if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len() as u64)]
                };
                s.push(b);
            }
            let mut f = H1Framer::new(64);
            let mut at = 0;
            while at < s.len() {
                let end = (at + 1 + rng.below(20)).min(s.len());
                f.feed(&s[at..end]);
                at = end;
            }
        }
    }
}
