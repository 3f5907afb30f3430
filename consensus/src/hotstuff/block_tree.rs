//! The block tree: every known block from the last committed one up, plus a bounded tail of
//! committed ancestors kept to serve lagging peers.

use super::messages::HsBlock;
use quorate_crypto::Digest;
use quorate_ledger::Height;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Committed blocks kept below the last committed one, to answer peers' block requests.
pub(crate) const COMMITTED_RETAINED: u64 = 256;

pub(crate) struct BlockTree {
    blocks: HashMap<Digest, Arc<HsBlock>>,
    by_height: BTreeMap<Height, Vec<Digest>>,
    committed: Digest,
    committed_height: Height,
}

impl BlockTree {
    /// A tree whose root is the committed block `root` (its `justify` is not used).
    pub fn new(root_hash: Digest, root: HsBlock) -> Self {
        let height = root.header.height;
        let mut tree = BlockTree {
            blocks: HashMap::new(),
            by_height: BTreeMap::new(),
            committed: root_hash,
            committed_height: height,
        };
        tree.blocks.insert(root_hash, Arc::new(root));
        tree.by_height.entry(height).or_default().push(root_hash);
        tree
    }

    pub fn get(&self, hash: &Digest) -> Option<&Arc<HsBlock>> {
        self.blocks.get(hash)
    }

    pub fn contains(&self, hash: &Digest) -> bool {
        self.blocks.contains_key(hash)
    }

    pub fn committed(&self) -> (Digest, Height) {
        (self.committed, self.committed_height)
    }

    /// Inserts a block whose parent is present. Returns false if the parent is missing or the
    /// block is at or below the committed height (it can never be committed).
    pub fn insert(&mut self, hash: Digest, block: HsBlock) -> bool {
        if self.blocks.contains_key(&hash) {
            return true;
        }
        if block.header.height <= self.committed_height
            || !self.blocks.contains_key(&block.header.parent)
        {
            return false;
        }
        let height = block.header.height;
        self.blocks.insert(hash, Arc::new(block));
        self.by_height.entry(height).or_default().push(hash);
        true
    }

    /// Whether `descendant` extends `ancestor` (a block extends itself). `None` when the chain
    /// between them is not (or no longer) in the tree.
    pub fn extends(&self, descendant: &Digest, ancestor: &Digest) -> Option<bool> {
        let target = self.blocks.get(ancestor)?.header.height;
        let mut cursor = *descendant;
        loop {
            let block = self.blocks.get(&cursor)?;
            if block.header.height == target {
                return Some(cursor == *ancestor);
            }
            if block.header.height < target {
                return Some(false);
            }
            cursor = block.header.parent;
        }
    }

    /// The uncommitted blocks from just above the committed block up to `hash`, oldest first.
    /// `None` if `hash` does not descend from the committed block.
    pub fn uncommitted_path(&self, hash: &Digest) -> Option<Vec<Arc<HsBlock>>> {
        let mut path = Vec::new();
        let mut cursor = *hash;
        while cursor != self.committed {
            let block = self.blocks.get(&cursor)?;
            if block.header.height <= self.committed_height {
                return None;
            }
            path.push(block.clone());
            cursor = block.header.parent;
        }
        path.reverse();
        Some(path)
    }

    /// `hash` and up to `count - 1` ancestors, newest first; stops at the first missing one.
    pub fn chain(&self, hash: &Digest, count: usize) -> Vec<HsBlock> {
        let mut out = Vec::new();
        let mut cursor = *hash;
        while out.len() < count {
            match self.blocks.get(&cursor) {
                Some(block) => {
                    out.push(HsBlock::clone(block));
                    cursor = block.header.parent;
                }
                None => break,
            }
        }
        out
    }

    /// Marks `hash` committed and drops what can no longer matter: blocks off the committed
    /// chain at or below its height, and committed blocks older than the retained tail. Costs
    /// the blocks committed now plus those dropped, not the retained tail: at heights at or
    /// below the previous commit only the committed chain is left already.
    pub fn commit(&mut self, hash: Digest) {
        let Some(block) = self.blocks.get(&hash) else {
            return;
        };
        let previous_height = self.committed_height;
        self.committed = hash;
        self.committed_height = block.header.height;
        // The chain committed now: from `hash` down to just above the previous commit.
        let mut keep = std::collections::HashSet::new();
        let mut cursor = hash;
        while let Some(b) = self.blocks.get(&cursor) {
            if b.header.height <= previous_height {
                break;
            }
            keep.insert(cursor);
            cursor = b.header.parent;
        }
        let decided: Vec<Height> = self
            .by_height
            .range(previous_height.next()..=self.committed_height)
            .map(|(h, _)| *h)
            .collect();
        for height in decided {
            let Some(hashes) = self.by_height.get_mut(&height) else {
                continue;
            };
            hashes.retain(|h| {
                let retain = keep.contains(h);
                if !retain {
                    self.blocks.remove(h);
                }
                retain
            });
            if hashes.is_empty() {
                self.by_height.remove(&height);
            }
        }
        // Committed blocks below the retained tail.
        let floor = Height(self.committed_height.0.saturating_sub(COMMITTED_RETAINED));
        let old = self.by_height.split_off(&floor);
        for hashes in std::mem::replace(&mut self.by_height, old).into_values() {
            for h in hashes {
                self.blocks.remove(&h);
            }
        }
    }
}
