//! Leaf helpers every layer may use; they import nothing else of the host.
//!
//! [`time`] (Unix time), [`ids`] (random bytes, hex, request ids), [`fs`]
//! (private files, the data directory), [`shutdown`] (the stop signal),
//! [`deadline`] (bounding a host call that waits), [`netns`] (work done
//! inside a network namespace), [`text`] (bounding what an error message
//! repeats), [`ed25519`] (public keys in their `ed25519:<base64>` form),
//! [`memory`] (freed memory given back to the system).

pub mod deadline;
pub mod ed25519;
pub mod fs;
pub mod ids;
pub mod memory;
pub mod netns;
pub mod shutdown;
pub mod text;
pub mod time;
