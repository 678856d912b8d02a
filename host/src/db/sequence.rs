//! Sequences: increasing numbers per plugin and name (`kv.next-id`), handed
//! out from memory without a write per number.
//!
//! The table keeps, per sequence, the first number not yet reserved. A
//! caller that finds its sequence's block used up reserves the next
//! [`BLOCK`] numbers with one durable commit and takes the first; the rest
//! are handed out from memory. A restart skips what was reserved and not
//! handed out, so numbers never repeat and never go down, and a record id
//! taken from a sequence conflicts with nobody: unlike a counter read and
//! written in each transaction, it is not in any read set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redb::{ReadableTable, TableDefinition};

use super::{Db, DbError};

/// `seq`: (plugin, sequence) -> the first number not yet reserved.
pub const SEQ: TableDefinition<(&str, &str), u64> = TableDefinition::new("seq");

/// Numbers reserved at once.
pub const BLOCK: u64 = 64;

/// Each sequence's block, by (plugin, name).
type Blocks = HashMap<(String, String), Arc<tokio::sync::Mutex<Block>>>;

/// The blocks in memory.
#[derive(Default)]
pub(super) struct Sequences {
    blocks: Mutex<Blocks>,
}

/// Numbers `next..end` are reserved and not yet handed out.
#[derive(Default)]
struct Block {
    next: u64,
    end: u64,
}

impl Db {
    /// The next number of `plugin`'s sequence `name`, at least `at_least`
    /// (and at least 1). `None` when the sequence has run out of numbers.
    pub async fn next_id(
        &self,
        plugin: &str,
        name: &str,
        at_least: u64,
    ) -> Result<Option<u64>, DbError> {
        let block = {
            let mut blocks = self
                .inner
                .sequences
                .blocks
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            blocks
                .entry((plugin.to_string(), name.to_string()))
                .or_default()
                .clone()
        };
        let mut b = block.lock().await;
        let want = b.next.max(at_least).max(1);
        if want < b.end {
            b.next = want + 1;
            return Ok(Some(want));
        }
        let (p, n) = (plugin.to_string(), name.to_string());
        let reserved = self
            .commit(move |tx| -> Result<Option<(u64, u64)>, DbError> {
                let mut table = tx.open_table(SEQ)?;
                let stored = table
                    .get((p.as_str(), n.as_str()))?
                    .map_or(1, |v| v.value());
                let start = stored.max(want);
                let Some(end) = start.checked_add(BLOCK) else {
                    return Ok(None);
                };
                table.insert((p.as_str(), n.as_str()), end)?;
                Ok(Some((start, end)))
            })
            .await?;
        Ok(reserved.map(|(start, end)| {
            b.next = start + 1;
            b.end = end;
            start
        }))
    }

    /// Forgets the blocks of `plugin`'s sequences, after its rows were
    /// deleted: the next numbers start again from the table.
    pub fn forget_sequences(&self, plugin: &str) {
        self.inner
            .sequences
            .blocks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, _), _| p != plugin);
    }
}
