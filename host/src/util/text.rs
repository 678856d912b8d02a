//! What an error message repeats of a caller's input is bounded, so that a
//! plugin cannot make the host log (or answer) megabytes of its own text.

/// At most `max` characters of `s`.
pub fn shown(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
