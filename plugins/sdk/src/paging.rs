//! Paged lists: the query parameters every bundled plugin understands for a
//! list too long for one answer, and the response cap a list keeps to.
//!
//! A list is asked for whole (neither parameter) or a page at a time:
//! `limit` (1 to [`MAX_LIMIT`]) and a cursor the previous page handed out.
//! The names of the parameters and the envelope of the errors are each
//! plugin's own; [`parse`] checks the values and [`PageError`] says which
//! one was wrong.

use crate::{Error, config};

/// The most entries one page holds (also the host's kv page).
pub const MAX_LIMIT: usize = 1000;
/// The host's default `limits.max_response_bytes`.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Longer than any cursor a page hands out.
pub const MAX_CURSOR_CHARS: usize = 128;

/// One page: at most `limit` entries after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    pub limit: usize,
    pub cursor: Option<String>,
}

/// Which paging parameter is not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageError {
    /// Not a whole number from 1 to [`MAX_LIMIT`].
    Limit,
    /// Longer than any cursor handed out, or holding a control character.
    Cursor,
}

/// The page asked for by the raw `limit` and `cursor` values; `None` when
/// neither was sent (the whole list). A missing `limit` is [`MAX_LIMIT`].
pub fn parse(limit: Option<&str>, cursor: Option<String>) -> Result<Option<Paging>, PageError> {
    if limit.is_none() && cursor.is_none() {
        return Ok(None);
    }
    let limit = match limit {
        None => MAX_LIMIT,
        Some(l) => l
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or(PageError::Limit)?,
    };
    if cursor
        .as_deref()
        .is_some_and(|c| c.chars().count() > MAX_CURSOR_CHARS || c.chars().any(char::is_control))
    {
        return Err(PageError::Cursor);
    }
    Ok(Some(Paging { limit, cursor }))
}

/// The response cap the plugin keeps to: its setting `max_response_bytes`
/// (a plugin cannot read its limits, so the setting repeats
/// `limits.max_response_bytes`), by default the host's default.
pub fn max_response_bytes() -> Result<usize, Error> {
    match config::parse_or("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)? {
        0 => Err(Error::internal(
            "setting \"max_response_bytes\" must be more than 0",
        )),
        n => Ok(n),
    }
}

/// The error for one entry that does not fit in an answer at all: the
/// setting is too small.
pub fn entry_too_large(cap: usize) -> Error {
    Error::internal(format!(
        "a list entry does not fit in an answer of max_response_bytes ({cap}): raise the setting (and the plugin's limits.max_response_bytes)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_parameter_is_the_whole_list() {
        assert_eq!(parse(None, None), Ok(None));
    }

    #[test]
    fn a_limit_alone_starts_at_the_beginning_and_a_cursor_alone_takes_a_full_page() {
        assert_eq!(
            parse(Some(" 10 "), None),
            Ok(Some(Paging {
                limit: 10,
                cursor: None
            }))
        );
        assert_eq!(
            parse(None, Some("k7".into())),
            Ok(Some(Paging {
                limit: MAX_LIMIT,
                cursor: Some("k7".into())
            }))
        );
    }

    #[test]
    fn limits_outside_one_to_the_maximum_are_refused() {
        for bad in ["0", "1001", "-1", "ten", "1.5", ""] {
            assert_eq!(parse(Some(bad), None), Err(PageError::Limit), "{bad:?}");
        }
        assert!(parse(Some("1000"), None).is_ok());
    }

    #[test]
    fn overlong_cursors_and_control_characters_are_refused() {
        let long = "a".repeat(MAX_CURSOR_CHARS + 1);
        assert_eq!(parse(None, Some(long)), Err(PageError::Cursor));
        assert_eq!(parse(None, Some("a\nb".into())), Err(PageError::Cursor));
        let longest = "é".repeat(MAX_CURSOR_CHARS);
        assert!(parse(None, Some(longest)).is_ok());
    }
}
