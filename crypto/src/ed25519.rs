//! ed25519: account keys, validator identity keys, and batch verification.
//!
//! Messages are signed as `Domain::tag || 0 || bytes`, so a transaction signature can never pass as
//! a view-change signature. Single verification is `verify_strict` (rejects small-order keys and
//! non-canonical encodings). Batch verification is deterministic for a given list (dalek derives
//! its coefficients from a transcript of the batch); on failure, every entry is checked one by one
//! so the caller learns exactly which are bad.

use crate::bytes::byte_array;
use crate::{CryptoError, Domain};
use ed25519_dalek::Signer;
use zeroize::Zeroize;

byte_array!(
    /// An ed25519 public key (32 bytes). Not validated until used: see [`PublicKey::verify`].
    PublicKey,
    32,
    "ed25519 public key"
);

byte_array!(
    /// An ed25519 signature (64 bytes).
    Signature,
    64,
    "ed25519 signature"
);

byte_array!(
    /// An account address: the first 20 bytes of the domain-separated hash of the account's
    /// ed25519 public key, printed as lowercase hex.
    Address,
    20,
    "address"
);

impl PublicKey {
    /// The account address of this key.
    pub fn address(&self) -> Address {
        let digest = crate::hash(Domain::Address, &self.0);
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest.0[..20]);
        Address(out)
    }

    /// Decodes the point and rejects small-order keys.
    pub fn to_dalek(&self) -> Result<ed25519_dalek::VerifyingKey, CryptoError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|error| {
            CryptoError::Malformed {
                what: "ed25519 public key",
                reason: error.to_string(),
            }
        })?;
        if key.is_weak() {
            return Err(CryptoError::WeakPublicKey);
        }
        Ok(key)
    }

    /// Verifies `signature` over `bytes` in `domain` (strict).
    pub fn verify(
        &self,
        domain: Domain,
        bytes: &[u8],
        signature: &Signature,
    ) -> Result<(), CryptoError> {
        let key = crate::key_cache::decode(self)?;
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&domain.prefixed(bytes), &signature)
            .map_err(|_| CryptoError::BadSignature)
    }
}

/// A 32-byte ed25519 secret seed. Zeroed on drop; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let mut bytes = hex::decode(text.trim()).map_err(|error| CryptoError::Malformed {
            what: "ed25519 secret key",
            reason: error.to_string(),
        })?;
        let result = <[u8; 32]>::try_from(bytes.as_slice())
            .map(SecretKey)
            .map_err(|_| CryptoError::Length {
                what: "ed25519 secret key",
                expected: 32,
                actual: bytes.len(),
            });
        bytes.zeroize();
        result
    }

    /// Hex of the secret: only for writing key files.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// An ed25519 signing key: an account key or a validator's identity key.
#[derive(Clone)]
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public={})", self.public)
    }
}

impl SigningKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        crate::os_random(&mut seed);
        let key = Self::from_secret(&SecretKey(seed));
        seed.zeroize();
        key
    }

    pub fn from_secret(secret: &SecretKey) -> Self {
        let inner = ed25519_dalek::SigningKey::from_bytes(&secret.0);
        let public = PublicKey(inner.verifying_key().to_bytes());
        SigningKey { inner, public }
    }

    /// A deterministic key for tests and simulations: never use for real funds.
    pub fn from_seed_insecure(seed: u64) -> Self {
        let digest = crate::hash(Domain::MacKeyDerivation, &seed.to_le_bytes());
        Self::from_secret(&SecretKey(digest.0))
    }

    pub fn secret(&self) -> SecretKey {
        SecretKey(self.inner.to_bytes())
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub fn sign(&self, domain: Domain, bytes: &[u8]) -> Signature {
        Signature(self.inner.sign(&domain.prefixed(bytes)).to_bytes())
    }

    /// The X25519 shared secret with `peer` (the birational map of both ed25519 keys).
    pub(crate) fn diffie_hellman(&self, peer: &PublicKey) -> Result<[u8; 32], CryptoError> {
        let peer = peer.to_dalek()?;
        let shared = peer
            .to_montgomery()
            .mul_clamped(self.inner.to_scalar_bytes());
        Ok(shared.to_bytes())
    }

    /// The underlying dalek key (the node derives its libp2p identity from it).
    pub fn to_dalek(&self) -> &ed25519_dalek::SigningKey {
        &self.inner
    }
}

