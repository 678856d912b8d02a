//! Records and the kv key layout. Everything the dashboard knows lives in
//! the plugin's kv namespace (the host's redb file), so it survives a
//! restart of the host:
//!
//! | key | value |
//! | --- | --- |
//! | `account` | [`Account`]: username, PBKDF2 password hash, TOTP secret, first-run flag |
//! | `totp_last_step` | the last TOTP step that logged in (codes of it and earlier are refused) |
//! | `session/<sha256 of token, hex>` | [`Session`] (the cookie's token itself is never stored) |
//! | `conf/<name>` | [`Conf`]: one configuration's interface settings |
//! | `port/<port>`, `address/<Address>` | the name of the configuration that holds it (uniqueness) |
//! | `peer/<name>/<public key>` | [`PeerRec`]: a peer, restricted or not, with its usage counters |
//! | `rev/<name>` | a counter bumped by every change to a configuration's peers or their counters, so that two concurrent changes (two bulk adds picking the same free address) conflict and one retries |
//! | `sum/<name>` | [`Sum`]: the DataUsage of a configuration that is off, with the `rev` it was computed at |
//! | `up/<name>` | present while the configuration is toggled on: only those devices are read by the listing |

use serde::{Deserialize, Serialize};
use wasmgate_sdk::{Error, config, kv};

pub const ACCOUNT: &str = "account";
pub const TOTP_LAST_STEP: &str = "totp_last_step";
pub const SESSION_PREFIX: &str = "session/";
pub const CONF_PREFIX: &str = "conf/";
pub const PEER_PREFIX: &str = "peer/";

pub fn conf_key(name: &str) -> String {
    format!("{CONF_PREFIX}{name}")
}
pub fn port_key(port: u16) -> String {
    format!("port/{port}")
}
pub fn address_key(address: &str) -> String {
    format!("address/{address}")
}
pub fn peers_prefix(conf: &str) -> String {
    format!("{PEER_PREFIX}{conf}/")
}
pub fn peer_key(conf: &str, public_key: &str) -> String {
    format!("{PEER_PREFIX}{conf}/{public_key}")
}
pub fn rev_key(conf: &str) -> String {
    format!("{REV_PREFIX}{conf}")
}
pub fn sum_key(conf: &str) -> String {
    format!("{SUM_PREFIX}{conf}")
}
pub fn up_key(conf: &str) -> String {
    format!("{UP_PREFIX}{conf}")
}
pub const REV_PREFIX: &str = "rev/";
pub const SUM_PREFIX: &str = "sum/";
pub const UP_PREFIX: &str = "up/";

/// Bumps the configuration's revision inside `txn`: every change to its
/// peers or their counters does, which also invalidates its [`Sum`].
pub fn bump_rev(txn: &kv::Txn, conf: &str) -> Result<(), Error> {
    let rev: u64 = txn.get_json(&rev_key(conf))?.unwrap_or(0);
    txn.set_json(&rev_key(conf), &(rev + 1))
}

/// The DataUsage of a configuration that is not toggled on, as of revision
/// `rev`: the listing reads it instead of every peer while it is current.
#[derive(Serialize, Deserialize, Clone, Copy)]
pub struct Sum {
    pub rev: u64,
    pub rx: u64,
    pub tx: u64,
}

/// The dashboard's one account. Absent until the operator sets it on the
/// admin surface: there is no default admin/admin.
#[derive(Serialize, Deserialize, Clone)]
pub struct Account {
    pub username: String,
    /// crypto.password_hash: "$pbkdf2-sha256$i=...$salt$hash".
    pub password_hash: String,
    /// Base32, as in the otpauth URI; None when TOTP is off.
    #[serde(default)]
    pub totp_secret: Option<String>,
    /// The original's first-run flag, answered as authenticate's `message`.
    #[serde(default = "yes")]
    pub welcome_session: bool,
}

fn yes() -> bool {
    true
}

