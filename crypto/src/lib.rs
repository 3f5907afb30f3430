//! Quorate's cryptography: domain-separated BLAKE3 hashing, ed25519 account and identity keys,
//! BLS12-381 voting keys with proofs of possession and quorum certificates, signer bitmaps, and
//! the MAC authenticators PBFT uses between validators.
//!
//! Every byte string that is hashed, signed or MAC'd carries a [`Domain`] tag, so a signature or
//! digest made for one kind of object can never be replayed as another kind.
// Nothing from a network, a disk or a client may panic a library: no unwrap, expect, panic or
// unchecked indexing outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(not(test), deny(clippy::panic, clippy::indexing_slicing))]

mod bitmap;
mod bls;
mod bytes;
mod ed25519;
mod error;
mod hash;
mod key_cache;
mod mac;

pub use bitmap::SignerBitmap;
pub use bls::{
    BlsAggregate, BlsKeyPair, BlsPublicKey, BlsSecretKey, BlsSignature, Committee,
    ProofOfPossession,
};
pub use ed25519::{verify_batch, Address, PublicKey, SecretKey, Signature, SigningKey};
pub use error::CryptoError;
pub use hash::{hash, hash_xof, Digest, DigestHasher, DigestMap, DigestSet, Domain, Hasher};
pub use key_cache::{stats as key_cache_stats, KeyCacheStats};
pub use mac::{Authenticator, Mac, MacKey, MAC_LEN};

/// Fills `buf` with bytes from the operating system's CSPRNG.
///
/// # Panics
/// If the operating system cannot provide randomness: a node without an entropy source cannot make
/// keys safely, and must not continue.
pub fn os_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("operating system randomness unavailable");
}