/// Verifies many signatures in one batch, all in `domain`.
///
/// Returns `Ok(())` when all are valid. Otherwise `BatchInvalid` lists every invalid index
/// (found by strict single verification, so the verdict per entry does not depend on the batch).
pub fn verify_batch(
    domain: Domain,
    messages: &[&[u8]],
    signatures: &[Signature],
    keys: &[PublicKey],
) -> Result<(), CryptoError> {
    if messages.len() != signatures.len() || messages.len() != keys.len() {
        return Err(CryptoError::BatchShape {
            messages: messages.len(),
            signatures: signatures.len(),
            keys: keys.len(),
        });
    }
    if messages.is_empty() {
        return Ok(());
    }
    let prefixed: Vec<Vec<u8>> = messages.iter().map(|m| domain.prefixed(m)).collect();
    // Each distinct key decoded once (a point decompression each), and kept for the next batch:
    // the same senders sign one transaction after another.
    let decoded = crate::key_cache::decode_all(keys);
    if let Ok(dalek_keys) = decoded {
        let refs: Vec<&[u8]> = prefixed.iter().map(Vec::as_slice).collect();
        let sigs: Vec<ed25519_dalek::Signature> = signatures
            .iter()
            .map(|s| ed25519_dalek::Signature::from_bytes(&s.0))
            .collect();
        if ed25519_dalek::verify_batch(&refs, &sigs, &dalek_keys).is_ok() && no_small_order_r(&sigs)
        {
            return Ok(());
        }
    }
    let invalid: Vec<usize> = keys
        .iter()
        .zip(messages)
        .zip(signatures)
        .enumerate()
        .filter(|(_, ((key, message), signature))| key.verify(domain, message, signature).is_err())
        .map(|(i, _)| i)
        .collect();
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(CryptoError::BatchInvalid { invalid })
    }
}

/// The cheap part of strict verification that batching skips: a signature whose `R` is of small
/// order can pass a batch but fails `verify_strict`. Rejecting those keeps the batch verdict equal
/// to the single one for every signature an honest signer can produce. (Keys were already checked
/// for weakness in `to_dalek`.)
fn no_small_order_r(signatures: &[ed25519_dalek::Signature]) -> bool {
    signatures
        .iter()
        .all(|signature| !is_small_order_encoding(signature.r_bytes()))
}

/// Whether `r` encodes a point of small order, without decompressing it (a field
/// exponentiation; batching decompresses `R` again itself). A point is fixed by its y coordinate
/// up to the sign of x, so the encodings of small-order points are those whose y (the top bit,
/// x's sign, cleared) is the y of one of the eight torsion points, canonical or not (y + p fits
/// in 255 bits for y = 0 and 1 only). An encoding that is no point at all passes here and fails
/// the batch, whose fallback verifies strictly.
fn is_small_order_encoding(r: &[u8; 32]) -> bool {
    let mut y = *r;
    y[31] &= 0x7f;
    small_order_ys().contains(&y)
}

