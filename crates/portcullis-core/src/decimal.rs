//! Integers in decimal without `core::fmt`: the access log's numbers and
//! the rate-limit headers are written on every request, and `fmt`'s
//! machinery (a trait object, padding logic) costs several times what the
//! digits do.

/// The decimal digits of `n`, written at the end of `buf`.
pub fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        // n % 10 < 10: the cast cannot truncate.
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
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
