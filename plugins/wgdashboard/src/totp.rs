//! TOTP (RFC 6238) over HMAC-SHA1 (RFC 4226): 30-second steps, 6 digits,
//! the step before and after the current one accepted, every candidate
//! compared in constant time. The HMAC and the comparison are the host's
//! (`crypto`); they come in as functions so that this module stays pure.
//!
//! Refusing a code already used is the caller's part ([`crate::auth`]): it
//! remembers the last step that logged in, in kv, and refuses that step and
//! every earlier one.

/// Seconds per step.
pub const STEP: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;

/// The code of `step` from the HMAC-SHA1 of the step counter.
pub fn code(hmac_sha1: &[u8]) -> String {
    if hmac_sha1.len() < 20 {
        // Never produced by a real HMAC-SHA1; a code nobody can type.
        return String::from("invalid");
    }
    let offset = usize::from(hmac_sha1[19] & 0x0f);
    let bin = (u32::from(hmac_sha1[offset] & 0x7f) << 24)
        | (u32::from(hmac_sha1[offset + 1]) << 16)
        | (u32::from(hmac_sha1[offset + 2]) << 8)
        | u32::from(hmac_sha1[offset + 3]);
    format!("{:06}", bin % 10u32.pow(DIGITS))
}

/// The step of `given` among the current step and its neighbours, if it
/// matches one. All three candidates are always computed and compared.
pub fn matching_step(
    secret: &[u8],
    given: &str,
    now: u64,
    hmac_sha1: impl Fn(&[u8], &[u8]) -> Vec<u8>,
    constant_time_eq: impl Fn(&[u8], &[u8]) -> bool,
) -> Option<u64> {
    let current = now / STEP;
    let mut found = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        let candidate = code(&hmac_sha1(secret, &step.to_be_bytes()));
        let same = constant_time_eq(candidate.as_bytes(), given.as_bytes());
        if same && found.is_none() {
            found = Some(step);
        }
    }
    found
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding, as authenticator apps expect it.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(BASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Base32 as people paste it: case-insensitive, spaces and '=' ignored.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !matches!(c, b' ' | b'=')) {
        let v = BASE32.iter().position(|&x| x == c.to_ascii_uppercase())? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn dynamic_truncation_matches_rfc_4226() {
        // RFC 4226, section 5.4.
        assert_eq!(
            code(&hex("1f8698690e02ca16618550ef7f19da8e945b555a")),
            "872921"
        );
        // RFC 4226 appendix D, count 0 and 1 of "12345678901234567890".
        assert_eq!(
            code(&hex("cc93cf18508d94934c64b65d8ba7667fb7cde4b0")),
            "755224"
        );
        assert_eq!(
            code(&hex("75a48a19d4cbe100644e8ac1397eea747a2d33ab")),
            "287082"
        );
    }

    #[test]
    fn the_window_is_one_step_each_side() {
        // A fake HMAC whose "code" is the step itself, to see which steps are tried.
        let fake = |_: &[u8], msg: &[u8]| {
            let step = u64::from_be_bytes(msg.try_into().unwrap());
            let mut mac = vec![0u8; 20];
            mac[0..4].copy_from_slice(&(step as u32).to_be_bytes());
            mac
        };
        let eq = |a: &[u8], b: &[u8]| a == b;
        let now = 1000 * STEP + 7;
        for (step, expect) in [
            (999, Some(999)),
            (1000, Some(1000)),
            (1001, Some(1001)),
            (998, None),
            (1002, None),
        ] {
            let given = format!("{:06}", step % 1_000_000);
            assert_eq!(matching_step(b"k", &given, now, fake, eq), expect, "{step}");
        }
        assert_eq!(matching_step(b"k", "", now, fake, eq), None);
        assert_eq!(matching_step(b"k", "0001000", now, fake, eq), None);
    }

    #[test]
    fn base32_round_trips() {
        assert_eq!(
            base32_encode(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        assert_eq!(
            base32_decode("gezdgnbvgy3tqojq GEZDGNBVGY3TQOJQ").unwrap(),
            b"12345678901234567890"
        );
        assert_eq!(base32_encode(b"f"), "MY");
        assert_eq!(base32_decode("MY======").unwrap(), b"f");
        assert!(base32_decode("M1").is_none());
    }
}
