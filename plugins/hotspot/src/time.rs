//! Wall-clock time, UTC. Every timestamp the plugin stores or answers is UTC
//! in the original's "Y-m-d H:i:s" format (`2025-01-17 10:00:00`), formatted
//! and parsed by [`wasmgate_sdk::time`]; what is only hotspot's lives here.

use std::time::{SystemTime, UNIX_EPOCH};

pub use wasmgate_sdk::time::{format_datetime, now_secs, parse_datetime};

/// Unix nanoseconds now (for ordering the login log).
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// "9h12m45s": whole hours (not wrapped into days), then zero-padded minutes
/// and seconds, as in the seed's active-guest example.
pub fn hms(secs: u64) -> String {
    format!("{}h{:02}m{:02}s", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        assert_eq!(format_datetime(0), "1970-01-01 00:00:00");
        assert_eq!(parse_datetime("2025-01-17 10:00:00"), Some(1_737_108_000));
        assert_eq!(format_datetime(1_737_108_000), "2025-01-17 10:00:00");
        assert_eq!(
            parse_datetime("2024-02-29 23:59:59")
                .map(format_datetime)
                .as_deref(),
            Some("2024-02-29 23:59:59")
        );
    }

    #[test]
    fn parse_refuses_what_is_not_a_real_time() {
        for bad in [
            "2025-02-29 00:00:00",
            "2025-13-01 00:00:00",
            "2025-01-17 24:00:00",
            "2025-01-17T10:00:00",
            "2025-1-17 10:00:00",
            "1969-12-31 23:59:59",
            "+025-01-17 10:00:00",
            "",
            "2025-01-17 10:00:00 ",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn hms_pads_minutes_and_seconds() {
        assert_eq!(hms(9 * 3600 + 12 * 60 + 45), "9h12m45s");
        assert_eq!(hms(12 * 3600 + 5 * 60 + 30), "12h05m30s");
        assert_eq!(hms(7), "0h00m07s");
        assert_eq!(hms(50 * 3600), "50h00m00s");
    }
}
