//! Leader election with reputation: leaders that have not proposed lately are skipped.
//!
//! Round-robin lets a validator that has crashed, or fell silent on purpose, cost one view
//! timeout every n views, forever. As in Diem's `LeaderReputation` (and Carousel, Cohen et al.,
//! FC 2022), the leader of a view reached in the happy path is chosen from the validators that
//! have recently shown they propose, so a silent one is passed over:
//!
//! ```text
//! leader of view v, entered by a QC for block B (B.view = v - 1):
//!     window  <- B and its ancestors, up to W blocks (genesis excluded)
//!     active  <- the proposers of the blocks in window, in index order
//!     if power(active) >= quorum power:  active[v mod |active|]
//!     else:                              v mod n             (round robin)
//! leader of view v, entered by a TC for v - 1:  v mod n     (round robin)
//! ```
//!
//! It is deterministic from the hash chain ending at B, so every validator that knows B agrees
//! without any message: the voters of B send their votes to it, and it can prove its right to
//! propose with the QC for B alone. A view entered by timeout falls back to round robin, which
//! is how a validator outside the active set (a restarted one) gets a turn to propose again; and
//! an active set needs a quorum's power, so it always holds honest validators and no small
//! group can keep the proposals to itself. Safety never depends on who leads: at most one
//! vote per view and validator, whoever proposes.

use super::block_tree::BlockTree;
use quorate_crypto::Digest;
use quorate_genesis::ValidatorSet;
use quorate_ledger::{BlockHeader, Height, View};
use std::collections::HashMap;

/// Most blocks a reputation window spans (it is twice the validators, within these bounds).
pub const REPUTATION_WINDOW_MAX: usize = 200;
const REPUTATION_WINDOW_MIN: usize = 8;

/// The committed blocks a restarted engine needs below its root to elect leaders as the
/// running ones do: the window, for a set of `validators`.
pub fn reputation_window(validators: usize) -> usize {
    validators
        .saturating_mul(2)
        .clamp(REPUTATION_WINDOW_MIN, REPUTATION_WINDOW_MAX)
}

pub(crate) struct LeaderSchedule {
    validators: ValidatorSet,
    window: usize,
    /// Committed headers below the root the engine started from, by hash. Only a restarted
    /// engine needs them, until its block tree holds a window of its own.
    history: HashMap<Digest, BlockHeader>,
}

impl LeaderSchedule {
    /// `history`: committed headers ending at (or just below) the engine's root, any order.
    pub fn new(validators: ValidatorSet, history: &[BlockHeader]) -> Self {
        let window = reputation_window(validators.len());
        let history = history
            .iter()
            .rev()
            .take(window)
            .filter_map(|header| Some((header.hash().ok()?, header.clone())))
            .collect();
        LeaderSchedule {
            validators,
            window,
            history,
        }
    }

    /// The leader of a view entered by timeout (and of every view while too few are active).
    pub fn round_robin(&self, view: View) -> usize {
        self.validators.leader(view)
    }

