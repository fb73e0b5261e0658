//! Fixed-width base62 for key material and checksums.

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Encodes a big-endian number as exactly `width` base62 digits, most
/// significant first, left-padded with `0`. The caller picks a width large
/// enough for the input (43 digits hold 256 bits, 6 hold 32).
pub fn encode_fixed(bytes: &[u8], width: usize, out: &mut String) {
    let mut num: Vec<u8> = bytes.to_vec();
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        let mut rem: u32 = 0;
        for byte in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        // rem < 62 by construction of the division above.
        *slot = ALPHABET[rem as usize % 62];
    }
    for d in digits {
        out.push(char::from(d));
    }
}

/// Encodes a u32 as 6 base62 digits.
pub fn encode_u32(value: u32) -> [u8; 6] {
    let mut v = value;
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    out
}

/// True when every byte is a base62 digit.
pub fn is_base62(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_zero_and_max() {
        let mut s = String::new();
        encode_fixed(&[0u8; 32], 43, &mut s);
        assert_eq!(s, "0".repeat(43));
        let mut s = String::new();
        encode_fixed(&[0xffu8; 32], 43, &mut s);
        assert_eq!(s.len(), 43);
        assert!(is_base62(s.as_bytes()));
        assert_eq!(&encode_u32(0), b"000000");
        assert_eq!(&encode_u32(61), b"00000z");
        assert_eq!(&encode_u32(62), b"000010");
    }
}
