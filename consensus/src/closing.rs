//! The end of an epoch, as every runtime (the node's executor, the simulator) carries it out.
//!
//! The block that ends an epoch names the next epoch's set in its state, so only its own
//! epoch's set can vouch for it: its stored proof must commit it by itself. When the engine
//! committed it through a later block's hash chain (HotStuff after a view without a three-chain
//! on it, PBFT between checkpoints), the runtime keeps the old engine running over the
//! reconfiguration suffix and collects the blocks the engine commits above it, until one of them
//! is committed directly; the proof is then a [`CommitProof::Descendant`] over that path.

use crate::engine::{CommitProof, DirectProof, MAX_DESCENDANT_PATH};
use quorate_crypto::Digest;
use quorate_ledger::{BlockHeader, CodecError};

/// An epoch's last block, committed, waiting for a proof that commits it by itself.
pub struct EpochClosing {
    last: BlockHeader,
    hash: Digest,
    /// The old epoch's blocks the engine committed above it, in order, with their hashes.
    path: Vec<(BlockHeader, Digest)>,
}

impl EpochClosing {
    pub fn new(last: BlockHeader) -> Result<Self, CodecError> {
        let hash = last.hash()?;
        Ok(EpochClosing {
            last,
            hash,
            path: Vec::new(),
        })
    }

    /// The epoch's last block.
    pub fn last(&self) -> &BlockHeader {
        &self.last
    }

    /// Takes a commit or certification the old engine made (of the last block itself, or of a
    /// block above it): a block on the chain above extends the path, anything else (a fork the
    /// commit excluded, a block past [`MAX_DESCENDANT_PATH`]) is ignored. Returns the last
    /// block's proof once `proof` commits it by itself, directly or through the path.
    pub fn take(&mut self, header: &BlockHeader, proof: CommitProof) -> Option<CommitProof> {
        let hash = header.hash().ok()?;
        let proof = if hash == self.hash {
            proof
        } else {
            let position = match self.path.iter().position(|(_, h)| *h == hash) {
                Some(position) => position,
                None => {
                    let tip = self.path.last().map_or(self.hash, |(_, h)| *h);
                    if header.parent != tip
                        || header.epoch != self.last.epoch
                        || self.path.len() >= MAX_DESCENDANT_PATH
                    {
                        return None;
                    }
                    self.path.push((header.clone(), hash));
                    self.path.len() - 1
                }
            };
            let proof = DirectProof::of(proof)?;
            CommitProof::Descendant {
                path: self
                    .path
                    .get(..=position)?
                    .iter()
                    .map(|(h, _)| h.clone())
                    .collect(),
                proof,
            }
        };
        proof.commits_directly().then_some(proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hotstuff::ThreeChain;
    use crate::proof::{verify_commit_proof, ProofError};
    use crate::verifier::CertificateVerifier;
    use quorate_crypto::{BlsSignature, SignerBitmap};
    use quorate_ledger::{Epoch, Height, QuorumCert, View, VoteData};

    fn child(parent: &BlockHeader, epoch: u64) -> BlockHeader {
        BlockHeader {
            epoch: Epoch(epoch),
            height: parent.height.next(),
            view: parent.view.next(),
            parent: parent.hash().unwrap(),
            ..parent.clone()
        }
    }

    fn qc(header: &BlockHeader) -> QuorumCert {
        QuorumCert {
            data: VoteData {
                genesis_hash: header.genesis_hash,
                epoch: header.epoch,
                view: header.view,
                height: header.height,
                block: header.hash().unwrap(),
            },
            signers: SignerBitmap::new(4),
            signature: BlsSignature([0; 96]),
        }
    }

    /// A proof of `header`: with its three-chain (direct) or without (hash chain only).
    fn proof(header: &BlockHeader, direct: bool) -> CommitProof {
        let (b1, b2) = (child(header, header.epoch.0), {
            let b1 = child(header, header.epoch.0);
            child(&b1, header.epoch.0)
        });
        CommitProof::HotStuff {
            qc: qc(header),
            three_chain: direct.then(|| ThreeChain {
                child_qc: qc(&b1),
                child: b1,
                grandchild_qc: qc(&b2),
                grandchild: b2,
            }),
        }
    }

    fn last() -> BlockHeader {
        let genesis = BlockHeader::genesis("closing", Digest([1; 32]), Digest([2; 32]), 0);
        let mut last = child(&genesis, 3);
        last.height = Height(40);
        last.view = View(90);
        last
    }

    #[test]
    fn the_last_block_is_proven_through_the_suffix_up_to_a_direct_commit() {
        let last = last();
        let mut closing = EpochClosing::new(last.clone()).unwrap();
        // Its own commit proves nothing by itself; nor does a suffix block's hash-chain commit.
        assert!(closing.take(&last, proof(&last, false)).is_none());
        let s1 = child(&last, 3);
        assert!(closing.take(&s1, proof(&s1, false)).is_none());
        // A fork beside the path, a block of another epoch, and a block out of order are no
        // part of it, whatever their proof.
        let mut fork = child(&last, 3);
        fork.view = View(200);
        assert!(closing.take(&fork, proof(&fork, true)).is_none());
        let s2 = child(&s1, 3);
        let other_epoch = child(&s1, 4);
        assert!(closing
            .take(&other_epoch, proof(&other_epoch, true))
            .is_none());
        let s3 = child(&s2, 3);
        assert!(closing.take(&s3, proof(&s3, true)).is_none());
        // s2 committed directly: the last block's proof is the path s1, s2 and s2's proof.
        let Some(CommitProof::Descendant { path, proof: inner }) =
            closing.take(&s2, proof(&s2, true))
        else {
            panic!("no descendant proof");
        };
        assert_eq!(path, vec![s1, s2.clone()]);
        assert_eq!(inner.to_commit_proof(), proof(&s2, true));
        // A direct proof of the last block itself is taken as it is.
        let mut closing = EpochClosing::new(last.clone()).unwrap();
        assert_eq!(
            closing.take(&last, proof(&last, true)),
            Some(proof(&last, true))
        );
    }

    #[test]
    fn a_descendant_proof_that_does_not_link_its_block_is_refused_before_any_signature() {
        let last = last();
        let s1 = child(&last, 3);
        let setup = crate::sim::Setup::new(4, crate::sim::CryptoMode::Fast).unwrap();
        let validators = setup
            .engine_config(0, crate::FaultInjection::None)
            .validators;
        let verifier = CertificateVerifier::new();
        let check = |path: Vec<BlockHeader>, inner: CommitProof| {
            verify_commit_proof(
                &last,
                &CommitProof::Descendant {
                    path,
                    proof: DirectProof::of(inner).unwrap(),
                },
                last.genesis_hash,
                &validators,
                &verifier,
            )
        };
        let broken = |e: Result<_, ProofError>| matches!(e, Err(ProofError::BrokenChain(_)));
        assert!(broken(check(Vec::new(), proof(&last, true))));
        let stranger = child(&s1, 3);
        assert!(broken(check(
            vec![stranger.clone()],
            proof(&stranger, true)
        )));
        let other_epoch = child(&last, 4);
        assert!(broken(check(
            vec![other_epoch.clone()],
            proof(&other_epoch, true)
        )));
        // (A descendant proof cannot nest: its inner proof is a protocol's own.)
        let too_long: Vec<BlockHeader> = std::iter::successors(Some(s1), |h| Some(child(h, 3)))
            .take(MAX_DESCENDANT_PATH + 1)
            .collect();
        let tip = too_long.last().unwrap().clone();
        assert!(broken(check(too_long, proof(&tip, true))));
    }
}
