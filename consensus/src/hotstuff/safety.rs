//! Safety rules: the only code that signs votes and timeouts.
//!
//! [`SafetyData`] is persisted (and synced) by the runtime before any vote or timeout that depends
//! on it leaves the node, so a restarted validator never signs two different votes in one view.

use super::messages::{HsBlock, Vote};
use crate::crypto::Signer;
use crate::FaultInjection;
use quorate_crypto::{BlsSignature, Digest, Domain};
use quorate_ledger::{
    codec, CodecError, Epoch, QuorumCert, TimeoutCert, TimeoutData, TimeoutVote, View, VoteData,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The state that must survive a crash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyData {
    pub epoch: Epoch,
    /// The highest view this validator voted in or timed out in. It never votes at or below it.
    pub last_voted_view: View,
    /// The QC of the locked block b' (the parent of the highest two-chain seen).
    pub locked_qc: QuorumCert,
    /// The highest QC seen (liveness: the next proposal extends it).
    pub high_qc: QuorumCert,
    /// The highest TC seen.
    pub last_tc: Option<TimeoutCert>,
    /// The last vote signed, returned again if the same block is asked for (idempotent re-votes).
    pub last_vote: Option<Vote>,
    /// The highest view this validator proposed a block in. Persisted before the proposal leaves,
    /// so a leader that crashes before its own vote is durable never proposes twice in a view.
    pub last_proposed_view: View,
}

/// A timeout certificate as validators wrote it before timeouts signed their high QC's view.
#[derive(Serialize, Deserialize)]
pub(crate) struct TimeoutCertV1 {
    pub data: TimeoutData,
    pub signers: quorate_crypto::SignerBitmap,
    pub signature: BlsSignature,
}

/// [`SafetyData`] as validators wrote it before `last_proposed_view` existed.
#[derive(Serialize, Deserialize)]
pub(crate) struct SafetyDataV1 {
    pub epoch: Epoch,
    pub last_voted_view: View,
    pub locked_qc: QuorumCert,
    pub high_qc: QuorumCert,
    pub last_tc: Option<TimeoutCertV1>,
    pub last_vote: Option<Vote>,
}

/// [`SafetyData`] as validators wrote it before timeouts signed their high QC's view.
#[derive(Serialize, Deserialize)]
pub(crate) struct SafetyDataV2 {
    pub epoch: Epoch,
    pub last_voted_view: View,
    pub locked_qc: QuorumCert,
    pub high_qc: QuorumCert,
    pub last_tc: Option<TimeoutCertV1>,
    pub last_vote: Option<Vote>,
    pub last_proposed_view: View,
}

impl SafetyData {
    /// Decodes persisted safety data, in the current layout or one before it (read once, on
    /// the first start of an upgraded validator; the next persist writes the current layout).
    /// An older TC is dropped: it cannot name its signers' QCs, and the last TC only serves
    /// liveness (peers' timeouts and sync messages bring a current one). From the oldest
    /// layout, the last proposed view is taken to be the last voted view (a leader votes for its
    /// own proposal; the crash window between the two is what the newer field closes).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode::<SafetyData>(bytes).or_else(|current| {
            if let Ok(old) = codec::decode::<SafetyDataV2>(bytes) {
                return Ok(SafetyData {
                    epoch: old.epoch,
                    last_voted_view: old.last_voted_view,
                    locked_qc: old.locked_qc,
                    high_qc: old.high_qc,
                    last_tc: None,
                    last_vote: old.last_vote,
                    last_proposed_view: old.last_proposed_view,
                });
            }
            let old: SafetyDataV1 = codec::decode(bytes).map_err(|_| current)?;
            Ok(SafetyData {
                epoch: old.epoch,
                last_voted_view: old.last_voted_view,
                locked_qc: old.locked_qc,
                high_qc: old.high_qc,
                last_tc: None,
                last_vote: old.last_vote,
                last_proposed_view: old.last_voted_view,
            })
        })
    }
}

/// Why a vote was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VoteRefused {
    #[error("proposal for view {view} but already voted or timed out in view {last_voted_view}")]
    StaleView { view: View, last_voted_view: View },
    #[error(
        "block of view {view} neither extends the locked block (view {locked_view}) nor justifies \
         itself with a newer QC (view {justify_view})"
    )]
    NotSafeNode {
        view: View,
        locked_view: View,
        justify_view: View,
    },
    #[error(
        "block of view {view} entered by timeout extends a QC of view {justify_view}, older than \
         the QC of view {tc_high_qc_view} a signer of its TC held"
    )]
    BelowTcHighQc {
        view: View,
        justify_view: View,
        tc_high_qc_view: View,
    },
}

pub(crate) struct SafetyRules {
    key: Signer,
    data: SafetyData,
    fault: FaultInjection,
}

impl SafetyRules {
    pub fn new(key: Signer, data: SafetyData, fault: FaultInjection) -> Self {
        SafetyRules { key, data, fault }
    }

