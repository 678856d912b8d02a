//! The PKI's records: the CA (`meta/ca`, [`Ca`]), each user's current client
//! certificate (`cert/<username>`, a [`Leaf`]), revoked serials
//! (`crl/<serial>`: the unix second of the revocation) and the servers'
//! certificates (`srvcert/<server>`). What is made of them is in
//! [`crate::domain::pki`].

use serde::{Deserialize, Serialize};

pub const CA_KEY: &str = "meta/ca";

/// The CA as kv keeps it: enough to rebuild the issuer exactly.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Ca {
    pub key_pem: String,
    pub cert_pem: String,
    pub serial: String,
    pub not_before: u64,
    pub not_after: u64,
}

/// An issued certificate with its key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub serial: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn cert_key(username: &str) -> String {
    format!("cert/{username}")
}

pub fn crl_key(serial: &str) -> String {
    format!("crl/{serial}")
}

/// The kv key of server `server`'s certificate (`main`, `node_<id>`).
pub fn srvcert_key(server: &str) -> String {
    format!("srvcert/{server}")
}
