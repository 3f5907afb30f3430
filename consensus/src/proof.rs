//! Checking a committed block's [`CommitProof`] without an engine: what a syncing validator (and,
//! later, the auditor) does with blocks a peer it does not trust hands it.
//!
//! HotStuff: the proof's `qc` must certify exactly this block, and verify against the epoch's
//! committee. If the proof carries a three-chain (the block was committed directly), the chain
//! must be b <- b' <- b'' with consecutive views, each certified by a valid QC: that is the commit
//! rule itself, so the block is proven committed. A proof without a three-chain (an ancestor
//! committed along with a later block) proves only that the block was certified; it is proven
//! committed by the hash chain from a later, directly committed block.

use crate::engine::{CommitProof, ThreeChain};
use crate::verifier::CertificateVerifier;
use quorate_crypto::Digest;
use quorate_genesis::ValidatorSet;
use quorate_ledger::{BlockHeader, QuorumCert};
use thiserror::Error;

/// What a valid proof shows about its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofStrength {
    /// The three-chain rule commits the block.
    Committed,
    /// The block is certified; it is committed if a committed descendant's hash chain reaches it.
    Certified,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("header cannot be hashed: {0}")]
    Header(String),
    #[error("{what} certifies block {certified}, not {expected}")]
    WrongBlock {
        what: &'static str,
        certified: Digest,
        expected: Digest,
    },
    #[error("{what} is for view {qc_view} / height {qc_height}, its block has view {view} / height {height}")]
    WrongPosition {
        what: &'static str,
        qc_view: u64,
        qc_height: u64,
        view: u64,
        height: u64,
    },
    #[error("{what} is for genesis {got} / epoch {epoch}, not this chain's genesis or epoch")]
    WrongChain {
        what: &'static str,
        got: Digest,
        epoch: u64,
    },
    #[error("{what} does not verify: {reason}")]
    BadCertificate { what: &'static str, reason: String },
    #[error("three-chain is broken: {0}")]
    BrokenChain(&'static str),
}

/// Checks `proof` for `header` against the validator set of the header's epoch.
pub fn verify_commit_proof(
    header: &BlockHeader,
    proof: &CommitProof,
    genesis_hash: Digest,
    validators: &ValidatorSet,
    verifier: &CertificateVerifier,
) -> Result<ProofStrength, ProofError> {
    let hash = header
        .hash()
        .map_err(|e| ProofError::Header(e.to_string()))?;
    match proof {
        CommitProof::HotStuff { qc, three_chain } => {
            check_qc("qc", qc, header, hash, genesis_hash, validators, verifier)?;
            let Some(ThreeChain {
                child,
                child_qc,
                grandchild,
                grandchild_qc,
            }) = three_chain
            else {
                return Ok(ProofStrength::Certified);
            };
            let child_hash = child
                .hash()
                .map_err(|e| ProofError::Header(e.to_string()))?;
            let grandchild_hash = grandchild
                .hash()
                .map_err(|e| ProofError::Header(e.to_string()))?;
            if child.parent != hash || grandchild.parent != child_hash {
                return Err(ProofError::BrokenChain("parent links do not match"));
            }
            // Views from the network: a view at u64::MAX has no successor (checked, not `+ 1`).
            if header.view.0.checked_add(1) != Some(child.view.0)
                || child.view.0.checked_add(1) != Some(grandchild.view.0)
            {
                return Err(ProofError::BrokenChain("views are not consecutive"));
            }
            check_qc(
                "child's qc",
                child_qc,
                child,
                child_hash,
                genesis_hash,
                validators,
                verifier,
            )?;
            check_qc(
                "grandchild's qc",
                grandchild_qc,
                grandchild,
                grandchild_hash,
                genesis_hash,
                validators,
                verifier,
            )?;
            Ok(ProofStrength::Committed)
        }
    }
}

fn check_qc(
    what: &'static str,
    qc: &QuorumCert,
    header: &BlockHeader,
    hash: Digest,
    genesis_hash: Digest,
    validators: &ValidatorSet,
    verifier: &CertificateVerifier,
) -> Result<(), ProofError> {
    if qc.data.block != hash {
        return Err(ProofError::WrongBlock {
            what,
            certified: qc.data.block,
            expected: hash,
        });
    }
    if qc.data.view != header.view || qc.data.height != header.height {
        return Err(ProofError::WrongPosition {
            what,
            qc_view: qc.data.view.0,
            qc_height: qc.data.height.0,
            view: header.view.0,
            height: header.height.0,
        });
    }
    if qc.data.genesis_hash != genesis_hash
        || qc.data.epoch != validators.epoch()
        || header.epoch != validators.epoch()
    {
        return Err(ProofError::WrongChain {
            what,
            got: qc.data.genesis_hash,
            epoch: qc.data.epoch.0,
        });
    }
    verifier
        .verify_qc(qc, validators.committee())
        .map_err(|e| ProofError::BadCertificate {
            what,
            reason: e.to_string(),
        })
}

/// The auditor's certificate check for HotStuff chains (`quorate_ledger::audit::ProofCheck`).
pub struct CommitProofChecker {
    pub genesis_hash: Digest,
    pub validators: ValidatorSet,
    pub verifier: CertificateVerifier,
}

impl quorate_ledger::audit::ProofCheck for CommitProofChecker {
    fn check(
        &self,
        header: &BlockHeader,
        proof: &[u8],
    ) -> Result<quorate_ledger::audit::Certified, String> {
        let proof: CommitProof = quorate_ledger::codec::decode(proof)
            .map_err(|e| format!("commit proof does not decode: {e}"))?;
        match verify_commit_proof(
            header,
            &proof,
            self.genesis_hash,
            &self.validators,
            &self.verifier,
        ) {
            Ok(ProofStrength::Committed) => Ok(quorate_ledger::audit::Certified::Committed),
            Ok(ProofStrength::Certified) => Ok(quorate_ledger::audit::Certified::Certified),
            Err(error) => Err(error.to_string()),
        }
    }
}
