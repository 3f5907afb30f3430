//! The signatures an engine makes and checks, behind two small types with two backends.
//!
//! - [`Signer`]: the one key an engine signs votes and timeouts with.
//! - [`Scheme`]: how member signatures, aggregates and certificates are checked against a
//!   committee (held by the [`crate::CertificateVerifier`] an engine is configured with).
//!
//! Every node, `audit` and sync use BLS12-381 (`Signer::bls`, `CertificateVerifier::new`). The
//! simulator may use a keyed-hash backend instead (`--crypto fast`): each validator's "signature"
//! is BLAKE3 keyed by a secret the simulated world holds for it, an aggregate is the XOR of its
//! members' tags (additive, like BLS: whoever holds an aggregate and one of its parts can take
//! that part out, and nobody can add a member whose tag it never saw), and a verifier recomputes
//! the tag of every signer the bitmap names. The same bitmaps, domains, quorum checks and error
//! values as BLS; about a microsecond instead of a millisecond. Its constructors are
//! `pub(crate)` and exist only with the `sim` feature: no code outside this crate (the node
//! included) can build a fast signer or verifier, which the compile-fail example below shows.
//!
//! ```compile_fail
//! // The node cannot reach the simulation backend: its constructors are private to the crate.
//! let keys = quorate_consensus::crypto::FastKeys::new(4);
//! ```

use quorate_crypto::{BlsKeyPair, BlsSignature, Committee, CryptoError, Domain, SignerBitmap};
use std::sync::Arc;

/// The key an engine signs with.
#[derive(Clone, Debug)]
pub struct Signer(SignerBackend);

#[derive(Clone, Debug)]
enum SignerBackend {
    Bls(Arc<BlsKeyPair>),
    #[cfg(feature = "sim")]
    Fast {
        keys: Arc<FastKeys>,
        index: usize,
    },
}

impl Signer {
    /// A BLS signer: what every node uses.
    pub fn bls(key: Arc<BlsKeyPair>) -> Signer {
        Signer(SignerBackend::Bls(key))
    }

    /// Validator `index`'s simulation signer.
    #[cfg(feature = "sim")]
    pub(crate) fn fast(keys: Arc<FastKeys>, index: usize) -> Signer {
        Signer(SignerBackend::Fast { keys, index })
    }

    pub(crate) fn sign(&self, domain: Domain, bytes: &[u8]) -> BlsSignature {
        match &self.0 {
            SignerBackend::Bls(key) => key.sign(domain, bytes),
            #[cfg(feature = "sim")]
            SignerBackend::Fast { keys, index } => keys.sign(*index, domain, bytes),
        }
    }
}

/// How signatures are checked.
#[derive(Clone, Debug, Default)]
pub(crate) enum Scheme {
    #[default]
    Bls,
    #[cfg(feature = "sim")]
    Fast(Arc<FastKeys>),
}

