//! Block sync inside the engine: fetching the ancestors a proposal or certificate refers to,
//! holding blocks whose parent is missing (orphans), and proposals waiting for their ancestors.
//!
//! Everything here is driven by peers, so everything is bounded: one parked proposal per sender,
//! `ORPHANS_MAX` orphans, `REQUESTS_REMEMBERED_MAX` outstanding requests; a response is taken only
//! from the peer that was asked, and only for a block that was asked for.

use super::{BlockRequest, BlockResponse, HotStuff, HsBlock, HsMessage, Proposal};
use crate::{Action, ValidatorIndex};
use quorate_crypto::Digest;
use quorate_ledger::{codec, Height, QuorumCert, View};
use std::collections::{BTreeMap, VecDeque};

/// Most blocks one `BlockRequest` asks for or one `BlockResponse` carries.
pub const BLOCKS_PER_REQUEST_MAX: u16 = 64;
/// Most blocks held while their ancestors are fetched.
const ORPHANS_MAX: usize = 256;
/// Most outstanding block requests remembered.
const REQUESTS_REMEMBERED_MAX: usize = 64;

#[derive(Default)]
pub(super) struct BlockSync {
    /// Proposals whose parent is being fetched, one per sender. A proposal whose leader cannot
    /// be checked yet (the block its QC certifies is missing too) is parked all the same, so
    /// keyed by sender it can never displace the real leader's.
    parked: BTreeMap<ValidatorIndex, Proposal>,
    /// Blocks received whose parent is unknown, by their own hash.
    orphans: BTreeMap<Digest, HsBlock>,
    /// Blocks asked for and not yet received, by hash and the peer asked, with the view of the
    /// request (at most one per block and peer per view; bounded, oldest forgotten first).
    requested: BTreeMap<(Digest, ValidatorIndex), View>,
    requested_order: VecDeque<(Digest, ValidatorIndex)>,
}

impl BlockSync {
    pub(super) fn park(&mut self, from: ValidatorIndex, proposal: Proposal) {
        self.parked.insert(from, proposal);
    }

    /// The parked proposals for `view`; those for earlier views are dropped, later ones kept.
    pub(super) fn take_parked_for(&mut self, view: View) -> Vec<(ValidatorIndex, Proposal)> {
        self.parked
            .retain(|_, proposal| proposal.block.header.view >= view);
        let ready: Vec<ValidatorIndex> = self
            .parked
            .iter()
            .filter(|(_, proposal)| proposal.block.header.view == view)
            .map(|(from, _)| *from)
            .collect();
        ready
            .into_iter()
            .filter_map(|from| self.parked.remove(&from).map(|p| (from, p)))
            .collect()
    }

    fn take_all_parked(&mut self) -> Vec<(ValidatorIndex, Proposal)> {
        std::mem::take(&mut self.parked).into_iter().collect()
    }

    /// Whatever was asked for and not received may be asked for again (a view timed out).
    pub(super) fn forget_requests(&mut self) {
        self.requested.clear();
        self.requested_order.clear();
    }

    /// Orphans at or below the committed height can never be inserted.
    pub(super) fn prune_orphans(&mut self, committed: Height) {
        self.orphans
            .retain(|_, block| block.header.height > committed);
    }

    /// Records a request of `hash` from `to` in `view`; false if one was already sent this view.
    fn note_request(&mut self, hash: Digest, to: ValidatorIndex, view: View) -> bool {
        match self.requested.insert((hash, to), view) {
            Some(previous) if previous >= view => return false,
            Some(_) => {}
            None => self.requested_order.push_back((hash, to)),
        }
        while self.requested_order.len() > REQUESTS_REMEMBERED_MAX {
            if let Some(old) = self.requested_order.pop_front() {
                self.requested.remove(&old);
            }
        }
        true
    }

    /// Closes every request for `hash`; false if none was open.
    fn answered(&mut self, hash: &Digest) -> bool {
        let before = self.requested.len();
        self.requested.retain(|(requested, _), _| requested != hash);
        self.requested_order
            .retain(|(requested, _)| requested != hash);
        self.requested.len() < before
    }
}

impl HotStuff {
    pub(super) fn request_blocks(&mut self, to: ValidatorIndex, hash: Digest) {
        let view = self.pacemaker.view();
        if to == self.me() || self.tree.contains(&hash) || !self.sync.note_request(hash, to, view) {
            return;
        }
        self.send(
            to,
            HsMessage::BlockRequest(BlockRequest {
                hash,
                count: BLOCKS_PER_REQUEST_MAX,
            }),
        );
    }

