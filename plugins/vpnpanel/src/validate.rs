//! Pure checks and conversions of request fields, with unit tests.

/// Names of users and sub-admins: 3 to 32 of `A-Z a-z 0-9 _ . -`, so they
/// are safe in kv keys, URLs and `.ovpn` file names.
pub fn is_valid_name(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// A secret that ends up in a config file of a VPN daemon (IPsec PSK, L2TP
/// and Cisco passwords): not empty, at most 128 bytes, no `"`, no `\`, no
/// control character (newlines included) — any of these could break out of
/// the quoted value it is written into.
pub fn is_safe_secret(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

/// Bytes per unit of `data_limit_unit` (case-insensitive MB, GB, TB).
pub fn unit_bytes(unit: &str) -> Option<u64> {
    match unit.to_ascii_uppercase().as_str() {
        "MB" => Some(1 << 20),
        "GB" => Some(1 << 30),
        "TB" => Some(1 << 40),
        _ => None,
    }
}

/// `limit` `unit`s in bytes, rounded down; None when it overflows.
pub fn limit_bytes(limit: f64, unit: &str) -> Option<u64> {
    let b = limit * unit_bytes(unit)? as f64;
    (0.0..1.8e19).contains(&b).then_some(b as u64)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` as the unix second at the END of that day (UTC), so a user
/// whose expiry date is today may still connect today. None when malformed
/// or not a real date.
pub fn parse_date_end(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if d > days_in[(m - 1) as usize] {
        return None;
    }
    let day = days_from_civil(i64::from(y), m, d);
    u64::try_from((day + 1) * 86_400 - 1).ok()
}

/// `YYYY-MM-DD` of a unix second (UTC).
pub fn format_date(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// ISO 8601 with microseconds, as the seed's `timestamp` (UTC, no zone).
pub fn format_timestamp(secs: u64, micros: u32) -> String {
    let rem = secs % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}.{micros:06}",
        format_date(secs),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A server identifier a user may be restricted to: `main` or `node_<id>`.
pub fn is_server_identifier(s: &str) -> bool {
    s == "main"
        || s.strip_prefix("node_")
            .is_some_and(|n| !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("test_user"));
        assert!(is_valid_name("user1234"));
        assert!(!is_valid_name("ab"));
        assert!(!is_valid_name("a/b/c"));
        assert!(!is_valid_name("x y z"));
        assert!(!is_valid_name(&"a".repeat(33)));
    }

    #[test]
    fn secrets_refuse_quotes_and_control_characters() {
        assert!(is_safe_secret("MyNewSecurePSK_2026"));
        assert!(!is_safe_secret(""));
        assert!(!is_safe_secret("a\"b"));
        assert!(!is_safe_secret("a\nb"));
        assert!(!is_safe_secret("a\rb"));
        assert!(!is_safe_secret("a\u{0}b"));
        assert!(!is_safe_secret("a\tb"));
        assert!(!is_safe_secret("a\\b"));
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_date_end("1970-01-01"), Some(86_399));
        assert_eq!(
            parse_date_end("2026-12-31").map(format_date).as_deref(),
            Some("2026-12-31")
        );
        assert_eq!(
            parse_date_end("2024-02-29").map(format_date).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(parse_date_end("2023-02-29"), None);
        assert_eq!(parse_date_end("2026-13-01"), None);
        assert_eq!(parse_date_end("2026-1-01"), None);
        assert_eq!(parse_date_end("+026-01-01"), None);
        assert_eq!(format_timestamp(1_704_110_400, 0), "2024-01-01T12:00:00.000000");
    }

    #[test]
    fn units() {
        assert_eq!(limit_bytes(50.0, "GB"), Some(50 << 30));
        assert_eq!(limit_bytes(1.5, "mb"), Some(3 << 19));
        assert_eq!(limit_bytes(1.0, "PB"), None);
    }

    #[test]
    fn server_identifiers() {
        assert!(is_server_identifier("main"));
        assert!(is_server_identifier("node_1"));
        assert!(!is_server_identifier("node_"));
        assert!(!is_server_identifier("node_x"));
        assert!(!is_server_identifier("other"));
    }
}