impl Scheme {
    /// A short tag that binds memoized verdicts to the scheme that reached them.
    pub fn tag(&self) -> &'static [u8] {
        match self {
            Scheme::Bls => b"bls",
            #[cfg(feature = "sim")]
            Scheme::Fast(_) => b"fast",
        }
    }

    /// Verifies member `index`'s signature over `bytes` in `domain`.
    pub fn verify_member(
        &self,
        committee: &Committee,
        index: usize,
        domain: Domain,
        bytes: &[u8],
        signature: &BlsSignature,
    ) -> Result<(), CryptoError> {
        match self {
            Scheme::Bls => committee.verify_member(index, domain, bytes, signature),
            #[cfg(feature = "sim")]
            Scheme::Fast(keys) => {
                if index >= committee.len() {
                    return Err(CryptoError::BitmapSize {
                        bitmap_len: index + 1,
                        committee_len: committee.len(),
                    });
                }
                if keys.sign(index, domain, bytes) == *signature {
                    Ok(())
                } else {
                    Err(CryptoError::BadBlsSignature)
                }
            }
        }
    }

    /// Verifies an aggregate: the signers the bitmap names reach `threshold` power, and
    /// `aggregate` is their aggregate signature over `bytes` in `domain`.
    pub fn verify_threshold(
        &self,
        committee: &Committee,
        domain: Domain,
        bytes: &[u8],
        bitmap: &SignerBitmap,
        aggregate: &BlsSignature,
        threshold: u64,
    ) -> Result<(), CryptoError> {
        match self {
            Scheme::Bls => committee.verify_threshold(domain, bytes, bitmap, aggregate, threshold),
            #[cfg(feature = "sim")]
            Scheme::Fast(keys) => {
                let power = committee.signer_power(bitmap)?;
                if power < threshold {
                    return Err(CryptoError::BelowQuorum {
                        power,
                        quorum: threshold,
                    });
                }
                if bitmap.count() == 0 {
                    return Err(CryptoError::NoSigners);
                }
                let signed = bitmap.signers().map(|index| (index, bytes));
                keys.check_aggregate(domain, signed, aggregate)
            }
        }
    }

    pub fn verify_quorum(
        &self,
        committee: &Committee,
        domain: Domain,
        bytes: &[u8],
        bitmap: &SignerBitmap,
        aggregate: &BlsSignature,
    ) -> Result<(), CryptoError> {
        self.verify_threshold(
            committee,
            domain,
            bytes,
            bitmap,
            aggregate,
            committee.quorum_power(),
        )
    }

    /// Verifies an aggregate over several messages, each signed by a disjoint group of members
    /// (see [`Committee::verify_quorum_multi`]).
    pub fn verify_quorum_multi(
        &self,
        committee: &Committee,
        domain: Domain,
        groups: &[(Vec<u8>, SignerBitmap)],
        aggregate: &BlsSignature,
    ) -> Result<(), CryptoError> {
        match self {
            Scheme::Bls => committee.verify_quorum_multi(domain, groups, aggregate),
            #[cfg(feature = "sim")]
            Scheme::Fast(keys) => {
                committee.groups_quorum(groups)?;
                let signed = groups.iter().flat_map(|(bytes, bitmap)| {
                    bitmap.signers().map(move |index| (index, bytes.as_slice()))
                });
                keys.check_aggregate(domain, signed, aggregate)
            }
        }
    }

    /// Aggregates members' signatures (unverified: optimistic aggregation) into a bitmap over a
    /// committee of `committee_len` and one signature. `None` with no signers or a signature that
    /// does not even decode.
    pub fn aggregate<'s>(
        &self,
        committee_len: usize,
        signatures: impl IntoIterator<Item = (usize, &'s BlsSignature)>,
    ) -> Option<(SignerBitmap, BlsSignature)> {
        match self {
            Scheme::Bls => {
                let mut aggregate = quorate_crypto::BlsAggregate::new(committee_len);
                for (index, signature) in signatures {
                    aggregate.add(index, signature).ok()?;
                }
                Some((aggregate.bitmap().clone(), aggregate.signature()?))
            }
            #[cfg(feature = "sim")]
            Scheme::Fast(_) => {
                let mut bitmap = SignerBitmap::new(committee_len);
                let mut aggregate = BlsSignature([0; 96]);
                for (index, signature) in signatures {
                    if index >= committee_len {
                        return None;
                    }
                    if bitmap.insert(index) {
                        xor_into(&mut aggregate, signature);
                    }
                }
                (bitmap.count() > 0).then_some((bitmap, aggregate))
            }
        }
    }
}

#[cfg(feature = "sim")]
fn xor_into(into: &mut BlsSignature, part: &BlsSignature) {
    for (byte, other) in into.0.iter_mut().zip(part.0.iter()) {
        *byte ^= other;
    }
}

/// The simulated world's per-validator secrets for the keyed-hash backend.
#[cfg(feature = "sim")]
pub struct FastKeys {
    secrets: Vec<[u8; 32]>,
}

#[cfg(feature = "sim")]
impl std::fmt::Debug for FastKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FastKeys({} validators)", self.secrets.len())
    }
}

#[cfg(feature = "sim")]
impl FastKeys {
    /// Deterministic secrets for `n` validators.
    pub(crate) fn new(n: usize) -> FastKeys {
        let secrets = (0..n as u64)
            .map(|i| {
                let mut input = b"quorate-sim fast key ".to_vec();
                input.extend_from_slice(&i.to_le_bytes());
                *blake3::hash(&input).as_bytes()
            })
            .collect();
        FastKeys { secrets }
    }

    /// Validator `index`'s tag over `bytes` in `domain`, in the first 32 bytes of a signature
    /// (an index outside the world signs with an all-zero key: it verifies for no member).
    /// Checks that `aggregate` combines each member's tag over what it signed.
    fn check_aggregate<'b>(
        &self,
        domain: Domain,
        signed: impl Iterator<Item = (usize, &'b [u8])>,
        aggregate: &BlsSignature,
    ) -> Result<(), CryptoError> {
        let mut expected = BlsSignature([0; 96]);
        for (index, bytes) in signed {
            xor_into(&mut expected, &self.sign(index, domain, bytes));
        }
        if expected == *aggregate {
            Ok(())
        } else {
            Err(CryptoError::BadBlsSignature)
        }
    }