/// The y coordinates (32 bytes, sign bit clear) of the small-order points, in every encoding.
fn small_order_ys() -> &'static [[u8; 32]] {
    static YS: std::sync::OnceLock<Vec<[u8; 32]>> = std::sync::OnceLock::new();
    YS.get_or_init(|| {
        let mut ys: Vec<[u8; 32]> = Vec::new();
        for point in curve25519_dalek::constants::EIGHT_TORSION {
            let mut y = point.compress().to_bytes();
            y[31] &= 0x7f;
            if !ys.contains(&y) {
                ys.push(y);
            }
        }
        // p and p + 1: non-canonical encodings of y = 0 and y = 1 (p = 2^255 - 19).
        for low in [0xed, 0xee] {
            let mut y = [0xff; 32];
            y[0] = low;
            y[31] = 0x7f;
            ys.push(y);
        }
        ys
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_negatives() {
        let key = SigningKey::from_seed_insecure(1);
        let other = SigningKey::from_seed_insecure(2);
        let signature = key.sign(Domain::Transaction, b"pay 5");
        assert!(key
            .public()
            .verify(Domain::Transaction, b"pay 5", &signature)
            .is_ok());
        // Wrong message.
        assert_eq!(
            key.public()
                .verify(Domain::Transaction, b"pay 6", &signature),
            Err(CryptoError::BadSignature)
        );
        // Wrong key.
        assert_eq!(
            other
                .public()
                .verify(Domain::Transaction, b"pay 5", &signature),
            Err(CryptoError::BadSignature)
        );
        // Wrong domain.
        assert_eq!(
            key.public()
                .verify(Domain::ViewChange, b"pay 5", &signature),
            Err(CryptoError::BadSignature)
        );
        // Tampered signature bytes.
        let mut tampered = signature;
        tampered.0[10] ^= 1;
        assert!(key
            .public()
            .verify(Domain::Transaction, b"pay 5", &tampered)
            .is_err());
        // Weak (identity point) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey(identity).verify(Domain::Transaction, b"pay 5", &signature),
            Err(CryptoError::WeakPublicKey)
        );
    }

    #[test]
    fn batch_finds_each_bad_entry() {
        let keys: Vec<SigningKey> = (0..20).map(SigningKey::from_seed_insecure).collect();
        let messages: Vec<Vec<u8>> = (0..20u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut signatures: Vec<Signature> = keys
            .iter()
            .zip(&messages)
            .map(|(k, m)| k.sign(Domain::Transaction, m))
            .collect();
        let publics: Vec<PublicKey> = keys.iter().map(SigningKey::public).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        assert!(verify_batch(Domain::Transaction, &refs, &signatures, &publics).is_ok());
        signatures[3].0[40] ^= 0x10;
        signatures[17] = keys[0].sign(Domain::Transaction, &messages[17]);
        assert_eq!(
            verify_batch(Domain::Transaction, &refs, &signatures, &publics),
            Err(CryptoError::BatchInvalid {
                invalid: vec![3, 17]
            })
        );
        assert!(matches!(
            verify_batch(Domain::Transaction, &refs[..3], &signatures, &publics),
            Err(CryptoError::BatchShape { .. })
        ));
    }

    /// Senders repeat within a batch (each key is decoded once): a bad signature by a repeated
    /// sender, or one under another sender's key, is still found at its own index.
    #[test]
    fn batch_with_repeated_senders_finds_each_bad_entry() {
        let senders: Vec<SigningKey> = (0..3).map(SigningKey::from_seed_insecure).collect();
        let messages: Vec<Vec<u8>> = (0..12u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut signatures: Vec<Signature> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| senders[i % 3].sign(Domain::Transaction, m))
            .collect();
        let publics: Vec<PublicKey> = (0..12).map(|i| senders[i % 3].public()).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        assert!(verify_batch(Domain::Transaction, &refs, &signatures, &publics).is_ok());
        signatures[4].0[40] ^= 0x10;
        signatures[9] = senders[1].sign(Domain::Transaction, &messages[9]);
        assert_eq!(
            verify_batch(Domain::Transaction, &refs, &signatures, &publics),
            Err(CryptoError::BatchInvalid {
                invalid: vec![4, 9]
            })
        );
    }

    /// The small-order test by encoding agrees with decompressing: every encoding it flags is a
    /// small-order point (both signs of x), and it flags no R of a real signature.
    #[test]
    fn small_order_encodings_are_known_without_decompressing() {
        let decompressed = |r: &[u8; 32]| {
            curve25519_dalek::edwards::CompressedEdwardsY(*r)
                .decompress()
                .map(|point| point.is_small_order())
        };
        assert_eq!(small_order_ys().len(), 7);
        for y in small_order_ys() {
            for sign in [0u8, 0x80] {
                let mut r = *y;
                r[31] |= sign;
                assert!(is_small_order_encoding(&r));
                assert_eq!(decompressed(&r), Some(true), "{r:?}");
            }
        }
        for point in curve25519_dalek::constants::EIGHT_TORSION {
            assert!(is_small_order_encoding(&point.compress().to_bytes()));
        }
        let key = SigningKey::from_seed_insecure(4);
        for i in 0..200u32 {
            let signature = key.sign(Domain::Transaction, &i.to_le_bytes());
            let r: [u8; 32] = signature.0[..32].try_into().unwrap();
            assert!(!is_small_order_encoding(&r));
            assert_eq!(decompressed(&r), Some(false));
        }
    }

    #[test]
    fn secret_key_is_not_printed() {
        let key = SigningKey::from_seed_insecure(9);
        let secret = key.secret();
        assert!(!format!("{secret:?}").contains(&secret.to_hex()));
        assert!(!format!("{key:?}").contains(&secret.to_hex()));
        let back = SecretKey::from_hex(&secret.to_hex()).unwrap();
        assert_eq!(SigningKey::from_secret(&back).public(), key.public());
        assert!(SecretKey::from_hex("00").is_err());
    }
}