impl Default for Account {
    fn default() -> Self {
        Account {
            username: String::new(),
            password_hash: String::new(),
            totp_secret: None,
            welcome_session: true,
        }
    }
}

pub fn account() -> Result<Option<Account>, Error> {
    kv::get_json(ACCOUNT)
}

#[derive(Serialize, Deserialize)]
pub struct Session {
    pub created_at: u64,
    pub expires_at: u64,
}

/// One configuration's interface, as addWireguardConfiguration stored it.
/// The private key stays here and on the device; no answer carries it.
#[derive(Serialize, Deserialize, Clone)]
pub struct Conf {
    pub name: String,
    /// ", "-separated CIDRs, e.g. "10.0.0.1/24".
    pub address: String,
    pub listen_port: u16,
    pub private_key: String,
    pub public_key: String,
    /// Stored as given; the original keeps it, WireGuard has no use for a
    /// configuration-wide preshared key.
    #[serde(default)]
    pub preshared_key: String,
    /// Stored and answered, never executed (see README).
    #[serde(default)]
    pub pre_up: String,
    #[serde(default)]
    pub pre_down: String,
    #[serde(default)]
    pub post_up: String,
    #[serde(default)]
    pub post_down: String,
}

/// Transfer counters of one peer, in bytes, carried across device sessions.
///
/// The device's counters start at 0 whenever the device is made. `cumu_*`
/// holds what earlier device sessions counted; `seen_*` is the last value
/// read from the live device in this session; `base_*` is the live value at
/// the last resetPeerData of this session (the live counters cannot be
/// reset, so a reset moves the zero). A session's usage is `seen - base`.
#[derive(Serialize, Deserialize, Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Usage {
    pub cumu_rx: u64,
    pub cumu_tx: u64,
    pub seen_rx: u64,
    pub seen_tx: u64,
    pub base_rx: u64,
    pub base_tx: u64,
}

impl Usage {
    /// Takes in the live counters; returns whether anything changed. Live
    /// counters below the last seen ones mean a new device session (made
    /// outside this plugin, or after a host restart): the old one is folded
    /// in first.
    pub fn observe(&mut self, rx: u64, tx: u64) -> bool {
        let before = *self;
        if rx < self.seen_rx || tx < self.seen_tx {
            self.end_session();
        }
        self.seen_rx = rx;
        self.seen_tx = tx;
        *self != before
    }

    /// The device session is over (toggle off, restrict, a lost device):
    /// its counts join the cumulative ones.
    pub fn end_session(&mut self) {
        self.cumu_rx += self.seen_rx.saturating_sub(self.base_rx);
        self.cumu_tx += self.seen_tx.saturating_sub(self.base_tx);
        self.seen_rx = 0;
        self.seen_tx = 0;
        self.base_rx = 0;
        self.base_tx = 0;
    }

    /// Bytes received from the peer in the current device session.
    pub fn session_rx(&self) -> u64 {
        self.seen_rx.saturating_sub(self.base_rx)
    }

    pub fn session_tx(&self) -> u64 {
        self.seen_tx.saturating_sub(self.base_tx)
    }

    pub fn total_rx(&self) -> u64 {
        self.cumu_rx + self.session_rx()
    }

    pub fn total_tx(&self) -> u64 {
        self.cumu_tx + self.session_tx()
    }

    /// resetPeerData: `receive`, `sent` or `total` (both) back to zero.
    pub fn reset(&mut self, receive: bool, sent: bool) {
        if receive {
            self.cumu_rx = 0;
            self.base_rx = self.seen_rx;
        }
        if sent {
            self.cumu_tx = 0;
            self.base_tx = self.seen_tx;
        }
    }
}

