//! The plugin's private key-value store (grant `kv`), with JSON helpers and
//! transactions that retry on conflict.
//!
//! Keys sort as bytes, so zero-padded numbers (`format!("note/{n:016}")`) list
//! in numeric order.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::wasmgate::plugin::kv as raw;

/// How often [`transaction`] runs its closure before giving up on conflicts.
pub const MAX_ATTEMPTS: u32 = 16;

/// The host caps one page of a listing at this many entries.
const PAGE: u32 = 1000;

pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    Ok(raw::get(key)?)
}

pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    Ok(raw::set(key, value)?)
}

/// Returns whether the key existed.
pub fn delete(key: &str) -> Result<bool, Error> {
    Ok(raw::delete(key)?)
}

/// How many keys start with `prefix`.
pub fn count(prefix: &str) -> Result<u64, Error> {
    Ok(raw::count(prefix)?)
}

/// The next number of the plugin's sequence `name`, at least `at_least`:
/// unique and increasing, also across restarts, with gaps (a number taken
/// by a transaction that then conflicts or fails is not reused). Use it for
/// record ids instead of a counter kept in kv: every transaction that reads
/// and bumps a shared counter conflicts with every other one doing so,
/// while ids from a sequence conflict with nothing.
///
/// ```no_run
/// # use wasmgate_sdk::{Error, kv};
/// # fn main() -> Result<(), Error> {
/// kv::transaction(|txn| {
///     let id = kv::next_id("note", 1)?;
///     txn.set_json(&format!("note/{id:016}"), "text")
/// })?;
/// # Ok(())
/// # }
/// ```
pub fn next_id(name: &str, at_least: u64) -> Result<u64, Error> {
    Ok(raw::next_id(name, at_least)?)
}

/// The value at `key` as JSON; a stored value that does not parse as `T` is a 500.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    get(key)?.map(|bytes| decode(key, &bytes)).transpose()
}

pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    set(key, &encode(key, value)?)
}

/// Every entry whose key starts with `prefix`, in key order, following the
/// host's pages to the end.
pub fn list(prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = raw::list(prefix, cursor.as_deref(), PAGE)?;
        all.extend(page.entries);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}

/// Calls `f` with each value whose key starts with `prefix`, in key order,
/// until it answers `false`; whether it never did. For answers that join
/// stored values: the host sends each page of values packed in one buffer
/// (`list-values`), and nothing is kept between pages, so memory stays at
/// one page however long the list is.
pub fn each_value<E: From<Error>>(
    prefix: &str,
    mut f: impl FnMut(&[u8]) -> Result<bool, E>,
) -> Result<bool, E> {
    let mut cursor: Option<String> = None;
    loop {
        let page = raw::list_values(prefix, cursor.as_deref(), PAGE).map_err(Error::from)?;
        let mut at = 0usize;
        for len in &page.lengths {
            let end = at.saturating_add(*len as usize);
            let Some(value) = page.data.get(at..end) else {
                return Err(Error::internal("kv: a values page shorter than its lengths").into());
            };
            if !f(value)? {
                return Ok(false);
            }
            at = end;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(true),
        }
    }
}

/// [`list`] with every value parsed as JSON.
pub fn list_json<T: DeserializeOwned>(prefix: &str) -> Result<Vec<(String, T)>, Error> {
    list(prefix)?
        .into_iter()
        .map(|(key, bytes)| {
            let value = decode(&key, &bytes)?;
            Ok((key, value))
        })
        .collect()
}

/// An all-or-nothing set of writes; see [`transaction`] for the usual way to
/// use one. Dropping it without [`Txn::commit`] discards it.
pub struct Txn(raw::Txn);

impl Txn {
    #[allow(clippy::new_without_default, reason = "opening a txn is a host call")]
    pub fn new() -> Self {
        Txn(raw::Txn::new())
    }

    /// Sees the transaction's own writes.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.get(key)?)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        Ok(self.0.set(key, value)?)
    }

    pub fn delete(&self, key: &str) -> Result<(), Error> {
        Ok(self.0.delete(key)?)
    }

    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.get(key)?.map(|bytes| decode(key, &bytes)).transpose()
    }

    pub fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.set(key, &encode(key, value)?)
    }

    /// Applies every write at once. Fails with the raw `conflict` error
    /// (nothing written) when a key it read changed since.
    pub fn commit(&self) -> Result<(), raw::Error> {
        self.0.commit()
    }
}

/// Runs `f` in a fresh transaction and commits it, running `f` again in a new
/// transaction when the commit finds a conflict. An `Err` from `f` discards
/// the transaction and is returned as is. After [`MAX_ATTEMPTS`] conflicts
/// in a row the answer is a 503.
///
/// `f` may run several times, so it should do nothing but kv work.
///
/// ```no_run
/// # use wasmgate_sdk::{Error, kv};
/// # fn main() -> Result<(), Error> {
/// let n = kv::transaction(|txn| {
///     let n = txn.get_json::<u64>("counter")?.unwrap_or(0) + 1;
///     txn.set_json("counter", &n)?;
///     Ok(n)
/// })?;
/// # let _ = n;
/// # Ok(())
/// # }
/// ```
pub fn transaction<R>(mut f: impl FnMut(&Txn) -> Result<R, Error>) -> Result<R, Error> {
    for _ in 0..MAX_ATTEMPTS {
        let txn = Txn::new();
        let out = f(&txn)?;
        match txn.commit() {
            Ok(()) => return Ok(out),
            Err(raw::Error::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::unavailable("too many concurrent updates, retry"))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::internal(format!(
            "stored value at {key:?} is not the expected JSON: {e}"
        ))
    })
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value)
        .map_err(|e| Error::internal(format!("value for {key:?} is not serialisable: {e}")))
}
