//! HotStuff's commit proof: the proof's `qc` must certify exactly this block, and verify against
//! the epoch's committee. If the proof carries a three-chain (the block was committed directly),
//! the chain must be b <- b' <- b'' with consecutive views, each certified by a valid QC: that is
//! the commit rule itself, so the block is proven committed. A proof without a three-chain (an
//! ancestor committed along with a later block) proves only that the block was certified; it is
//! proven committed by the hash chain from a later, directly committed block.

use crate::proof::{ChainContext, ProofError, ProofStrength};
use quorate_crypto::Digest;
use quorate_ledger::{BlockHeader, QuorumCert};
use serde::{Deserialize, Serialize};

/// The two successors that commit a block under chained HotStuff's rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreeChain {
    pub child: BlockHeader,
    pub child_qc: QuorumCert,
    pub grandchild: BlockHeader,
    pub grandchild_qc: QuorumCert,
}

/// Checks HotStuff's commit proof for `header` (whose hash is `hash`).
pub(crate) fn verify_proof(
    header: &BlockHeader,
    hash: Digest,
    qc: &QuorumCert,
    three_chain: Option<&ThreeChain>,
    chain: &ChainContext<'_>,
) -> Result<ProofStrength, ProofError> {
    check_qc("qc", qc, header, hash, chain)?;
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
    if Some(child.view.0) != header.view.0.checked_add(1)
        || Some(grandchild.view.0) != child.view.0.checked_add(1)
    {
        return Err(ProofError::BrokenChain("views are not consecutive"));
    }
    check_qc("child's qc", child_qc, child, child_hash, chain)?;
    check_qc(
        "grandchild's qc",
        grandchild_qc,
        grandchild,
        grandchild_hash,
        chain,
    )?;
    Ok(ProofStrength::Committed)
}

fn check_qc(
    what: &'static str,
    qc: &QuorumCert,
    header: &BlockHeader,
    hash: Digest,
    chain: &ChainContext<'_>,
) -> Result<(), ProofError> {
    let validators = chain.validators;
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
    if qc.data.genesis_hash != chain.genesis_hash
        || qc.data.epoch != validators.epoch()
        || header.epoch != validators.epoch()
    {
        return Err(ProofError::WrongChain {
            what,
            got: qc.data.genesis_hash,
            epoch: qc.data.epoch.0,
        });
    }
    chain
        .verifier
        .verify_qc(qc, validators.committee())
        .map_err(|e| ProofError::BadCertificate {
            what,
            reason: e.to_string(),
        })
}
