//! Verify once: a bounded memo of certificate checks.
//!
//! A QC arrives many times (in a proposal, in timeouts, in sync messages); its pairing check
//! costs ~1 ms, so each distinct certificate is checked once. Verification is a pure function of
//! (domain, bytes, signers, signature, committee), so a cache shared by several engines of one
//! epoch (the simulator's validators) gives every one of them the answer it would compute.

use crate::crypto::Scheme;
use quorate_crypto::{hash, Committee, CryptoError, Digest, Domain, Hasher};
use quorate_ledger::{codec, AggregateCert, CheckpointCert, QuorumCert, TimeoutCert};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Most remembered verdicts; the oldest are forgotten first.
const CACHE_ENTRIES_MAX: usize = 4096;

#[derive(Default)]
struct Memo {
    /// The verdict, with the exact error: a caller tells a failed signature check (proof the
    /// sender is Byzantine) from a certificate that is merely not one (the epoch root's).
    verdicts: HashMap<Digest, Result<(), CryptoError>>,
    order: VecDeque<Digest>,
}

/// A bounded, thread-safe memo of certificate verdicts, and the signature scheme it checks
/// them with (BLS, unless the simulator built it).
#[derive(Default)]
pub struct CertificateVerifier {
    memo: Mutex<Memo>,
    scheme: Scheme,
}

impl std::fmt::Debug for CertificateVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateVerifier")
    }
}

impl CertificateVerifier {
    /// A BLS verifier: what every node, sync and `audit` use.
    pub fn new() -> Self {
        Self::default()
    }

    /// A verifier of the simulation backend (see [`crate::crypto`]).
    #[cfg(feature = "sim")]
    pub(crate) fn fast(keys: std::sync::Arc<crate::crypto::FastKeys>) -> Self {
        CertificateVerifier {
            memo: Mutex::default(),
            scheme: Scheme::Fast(keys),
        }
    }

    /// The scheme member signatures and aggregates are checked with.
    pub(crate) fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    fn memoized(
        &self,
        key: Digest,
        check: impl FnOnce() -> Result<(), CryptoError>,
    ) -> Result<(), CryptoError> {
        if let Ok(memo) = self.memo.lock() {
            if let Some(verdict) = memo.verdicts.get(&key) {
                return verdict.clone();
            }
        }
        let result = check();
        if let Ok(mut memo) = self.memo.lock() {
            if memo.verdicts.insert(key, result.clone()).is_none() {
                memo.order.push_back(key);
                while memo.order.len() > CACHE_ENTRIES_MAX {
                    if let Some(old) = memo.order.pop_front() {
                        memo.verdicts.remove(&old);
                    }
                }
            }
        }
        result
    }

    fn key(&self, kind: &[u8], committee: &Committee, bytes: &[u8]) -> Digest {
        let mut hasher = Hasher::new(Domain::Vote);
        hasher.update(self.scheme.tag());
        hasher.update(kind);
        // Committees differ by epoch; bind the verdict to the committee's keys.
        for index in 0..committee.len() {
            if let Some(key) = committee.public_key(index) {
                hasher.update(&key.0);
            }
        }
        hasher.update(&hash(Domain::Vote, bytes).0);
        hasher.finalize()
    }

    pub fn verify_qc(&self, qc: &QuorumCert, committee: &Committee) -> Result<(), CryptoError> {
        self.verify_aggregate(b"qc", qc, committee)
    }

    /// Checks a PBFT stable checkpoint certificate.
    pub fn verify_checkpoint(
        &self,
        cert: &CheckpointCert,
        committee: &Committee,
    ) -> Result<(), CryptoError> {
        self.verify_aggregate(b"checkpoint", cert, committee)
    }

    fn verify_aggregate<C: AggregateCert + serde::Serialize>(
        &self,
        kind: &[u8],
        cert: &C,
        committee: &Committee,
    ) -> Result<(), CryptoError> {
        match &self.scheme {
            Scheme::Bls => {
                let bytes = codec::encode(cert).map_err(|e| CryptoError::Malformed {
                    what: C::WHAT,
                    reason: e.to_string(),
                })?;
                self.memoized(self.key(kind, committee, &bytes), || cert.verify(committee))
            }
            // A keyed-hash check costs less than the memo's own encoding and lock.
            #[cfg(feature = "sim")]
            scheme => cert.verify_with(&|domain, bytes, signers, signature| {
                scheme.verify_quorum(committee, domain, bytes, signers, signature)
            }),
        }
    }

    pub fn verify_tc(&self, tc: &TimeoutCert, committee: &Committee) -> Result<(), CryptoError> {
        match &self.scheme {
            Scheme::Bls => {
                let bytes = codec::encode(tc).map_err(|e| CryptoError::Malformed {
                    what: "timeout certificate",
                    reason: e.to_string(),
                })?;
                self.memoized(self.key(b"tc", committee, &bytes), || tc.verify(committee))
            }
            #[cfg(feature = "sim")]
            scheme => tc.verify_with(&|domain, groups, signature| {
                scheme.verify_quorum_multi(committee, domain, groups, signature)
            }),
        }
    }
}
