//! BLS12-381 voting keys (blst, "min_pk": public keys in G1, signatures in G2).
//!
//! - Signatures use the proof-of-possession ciphersuite DST, over `Domain::tag || 0 || bytes`.
//! - Every public key in a committee comes with a proof of possession (a signature over the key's
//!   own encoding under the PoP DST), checked in [`Committee::new`]. That is what makes plain
//!   aggregation of public keys safe against rogue-key attacks.
//! - A quorum certificate is one aggregate signature plus a [`SignerBitmap`];
//!   [`Committee::verify_quorum`] checks the bitmap reaches the quorum and does ONE pairing check
//!   against the sum of the signers' keys.

use crate::bytes::byte_array;
use crate::{CryptoError, Domain, SignerBitmap};
use blst::min_pk;
use blst::BLST_ERROR;
use zeroize::Zeroize;

const SIGNATURE_DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
const POP_DST: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

byte_array!(
    /// A compressed BLS public key (G1, 48 bytes).
    BlsPublicKey,
    48,
    "BLS public key"
);

byte_array!(
    /// A compressed BLS signature (G2, 96 bytes), single or aggregate.
    BlsSignature,
    96,
    "BLS signature"
);

byte_array!(
    /// A proof of possession: the key's signature over its own encoding (96 bytes).
    ProofOfPossession,
    96,
    "proof of possession"
);

impl BlsPublicKey {
    /// Decodes and checks the key is a non-identity point of the prime-order subgroup.
    fn decode(&self) -> Result<min_pk::PublicKey, CryptoError> {
        min_pk::PublicKey::key_validate(&self.0).map_err(|_| CryptoError::BadBlsPublicKey)
    }

    /// Checks a proof of possession for this key.
    pub fn verify_pop(&self, pop: &ProofOfPossession) -> Result<(), CryptoError> {
        let key = self.decode()?;
        let signature = decode_signature(&pop.0)?;
        match signature.verify(true, &self.0, POP_DST, &[], &key, false) {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(CryptoError::BadProofOfPossession),
        }
    }

    /// Verifies a single signature (no PoP check: use committee members for that).
    pub fn verify(
        &self,
        domain: Domain,
        bytes: &[u8],
        signature: &BlsSignature,
    ) -> Result<(), CryptoError> {
        verify_decoded(&self.decode()?, domain, bytes, signature)
    }
}

fn decode_signature(bytes: &[u8]) -> Result<min_pk::Signature, CryptoError> {
    min_pk::Signature::from_bytes(bytes).map_err(|error| CryptoError::Malformed {
        what: "BLS signature",
        reason: format!("{error:?}"),
    })
}

fn verify_decoded(
    key: &min_pk::PublicKey,
    domain: Domain,
    bytes: &[u8],
    signature: &BlsSignature,
) -> Result<(), CryptoError> {
    let signature = decode_signature(&signature.0)?;
    match signature.verify(
        true,
        &domain.prefixed(bytes),
        SIGNATURE_DST,
        &[],
        key,
        false,
    ) {
        BLST_ERROR::BLST_SUCCESS => Ok(()),
        _ => Err(CryptoError::BadBlsSignature),
    }
}

/// A BLS secret key. Zeroed on drop; never printed.
pub struct BlsSecretKey(min_pk::SecretKey);

impl std::fmt::Debug for BlsSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlsSecretKey(<redacted>)")
    }
}

impl BlsSecretKey {
    pub fn to_hex(&self) -> String {
        let mut bytes = self.0.to_bytes();
        let text = hex::encode(bytes);
        bytes.zeroize();
        text
    }

    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let mut bytes = hex::decode(text.trim()).map_err(|error| CryptoError::Malformed {
            what: "BLS secret key",
            reason: error.to_string(),
        })?;
        let result = min_pk::SecretKey::from_bytes(&bytes)
            .map(BlsSecretKey)
            .map_err(|error| CryptoError::Malformed {
                what: "BLS secret key",
                reason: format!("{error:?}"),
            });
        bytes.zeroize();
        result
    }
}

/// A validator's BLS key pair.
pub struct BlsKeyPair {
    secret: BlsSecretKey,
    public: BlsPublicKey,
}

impl std::fmt::Debug for BlsKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlsKeyPair(public={})", self.public)
    }
}

impl BlsKeyPair {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> Self {
        let mut ikm = [0u8; 32];
        crate::os_random(&mut ikm);
        let pair = Self::from_ikm(&ikm);
        ikm.zeroize();
        pair
    }

