//! Protocol-neutral certificates.
//!
//! - HotStuff: a [`QuorumCert`] is 2f+1 BLS votes on [`VoteData`], aggregated into one signature
//!   with a signer bitmap; a [`TimeoutCert`] is the same over [`TimeoutData`].
//! - PBFT: a [`CheckpointCert`] is 2f+1 BLS signatures (transferable, unlike PBFT's MACs) over
//!   [`CheckpointData`], aggregated the same way: it proves a stable checkpoint to anyone,
//!   including an auditor.

use crate::codec::{self, CodecError};
use crate::{Epoch, Height, SeqNum, View};
use quorate_crypto::{BlsSignature, Committee, CryptoError, Digest, Domain, SignerBitmap};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CertificateError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// What a HotStuff vote signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VoteData {
    pub genesis_hash: Digest,
    pub epoch: Epoch,
    pub view: View,
    pub height: Height,
    pub block: Digest,
}

impl VoteData {
    /// The exact bytes signed (under `Domain::Vote`).
    pub fn signing_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }
}

/// A quorum certificate: 2f+1 votes for one block in one view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumCert {
    pub data: VoteData,
    pub signers: SignerBitmap,
    pub signature: BlsSignature,
}

/// Checks an aggregate: (domain, signed bytes, signers, aggregate signature).
pub type QuorumCheck<'a> =
    &'a dyn Fn(Domain, &[u8], &SignerBitmap, &BlsSignature) -> Result<(), CryptoError>;

/// A quorum's BLS signatures over one message, aggregated: a [`QuorumCert`] or a
/// [`CheckpointCert`].
pub trait AggregateCert {
    /// The domain its signers signed in.
    const DOMAIN: Domain;
    /// What the signed message is, for errors.
    const WHAT: &'static str;
    /// The exact bytes signed.
    fn signed_bytes(&self) -> Result<Vec<u8>, CodecError>;
    fn signers(&self) -> &SignerBitmap;
    fn signature(&self) -> &BlsSignature;

    /// Checks quorum and the aggregate signature against the epoch's committee.
    fn verify(&self, committee: &Committee) -> Result<(), CryptoError> {
        self.verify_with(&|domain, bytes, signers, signature| {
            committee.verify_quorum(domain, bytes, signers, signature)
        })
    }

    /// Checks the certificate with `check` over exactly what its signers signed.
    fn verify_with(&self, check: QuorumCheck<'_>) -> Result<(), CryptoError> {
        let bytes = self.signed_bytes().map_err(|e| CryptoError::Malformed {
            what: Self::WHAT,
            reason: e.to_string(),
        })?;
        check(Self::DOMAIN, &bytes, self.signers(), self.signature())
    }
}

impl AggregateCert for QuorumCert {
    const DOMAIN: Domain = Domain::Vote;
    const WHAT: &'static str = "vote data";
    fn signed_bytes(&self) -> Result<Vec<u8>, CodecError> {
        self.data.signing_bytes()
    }
    fn signers(&self) -> &SignerBitmap {
        &self.signers
    }
    fn signature(&self) -> &BlsSignature {
        &self.signature
    }
}

/// What a HotStuff timeout signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeoutData {
    pub genesis_hash: Digest,
    pub epoch: Epoch,
    pub view: View,
}

impl TimeoutData {
    pub fn signing_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }
}

/// What one validator's timeout signs (Jolteon, Gelashvili et al., FC 2022): the view it gives
/// up on and the view of the highest QC it holds, which it sends along.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeoutVote {
    pub data: TimeoutData,
    pub high_qc_view: View,
}

impl TimeoutVote {
    /// The exact bytes signed (under `Domain::Timeout`).
    pub fn signing_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }
}

/// Checks an aggregate over several messages: (domain, [(signed bytes, their signers)],
/// aggregate signature). The signer sets are disjoint.
pub type MultiQuorumCheck<'a> =
    &'a dyn Fn(Domain, &[(Vec<u8>, SignerBitmap)], &BlsSignature) -> Result<(), CryptoError>;

/// A timeout certificate: 2f+1 validators gave up on one view, each naming the view of its
/// highest QC. So the certificate records the highest QC any of its signers held, and a
/// proposal it justifies must extend a QC at least that high: a leader cannot pair a genuine
/// TC with an old QC to fork below a block a signer saw certified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutCert {
    pub data: TimeoutData,
    pub signers: SignerBitmap,
    /// The view of each signer's high QC, in signer (index) order.
    pub high_qc_views: Vec<View>,
    pub signature: BlsSignature,
}

impl TimeoutCert {
    /// The highest QC view among the signers' (the view of the QC a justified proposal must at
    /// least extend).
    pub fn high_qc_view(&self) -> View {
        self.high_qc_views.iter().copied().max().unwrap_or(View(0))
    }

    pub fn verify(&self, committee: &Committee) -> Result<(), CryptoError> {
        self.verify_with(&|domain, groups, signature| {
            committee.verify_quorum_multi(domain, groups, signature)
        })
    }

