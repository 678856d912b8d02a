//! Background work (grant `jobs`): the host later calls the plugin's
//! [`Plugin::job`](crate::Plugin::job) with the same name and payload.

use std::time::Duration;

use crate::Error;
use crate::bindings::wasmgate::plugin::jobs as raw;

/// Queues job `name` to run after `delay`; returns the job's id.
pub fn enqueue(name: &str, payload: &[u8], delay: Duration) -> Result<String, Error> {
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    Ok(raw::enqueue(name, payload, delay_ms)?)
}