    /// A deterministic key for tests and simulations: never use in production.
    pub fn from_seed_insecure(seed: u64) -> Self {
        let ikm = crate::hash(
            Domain::MacKeyDerivation,
            &[b"bls".as_slice(), &seed.to_le_bytes()].concat(),
        );
        Self::from_ikm(&ikm.0)
    }

    fn from_ikm(ikm: &[u8; 32]) -> Self {
        // key_gen only fails for input key material shorter than 32 bytes.
        let secret = match min_pk::SecretKey::key_gen(ikm, &[]) {
            Ok(secret) => secret,
            Err(error) => unreachable!("32-byte IKM rejected by key_gen: {error:?}"),
        };
        Self::from_secret(BlsSecretKey(secret))
    }

    pub fn from_secret(secret: BlsSecretKey) -> Self {
        let public = BlsPublicKey(secret.0.sk_to_pk().compress());
        BlsKeyPair { secret, public }
    }

    pub fn public(&self) -> BlsPublicKey {
        self.public
    }

    pub fn secret(&self) -> &BlsSecretKey {
        &self.secret
    }

    pub fn sign(&self, domain: Domain, bytes: &[u8]) -> BlsSignature {
        BlsSignature(
            self.secret
                .0
                .sign(&domain.prefixed(bytes), SIGNATURE_DST, &[])
                .compress(),
        )
    }

    /// The proof of possession published with the public key.
    pub fn proof_of_possession(&self) -> ProofOfPossession {
        ProofOfPossession(self.secret.0.sign(&self.public.0, POP_DST, &[]).compress())
    }
}

#[derive(Clone)]
struct Member {
    key: min_pk::PublicKey,
    encoded: BlsPublicKey,
    power: u64,
}

/// The BLS side of a validator set: members' keys (PoP-checked) and voting power, in index order.
///
/// Quorum is the smallest power strictly greater than two thirds of the total: `2f+1` of `3f+1`
/// equal votes.
#[derive(Clone)]
pub struct Committee {
    members: Vec<Member>,
    total_power: u64,
    quorum_power: u64,
}

impl std::fmt::Debug for Committee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Committee(n={}, total={}, quorum={})",
            self.members.len(),
            self.total_power,
            self.quorum_power
        )
    }
}

