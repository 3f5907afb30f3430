//! Decoded ed25519 public keys, kept across batches.
//!
//! Decoding a key is a point decompression (a field exponentiation, about a quarter of the cost of
//! checking one signature in a batch), and the same senders sign transaction after transaction.
//! The cache is bounded ([`CAPACITY`] keys, about 3.7 MB when full); at the bound it is emptied
//! and refills from the keys in use. Only keys that decoded and passed the small-order check are
//! kept, and a key's decoding depends on its bytes alone, so a hit gives exactly what decoding
//! would: nobody can put a wrong entry in it, and a stream of fresh keys costs what it would cost
//! without the cache.

use crate::ed25519::PublicKey;
use crate::CryptoError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Keys kept at most.
pub const CAPACITY: usize = 16_384;

static KEYS: Mutex<Option<HashMap<[u8; 32], ed25519_dalek::VerifyingKey>>> = Mutex::new(None);
static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);
static CLEARED: AtomicU64 = AtomicU64::new(0);

/// What the key cache has done since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Times it was emptied at its bound.
    pub cleared: u64,
    pub len: u64,
}

pub fn stats() -> KeyCacheStats {
    let len = KEYS
        .lock()
        .map(|keys| keys.as_ref().map_or(0, HashMap::len))
        .unwrap_or(0);
    KeyCacheStats {
        hits: HITS.load(Ordering::Relaxed),
        misses: MISSES.load(Ordering::Relaxed),
        cleared: CLEARED.load(Ordering::Relaxed),
        len: len as u64,
    }
}

/// The decoded form of each of `keys`, in order: from the cache where known, decoded (once per
/// distinct key) otherwise. The lock is not held while decoding. One bad key fails the whole
/// list, but the good keys decoded before it are kept: the caller then checks entry by entry, and
/// those are not decoded a second time.
pub fn decode_all(keys: &[PublicKey]) -> Result<Vec<ed25519_dalek::VerifyingKey>, CryptoError> {
    let mut decoded: Vec<Option<ed25519_dalek::VerifyingKey>> = {
        let guard = KEYS.lock().ok();
        let cached = guard.as_ref().and_then(|keys| keys.as_ref());
        keys.iter()
            .map(|key| cached.and_then(|cached| cached.get(&key.0).copied()))
            .collect()
    };
    let mut fresh: HashMap<[u8; 32], ed25519_dalek::VerifyingKey> = HashMap::new();
    let mut hits = 0u64;
    let mut failure = None;
    for (slot, key) in decoded.iter_mut().zip(keys) {
        if slot.is_some() {
            hits += 1;
            continue;
        }
        let value = match fresh.get(&key.0) {
            Some(known) => *known,
            None => match key.to_dalek() {
                Ok(value) => {
                    fresh.insert(key.0, value);
                    value
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            },
        };
        *slot = Some(value);
    }
    HITS.fetch_add(hits, Ordering::Relaxed);
    MISSES.fetch_add(fresh.len() as u64, Ordering::Relaxed);
    if !fresh.is_empty() {
        if let Ok(mut guard) = KEYS.lock() {
            let cached = guard.get_or_insert_with(HashMap::new);
            if cached.len() + fresh.len() > CAPACITY {
                cached.clear();
                CLEARED.fetch_add(1, Ordering::Relaxed);
            }
            cached.extend(fresh.into_iter().take(CAPACITY));
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(decoded.into_iter().flatten().collect()),
    }
}

/// One key, through the cache.
pub fn decode(key: &PublicKey) -> Result<ed25519_dalek::VerifyingKey, CryptoError> {
    let mut decoded = decode_all(std::slice::from_ref(key))?;
    decoded.pop().ok_or(CryptoError::WeakPublicKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    /// The cache is one per process: tests that look into it take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn a_cached_key_is_the_decoded_key_and_bad_keys_are_never_kept() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let key = SigningKey::from_seed_insecure(7).public();
        let first = decode(&key).unwrap();
        let again = decode(&key).unwrap();
        assert_eq!(first, again);
        assert_eq!(first, key.to_dalek().unwrap());
        // The identity point is of small order: refused every time, never cached.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for _ in 0..2 {
            assert!(decode_all(&[key, PublicKey(identity)]).is_err());
        }
        assert!(KEYS
            .lock()
            .unwrap()
            .as_ref()
            .is_none_or(|keys| !keys.contains_key(&identity)));
        // A good key listed before a bad one is kept for the entry-by-entry check that follows.
        let before = SigningKey::from_seed_insecure(8).public();
        assert!(decode_all(&[before, PublicKey(identity)]).is_err());
        assert!(KEYS
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|keys| keys.contains_key(&before.0)));
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<PublicKey> = (0..CAPACITY as u32 + 10)
            .map(|i| SigningKey::from_seed_insecure(0xee00_0000 + u64::from(i)).public())
            .collect();
        let decoded = decode_all(&keys).unwrap();
        assert_eq!(decoded.len(), keys.len());
        for (key, value) in keys.iter().zip(&decoded) {
            assert_eq!(value.to_bytes(), key.0);
        }
        assert!(stats().len <= CAPACITY as u64);
    }
}
