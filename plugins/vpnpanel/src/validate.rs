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

pub use wasmgate_sdk::time::format_date;

/// `YYYY-MM-DD` as the unix second at the END of that day (UTC), so a user
/// whose expiry date is today may still connect today. None when malformed
/// or not a real date (strict parsing by [`wasmgate_sdk::time::parse_date`]).
pub fn parse_date_end(s: &str) -> Option<u64> {
    wasmgate_sdk::time::parse_date(s).map(|start| start + 86_399)
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
        || s.strip_prefix("node_").is_some_and(|n| {
            !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit())
        })
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
        assert_eq!(
            format_timestamp(1_704_110_400, 0),
            "2024-01-01T12:00:00.000000"
        );
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