    /// The signers grouped by what they signed: one group per distinct high-QC view. Refuses a
    /// certificate whose views do not match its signers one to one, or name a QC that is not
    /// older than the view timed out in.
    pub fn groups(&self) -> Result<Vec<(Vec<u8>, SignerBitmap)>, CryptoError> {
        let malformed = |reason: String| CryptoError::Malformed {
            what: "timeout certificate",
            reason,
        };
        if self.high_qc_views.len() != self.signers.count() {
            return Err(malformed(format!(
                "{} high-QC views for {} signers",
                self.high_qc_views.len(),
                self.signers.count()
            )));
        }
        let mut groups: BTreeMap<View, SignerBitmap> = BTreeMap::new();
        for (signer, view) in self.signers.signers().zip(&self.high_qc_views) {
            if *view >= self.data.view {
                return Err(malformed(format!(
                    "a high QC of view {view} in a timeout of view {}",
                    self.data.view
                )));
            }
            groups
                .entry(*view)
                .or_insert_with(|| SignerBitmap::new(self.signers.len()))
                .insert(signer);
        }
        groups
            .into_iter()
            .map(|(high_qc_view, signers)| {
                let vote = TimeoutVote {
                    data: self.data,
                    high_qc_view,
                };
                let bytes = vote.signing_bytes().map_err(|e| malformed(e.to_string()))?;
                Ok((bytes, signers))
            })
            .collect()
    }

    /// Checks the certificate with `check` over exactly what its signers signed.
    pub fn verify_with(&self, check: MultiQuorumCheck<'_>) -> Result<(), CryptoError> {
        check(Domain::Timeout, &self.groups()?, &self.signature)
    }
}

/// What a PBFT checkpoint signs: the state after executing everything up to `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CheckpointData {
    pub genesis_hash: Digest,
    pub epoch: Epoch,
    pub seq: SeqNum,
    pub height: Height,
    pub block: Digest,
    pub state_root: Digest,
}

impl CheckpointData {
    pub fn signing_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }
}

/// A stable-checkpoint certificate: a quorum's BLS signatures over one [`CheckpointData`],
/// aggregated like a [`QuorumCert`] (one pairing check at any committee size). Transferable:
/// it proves the checkpoint's block committed to anyone holding the epoch's validator set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointCert {
    pub data: CheckpointData,
    pub signers: SignerBitmap,
    pub signature: BlsSignature,
}

impl AggregateCert for CheckpointCert {
    const DOMAIN: Domain = Domain::Checkpoint;
    const WHAT: &'static str = "checkpoint data";
    fn signed_bytes(&self) -> Result<Vec<u8>, CodecError> {
        self.data.signing_bytes()
    }
    fn signers(&self) -> &SignerBitmap {
        &self.signers
    }
    fn signature(&self) -> &BlsSignature {
        &self.signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_crypto::{BlsAggregate, BlsKeyPair};

    #[test]
    fn quorum_cert_verifies_and_rejects_tampering() {
        let pairs: Vec<BlsKeyPair> = (0..4).map(BlsKeyPair::from_seed_insecure).collect();
        let members: Vec<_> = pairs
            .iter()
            .map(|p| (p.public(), p.proof_of_possession(), 1))
            .collect();
        let committee = Committee::new(&members).unwrap();
        let data = VoteData {
            genesis_hash: Digest([1; 32]),
            epoch: Epoch(0),
            view: View(3),
            height: Height(2),
            block: Digest([2; 32]),
        };
        let bytes = data.signing_bytes().unwrap();
        let mut aggregate = BlsAggregate::new(4);
        for (i, pair) in pairs.iter().enumerate().take(3) {
            aggregate.add(i, &pair.sign(Domain::Vote, &bytes)).unwrap();
        }
        let qc = QuorumCert {
            data,
            signers: aggregate.bitmap().clone(),
            signature: aggregate.signature().unwrap(),
        };
        assert!(qc.verify(&committee).is_ok());
        let decoded: QuorumCert = codec::decode(&codec::encode(&qc).unwrap()).unwrap();
        assert_eq!(decoded, qc);
        let mut other_view = qc.clone();
        other_view.data.view = View(4);
        assert!(other_view.verify(&committee).is_err());
    }

    #[test]
    fn checkpoint_cert_checks_quorum_and_signatures() {
        let pairs: Vec<BlsKeyPair> = (0..4).map(BlsKeyPair::from_seed_insecure).collect();
        let members: Vec<_> = pairs
            .iter()
            .map(|p| (p.public(), p.proof_of_possession(), 1))
            .collect();
        let committee = Committee::new(&members).unwrap();
        let data = CheckpointData {
            genesis_hash: Digest([1; 32]),
            epoch: Epoch(0),
            seq: SeqNum(128),
            height: Height(128),
            block: Digest([3; 32]),
            state_root: Digest([4; 32]),
        };
        let bytes = data.signing_bytes().unwrap();
        let cert_of = |who: &[usize], domain: Domain| {
            let mut aggregate = BlsAggregate::new(4);
            for &i in who {
                aggregate.add(i, &pairs[i].sign(domain, &bytes)).unwrap();
            }
            CheckpointCert {
                data,
                signers: aggregate.bitmap().clone(),
                signature: aggregate.signature().unwrap(),
            }
        };
        let cert = cert_of(&[0, 1, 3], Domain::Checkpoint);
        assert!(cert.verify(&committee).is_ok());
        let decoded: CheckpointCert = codec::decode(&codec::encode(&cert).unwrap()).unwrap();
        assert_eq!(decoded, cert);
        // Below quorum.
        assert!(cert_of(&[0, 1], Domain::Checkpoint)
            .verify(&committee)
            .is_err());
        // Signed in another domain (a vote's signature is not a checkpoint's).
        assert!(cert_of(&[0, 1, 3], Domain::Vote)
            .verify(&committee)
            .is_err());
        // Another block.
        let mut other = cert.clone();
        other.data.block = Digest([5; 32]);
        assert!(other.verify(&committee).is_err());
        // A signer named who did not sign.
        let mut claimed = cert.clone();
        claimed.signers.insert(2);
        assert!(claimed.verify(&committee).is_err());
    }
}
