//! Keeping usage inside the license: `enforce` disables the newest resources
//! of each kind over its limit; `re-enable` brings disabled ones back, oldest
//! first, while the limit leaves room. Which are disabled is recorded in kv
//! (`disabled/<kind>/<id>`), so `disabled-resources` lists them and
//! `re-enable` knows what to restore.

use std::collections::BTreeSet;

use wasmgate_sdk::kv;

use crate::api::ApiError;
use crate::license::Limits;
use crate::store::{self, Kind, Resource};

/// The ids to disable so that at most `limit` of `active` (oldest first)
/// stay active: the newest ones. A limit of -1 is unlimited.
pub fn plan_disable(active: &[u64], limit: i64) -> Vec<u64> {
    if limit < 0 {
        return Vec::new();
    }
    let keep = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .min(active.len());
    active[keep..].to_vec()
}

/// The ids of `disabled` (oldest first) to restore when `active` are active
/// and the limit is `limit`: the oldest, while there is room.
pub fn plan_enable(active: usize, disabled: &[u64], limit: i64) -> Vec<u64> {
    let room = if limit < 0 {
        disabled.len()
    } else {
        usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(active)
    };
    disabled[..room.min(disabled.len())].to_vec()
}

/// Disables what is over `limits`; returns the newly disabled resources.
/// For each kind, which to disable is decided in the transaction that
/// disables them, from the resources as it reads them.
pub fn enforce(limits: &Limits, reason: &str, now: i64) -> Result<Vec<Resource>, ApiError> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let limit = kind.limit(limits);
        if limit < 0 {
            continue;
        }
        let done = kv::transaction(|txn| {
            let all = store::resources_in(txn, kind)?;
            let active: Vec<u64> = all.iter().filter(|r| !r.disabled).map(|r| r.id).collect();
            let ids: BTreeSet<u64> = plan_disable(&active, limit).into_iter().collect();
            let mut done = Vec::new();
            for r in all.into_iter().filter(|r| ids.contains(&r.id)) {
                let r = Resource {
                    disabled: true,
                    disabled_at: Some(now),
                    disabled_reason: Some(reason.to_string()),
                    ..r
                };
                txn.set_json(&store::res_key(kind, r.id), &r)?;
                txn.set_json(&store::disabled_key(kind, r.id), &r)?;
                done.push(r);
            }
            Ok(done)
        })?;
        out.extend(done);
    }
    Ok(out)
}

/// Restores what `limits` allow; returns (restored, still disabled). For
/// each kind, how many and which come back is decided in the transaction
/// that restores them, from the resources as it reads them.
pub fn re_enable(limits: &Limits) -> Result<(Vec<Resource>, Vec<Resource>), ApiError> {
    let mut restored = Vec::new();
    for kind in Kind::ALL {
        let done = kv::transaction(|txn| {
            let all = store::resources_in(txn, kind)?;
            let active = all.iter().filter(|r| !r.disabled).count();
            let disabled: Vec<u64> = all.iter().filter(|r| r.disabled).map(|r| r.id).collect();
            let ids: BTreeSet<u64> = plan_enable(active, &disabled, kind.limit(limits))
                .into_iter()
                .collect();
            let mut done = Vec::new();
            for r in all.into_iter().filter(|r| ids.contains(&r.id)) {
                let r = Resource {
                    disabled: false,
                    disabled_at: None,
                    disabled_reason: None,
                    ..r
                };
                txn.set_json(&store::res_key(kind, r.id), &r)?;
                txn.delete(&store::disabled_key(kind, r.id))?;
                done.push(r);
            }
            Ok(done)
        })?;
        restored.extend(done);
    }
    Ok((restored, store::disabled()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_go_first() {
        assert_eq!(plan_disable(&[1, 2, 3, 4, 5], 3), vec![4, 5]);
        assert_eq!(plan_disable(&[1, 2], 3), Vec::<u64>::new());
        assert_eq!(plan_disable(&[1, 2], 0), vec![1, 2]);
        assert_eq!(plan_disable(&[1, 2], -1), Vec::<u64>::new());
    }

    #[test]
    fn the_oldest_come_back_first() {
        assert_eq!(plan_enable(3, &[4, 5], 4), vec![4]);
        assert_eq!(plan_enable(3, &[4, 5], 3), Vec::<u64>::new());
        assert_eq!(plan_enable(5, &[4, 5], 3), Vec::<u64>::new());
        assert_eq!(plan_enable(3, &[4, 5], -1), vec![4, 5]);
    }
}
