//! Network links, their addresses and the neighbour (ARP/NDP) table through
//! the host's netlink (grant `net`).
//!
//! Only links whose names match the grant's `links` patterns exist for the
//! plugin: they alone are listed, and naming any other link answers 403. The
//! changes ([`set_link_up`], [`add_address`], [`remove_address`]) also need
//! `write: true` in the grant, else they answer 403 and change nothing.
//!
//! Errors map to responses: outside the grant 403, no such link or address
//! 404, a malformed address or prefix length 400, a kernel refusal 500.
//!
//! ```no_run
//! use wasmgate_sdk::{net, Error};
//!
//! fn guests_on(link: &str) -> Result<Vec<(String, String)>, Error> {
//!     Ok(net::list_neighbours(Some(link))?
//!         .into_iter()
//!         .filter_map(|n| Some((n.address, n.mac?)))
//!         .collect())
//! }
//! ```

use crate::Error;
use crate::bindings::wasmgate::plugin::net as raw;

pub use raw::{Address, Link, Neighbour, NeighbourState, OperState};

/// Every granted link, with its addresses, in index order.
pub fn list_links() -> Result<Vec<Link>, Error> {
    Ok(raw::list_links()?)
}

/// One granted link, with its addresses.
pub fn get_link(name: &str) -> Result<Link, Error> {
    Ok(raw::get_link(name)?)
}

/// The neighbour entries (IPv4 and IPv6) of one granted link, or of every
/// granted link when `link` is `None`.
pub fn list_neighbours(link: Option<&str>) -> Result<Vec<Neighbour>, Error> {
    Ok(raw::list_neighbours(link)?)
}

/// Sets a link administratively up or down. Needs `write: true`.
pub fn set_link_up(name: &str, up: bool) -> Result<(), Error> {
    Ok(raw::set_link_up(name, up)?)
}

/// Adds an address to a link. Needs `write: true`.
pub fn add_address(link: &str, address: &Address) -> Result<(), Error> {
    Ok(raw::add_address(link, address)?)
}

/// Removes an address from a link; 404 when the link does not have it.
/// Needs `write: true`.
pub fn remove_address(link: &str, address: &Address) -> Result<(), Error> {
    Ok(raw::remove_address(link, address)?)
}

impl Address {
    pub fn new(address: impl Into<String>, prefix_len: u8) -> Address {
        Address {
            address: address.into(),
            prefix_len,
        }
    }
}

impl OperState {
    /// The WIT name: `up`, `down`, `lower-layer-down`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            OperState::Up => "up",
            OperState::Down => "down",
            OperState::Dormant => "dormant",
            OperState::LowerLayerDown => "lower-layer-down",
            OperState::NotPresent => "not-present",
            OperState::Testing => "testing",
            OperState::Unknown => "unknown",
        }
    }
}

impl NeighbourState {
    /// The WIT name: `reachable`, `stale`, `permanent`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            NeighbourState::Incomplete => "incomplete",
            NeighbourState::Reachable => "reachable",
            NeighbourState::Stale => "stale",
            NeighbourState::Delay => "delay",
            NeighbourState::Probe => "probe",
            NeighbourState::Failed => "failed",
            NeighbourState::Noarp => "noarp",
            NeighbourState::Permanent => "permanent",
            NeighbourState::None => "none",
        }
    }
}
