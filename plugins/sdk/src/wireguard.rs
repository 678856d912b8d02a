//! WireGuard devices and peers through the host (grant `wireguard`).
//!
//! The host drives the kernel's WireGuard or a userspace implementation
//! (`wireguard-go`, which it starts itself), as its config says; a plugin sees
//! the same functions either way. Only devices whose names match the grant's
//! `devices` patterns exist for the plugin: they alone are listed, and naming
//! any other device answers 403.
//!
//! Keys are standard base64 of 32 bytes, as `wg` prints them. The device's
//! private key and the peers' preshared keys go in and never come back out.
//!
//! Errors map to responses: outside the grant 403, no such device or peer
//! 404, a device that already exists 409, a malformed key, endpoint or
//! address 400, a refusal of the kernel or of the userspace implementation
//! 500.
//!
//! ```no_run
//! use wasmgate_sdk::{wireguard, Error};
//!
//! fn bring_up(name: &str, port: u16) -> Result<String, Error> {
//!     let keys = wireguard::generate_keypair();
//!     wireguard::create_device(name)?;
//!     wireguard::configure_device(name, Some(&keys.private_key), Some(port), true)?;
//!     wireguard::set_up(name, true)?;
//!     Ok(keys.public_key)
//! }
//! ```

use crate::Error;
use crate::bindings::wasmgate::plugin::wireguard as raw;

pub use raw::{Device, Keypair, Peer, PeerConfig};

/// A fresh X25519 key pair from the host's OS random source.
pub fn generate_keypair() -> Keypair {
    raw::generate_keypair()
}

/// A fresh 32-byte preshared key, base64.
pub fn generate_preshared_key() -> String {
    raw::generate_preshared_key()
}

/// The public key of a base64 private key; 400 when it is not one.
pub fn public_key(private_key: &str) -> Result<String, Error> {
    Ok(raw::public_key(private_key)?)
}

/// Every granted device that exists now, by name.
pub fn list_devices() -> Result<Vec<String>, Error> {
    Ok(raw::list_devices()?)
}

/// One device with its peers (handshakes, transfer counters).
pub fn get_device(name: &str) -> Result<Device, Error> {
    Ok(raw::get_device(name)?)
}

/// Creates a device, down and unconfigured; 409 when it exists.
pub fn create_device(name: &str) -> Result<(), Error> {
    Ok(raw::create_device(name)?)
}

/// Deletes a device and everything set on it.
pub fn delete_device(name: &str) -> Result<(), Error> {
    Ok(raw::delete_device(name)?)
}

/// Sets the private key and the listen port (`None` leaves each as it is);
/// `replace_peers` removes every peer first.
pub fn configure_device(
    name: &str,
    private_key: Option<&str>,
    listen_port: Option<u16>,
    replace_peers: bool,
) -> Result<(), Error> {
    Ok(raw::configure_device(
        name,
        private_key,
        listen_port,
        replace_peers,
    )?)
}

/// Adds a peer, or updates it when its public key is already on the device.
pub fn set_peer(name: &str, peer: &PeerConfig) -> Result<(), Error> {
    Ok(raw::set_peer(name, peer)?)
}

/// Removes a peer; 404 when the device does not have it.
pub fn remove_peer(name: &str, public_key: &str) -> Result<(), Error> {
    Ok(raw::remove_peer(name, public_key)?)
}

/// Brings the device's link up or down.
pub fn set_up(name: &str, up: bool) -> Result<(), Error> {
    Ok(raw::set_up(name, up)?)
}

impl PeerConfig {
    /// A peer with only its key and allowed IPs: no preshared key, no
    /// endpoint, no keepalive.
    pub fn new(public_key: impl Into<String>, allowed_ips: Vec<String>) -> PeerConfig {
        PeerConfig {
            public_key: public_key.into(),
            preshared_key: None,
            endpoint: None,
            allowed_ips,
            persistent_keepalive: None,
        }
    }
}
