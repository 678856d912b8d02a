//! The `net` grant: which links a plugin may see, whether it may change
//! them, and in which network namespace; and the name checks it shares with
//! the `wireguard` grant.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `net` grant: which links a plugin may see and whether it may change them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct NetGrant {
    /// Glob patterns over link names (`*` any run, `?` one character); at
    /// least one. A link matching none is invisible to the plugin.
    pub links: Vec<String>,
    /// Also allow setting links up or down and adding or removing addresses.
    #[serde(default)]
    pub write: bool,
    /// The network namespace: a name under `/var/run/netns` (as made by
    /// `ip netns add`) or an absolute path to a namespace file. Absent: the
    /// host's own namespace.
    #[serde(default)]
    pub netns: Option<String>,
}

/// Where `ip netns add NAME` puts the namespace file.
pub const NETNS_DIR: &str = "/var/run/netns";
/// The longest link name Linux allows (IFNAMSIZ less the terminating NUL).
pub const MAX_LINK_NAME: usize = 15;
/// The longest link pattern accepted.
const MAX_LINK_PATTERN: usize = 64;

impl NetGrant {
    /// The namespace file to open, or `None` for the host's own namespace.
    pub fn netns_path(&self) -> Option<PathBuf> {
        self.netns.as_deref().map(netns_file)
    }

    /// What serde cannot check: `(key under grants.net, message)` on failure.
    pub fn validate(&self) -> Result<(), (String, String)> {
        validate_patterns("links", &self.links, "guest*")?;
        validate_netns(self.netns.as_deref())
    }
}

impl crate::caps::Within for NetGrant {
    /// Each pattern is one the approval lists, word for word (a narrower
    /// pattern spelt differently counts as new), `write` only if approved,
    /// and the same namespace.
    fn within(&self, approved: &NetGrant) -> bool {
        patterns_within(&self.links, &approved.links)
            && self.write.within(&approved.write)
            && self.netns == approved.netns
    }
}

/// Whether every pattern of `asked` is one of `approved`, word for word.
pub fn patterns_within(asked: &[String], approved: &[String]) -> bool {
    asked.iter().all(|p| approved.contains(p))
}

/// The namespace file of a grant's `netns`: a name under [`NETNS_DIR`] or an
/// absolute path.
pub fn netns_file(ns: &str) -> PathBuf {
    if ns.starts_with('/') {
        PathBuf::from(ns)
    } else {
        Path::new(NETNS_DIR).join(ns)
    }
}

/// Name patterns of a grant (`key` is `links` or `devices`): at least one,
/// each of the characters a link name may have and the two wildcards.
pub fn validate_patterns(
    key: &str,
    patterns: &[String],
    example: &str,
) -> Result<(), (String, String)> {
    if patterns.is_empty() {
        return Err((
            key.into(),
            format!("needs at least one pattern, e.g. [\"{example}\"]"),
        ));
    }
    for (j, pattern) in patterns.iter().enumerate() {
        let bad = pattern.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '*' | '?' | '-' | '_' | '.' | '@' | '+'))
        });
        let message = if pattern.is_empty() {
            Some("is empty".to_string())
        } else if pattern.len() > MAX_LINK_PATTERN {
            Some(format!("is longer than {MAX_LINK_PATTERN} characters"))
        } else {
            bad.map(|c| format!("`{pattern}` has {c:?}: use letters, digits, - _ . @ + and the wildcards * and ?"))
        };
        if let Some(message) = message {
            return Err((format!("{key}[{j}]"), message));
        }
    }
    Ok(())
}

/// A grant's `netns`: a namespace name (no `/`, no `..`) or an absolute path.
pub fn validate_netns(netns: Option<&str>) -> Result<(), (String, String)> {
    if let Some(ns) = netns {
        let ok = if ns.starts_with('/') {
            !ns.contains('\0')
        } else {
            !ns.is_empty()
                && ns != "."
                && !ns.contains('/')
                && !ns.contains("..")
                && !ns.contains('\0')
        };
        if !ok {
            return Err((
                "netns".into(),
                format!(
                    "`{ns}` is neither a namespace name (no `/`, no `..`) nor an absolute path"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `name` matches the glob `pattern`: `*` matches any run of
/// characters (also none), `?` exactly one; everything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was and how much of the name it has swallowed.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether the kernel could have a link of this name (`dev_valid_name`).
pub fn valid_link_name(name: &str) -> bool {
    (1..=MAX_LINK_NAME).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names_with_star_and_question_mark() {
        for (pattern, name, expected) in [
            ("guest*", "guest0", true),
            ("guest*", "guest", true),
            ("guest*", "guest-wifi", true),
            ("guest*", "aguest0", false),
            ("guest?", "guest0", true),
            ("guest?", "guest10", false),
            ("guest?", "guest", false),
            ("*", "", true),
            ("*", "eth0", true),
            ("eth0", "eth0", true),
            ("eth0", "eth01", false),
            ("eth0", "eth", false),
            ("*0", "guest0", true),
            ("*0", "guest1", false),
            ("g*t*0", "guest0", true),
            ("g*t*0", "gust1", false),
            ("*.*", "eth0.100", true),
            ("*.*", "eth0", false),
            ("br-*-?", "br-lan-1", true),
            ("br-*-?", "br-lan-12", false),
            ("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ] {
            assert_eq!(
                glob_match(pattern, name),
                expected,
                "{pattern:?} vs {name:?}"
            );
        }
    }

    #[test]
    fn link_names_the_kernel_cannot_have_are_recognised() {
        assert!(valid_link_name("guest0"));
        assert!(valid_link_name("a23456789012345"));
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a234567890123456"] {
            assert!(!valid_link_name(bad), "{bad:?}");
        }
    }
}
