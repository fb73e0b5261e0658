//! Secret canaries: every form in which a secret could show up in a log,
//! and the check that none does. One file for both crates' tests: the
//! gateway's (`mod secrets`) and the seed app's (`#[path]`).

#![allow(dead_code)]

/// Standard base64 with padding (for hand-made `Authorization: Basic`).
pub fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form in which `secret` could appear in a log line: as is;
/// URL-encoded (RFC 3986 unreserved kept, and everything but
/// alphanumerics encoded, upper- and lower-case hex, and the form
/// encoding's `+` for space); and base64, standard and URL-safe, at each
/// of the three byte alignments it can have inside a longer encoded
/// value (e.g. `user:password` in a Basic header) — the part of the
/// encoding that depends on the secret's bytes only.
pub fn secret_forms(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_owned()];
    let enc = |keep: fn(u8) -> bool, lower: bool, plus: bool| -> String {
        let mut s = String::new();
        for &b in secret.as_bytes() {
            if keep(b) {
                s.push(b as char);
            } else if plus && b == b' ' {
                s.push('+');
            } else if lower {
                s.push_str(&format!("%{b:02x}"));
            } else {
                s.push_str(&format!("%{b:02X}"));
            }
        }
        s
    };
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    for keep in [unreserved as fn(u8) -> bool, alnum] {
        for lower in [false, true] {
            for plus in [false, true] {
                out.push(enc(keep, lower, plus));
            }
        }
    }
    let bytes = secret.as_bytes();
    for k in 0..3usize {
        let mut data = vec![0u8; k];
        data.extend_from_slice(bytes);
        let full = b64(&data);
        // Drop the groups that mix in unknown neighbouring bytes.
        let start = if k == 0 { 0 } else { 4 };
        let tail_mixed = data.len() % 3 != 0;
        let end = if tail_mixed {
            full.len() - 4
        } else {
            full.len()
        };
        if end > start && end - start >= 8 {
            let core = &full[start..end];
            out.push(core.to_owned());
            out.push(core.replace('+', "-").replace('/', "_"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Asserts that no form of any of `secrets` ([`secret_forms`]) is in
/// `log`, naming the line that has one.
pub fn assert_no_secrets(log: &str, secrets: &[String]) {
    assert!(!secrets.is_empty(), "no secrets to search for");
    for secret in secrets {
        assert!(secret.len() >= 8, "too short to search for: {secret:?}");
        for form in secret_forms(secret) {
            if let Some(line) = log.lines().find(|l| l.contains(&form)) {
                panic!(
                    "a secret ({}…, as {}…) reached the log:\n{line}",
                    &secret[..6.min(secret.len())],
                    &form[..6.min(form.len())]
                );
            }
        }
    }
}
