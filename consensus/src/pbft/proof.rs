//! PBFT's commit proof: a block's stable checkpoint certificate, which must name exactly this
//! block at its height and verify against the epoch's committee. A block committed without one
//! (by MAC'd COMMITs, which nobody else can check) is proven by the hash chain from the next
//! certified checkpoint above it.

use crate::proof::{ChainContext, ProofError, ProofStrength};
use quorate_crypto::Digest;
use quorate_ledger::{BlockHeader, CheckpointCert};

/// Checks a checkpoint certificate as the commit proof of `header` (whose hash is `hash`).
pub(crate) fn verify_proof(
    header: &BlockHeader,
    hash: Digest,
    cert: &CheckpointCert,
    chain: &ChainContext<'_>,
) -> Result<ProofStrength, ProofError> {
    let data = &cert.data;
    if data.genesis_hash != chain.genesis_hash
        || data.epoch != header.epoch
        || data.epoch != chain.validators.epoch()
    {
        return Err(ProofError::WrongChain {
            what: "checkpoint certificate",
            got: data.genesis_hash,
            epoch: data.epoch.0,
        });
    }
    if data.block != hash {
        return Err(ProofError::WrongBlock {
            what: "checkpoint certificate",
            certified: data.block,
            expected: hash,
        });
    }
    if data.height != header.height || data.seq.0 != header.height.0 {
        return Err(ProofError::WrongPosition {
            what: "checkpoint certificate",
            qc_view: data.seq.0,
            qc_height: data.height.0,
            view: header.view.0,
            height: header.height.0,
        });
    }
    chain
        .verifier
        .verify_checkpoint(cert, chain.validators.committee())
        .map_err(|e| ProofError::BadCertificate {
            what: "checkpoint certificate",
            reason: e.to_string(),
        })?;
    Ok(ProofStrength::Committed)
}