    fn sign(&self, index: usize, domain: Domain, bytes: &[u8]) -> BlsSignature {
        let key = self.secrets.get(index).copied().unwrap_or([0; 32]);
        let mut hasher = blake3::Hasher::new_keyed(&key);
        hasher.update(domain.tag());
        hasher.update(&[0]);
        hasher.update(bytes);
        let mut signature = BlsSignature([0; 96]);
        signature.0[..32].copy_from_slice(hasher.finalize().as_bytes());
        signature
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use quorate_crypto::BlsKeyPair;

    fn committee(n: u64) -> Committee {
        let members: Vec<_> = (0..n)
            .map(BlsKeyPair::from_seed_insecure)
            .map(|p| (p.public(), p.proof_of_possession(), 1))
            .collect();
        Committee::new(&members).unwrap()
    }

    /// The fast backend fails exactly where BLS does, case by case.
    #[test]
    fn the_fast_scheme_rejects_what_bls_rejects() {
        let n = 4;
        let committee = committee(n);
        let fast_keys = Arc::new(FastKeys::new(n as usize));
        let bls_keys: Vec<Arc<BlsKeyPair>> = (0..n)
            .map(|i| Arc::new(BlsKeyPair::from_seed_insecure(i)))
            .collect();
        let backends: Vec<(Scheme, Vec<Signer>)> = vec![
            (
                Scheme::Bls,
                bls_keys.iter().map(|k| Signer::bls(k.clone())).collect(),
            ),
            (
                Scheme::Fast(fast_keys.clone()),
                (0..n as usize)
                    .map(|i| Signer::fast(fast_keys.clone(), i))
                    .collect(),
            ),
        ];
        let bytes = b"vote data";
        for (scheme, signers) in backends {
            let name = String::from_utf8_lossy(scheme.tag()).to_string();
            let sigs: Vec<BlsSignature> = signers
                .iter()
                .map(|s| s.sign(Domain::Vote, bytes))
                .collect();
            // Members.
            assert!(scheme
                .verify_member(&committee, 1, Domain::Vote, bytes, &sigs[1])
                .is_ok());
            for (index, domain, signed, sig) in [
                (2, Domain::Vote, &bytes[..], &sigs[1]), // another member's signature
                (1, Domain::Timeout, &bytes[..], &sigs[1]), // another domain
                (1, Domain::Vote, &b"other data"[..], &sigs[1]), // other bytes
                (7, Domain::Vote, &bytes[..], &sigs[1]), // not a member
            ] {
                assert!(
                    scheme
                        .verify_member(&committee, index, domain, signed, sig)
                        .is_err(),
                    "{name}: member {index} {domain:?}"
                );
            }
            // A quorum of three verifies; each way to get it wrong fails.
            let (bitmap, aggregate) = scheme.aggregate(4, (0..3).map(|i| (i, &sigs[i]))).unwrap();
            assert!(scheme
                .verify_quorum(&committee, Domain::Vote, bytes, &bitmap, &aggregate)
                .is_ok());
            let mut extra = bitmap.clone();
            extra.insert(3); // a signer that did not sign
            let mut missing = bitmap.clone();
            missing.remove(2); // below quorum
            let (two, two_aggregate) = scheme.aggregate(4, (0..2).map(|i| (i, &sigs[i]))).unwrap();
            let forged = signers[3].sign(Domain::Vote, bytes); // the Byzantine one's own key
            let (swapped, swapped_aggregate) = scheme
                .aggregate(4, [(0, &sigs[0]), (1, &sigs[1]), (2, &forged)])
                .unwrap();
            assert!(
                matches!(
                    scheme.verify_quorum(&committee, Domain::Vote, bytes, &extra, &aggregate),
                    Err(CryptoError::BadBlsSignature)
                ),
                "{name}: extra signer"
            );
            assert!(
                matches!(
                    scheme.verify_quorum(&committee, Domain::Vote, bytes, &missing, &aggregate),
                    Err(CryptoError::BelowQuorum { .. })
                ),
                "{name}: missing signer"
            );
            assert!(
                matches!(
                    scheme.verify_quorum(&committee, Domain::Vote, bytes, &two, &two_aggregate),
                    Err(CryptoError::BelowQuorum { .. })
                ),
                "{name}: two of four"
            );
            assert!(
                matches!(
                    scheme.verify_quorum(
                        &committee,
                        Domain::Vote,
                        bytes,
                        &swapped,
                        &swapped_aggregate
                    ),
                    Err(CryptoError::BadBlsSignature)
                ),
                "{name}: a signature filed under another member"
            );
            assert!(scheme
                .verify_quorum(&committee, Domain::Timeout, bytes, &bitmap, &aggregate)
                .is_err());
            assert!(
                matches!(
                    scheme.verify_quorum(
                        &committee,
                        Domain::Vote,
                        bytes,
                        &SignerBitmap::new(3),
                        &aggregate
                    ),
                    Err(CryptoError::BitmapSize { .. })
                ),
                "{name}: bitmap of another committee size"
            );
        }
    }
}
