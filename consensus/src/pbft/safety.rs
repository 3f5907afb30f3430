//! What a PBFT replica persists, and syncs before any message that depends on it leaves: its
//! view (and whether it is changing view), its stable point, and its P and Q sets. A restarted
//! replica reports them in its VIEW-CHANGEs and never prepares a second block at a sequence
//! number in a view (Q says what it prepared) nor goes back to an earlier view.

use super::messages::{PrePreparedEntry, PreparedEntry, StablePoint};
use quorate_crypto::Digest;
use quorate_ledger::{Epoch, Height, View};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Blocks remembered per sequence number in Q (the latest views win, but the block P holds at
/// that sequence number is always kept). Honest primaries give a sequence number one block per
/// view, and once a block may have committed every later view re-issues that same block, so it
/// is always the newest entry.
pub(crate) const Q_BLOCKS_MAX: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SafetyState {
    pub epoch: Epoch,
    pub view: View,
    /// Sent VIEW-CHANGE for `view`; no normal-case message of `view` until its NEW-VIEW.
    pub view_changing: bool,
    pub stable: StablePoint,
    /// P: sequence number -> the latest prepared (view, block).
    pub prepared: BTreeMap<Height, (View, Digest)>,
    /// Q: sequence number -> blocks pre-prepared (PREPARE sent, or proposed), each with the
    /// latest view.
    pub pre_prepared: BTreeMap<Height, Vec<(Digest, View)>>,
}

impl SafetyState {
    pub fn new(epoch: Epoch, stable: StablePoint) -> Self {
        SafetyState {
            epoch,
            view: View(0),
            view_changing: false,
            stable,
            prepared: BTreeMap::new(),
            pre_prepared: BTreeMap::new(),
        }
    }

    /// Whether this replica may pre-prepare `digest` at `seq` in `view`: not if it already
    /// pre-prepared another block there in that view.
    pub fn may_pre_prepare(&self, seq: Height, view: View, digest: Digest) -> bool {
        self.pre_prepared
            .get(&seq)
            .is_none_or(|blocks| blocks.iter().all(|(d, v)| *v != view || *d == digest))
    }

    /// Records a pre-prepare (Q); `false` if it conflicts (see [`Self::may_pre_prepare`]).
    pub fn pre_prepare(&mut self, seq: Height, view: View, digest: Digest) -> bool {
        if !self.may_pre_prepare(seq, view, digest) {
            return false;
        }
        let blocks = self.pre_prepared.entry(seq).or_default();
        match blocks.iter_mut().find(|(d, _)| *d == digest) {
            Some(entry) => entry.1 = entry.1.max(view),
            None => blocks.push((digest, view)),
        }
        blocks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0 .0.cmp(&b.0 .0)));
        // The block P holds at `seq` is never the one dropped (A2 must still find it).
        let prepared = self.prepared.get(&seq).map(|(_, d)| *d);
        while blocks.len() > Q_BLOCKS_MAX {
            let drop = blocks
                .iter()
                .rposition(|(d, _)| Some(*d) != prepared)
                .unwrap_or(blocks.len() - 1);
            blocks.remove(drop);
        }
        true
    }

    /// Records a prepared certificate (P): the latest view wins.
    pub fn prepare(&mut self, seq: Height, view: View, digest: Digest) {
        let entry = self.prepared.entry(seq).or_insert((view, digest));
        if entry.0 <= view {
            *entry = (view, digest);
        }
    }

    /// A new stable point: everything at or below it is settled and forgotten.
    pub fn stabilize(&mut self, stable: StablePoint) {
        let height = stable.height();
        self.prepared = self.prepared.split_off(&height.next());
        self.pre_prepared = self.pre_prepared.split_off(&height.next());
        self.stable = stable;
    }

    /// P and Q as a VIEW-CHANGE reports them (only what lies within `window` above the stable
    /// point, in increasing order).
    pub fn report(&self, window: u64) -> (Vec<PreparedEntry>, Vec<PrePreparedEntry>) {
        let low = self.stable.height();
        let high = Height(low.0.saturating_add(window));
        let prepared = self
            .prepared
            .range(low.next()..=high)
            .map(|(seq, (view, digest))| PreparedEntry {
                seq: *seq,
                view: *view,
                digest: *digest,
            })
            .collect();
        let pre_prepared = self
            .pre_prepared
            .range(low.next()..=high)
            .map(|(seq, blocks)| PrePreparedEntry {
                seq: *seq,
                blocks: blocks.clone(),
            })
            .collect();
        (prepared, pre_prepared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_block_per_sequence_number_per_view_and_the_latest_views_kept() {
        let mut state = SafetyState::new(
            Epoch(0),
            StablePoint::Root {
                height: Height(0),
                block: Digest::ZERO,
            },
        );
        assert!(state.pre_prepare(Height(1), View(1), Digest([1; 32])));
        assert!(state.pre_prepare(Height(1), View(1), Digest([1; 32])));
        assert!(!state.pre_prepare(Height(1), View(1), Digest([2; 32])));
        for view in 2..10 {
            assert!(state.pre_prepare(Height(1), View(view), Digest([view as u8; 32])));
        }
        let blocks = &state.pre_prepared[&Height(1)];
        assert_eq!(blocks.len(), Q_BLOCKS_MAX);
        assert_eq!(blocks[0], (Digest([9; 32]), View(9)));
        state.prepare(Height(1), View(3), Digest([3; 32]));
        state.prepare(Height(1), View(2), Digest([2; 32]));
        assert_eq!(state.prepared[&Height(1)], (View(3), Digest([3; 32])));
        // The block P holds (pre-prepared in view 3, older than the four kept) stays in Q
        // however many later views pre-prepare others: A2 must still find it.
        assert!(state.pre_prepare(Height(1), View(3), Digest([3; 32])));
        for view in 10..20 {
            assert!(state.pre_prepare(Height(1), View(view), Digest([view as u8; 32])));
        }
        let blocks = &state.pre_prepared[&Height(1)];
        assert_eq!(blocks.len(), Q_BLOCKS_MAX);
        assert!(blocks.contains(&(Digest([3; 32]), View(3))), "{blocks:?}");
        assert_eq!(blocks[0], (Digest([19; 32]), View(19)));
        state.stabilize(StablePoint::Root {
            height: Height(1),
            block: Digest::ZERO,
        });
        assert!(state.prepared.is_empty() && state.pre_prepared.is_empty());
    }
}