impl Committee {
    /// Builds a committee, checking every key's proof of possession, and that keys are distinct
    /// and powers non-zero.
    pub fn new(
        members: &[(BlsPublicKey, ProofOfPossession, u64)],
    ) -> Result<Committee, CryptoError> {
        if members.is_empty() {
            return Err(CryptoError::EmptyCommittee);
        }
        if members.len() > u16::MAX as usize {
            return Err(CryptoError::BitmapSize {
                bitmap_len: u16::MAX as usize,
                committee_len: members.len(),
            });
        }
        let mut seen = std::collections::HashSet::new();
        let mut decoded = Vec::with_capacity(members.len());
        let mut total_power: u64 = 0;
        for (index, (encoded, pop, power)) in members.iter().enumerate() {
            if !seen.insert(*encoded) {
                return Err(CryptoError::DuplicateMember { index });
            }
            if *power == 0 {
                return Err(CryptoError::ZeroPower { index });
            }
            encoded.verify_pop(pop)?;
            total_power = total_power
                .checked_add(*power)
                .ok_or(CryptoError::PowerOverflow)?;
            decoded.push(Member {
                key: encoded.decode()?,
                encoded: *encoded,
                power: *power,
            });
        }
        if total_power > u64::MAX / 2 {
            return Err(CryptoError::PowerOverflow);
        }
        Ok(Committee {
            members: decoded,
            total_power,
            quorum_power: total_power * 2 / 3 + 1,
        })
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn total_power(&self) -> u64 {
        self.total_power
    }

    /// Power needed for a quorum (2f+1 of 3f+1).
    pub fn quorum_power(&self) -> u64 {
        self.quorum_power
    }

    /// Power of f+1 (at least one honest member among them).
    pub fn validity_power(&self) -> u64 {
        (self.total_power - 1) / 3 + 1
    }

    pub fn power(&self, index: usize) -> u64 {
        self.members.get(index).map_or(0, |m| m.power)
    }

    pub fn public_key(&self, index: usize) -> Option<BlsPublicKey> {
        self.members.get(index).map(|m| m.encoded)
    }

    /// Index of the member with this key.
    pub fn index_of(&self, key: &BlsPublicKey) -> Option<usize> {
        self.members.iter().position(|m| &m.encoded == key)
    }

    /// Total power of the signers in `bitmap`, after checking it covers exactly this committee.
    pub fn signer_power(&self, bitmap: &SignerBitmap) -> Result<u64, CryptoError> {
        if bitmap.len() != self.members.len() {
            return Err(CryptoError::BitmapSize {
                bitmap_len: bitmap.len(),
                committee_len: self.members.len(),
            });
        }
        // The bitmap's length equals the committee's, so every signer index names a member.
        Ok(bitmap
            .signers()
            .filter_map(|i| self.members.get(i))
            .map(|m| m.power)
            .sum())
    }

    /// Verifies one member's signature.
    pub fn verify_member(
        &self,
        index: usize,
        domain: Domain,
        bytes: &[u8],
        signature: &BlsSignature,
    ) -> Result<(), CryptoError> {
        let member = self.members.get(index).ok_or(CryptoError::BitmapSize {
            bitmap_len: index + 1,
            committee_len: self.members.len(),
        })?;
        verify_decoded(&member.key, domain, bytes, signature)
    }

    /// Verifies a quorum certificate: the signers are distinct members (a bitmap cannot name one
    /// twice) whose power reaches the quorum, and `aggregate` is their aggregate signature over
    /// `bytes` in `domain`: one aggregation of public keys and ONE pairing check.
    pub fn verify_quorum(
        &self,
        domain: Domain,
        bytes: &[u8],
        bitmap: &SignerBitmap,
        aggregate: &BlsSignature,
    ) -> Result<(), CryptoError> {
        self.verify_threshold(domain, bytes, bitmap, aggregate, self.quorum_power)
    }

    /// As [`Committee::verify_quorum`] with an explicit power threshold (e.g. f+1).
    pub fn verify_threshold(
        &self,
        domain: Domain,
        bytes: &[u8],
        bitmap: &SignerBitmap,
        aggregate: &BlsSignature,
        threshold: u64,
    ) -> Result<(), CryptoError> {
        let power = self.signer_power(bitmap)?;
        if power < threshold {
            return Err(CryptoError::BelowQuorum {
                power,
                quorum: threshold,
            });
        }
        verify_decoded(&self.aggregate_key(bitmap)?, domain, bytes, aggregate)
    }

    /// The aggregate public key of the members `bitmap` names.
    fn aggregate_key(&self, bitmap: &SignerBitmap) -> Result<min_pk::PublicKey, CryptoError> {
        let keys: Vec<&min_pk::PublicKey> = bitmap
            .signers()
            .filter_map(|i| self.members.get(i))
            .map(|m| &m.key)
            .collect();
        Ok(min_pk::AggregatePublicKey::aggregate(&keys, false)
            .map_err(|_| CryptoError::NoSigners)?
            .to_public_key())
    }

    /// Checks that `groups` are disjoint bitmaps over this committee whose signers together
    /// reach the quorum; returns their power.
    pub fn groups_quorum(&self, groups: &[(Vec<u8>, SignerBitmap)]) -> Result<u64, CryptoError> {
        let mut seen = SignerBitmap::new(self.members.len());
        let mut power = 0u64;
        for (_, bitmap) in groups {
            power = power.saturating_add(self.signer_power(bitmap)?);
            for signer in bitmap.signers() {
                if !seen.insert(signer) {
                    return Err(CryptoError::Malformed {
                        what: "signer groups",
                        reason: format!("member {signer} is in two groups"),
                    });
                }
            }
        }
        if power < self.quorum_power {
            return Err(CryptoError::BelowQuorum {
                power,
                quorum: self.quorum_power,
            });
        }
        Ok(power)
    }
}

impl Committee {
    /// Verifies an aggregate over several messages, each signed by its own group of members:
    /// the groups are disjoint bitmaps over this committee whose power together reaches the
    /// quorum, and `aggregate` is the sum of every member's signature over its group's message.
    /// One aggregation of public keys per group, and one pairing per group plus one.
    pub fn verify_quorum_multi(
        &self,
        domain: Domain,
        groups: &[(Vec<u8>, SignerBitmap)],
        aggregate: &BlsSignature,
    ) -> Result<(), CryptoError> {
        self.groups_quorum(groups)?;
        let mut keys = Vec::with_capacity(groups.len());
        let mut messages = Vec::with_capacity(groups.len());
        for (bytes, bitmap) in groups {
            keys.push(self.aggregate_key(bitmap)?);
            messages.push(domain.prefixed(bytes));
        }
        let signature = decode_signature(&aggregate.0)?;
        let key_refs: Vec<&min_pk::PublicKey> = keys.iter().collect();
        let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        match signature.aggregate_verify(true, &message_refs, SIGNATURE_DST, &key_refs, false) {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(CryptoError::BadBlsSignature),
        }
    }
}

/// Collects member signatures over one message into an aggregate and its bitmap. Signatures are
/// added without checking (optimistic aggregation); the finished aggregate is checked once with
/// [`Committee::verify_quorum`], and only if that fails are the parts checked one by one.
#[derive(Clone)]
pub struct BlsAggregate {
    bitmap: SignerBitmap,
    aggregate: Option<min_pk::AggregateSignature>,
}

impl BlsAggregate {
    pub fn new(committee_len: usize) -> Self {
        BlsAggregate {
            bitmap: SignerBitmap::new(committee_len),
            aggregate: None,
        }
    }

