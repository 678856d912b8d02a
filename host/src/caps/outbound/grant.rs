//! The `outbound` grant: where a plugin may send HTTP requests, and its
//! limits. Parsed and validated in every build, so that a config naming it
//! gets a clear answer from a host built without the capability.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The longest `timeout_ms` a grant may set.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// The largest `max_response_bytes` a grant may set.
pub const MAX_RESPONSE_CAP: u64 = 256 << 20;
/// The largest request body a plugin may send.
pub const MAX_REQUEST_BODY: usize = 16 << 20;

pub(super) fn default_timeout_ms() -> u64 {
    5000
}

pub(super) fn default_max_response_bytes() -> u64 {
    1 << 20
}

/// The `outbound` grant: where a plugin may send HTTP requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct OutboundGrant {
    /// `host:port` or `host` entries (a bare host allows only the scheme's
    /// default port, 80 or 443); IPv6 literals in brackets, `[::1]:8080`.
    /// Exact matches only: no wildcards, no subdomains.
    pub hosts: Vec<String>,
    /// The longest a request may take, connecting included, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A larger response body is refused as `too-large`.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

/// One parsed `hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Allowed {
    /// Lower case, IPv6 without brackets.
    pub(super) host: String,
    /// `None`: the scheme's default port.
    pub(super) port: Option<u16>,
}

/// Parses a `hosts` entry: `host`, `host:port`, `[v6]`, `[v6]:port`.
pub(super) fn parse_entry(entry: &str) -> Result<Allowed, String> {
    if entry.is_empty() {
        return Err("is empty".into());
    }
    if entry.contains('*') {
        return Err(format!(
            "`{entry}`: wildcards are not supported, list each host"
        ));
    }
    if entry.contains("://") || entry.contains('/') {
        return Err(format!("`{entry}`: give `host` or `host:port`, not a URL"));
    }
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{entry}`: unclosed `[`"))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{entry}`: `{v6}` is not an IPv6 address"));
        }
        match after {
            "" => (v6.to_string(), None),
            p => (
                v6.to_string(),
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("`{entry}`: expected `:port` after `]`"))?,
                ),
            ),
        }
    } else {
        match entry.matches(':').count() {
            0 => (entry.to_string(), None),
            1 => {
                let (h, p) = entry.split_once(':').unwrap_or((entry, ""));
                (h.to_string(), Some(p))
            }
            _ => {
                return Err(format!(
                    "`{entry}`: write an IPv6 address in brackets, e.g. `[::1]:8080`"
                ));
            }
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("`{entry}`: the port `{p}` is not in 1..=65535")),
        },
    };
    let is_ip = host.parse::<IpAddr>().is_ok();
    if !is_ip
        && (host.is_empty()
            || host.len() > 253
            || host.starts_with('.')
            || host.ends_with('.')
            || host.contains("..")
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return Err(format!(
            "`{entry}`: `{host}` is not a host name or IP address"
        ));
    }
    Ok(Allowed {
        host: host.to_ascii_lowercase(),
        port,
    })
}

impl crate::caps::Within for OutboundGrant {
    /// Each host is one the approval lists (compared as parsed: the host's
    /// case does not matter), and neither the timeout nor the response cap
    /// is larger.
    fn within(&self, approved: &OutboundGrant) -> bool {
        let listed: Vec<Allowed> = approved
            .hosts
            .iter()
            .filter_map(|h| parse_entry(h).ok())
            .collect();
        self.hosts
            .iter()
            .all(|h| parse_entry(h).is_ok_and(|a| listed.contains(&a)))
            && self.timeout_ms <= approved.timeout_ms
            && self.max_response_bytes <= approved.max_response_bytes
    }
}

impl OutboundGrant {
    /// What serde cannot check: `(key under grants.outbound, message)` on failure.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.hosts.is_empty() {
            return Err((
                "hosts".into(),
                "needs at least one entry, e.g. [\"api.example.com:443\"]".into(),
            ));
        }
        for (j, entry) in self.hosts.iter().enumerate() {
            parse_entry(entry).map_err(|m| (format!("hosts[{j}]"), m))?;
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err((
                "timeout_ms".into(),
                format!("{} is out of range 1..={MAX_TIMEOUT_MS}", self.timeout_ms),
            ));
        }
        if self.max_response_bytes == 0 || self.max_response_bytes > MAX_RESPONSE_CAP {
            return Err((
                "max_response_bytes".into(),
                format!(
                    "{} is out of range 1..={MAX_RESPONSE_CAP}",
                    self.max_response_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Whether `host` (lower case, IPv6 without brackets) on `port` is
    /// allowed, `default_port` being the URL scheme's.
    pub(super) fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        self.hosts
            .iter()
            .filter_map(|e| parse_entry(e).ok())
            .any(|a| {
                a.host == host
                    && match a.port {
                        Some(p) => p == port,
                        None => port == default_port,
                    }
            })
    }
}
