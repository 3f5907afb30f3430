//! MAC authenticators for PBFT (Castro & Liskov): every pair of validators shares a secret key;
//! a message carries one MAC per receiver, and each receiver checks only its own entry.
//!
//! Pairwise keys come from X25519 on the validators' ed25519 identity keys (birationally mapped),
//! then BLAKE3's key derivation over a context (the chain and the epoch: keys change each epoch
//! and never carry from one chain to another), both public keys (sorted) and the shared point, so
//! both sides derive the same key and no third validator can. Keys are derived at start-up and
//! held in memory only; nothing writes them to genesis, config or disk.
//!
//! A MAC is keyed BLAKE3 over the message's digest, truncated to 16 bytes.

use crate::bytes::byte_array;
use crate::{CryptoError, Digest, Domain, PublicKey, SigningKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Bytes in one MAC.
pub const MAC_LEN: usize = 16;

byte_array!(
    /// A truncated keyed-BLAKE3 MAC.
    Mac,
    16,
    "MAC"
);

/// A secret key shared by exactly two validators. Zeroed on drop; never printed.
#[derive(Clone)]
pub struct MacKey([u8; 32]);

impl Drop for MacKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

impl MacKey {
    /// The key `own` shares with `peer` in `context` (see [`MacKey::context`]);
    /// `MacKey::derive(a, B, c) == MacKey::derive(b, A, c)`.
    pub fn derive(
        own: &SigningKey,
        peer: &PublicKey,
        context: &Digest,
    ) -> Result<MacKey, CryptoError> {
        let mut shared = own.diffie_hellman(peer)?;
        if shared == [0u8; 32] {
            return Err(CryptoError::WeakPublicKey);
        }
        let own_public = own.public();
        let (low, high) = if own_public.0 <= peer.0 {
            (own_public.0, peer.0)
        } else {
            (peer.0, own_public.0)
        };
        let mut material = Vec::with_capacity(128);
        material.extend_from_slice(&context.0);
        material.extend_from_slice(&low);
        material.extend_from_slice(&high);
        material.extend_from_slice(&shared);
        let key = blake3::derive_key("quorate/v1 pbft pairwise mac key", &material);
        material.zeroize();
        shared.zeroize();
        Ok(MacKey(key))
    }

    /// The derivation context of one chain's epoch: its id, its genesis hash and the epoch.
    pub fn context(chain_id: &str, genesis_hash: &Digest, epoch: u64) -> Digest {
        let mut hasher = crate::Hasher::new(Domain::MacKeyDerivation);
        hasher
            .update(&(chain_id.len() as u64).to_le_bytes())
            .update(chain_id.as_bytes())
            .update(&genesis_hash.0)
            .update(&epoch.to_le_bytes());
        hasher.finalize()
    }

    /// The MAC of a message digest.
    pub fn mac(&self, digest: &Digest) -> Mac {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(Domain::Mac.tag());
        hasher.update(&[0]);
        hasher.update(&digest.0);
        let full = hasher.finalize();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full.as_bytes()[..MAC_LEN]);
        Mac(out)
    }

    /// Constant-time check of `mac` over `digest`.
    pub fn check(&self, digest: &Digest, mac: &Mac) -> bool {
        let expected = self.mac(digest);
        expected
            .0
            .iter()
            .zip(mac.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// One MAC per receiver, indexed by the receiver's position in the validator set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authenticator {
    pub macs: Vec<Mac>,
}

impl Authenticator {
    /// `keys[i]` is the key the sender shares with validator `i` (its own slot included).
    pub fn create(keys: &[MacKey], digest: &Digest) -> Authenticator {
        Authenticator {
            macs: keys.iter().map(|key| key.mac(digest)).collect(),
        }
    }

    /// Receiver `receiver`, sharing `key` with the sender, checks its entry. `committee_len` is the
    /// size of the validator set (an authenticator of another size is rejected).
    pub fn verify(
        &self,
        receiver: usize,
        key: &MacKey,
        digest: &Digest,
        committee_len: usize,
    ) -> Result<(), CryptoError> {
        if self.macs.len() != committee_len {
            return Err(CryptoError::AuthenticatorSize {
                expected: committee_len,
                actual: self.macs.len(),
            });
        }
        let mac = self
            .macs
            .get(receiver)
            .ok_or(CryptoError::BadMac { receiver })?;
        if key.check(digest, mac) {
            Ok(())
        } else {
            Err(CryptoError::BadMac { receiver })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash;

    const CONTEXT: Digest = Digest([7; 32]);

    #[test]
    fn pairwise_keys_agree_and_differ_per_pair() {
        let a = SigningKey::from_seed_insecure(1);
        let b = SigningKey::from_seed_insecure(2);
        let c = SigningKey::from_seed_insecure(3);
        let epoch_0 = MacKey::context("chain", &Digest([1; 32]), 0);
        let ab = MacKey::derive(&a, &b.public(), &epoch_0).unwrap();
        let ba = MacKey::derive(&b, &a.public(), &epoch_0).unwrap();
        let ac = MacKey::derive(&a, &c.public(), &epoch_0).unwrap();
        let digest = hash(Domain::PbftMessage, b"prepare");
        assert_eq!(ab.mac(&digest), ba.mac(&digest));
        assert_ne!(ab.mac(&digest), ac.mac(&digest));
        // Another epoch, or another chain, gives the pair another key.
        for context in [
            MacKey::context("chain", &Digest([1; 32]), 1),
            MacKey::context("chain", &Digest([2; 32]), 0),
            MacKey::context("other", &Digest([1; 32]), 0),
        ] {
            let next = MacKey::derive(&a, &b.public(), &context).unwrap();
            assert_ne!(next.mac(&digest), ab.mac(&digest));
        }
        assert!(ba.check(&digest, &ab.mac(&digest)));
        assert!(!ba.check(&hash(Domain::PbftMessage, b"commit"), &ab.mac(&digest)));
    }

    #[test]
    fn authenticator_checks_and_negatives() {
        let keys: Vec<SigningKey> = (0..4).map(SigningKey::from_seed_insecure).collect();
        let sender = 0;
        let sender_keys: Vec<MacKey> = keys
            .iter()
            .map(|k| MacKey::derive(&keys[sender], &k.public(), &CONTEXT).unwrap())
            .collect();
        let digest = hash(Domain::PbftMessage, b"pre-prepare view 1 seq 5");
        let authenticator = Authenticator::create(&sender_keys, &digest);
        for receiver in 1..4 {
            let key = MacKey::derive(&keys[receiver], &keys[sender].public(), &CONTEXT).unwrap();
            assert!(authenticator.verify(receiver, &key, &digest, 4).is_ok());
            // Wrong message.
            let other = hash(Domain::PbftMessage, b"pre-prepare view 1 seq 6");
            assert_eq!(
                authenticator.verify(receiver, &key, &other, 4),
                Err(CryptoError::BadMac { receiver })
            );
        }
        // A MAC made for another receiver: receiver 2 reads receiver 1's entry.
        let key_2 = MacKey::derive(&keys[2], &keys[sender].public(), &CONTEXT).unwrap();
        let mut swapped = authenticator.clone();
        swapped.macs[2] = swapped.macs[1];
        assert_eq!(
            swapped.verify(2, &key_2, &digest, 4),
            Err(CryptoError::BadMac { receiver: 2 })
        );
        // Wrong key: a third validator cannot forge the sender's MAC to receiver 2.
        let key_3_2 = MacKey::derive(&keys[3], &keys[2].public(), &CONTEXT).unwrap();
        let mut forged = authenticator.clone();
        forged.macs[2] = key_3_2.mac(&digest);
        assert!(forged.verify(2, &key_2, &digest, 4).is_err());
        // Tampered bytes.
        let mut tampered = authenticator.clone();
        tampered.macs[2].0[0] ^= 1;
        assert!(tampered.verify(2, &key_2, &digest, 4).is_err());
        // Wrong size.
        let mut short = authenticator.clone();
        short.macs.pop();
        assert!(matches!(
            short.verify(2, &key_2, &digest, 4),
            Err(CryptoError::AuthenticatorSize { .. })
        ));
    }
}