    pub fn data(&self) -> &SafetyData {
        &self.data
    }

    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(&self.data)
    }

    /// The safe-node predicate (HotStuff, Algorithm 1/3 `safeNode`), for a block in the current
    /// view:
    /// 1. `block.view > last_voted_view`: at most one vote per view, views only increase.
    /// 2. the block extends the locked block (safety), OR its justify QC is newer than the lock
    ///    (liveness: the lock was on a branch that 2f+1 others have moved past).
    /// 3. a block justified by a TC (`tc_high_qc_view`: the highest QC view its signers held)
    ///    extends a QC at least that high (Jolteon's vote rule: a leader cannot pair a genuine
    ///    TC with an older QC).
    pub fn safe_to_vote(
        &self,
        block: &HsBlock,
        extends_lock: bool,
        tc_high_qc_view: Option<View>,
    ) -> Result<(), VoteRefused> {
        let view = block.header.view;
        if view <= self.data.last_voted_view {
            return Err(VoteRefused::StaleView {
                view,
                last_voted_view: self.data.last_voted_view,
            });
        }
        let justify_view = block.justify.data.view;
        let ignore_lock = self.fault == FaultInjection::IgnoreLock;
        if let Some(tc_high_qc_view) = tc_high_qc_view.filter(|_| !ignore_lock) {
            if justify_view < tc_high_qc_view {
                return Err(VoteRefused::BelowTcHighQc {
                    view,
                    justify_view,
                    tc_high_qc_view,
                });
            }
        }
        let locked_view = self.data.locked_qc.data.view;
        if !(extends_lock || justify_view > locked_view || ignore_lock) {
            return Err(VoteRefused::NotSafeNode {
                view,
                locked_view,
                justify_view,
            });
        }
        Ok(())
    }

    /// Signs a vote for `block` if it is safe. Asked again for the same block, returns the same
    /// vote without changing state. Returns whether state changed (and so must be persisted).
    pub fn vote(
        &mut self,
        block: &HsBlock,
        hash: Digest,
        extends_lock: bool,
        tc_high_qc_view: Option<View>,
    ) -> Result<(Vote, bool), VoteRefused> {
        if let Some(last) = &self.data.last_vote {
            if last.data.view == block.header.view && last.data.block == hash {
                return Ok((last.clone(), false));
            }
        }
        self.safe_to_vote(block, extends_lock, tc_high_qc_view)?;
        let data = VoteData {
            genesis_hash: block.header.genesis_hash,
            epoch: block.header.epoch,
            view: block.header.view,
            height: block.header.height,
            block: hash,
        };
        // Encoding a fixed-size struct cannot fail.
        let bytes = data.signing_bytes().unwrap_or_default();
        let signature = self.sign(Domain::Vote, &bytes);
        let vote = Vote { data, signature };
        self.data.last_voted_view = block.header.view;
        self.data.last_vote = Some(vote.clone());
        Ok((vote, true))
    }

    /// Signs a timeout for `data.view`, naming the view of this validator's high QC (which the
    /// timeout carries); from then on it does not vote in that view. Returns the signature and
    /// whether state changed.
    pub fn timeout(&mut self, data: &TimeoutData) -> (BlsSignature, bool) {
        let changed = data.view > self.data.last_voted_view;
        if changed {
            self.data.last_voted_view = data.view;
        }
        let vote = TimeoutVote {
            data: *data,
            high_qc_view: self.data.high_qc.data.view,
        };
        // Encoding a fixed-size struct cannot fail.
        let bytes = vote.signing_bytes().unwrap_or_default();
        (self.sign(Domain::Timeout, &bytes), changed)
    }

    /// The lock rule: on a QC for b'' whose justify certifies b', lock on b' if it is newer.
    pub fn observe_lock(&mut self, qc_of_b_prime: &QuorumCert) -> bool {
        if qc_of_b_prime.data.view > self.data.locked_qc.data.view {
            self.data.locked_qc = qc_of_b_prime.clone();
            return true;
        }
        false
    }

    /// Records a proposal in `view`; returns whether state changed (and must be persisted).
    pub fn record_proposal(&mut self, view: View) -> bool {
        if view > self.data.last_proposed_view {
            self.data.last_proposed_view = view;
            return true;
        }
        false
    }

    pub fn observe_high_qc(&mut self, qc: &QuorumCert) -> bool {
        if qc.data.view > self.data.high_qc.data.view {
            self.data.high_qc = qc.clone();
            return true;
        }
        false
    }

    pub fn observe_tc(&mut self, tc: &TimeoutCert) -> bool {
        if self
            .data
            .last_tc
            .as_ref()
            .is_none_or(|last| tc.data.view > last.data.view)
        {
            self.data.last_tc = Some(tc.clone());
            return true;
        }
        false
    }

    fn sign(&self, domain: Domain, bytes: &[u8]) -> BlsSignature {
        self.key.sign(domain, bytes)
    }
}
