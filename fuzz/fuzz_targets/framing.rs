//! Request-smuggling detection: `framing::H1Framer::feed` over a raw
//! HTTP/1 byte stream cut into arbitrary reads.
//!
//! Input: 4 bytes that seed the cuts, 1 byte that picks `max_head`, then
//! the connection's bytes (heads, bodies, chunked framing, more requests).
//!
//! Invariants:
//! - the verdict (the ambiguity flagged, if any, and whether the framer is
//!   still following the stream) is the same whether the stream arrives in
//!   one read, one byte at a time, or in random pieces (including empty
//!   reads);
//! - an ambiguity is returned by exactly one `feed` call, the one
//!   `flagged()` reports afterwards, and a flagged framer is no longer
//!   following;
//! - once the framer stops following, further reads change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::framing::{Ambiguity, H1Framer};
use portcullis_fuzz::{Rng, chunks};

/// Head limits tried: tiny ones reach the give-up paths; 16 KiB is
/// hyper's default buffer.
const MAX_HEADS: [usize; 8] = [1, 8, 32, 64, 128, 512, 8192, 16384];

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    flagged: Option<Ambiguity>,
    following: bool,
}

fn run<'a>(max_head: usize, reads: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut f = H1Framer::new(max_head);
    let mut reported: Vec<Ambiguity> = Vec::new();
    for read in reads {
        let was_following = f.following();
        reported.extend(f.feed(read));
        if !was_following {
            assert!(!f.following(), "a lost framer started following again");
        }
    }
    assert!(
        reported.len() <= 1,
        "an ambiguity reported twice: {reported:?}"
    );
    assert_eq!(reported.first().copied(), f.flagged());
    if f.flagged().is_some() {
        assert!(!f.following(), "flagged but still following");
    }
    // More bytes after the end change nothing once it stopped following.
    if !f.following() {
        let before = f.flagged();
        assert_eq!(
            f.feed(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            None
        );
        assert_eq!(f.flagged(), before);
    }
    Outcome {
        flagged: f.flagged(),
        following: f.following(),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let (seed, rest) = data.split_at(4);
    let max_head = MAX_HEADS[usize::from(rest[0]) % MAX_HEADS.len()];
    let stream = &rest[1..];

    let whole = run(max_head, [stream]);
    let bytes = run(max_head, stream.chunks(1));
    assert_eq!(
        whole, bytes,
        "one read vs byte at a time (max_head {max_head})"
    );
    let mut rng = Rng::new(seed);
    let pieces = chunks(stream, &mut rng);
    let cut = run(max_head, pieces.iter().copied());
    assert_eq!(
        whole,
        cut,
        "one read vs {} reads (max_head {max_head})",
        pieces.len()
    );
});
