//! Integers in decimal without `core::fmt`: the access log's numbers and
//! the rate-limit headers are written on every request, and `fmt`'s
//! machinery (a trait object, padding logic) costs several times what the
//! digits do.

/// "00" to "99": two digits per division, half the divisions of one at a
/// time.
static PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        // i < 100: each digit is below 10, the casts cannot truncate.
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// The decimal digits of `n`, written at the end of `buf`.
pub fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    // u64::MAX has 20 digits: at most nine pairs here and two digits
    // below, so `i` never goes under 0.
    while n >= 100 {
        // n % 100 < 100: the cast cannot truncate.
        let r = 2 * (n % 100) as usize;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[r..r + 2]);
    }
    if n >= 10 {
        // n < 100 here.
        let r = 2 * n as usize;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[r..r + 2]);
    } else {
        i -= 1;
        // n < 10 here.
        buf[i] = b'0' + n as u8;
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edges() {
        let mut b = [0u8; 20];
        assert_eq!(digits(0, &mut b), b"0");
        assert_eq!(digits(10, &mut b), b"10");
        assert_eq!(digits(u64::MAX, &mut b), u64::MAX.to_string().as_bytes());
        // Each length's first and last number, and one past.
        for p in 0..20 {
            let t = 10u64.pow(p);
            for n in [t - 1, t, t + 1] {
                assert_eq!(digits(n, &mut b), n.to_string().as_bytes());
            }
        }
    }

    proptest! {
        #[test]
        fn matches_fmt(n: u64) {
            let mut b = [0u8; 20];
            let want = n.to_string();
            prop_assert_eq!(digits(n, &mut b), want.as_bytes());
        }
    }
}
