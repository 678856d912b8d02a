//! The host's log (grant `log`), tagged with the plugin's name and the request
//! id. Lines are truncated at 4 KiB and rate-bounded by the host.
//!
//! ```no_run
//! let id = 7;
//! wasmgate_sdk::log::info!("created note {id}");
//! ```
//!
//! Without the grant, `println!`/`eprintln!` also reach the host log.

pub use crate::bindings::wasmgate::plugin::log::Level;

/// Writes one line at `level`.
pub fn write(level: Level, message: &str) {
    crate::bindings::wasmgate::plugin::log::log(level, message);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_at {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::write($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_trace { ($($arg:tt)+) => { $crate::__log_at!(Trace, $($arg)+) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __log_debug { ($($arg:tt)+) => { $crate::__log_at!(Debug, $($arg)+) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __log_info { ($($arg:tt)+) => { $crate::__log_at!(Info, $($arg)+) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __log_warn { ($($arg:tt)+) => { $crate::__log_at!(Warn, $($arg)+) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __log_error { ($($arg:tt)+) => { $crate::__log_at!(Error, $($arg)+) }; }

/// `log::debug!("fmt", args...)`
pub use crate::__log_debug as debug;
/// `log::error!("fmt", args...)`
pub use crate::__log_error as error;
/// `log::info!("fmt", args...)`
pub use crate::__log_info as info;
/// `log::trace!("fmt", args...)`
pub use crate::__log_trace as trace;
/// `log::warn!("fmt", args...)`
pub use crate::__log_warn as warn;
