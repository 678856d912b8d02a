//! Single values of the panel: its IPsec PSK and the markers of its job
//! chains.

/// The IPsec PSK (text).
pub const PSK_KEY: &str = "meta/ipsec_psk";
/// Set while a sync job is queued (the unix second it was queued).
pub const SYNC_QUEUED_KEY: &str = "meta/sync_queued";
/// The due time of the enforcement chain.
pub const ENFORCE_NEXT_KEY: &str = "meta/enforce_next";