/// A peer of a configuration. `id` is its public key.
#[derive(Serialize, Deserialize, Clone, Default)]
pub struct PeerRec {
    pub id: String,
    /// The client's private key when the dashboard generated it (for the
    /// client's `.conf`); "" when the client brought its own public key.
    #[serde(default)]
    pub private_key: String,
    #[serde(default)]
    pub preshared_key: String,
    #[serde(default)]
    pub name: String,
    /// ", "-separated CIDRs the server routes to this peer.
    pub allowed_ip: String,
    #[serde(default)]
    pub dns: String,
    #[serde(default)]
    pub endpoint_allowed_ip: String,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub keepalive: u32,
    /// Restricted peers are kept here but are not on the device.
    #[serde(default)]
    pub restricted: bool,
    #[serde(default)]
    pub usage: Usage,
}

/// Every configuration, in name order.
pub fn confs() -> Result<Vec<Conf>, Error> {
    Ok(kv::list_json::<Conf>(CONF_PREFIX)?
        .into_iter()
        .map(|(_, c)| c)
        .collect())
}

pub fn conf(name: &str) -> Result<Option<Conf>, Error> {
    kv::get_json(&conf_key(name))
}

/// A configuration's peers, restricted ones included, in public-key order.
pub fn peers(conf: &str) -> Result<Vec<PeerRec>, Error> {
    Ok(kv::list_json::<PeerRec>(&peers_prefix(conf))?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// Plugin settings (config.yaml `settings:`), with the original's defaults.
pub struct Settings {
    /// The server's address as clients reach it: the `Endpoint` host of a
    /// downloaded `.conf`.
    pub remote_endpoint: String,
    pub peer_global_dns: String,
    pub peer_endpoint_allowed_ip: String,
    pub peer_mtu: u32,
    pub peer_keepalive: u32,
    pub session_ttl_secs: u64,
    /// Attempts a minute for one username from one address.
    pub login_attempts_per_minute: u32,
    /// Attempts a minute from one address, whatever the usernames.
    pub login_attempts_per_address_per_minute: u32,
    pub cookie_secure: bool,
}

pub fn settings() -> Result<Settings, Error> {
    Ok(Settings {
        remote_endpoint: config::get_or("remote_endpoint", "127.0.0.1"),
        peer_global_dns: config::get_or("peer_global_dns", "1.1.1.1"),
        peer_endpoint_allowed_ip: config::get_or("peer_endpoint_allowed_ip", "0.0.0.0/0"),
        peer_mtu: config::parse_or("peer_mtu", 1420)?,
        peer_keepalive: config::parse_or("peer_keepalive", 21)?,
        session_ttl_secs: config::parse_or::<u64>("session_ttl_hours", 24)? * 3600,
        login_attempts_per_minute: config::parse_or("login_attempts_per_minute", 10)?,
        login_attempts_per_address_per_minute: config::parse_or(
            "login_attempts_per_address_per_minute",
            30,
        )?,
        cookie_secure: config::parse_or("cookie_secure", false)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_carries_across_device_sessions() {
        let mut u = Usage::default();
        assert!(u.observe(100, 50));
        assert!(!u.observe(100, 50));
        assert_eq!((u.total_rx(), u.total_tx()), (100, 50));
        // Toggle off, on: the device starts from zero.
        u.end_session();
        assert_eq!((u.total_rx(), u.total_tx()), (100, 50));
        u.observe(10, 5);
        assert_eq!((u.total_rx(), u.total_tx()), (110, 55));
        // A device re-made behind our back (host restart): counters went down.
        u.observe(3, 1);
        assert_eq!((u.total_rx(), u.total_tx()), (113, 56));
    }

    #[test]
    fn reset_moves_the_zero_of_the_live_counters() {
        let mut u = Usage::default();
        u.observe(100, 50);
        u.reset(true, false);
        assert_eq!((u.total_rx(), u.total_tx()), (0, 50));
        u.observe(130, 60);
        assert_eq!((u.total_rx(), u.total_tx()), (30, 60));
        u.reset(true, true);
        assert_eq!((u.total_rx(), u.total_tx()), (0, 0));
        u.end_session();
        assert_eq!((u.total_rx(), u.total_tx()), (0, 0));
    }
}
