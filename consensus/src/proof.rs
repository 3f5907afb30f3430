//! Checking a committed block's [`CommitProof`] without an engine: what a syncing validator (and,
//! later, the auditor) does with blocks a peer it does not trust hands it.
//!
//! Each protocol checks its own kind of proof (HotStuff's in `hotstuff::proof`); what a proof
//! shows is neutral: the block is committed, or only certified and committed by the hash chain
//! from a later, committed block.

use crate::engine::{CommitProof, DirectProof, MAX_DESCENDANT_PATH};
use crate::hotstuff;
use crate::pbft;
use crate::verifier::CertificateVerifier;
use quorate_crypto::Digest;
use quorate_genesis::{Protocol, ValidatorSet};
use quorate_ledger::BlockHeader;
use thiserror::Error;

/// What a valid proof shows about its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofStrength {
    /// The three-chain rule commits the block.
    Committed,
    /// The block is certified; it is committed if a committed descendant's hash chain reaches it.
    Certified,
    /// The proof carries no certificate (a PBFT block between checkpoints): the block is
    /// committed if a committed descendant's hash chain reaches it.
    Chained,
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
    let chain = ChainContext {
        genesis_hash,
        validators,
        verifier,
    };
    match proof {
        CommitProof::HotStuff { qc, three_chain } => {
            hotstuff::verify_proof(header, hash, qc, three_chain.as_ref(), &chain)
        }
        CommitProof::Pbft {
            checkpoint: Some(cert),
        } => pbft::verify_proof(header, hash, cert, &chain),
        CommitProof::Pbft { checkpoint: None } => Ok(ProofStrength::Chained),
        CommitProof::Descendant { path, proof } => verify_descendant(
            header,
            hash,
            path,
            proof,
            genesis_hash,
            validators,
            verifier,
        ),
    }
}

/// A [`CommitProof::Descendant`]: the path links `header` to the block `proof` is for, in
/// `header`'s epoch, and `proof` commits that block directly (hence every block on the path,
/// `header` first).
fn verify_descendant(
    header: &BlockHeader,
    hash: Digest,
    path: &[BlockHeader],
    proof: &DirectProof,
    genesis_hash: Digest,
    validators: &ValidatorSet,
    verifier: &CertificateVerifier,
) -> Result<ProofStrength, ProofError> {
    let Some(last) = path.last().filter(|_| path.len() <= MAX_DESCENDANT_PATH) else {
        return Err(ProofError::BrokenChain(
            "a descendant proof needs 1 to MAX_DESCENDANT_PATH headers",
        ));
    };
    let mut parent = hash;
    for child in path {
        if child.parent != parent || child.epoch != header.epoch {
            return Err(ProofError::BrokenChain(
                "the descendant path does not link the block in its epoch",
            ));
        }
        parent = child
            .hash()
            .map_err(|e| ProofError::Header(e.to_string()))?;
    }
    let proof = proof.to_commit_proof();
    match verify_commit_proof(last, &proof, genesis_hash, validators, verifier)? {
        ProofStrength::Committed => Ok(ProofStrength::Committed),
        ProofStrength::Certified | ProofStrength::Chained => Err(ProofError::BrokenChain(
            "a descendant proof must end in a proof that commits its block",
        )),
    }
}

/// What every protocol's proof is checked against: this chain and the epoch's validator set.
pub(crate) struct ChainContext<'a> {
    pub genesis_hash: Digest,
    pub validators: &'a ValidatorSet,
    pub verifier: &'a CertificateVerifier,
}

/// The auditor's certificate check (`quorate_ledger::audit::ProofCheck`): each proof against
/// the validator set of its epoch, as the audited chain committed it.
pub struct CommitProofChecker {
    genesis_hash: Digest,
    protocol: Protocol,
    verifier: CertificateVerifier,
    /// The set of the epoch checked last (building one checks every proof of possession).
    validators: std::sync::Mutex<Option<ValidatorSet>>,
}

impl CommitProofChecker {
    pub fn new(genesis_hash: Digest, protocol: Protocol, verifier: CertificateVerifier) -> Self {
        CommitProofChecker {
            genesis_hash,
            protocol,
            verifier,
            validators: std::sync::Mutex::new(None),
        }
    }
}

impl quorate_ledger::audit::ProofCheck for CommitProofChecker {
    fn check(
        &self,
        header: &BlockHeader,
        proof: &[u8],
        governance: &quorate_ledger::Governance,
    ) -> Result<quorate_ledger::audit::Certified, String> {
        let proof: CommitProof = quorate_ledger::codec::decode(proof)
            .map_err(|e| format!("commit proof does not decode: {e}"))?;
        if !proof.is_of(self.protocol) {
            return Err(format!(
                "a {} proof on a {} chain",
                proof.protocol_name(),
                self.protocol
            ));
        }
        let mut cached = self.validators.lock().unwrap_or_else(|p| p.into_inner());
        let current = cached
            .as_ref()
            .is_some_and(|set| set.epoch() == governance.epoch);
        if !current {
            let set = ValidatorSet::new(governance.epoch, governance.validators.clone())
                .map_err(|e| format!("epoch {}'s validator set: {e}", governance.epoch))?;
            *cached = Some(set);
        }
        let Some(validators) = cached.as_ref() else {
            return Err("no validator set".into());
        };
        match verify_commit_proof(
            header,
            &proof,
            self.genesis_hash,
            validators,
            &self.verifier,
        ) {
            Ok(ProofStrength::Committed) => Ok(quorate_ledger::audit::Certified::Committed),
            Ok(ProofStrength::Certified) => Ok(quorate_ledger::audit::Certified::Certified),
            Ok(ProofStrength::Chained) => Ok(quorate_ledger::audit::Certified::Chained),
            Err(error) => Err(error.to_string()),
        }
    }
}
