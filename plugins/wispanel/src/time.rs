//! Wall-clock time. The plugin reads the clock through std (wasi clocks);
//! timestamps go out as RFC 3339 in the offset of the `utc_offset` setting
//! (default `+00:00`), and come in as RFC 3339 with any offset or as Unix
//! seconds. The clock and the calendar arithmetic are [`wasmgate_sdk::time`]'s.

use wasmgate_sdk::time::{civil_from_days, now_secs};
#[cfg(test)]
use wasmgate_sdk::time::{days_from_civil, days_in_month};

/// Unix seconds now.
pub fn now() -> i64 {
    i64::try_from(now_secs()).unwrap_or(i64::MAX)
}

/// "+07:00" / "-05:30" / "Z" as seconds east of UTC.
pub fn parse_offset(text: &str) -> Option<i64> {
    if text == "Z" || text == "z" {
        return Some(0);
    }
    let b = text.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let h: i64 = digits(&text[1..3])?;
    let m: i64 = digits(&text[4..6])?;
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// RFC 3339 of Unix seconds `ts`, shown at `offset` seconds east of UTC,
/// e.g. "2036-05-11T06:10:02+07:00".
pub fn format(ts: i64, offset: i64) -> String {
    let local = ts + offset;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let sign = if offset < 0 { '-' } else { '+' };
    let off = offset.abs();
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        off / 3600,
        off % 3600 / 60
    )
}

/// Unix seconds of an RFC 3339 date-time (the tests check [`format`]
/// against it) ("2036-05-11T06:10:02+07:00",
/// "2036-05-10T23:10:02.5Z"); fractions of a second are dropped.
#[cfg(test)]
pub fn parse(text: &str) -> Option<i64> {
    if text.len() < 20 || !text.is_ascii() {
        return None;
    }
    let b = text.as_bytes();
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let y: i64 = digits(&text[0..4])?;
    let mo: u32 = digits(&text[5..7])?;
    let d: u32 = digits(&text[8..10])?;
    let h: i64 = digits(&text[11..13])?;
    let mi: i64 = digits(&text[14..16])?;
    let s: i64 = digits(&text[17..19])?;
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = parse_offset(rest)?;
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s.min(59) - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_the_given_offset() {
        // The seed's expires_at.
        let ts = parse("2036-05-11T06:10:02+07:00").unwrap();
        assert_eq!(format(ts, 7 * 3600), "2036-05-11T06:10:02+07:00");
        assert_eq!(format(ts, 0), "2036-05-10T23:10:02+00:00");
        assert_eq!(format(0, -5 * 3600 - 1800), "1969-12-31T18:30:00-05:30");
    }

    #[test]
    fn parses_rfc3339_variants() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("1970-01-01T00:00:01.999Z"), Some(1));
        assert_eq!(parse("1970-01-01T07:00:00+07:00"), Some(0));
        assert_eq!(parse("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+07:00"), Some(25_200));
        assert_eq!(parse_offset("-00:30"), Some(-1800));
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("+7"), None);
    }
}
