//! Who is calling: the main admin or a sub-admin, from the role of the
//! host `keys` key the request carries ([`of_key`]).

use serde_json::Value;
use wasmgate_sdk::{keys, kv};

use crate::fail::{Fail, refuse};
use crate::store;

pub const MSG_KEY_INVALID: &str = "Invalid or inactive API key";

/// The key role of a main-admin key; a sub-admin key's role is
/// `sub_admin:<id>` ([`sub_admin_role`]).
pub const ROLE_MAIN: &str = "main_admin";

pub const ROLE_SUB_PREFIX: &str = "sub_admin:";

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A main-admin key: sees and changes everything.
    Main,
    /// A sub-admin (reseller) key: only its own users, within its quota.
    Sub { id: u64 },
}

impl Caller {
    pub fn is_main(&self) -> bool {
        matches!(self, Caller::Main)
    }

    /// The owner segment of this caller's users in kv (`main` or
    /// `sa<id:010>`); see [`crate::store::users`].
    pub fn owner(&self) -> String {
        match self {
            Caller::Main => "main".to_string(),
            Caller::Sub { id } => store::users::sub_owner(*id),
        }
    }
}

/// The key role of sub-admin `id`'s keys.
pub fn sub_admin_role(id: u64) -> String {
    format!("{ROLE_SUB_PREFIX}{id}")
}

/// The caller holding the key `secret`: 401 "Invalid or inactive API key"
/// for an unknown or expired key, a key of another role, or a sub-admin
/// that was deleted or deactivated.
pub fn of_key(secret: &str) -> Result<Caller, Fail> {
    let info = keys::verify(secret)?.ok_or_else(|| refuse(401, MSG_KEY_INVALID))?;
    if info.role == ROLE_MAIN {
        return Ok(Caller::Main);
    }
    let id = info
        .role
        .strip_prefix(ROLE_SUB_PREFIX)
        .and_then(|id| id.parse::<u64>().ok())
        .ok_or_else(|| refuse(401, MSG_KEY_INVALID))?;
    let active = kv::get_json::<Value>(&store::users::sa_key(id))?
        .and_then(|sa| sa.get("is_active").and_then(Value::as_bool))
        .unwrap_or(false);
    if !active {
        return Err(refuse(401, MSG_KEY_INVALID));
    }
    Ok(Caller::Sub { id })
}