    /// Adds member `index`'s signature. Returns `Ok(false)` for a signer already present.
    pub fn add(&mut self, index: usize, signature: &BlsSignature) -> Result<bool, CryptoError> {
        if index >= self.bitmap.len() {
            return Err(CryptoError::BitmapSize {
                bitmap_len: self.bitmap.len(),
                committee_len: index + 1,
            });
        }
        if self.bitmap.contains(index) {
            return Ok(false);
        }
        let signature = decode_signature(&signature.0)?;
        match &mut self.aggregate {
            Some(aggregate) => aggregate
                .add_signature(&signature, false)
                .map_err(|_| CryptoError::BadBlsSignature)?,
            None => self.aggregate = Some(min_pk::AggregateSignature::from_signature(&signature)),
        }
        self.bitmap.insert(index);
        Ok(true)
    }

    pub fn bitmap(&self) -> &SignerBitmap {
        &self.bitmap
    }

    /// The aggregate signature so far, or `None` with no signers.
    pub fn signature(&self) -> Option<BlsSignature> {
        self.aggregate
            .as_ref()
            .map(|a| BlsSignature(a.to_signature().compress()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committee(n: u64) -> (Vec<BlsKeyPair>, Committee) {
        let pairs: Vec<BlsKeyPair> = (0..n).map(BlsKeyPair::from_seed_insecure).collect();
        let members: Vec<_> = pairs
            .iter()
            .map(|p| (p.public(), p.proof_of_possession(), 1))
            .collect();
        (pairs, Committee::new(&members).unwrap())
    }

    fn quorum_cert(
        pairs: &[BlsKeyPair],
        signers: &[usize],
        msg: &[u8],
    ) -> (SignerBitmap, BlsSignature) {
        let mut aggregate = BlsAggregate::new(pairs.len());
        for &i in signers {
            aggregate.add(i, &pairs[i].sign(Domain::Vote, msg)).unwrap();
        }
        (aggregate.bitmap().clone(), aggregate.signature().unwrap())
    }

    #[test]
    fn sign_verify_and_negatives() {
        let pair = BlsKeyPair::from_seed_insecure(1);
        let other = BlsKeyPair::from_seed_insecure(2);
        let signature = pair.sign(Domain::Vote, b"block");
        assert!(pair
            .public()
            .verify(Domain::Vote, b"block", &signature)
            .is_ok());
        assert_eq!(
            pair.public().verify(Domain::Vote, b"other", &signature),
            Err(CryptoError::BadBlsSignature)
        );
        assert_eq!(
            other.public().verify(Domain::Vote, b"block", &signature),
            Err(CryptoError::BadBlsSignature)
        );
        assert_eq!(
            pair.public().verify(Domain::Timeout, b"block", &signature),
            Err(CryptoError::BadBlsSignature)
        );
        let mut tampered = signature;
        tampered.0[50] ^= 1;
        assert!(pair
            .public()
            .verify(Domain::Vote, b"block", &tampered)
            .is_err());
        let mut bad_key = pair.public();
        bad_key.0[5] ^= 1;
        assert!(bad_key.verify(Domain::Vote, b"block", &signature).is_err());
        let secret = BlsSecretKey::from_hex(&pair.secret().to_hex()).unwrap();
        assert_eq!(BlsKeyPair::from_secret(secret).public(), pair.public());
        assert!(!format!("{:?}", pair.secret()).contains(&pair.secret().to_hex()));
    }

    #[test]
    fn proof_of_possession_checks() {
        let pair = BlsKeyPair::from_seed_insecure(1);
        let other = BlsKeyPair::from_seed_insecure(2);
        assert!(pair
            .public()
            .verify_pop(&pair.proof_of_possession())
            .is_ok());
        assert_eq!(
            pair.public().verify_pop(&other.proof_of_possession()),
            Err(CryptoError::BadProofOfPossession)
        );
        // A signature over the key bytes under the *message* DST is not a PoP.
        let wrong_dst = ProofOfPossession(pair.sign(Domain::Vote, &pair.public().0).0);
        assert!(pair.public().verify_pop(&wrong_dst).is_err());
    }

    #[test]
    fn quorum_certificate_accepts_quorum_and_rejects_forgeries() {
        let (pairs, committee) = committee(4);
        assert_eq!(committee.quorum_power(), 3);
        let msg = b"view 7 block abc";
        let (bitmap, aggregate) = quorum_cert(&pairs, &[0, 2, 3], msg);
        assert!(committee
            .verify_quorum(Domain::Vote, msg, &bitmap, &aggregate)
            .is_ok());

        // Wrong message and wrong domain.
        assert_eq!(
            committee.verify_quorum(Domain::Vote, b"view 8", &bitmap, &aggregate),
            Err(CryptoError::BadBlsSignature)
        );
        assert!(committee
            .verify_quorum(Domain::Timeout, msg, &bitmap, &aggregate)
            .is_err());

        // Bitmap below quorum: 2 of 4.
        let (small_bitmap, small_aggregate) = quorum_cert(&pairs, &[0, 2], msg);
        assert_eq!(
            committee.verify_quorum(Domain::Vote, msg, &small_bitmap, &small_aggregate),
            Err(CryptoError::BelowQuorum {
                power: 2,
                quorum: 3
            })
        );

        // A missing signer: bitmap claims 1 signed but the aggregate lacks its signature.
        let mut claims_more = small_bitmap.clone();
        claims_more.insert(1);
        assert_eq!(
            committee.verify_quorum(Domain::Vote, msg, &claims_more, &small_aggregate),
            Err(CryptoError::BadBlsSignature)
        );

        // A duplicated signer: signer 0's vote counted twice to stand in for signer 1.
        let vote0 = pairs[0].sign(Domain::Vote, msg);
        let vote2 = pairs[2].sign(Domain::Vote, msg);
        let sigs: Vec<min_pk::Signature> = [vote0, vote0, vote2]
            .iter()
            .map(|s| min_pk::Signature::from_bytes(&s.0).unwrap())
            .collect();
        let refs: Vec<&min_pk::Signature> = sigs.iter().collect();
        let doubled = BlsSignature(
            min_pk::AggregateSignature::aggregate(&refs, false)
                .unwrap()
                .to_signature()
                .compress(),
        );
        let mut bitmap_012 = SignerBitmap::new(4);
        for i in [0, 1, 2] {
            bitmap_012.insert(i);
        }
        assert_eq!(
            committee.verify_quorum(Domain::Vote, msg, &bitmap_012, &doubled),
            Err(CryptoError::BadBlsSignature)
        );
        // And the aggregator refuses a second signature from the same member.
        let mut aggregate_twice = BlsAggregate::new(4);
        assert!(aggregate_twice.add(0, &vote0).unwrap());
        assert!(!aggregate_twice.add(0, &vote0).unwrap());
        assert_eq!(aggregate_twice.bitmap().count(), 1);

        // A bitmap for a different committee size.
        let mut wrong_size = SignerBitmap::new(5);
        for i in [0, 2, 3] {
            wrong_size.insert(i);
        }
        assert!(matches!(
            committee.verify_quorum(Domain::Vote, msg, &wrong_size, &aggregate),
            Err(CryptoError::BitmapSize { .. })
        ));

        // Tampered aggregate bytes.
        let mut tampered = aggregate;
        tampered.0[70] ^= 4;
        assert!(committee
            .verify_quorum(Domain::Vote, msg, &bitmap, &tampered)
            .is_err());
    }

    #[test]
    fn weighted_quorum() {
        let pairs: Vec<BlsKeyPair> = (0..4).map(BlsKeyPair::from_seed_insecure).collect();
        let members: Vec<_> = pairs
            .iter()
            .zip([10, 1, 1, 1])
            .map(|(p, w)| (p.public(), p.proof_of_possession(), w))
            .collect();
        let committee = Committee::new(&members).unwrap();
        assert_eq!(committee.quorum_power(), 9);
        let msg = b"m";
        let (bitmap, aggregate) = quorum_cert(&pairs, &[1, 2, 3], msg);
        assert!(matches!(
            committee.verify_quorum(Domain::Vote, msg, &bitmap, &aggregate),
            Err(CryptoError::BelowQuorum {
                power: 3,
                quorum: 9
            })
        ));
        let (bitmap, aggregate) = quorum_cert(&pairs, &[0], msg);
        assert!(committee
            .verify_quorum(Domain::Vote, msg, &bitmap, &aggregate)
            .is_ok());
    }

    #[test]
    fn committee_rejects_bad_members() {
        let pairs: Vec<BlsKeyPair> = (0..3).map(BlsKeyPair::from_seed_insecure).collect();
        let mut members: Vec<_> = pairs
            .iter()
            .map(|p| (p.public(), p.proof_of_possession(), 1))
            .collect();
        members.push(members[0]);
        assert_eq!(
            Committee::new(&members).err(),
            Some(CryptoError::DuplicateMember { index: 3 })
        );
        members.pop();
        members[1].2 = 0;
        assert_eq!(
            Committee::new(&members).err(),
            Some(CryptoError::ZeroPower { index: 1 })
        );
        assert_eq!(Committee::new(&[]).err(), Some(CryptoError::EmptyCommittee));
    }

    /// The rogue-key attack: the attacker publishes `pk_rogue = x·G - pk_honest`, so the sum of
    /// both keys is `x·G` and a signature under `x` alone passes as a two-signer aggregate. The
    /// attacker cannot produce a proof of possession for `pk_rogue` (it lacks its secret key), so
    /// the committee refuses it.
    #[test]
    fn rogue_key_attack_is_stopped_by_proof_of_possession() {
        let honest = BlsKeyPair::from_seed_insecure(100);
        let attacker = BlsKeyPair::from_seed_insecure(101);
        let rogue = rogue_public_key(&attacker.public(), &honest.public());

        let msg = b"transfer everything";
        let forged = attacker.sign(Domain::Vote, msg);
        // Without PoP: the naive aggregate of the two keys accepts the forgery.
        let honest_key = min_pk::PublicKey::from_bytes(&honest.public().0).unwrap();
        let rogue_key = min_pk::PublicKey::from_bytes(&rogue.0).unwrap();
        let naive = min_pk::AggregatePublicKey::aggregate(&[&honest_key, &rogue_key], false)
            .unwrap()
            .to_public_key();
        assert!(verify_decoded(&naive, Domain::Vote, msg, &forged).is_ok());

        // With PoP: the attacker's best attempt (its own PoP) is rejected.
        let members = vec![
            (honest.public(), honest.proof_of_possession(), 1),
            (rogue, attacker.proof_of_possession(), 1),
        ];
        assert_eq!(
            Committee::new(&members).err(),
            Some(CryptoError::BadProofOfPossession)
        );
    }

    fn rogue_public_key(attacker: &BlsPublicKey, honest: &BlsPublicKey) -> BlsPublicKey {
        use blst::*;
        // SAFETY: plain blst point arithmetic on values we own.
        unsafe {
            let mut a_aff = blst_p1_affine::default();
            let mut h_aff = blst_p1_affine::default();
            assert_eq!(
                blst_p1_uncompress(&mut a_aff, attacker.0.as_ptr()),
                BLST_ERROR::BLST_SUCCESS
            );
            assert_eq!(
                blst_p1_uncompress(&mut h_aff, honest.0.as_ptr()),
                BLST_ERROR::BLST_SUCCESS
            );
            let mut h = blst_p1::default();
            blst_p1_from_affine(&mut h, &h_aff);
            blst_p1_cneg(&mut h, true);
            let mut sum = blst_p1::default();
            blst_p1_add_or_double_affine(&mut sum, &h, &a_aff);
            let mut out = [0u8; 48];
            blst_p1_compress(out.as_mut_ptr(), &sum);
            BlsPublicKey(out)
        }
    }
}
