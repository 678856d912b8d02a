//! Wall-clock time and the proleptic Gregorian calendar, UTC.
//!
//! The clock is read through std (wasi clocks). The calendar conversions are
//! Howard Hinnant's public-domain algorithms; the text formats are the ones
//! several plugins answer with: "YYYY-MM-DD HH:MM:SS" and "YYYY-MM-DD".
//! Parsing is strict: fixed-width ASCII digits, a four-digit year from 1970
//! to 9999, in-range fields and a real calendar date (no Feb 30), else `None`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds in a day.
pub const DAY: u64 = 86_400;

/// Unix seconds now (0 if the clock reads before the epoch).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `y` is a Gregorian leap year.
pub fn is_leap_year(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days in month `m` (1..=12) of year `y`; 0 for a month out of range.
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian). The date is
/// not checked; see [`days_in_month`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day number since 1970-01-01
/// (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// "YYYY-MM-DD" of Unix seconds `ts`, UTC.
pub fn format_date(ts: u64) -> String {
    let (y, m, d) = civil_from_days((ts / DAY) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// "YYYY-MM-DD HH:MM:SS" of Unix seconds `ts`, UTC.
pub fn format_datetime(ts: u64) -> String {
    let secs = ts % DAY;
    format!(
        "{} {:02}:{:02}:{:02}",
        format_date(ts),
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The value of `b[range]` if it is all ASCII digits.
fn digits(b: &[u8], range: std::ops::Range<usize>) -> Option<u64> {
    let part = &b[range];
    if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(part.iter().fold(0, |n, c| n * 10 + u64::from(c - b'0')))
}

/// Unix seconds of the start (00:00:00 UTC) of a strict "YYYY-MM-DD".
pub fn parse_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(b, 0..4)?, digits(b, 5..7)?, digits(b, 8..10)?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) {
        return None;
    }
    let (y, m) = (y as i64, m as u32);
    if d < 1 || d > u64::from(days_in_month(y, m)) {
        return None;
    }
    u64::try_from(days_from_civil(y, m, d as u32))
        .ok()
        .map(|day| day * DAY)
}

/// Unix seconds of a strict "YYYY-MM-DD HH:MM:SS" (UTC).
pub fn parse_datetime(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 19 || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let day = parse_date(std::str::from_utf8(&b[..10]).ok()?)?;
    let (h, mi, s) = (digits(b, 11..13)?, digits(b, 14..16)?, digits(b, 17..19)?);
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(day + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
        for z in (-800_000..3_000_000).step_by(97) {
            let (y, m, d) = civil_from_days(z);
            assert!(
                (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m),
                "{z}"
            );
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn leap_years() {
        assert!(is_leap_year(2024));
        assert!(is_leap_year(2000));
        assert!(is_leap_year(1600));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2100));
        assert!(!is_leap_year(2023));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2025, 4), 30);
        assert_eq!(days_in_month(2025, 12), 31);
        assert_eq!(days_in_month(2025, 0), 0);
        assert_eq!(days_in_month(2025, 13), 0);
    }

    #[test]
    fn formats() {
        assert_eq!(format_datetime(0), "1970-01-01 00:00:00");
        assert_eq!(format_datetime(1_737_108_000), "2025-01-17 10:00:00");
        assert_eq!(format_datetime(86_399), "1970-01-01 23:59:59");
        assert_eq!(format_date(1_709_164_800), "2024-02-29");
        assert_eq!(format_date(253_402_300_799), "9999-12-31");
        assert_eq!(format_datetime(253_402_300_799), "9999-12-31 23:59:59");
    }

    #[test]
    fn parse_and_format_round_trip() {
        assert_eq!(parse_datetime("2025-01-17 10:00:00"), Some(1_737_108_000));
        assert_eq!(parse_datetime("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_datetime("9999-12-31 23:59:59"), Some(253_402_300_799));
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-29"), Some(1_709_164_800));
        assert_eq!(
            parse_date("2000-02-29").map(format_date).as_deref(),
            Some("2000-02-29")
        );
        for ts in (0..253_402_300_800u64).step_by(9_876_543) {
            assert_eq!(parse_datetime(&format_datetime(ts)), Some(ts));
            assert_eq!(parse_date(&format_date(ts)), Some(ts - ts % DAY));
        }
    }

    #[test]
    fn parse_rejects_malformed_or_out_of_range() {
        for bad in [
            "2025-02-29 00:00:00",
            "1900-02-29 00:00:00",
            "2025-02-30 00:00:00",
            "2025-04-31 00:00:00",
            "2025-13-01 00:00:00",
            "2025-00-01 00:00:00",
            "2025-01-00 00:00:00",
            "2025-01-32 00:00:00",
            "2025-01-17 24:00:00",
            "2025-01-17 23:60:00",
            "2025-01-17 23:59:60",
            "2025-01-17T10:00:00",
            "2025-1-17 10:00:00",
            "1969-12-31 23:59:59",
            "+025-01-17 10:00:00",
            "2025-01-17 10:00:0a",
            "2025-01-17 -1:00:00",
            "2025-01-17 10:00:00 ",
            " 2025-01-17 10:00:00",
            "2025-01-17",
            "2025-01-1é 10:00:0",
            "",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
        for bad in [
            "2023-02-29",
            "2100-02-29",
            "2026-02-30",
            "2026-06-31",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "2026-1-01",
            "+026-01-01",
            "1969-12-31",
            "2026-01-01 ",
            "2026/01/01",
            "2026-01-01 00:00:00",
            "٢٠٢٦-01-01",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_secs() > 1_577_836_800);
    }
}