    /// The leader of `view` entered by a QC for `block`; `None` if `block` is unknown.
    pub fn after(&self, tree: &BlockTree, block: &Digest, view: View) -> Option<usize> {
        let n = self.validators.len();
        let mut active = vec![false; n];
        let mut cursor = *block;
        let mut seen = 0;
        while seen < self.window {
            let header = match tree.get(&cursor) {
                Some(b) => &b.header,
                None => match self.history.get(&cursor) {
                    Some(header) => header,
                    None if seen == 0 => return None,
                    None => break,
                },
            };
            if header.height == Height(0) {
                break;
            }
            if let Some(slot) = active.get_mut(header.proposer as usize) {
                *slot = true;
            }
            seen += 1;
            cursor = header.parent;
        }
        let committee = self.validators.committee();
        let candidates: Vec<usize> = active
            .iter()
            .enumerate()
            .filter_map(|(i, &is_active)| is_active.then_some(i))
            .collect();
        let power: u64 = candidates.iter().map(|&i| committee.power(i)).sum();
        if power < self.validators.quorum_power() {
            return Some(self.round_robin(view));
        }
        let turn = (view.0 % candidates.len() as u64) as usize;
        candidates.get(turn).copied()
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::hotstuff::messages::HsBlock;
    use crate::sim::{CryptoMode, Setup};
    use quorate_crypto::{BlsSignature, SignerBitmap};
    use quorate_ledger::{Epoch, QuorumCert, VoteData};

    fn validator_set(n: usize) -> ValidatorSet {
        let setup = Setup::new(n, CryptoMode::Fast).expect("setup");
        setup
            .engine_config(0, crate::FaultInjection::None)
            .validators
    }

    fn block(parent: &HsBlock, view: u64, proposer: u16) -> HsBlock {
        let parent_hash = parent.hash().expect("hash");
        HsBlock {
            header: BlockHeader {
                height: parent.header.height.next(),
                view: View(view),
                parent: parent_hash,
                proposer,
                ..parent.header.clone()
            },
            justify: QuorumCert {
                data: VoteData {
                    genesis_hash: parent.header.genesis_hash,
                    epoch: Epoch(0),
                    view: parent.header.view,
                    height: parent.header.height,
                    block: parent_hash,
                },
                signers: SignerBitmap::new(4),
                signature: BlsSignature([0; 96]),
            },
        }
    }

    /// A chain from genesis whose block i (1-based) has view `views[i-1]` and proposer
    /// `proposers[i-1]`, in a tree; returns the tree and the hashes.
    fn chain(views: &[u64], proposers: &[u16]) -> (BlockTree, Vec<Digest>) {
        let genesis = HsBlock {
            header: BlockHeader::genesis("test", Digest::ZERO, Digest::ZERO, 0),
            justify: QuorumCert {
                data: VoteData {
                    genesis_hash: Digest::ZERO,
                    epoch: Epoch(0),
                    view: View(0),
                    height: Height(0),
                    block: Digest::ZERO,
                },
                signers: SignerBitmap::new(4),
                signature: BlsSignature([0; 96]),
            },
        };
        let root = genesis.hash().expect("hash");
        let mut tree = BlockTree::new(root, genesis.clone());
        let mut hashes = vec![root];
        let mut parent = genesis;
        for (&view, &proposer) in views.iter().zip(proposers) {
            let b = block(&parent, view, proposer);
            let hash = b.hash().expect("hash");
            assert!(tree.insert(hash, b.clone()));
            hashes.push(hash);
            parent = b;
        }
        (tree, hashes)
    }

    #[test]
    fn a_validator_that_never_proposes_is_skipped_once_a_quorum_is_active() {
        let set = validator_set(4);
        let schedule = LeaderSchedule::new(set, &[]);
        // Views 1..=7; validator 0 (leader of view 4) is silent: view 4 timed out.
        let (tree, hashes) = chain(&[1, 2, 3, 5, 6, 7], &[1, 2, 3, 1, 2, 3]);
        // Only validator 1 has proposed after block 1: round robin.
        assert_eq!(schedule.after(&tree, &hashes[1], View(2)), Some(2));
        // 1, 2 and 3 proposed (a quorum): the leader is one of them, in turn, never 0.
        let newest = hashes[6];
        let leaders: Vec<usize> = (8..20)
            .map(|v| schedule.after(&tree, &newest, View(v)).expect("known"))
            .collect();
        assert!(!leaders.contains(&0), "{leaders:?}");
        for v in [1, 2, 3] {
            assert!(leaders.contains(&v), "{leaders:?}");
        }
        // By timeout it is round robin still (0 gets its turn, as a restarted validator would).
        assert_eq!(schedule.round_robin(View(8)), 0);
        assert_eq!(schedule.after(&tree, &Digest([9; 32]), View(8)), None);
    }

    #[test]
    fn a_restarted_engine_elects_as_the_running_ones_do() {
        let set = validator_set(4);
        // All four proposed in the window; after the root (block 6) only 2, 3 and 1 did.
        let views = [1, 2, 3, 4, 5, 6, 7, 9];
        let proposers = [1, 2, 3, 0, 1, 2, 3, 1];
        let (tree, hashes) = chain(&views, &proposers);
        let running = LeaderSchedule::new(set.clone(), &[]);
        // A restarted engine's tree holds only its root (block 6) and what came after it; the
        // committed headers below come from its ledger.
        let root = tree.get(&hashes[6]).expect("root").as_ref().clone();
        let mut restarted_tree = BlockTree::new(hashes[6], root);
        for hash in &hashes[7..] {
            let b = tree.get(hash).expect("block").as_ref().clone();
            assert!(restarted_tree.insert(*hash, b));
        }
        let history: Vec<BlockHeader> = hashes[1..6]
            .iter()
            .map(|h| tree.get(h).expect("block").header.clone())
            .collect();
        let restarted = LeaderSchedule::new(set.clone(), &history);
        let without_history = LeaderSchedule::new(set, &[]);
        let mut differs = false;
        for v in 11..30 {
            let expected = running.after(&tree, &hashes[8], View(v));
            assert_eq!(
                restarted.after(&restarted_tree, &hashes[8], View(v)),
                expected
            );
            differs |= without_history.after(&restarted_tree, &hashes[8], View(v)) != expected;
        }
        assert!(differs, "the history is what makes them agree");
    }
}