    /// Fetches a certified block from one of its signers (round-robin by view so retries vary).
    pub(super) fn fetch_from_signers(&mut self, qc: &QuorumCert) {
        let signers: Vec<usize> = qc.signers.signers().filter(|&s| s != self.me()).collect();
        let Some(turn) = (self.pacemaker.view().0 as usize).checked_rem(signers.len()) else {
            return;
        };
        if let Some(&pick) = signers.get(turn) {
            self.request_blocks(pick, qc.data.block);
        }
    }

    pub(super) fn on_block_request(&mut self, from: ValidatorIndex, request: BlockRequest) {
        let count = request.count.clamp(1, BLOCKS_PER_REQUEST_MAX) as usize;
        // The tree root's justify is a placeholder, not its parent's QC: never serve it or past it.
        let blocks: Vec<HsBlock> = self
            .tree
            .chain(&request.hash, count)
            .into_iter()
            .take_while(|b| b.justify.data.block == b.header.parent)
            .collect();
        if !blocks.is_empty() {
            self.send(from, HsMessage::BlockResponse(BlockResponse { blocks }));
        }
    }

    pub(super) fn on_block_response(&mut self, from: ValidatorIndex, response: BlockResponse) {
        if response.blocks.len() > BLOCKS_PER_REQUEST_MAX as usize {
            return;
        }
        // Only answers to our own requests are taken: the newest block is one we asked this
        // peer for by hash, and the rest are authenticated by the hash chain from it. Checked
        // before any certificate is: an unsolicited response costs one hash, never a signature
        // check.
        let asked = match response.blocks.first().map(HsBlock::hash) {
            Some(Ok(newest)) => self.sync.requested.contains_key(&(newest, from)),
            _ => false,
        };
        if !asked {
            return;
        }
        // Walk newest to oldest: each must be well formed, certified by a valid justify, and be
        // the parent of the one before it.
        let mut expected_parent: Option<Digest> = None;
        let mut accepted = Vec::new();
        for block in response.blocks {
            let Ok(hash) = block.hash() else { break };
            if expected_parent.is_some_and(|p| p != hash) {
                break;
            }
            if !self.well_formed(&block) || !self.verify_qc(from, &block.justify) {
                break;
            }
            expected_parent = Some(block.header.parent);
            accepted.push((hash, block));
        }
        let Some((newest, _)) = accepted.first().cloned() else {
            return;
        };
        if !self.sync.answered(&newest) {
            return;
        }
        let oldest_parent = accepted.last().map(|(_, b)| b.header.parent);
        for (hash, block) in accepted.into_iter().rev() {
            if self.tree.contains(&block.header.parent) {
                self.insert_block(hash, block);
            } else if block.header.height > self.tree.committed().1
                && self.sync.orphans.len() < ORPHANS_MAX
            {
                self.sync.orphans.insert(hash, block);
            }
        }
        if let Some(parent) = oldest_parent {
            if !self.tree.contains(&parent) {
                // Still not connected: ask for the next stretch back.
                self.request_blocks(from, parent);
                return;
            }
        }
        // The chain connected: re-run the rules that were waiting on it, and every parked
        // proposal (one still missing its parent is parked again).
        let high_qc = self.safety.data().high_qc.clone();
        self.apply_chain_rules(&high_qc);
        self.try_propose();
        for (from, proposal) in self.sync.take_all_parked() {
            self.on_proposal(from, proposal);
        }
    }

    /// Inserts orphans whose parent just arrived, recursively.
    pub(super) fn adopt_orphans(&mut self, parent: Digest) {
        let mut parents = vec![parent];
        while let Some(parent) = parents.pop() {
            let children: Vec<Digest> = self
                .sync
                .orphans
                .iter()
                .filter(|(_, block)| block.header.parent == parent)
                .map(|(hash, _)| *hash)
                .collect();
            for hash in children {
                if let Some(block) = self.sync.orphans.remove(&hash) {
                    if let Ok(bytes) = codec::encode(&block) {
                        let header = block.header.clone();
                        if self.tree.insert(hash, block) {
                            self.emit(Action::StoreBlock {
                                hash,
                                header,
                                bytes,
                            });
                            parents.push(hash);
                        }
                    }
                }
            }
        }
    }
}
