//! Domain-separated BLAKE3.
//!
//! A digest is `BLAKE3(tag || 0x00 || bytes)` where `tag` names the kind of object. Tags contain no
//! zero byte, so no two domains can produce the same hashed input.

use crate::bytes::byte_array;

byte_array!(
    /// A 32-byte BLAKE3 digest.
    Digest,
    32,
    "digest"
);

impl Digest {
    /// The all-zero digest, used as the parent of the first block.
    pub const ZERO: Digest = Digest([0u8; 32]);
}

/// The hasher of maps and sets keyed by digests: foldhash, seeded at random. A transaction id
/// passes through several such maps on every node (the mempool's, the transaction index's), and
/// SipHash over its 32 bytes was ~2% of a validator's CPU at saturation. Flooding one bucket
/// would take digests aimed at a seed the peer never sees, each found by grinding BLAKE3.
pub type DigestHasher = foldhash::fast::RandomState;
/// A hash map keyed by digests (see [`DigestHasher`]); make one with `DigestMap::default()`.
pub type DigestMap<V> = std::collections::HashMap<Digest, V, DigestHasher>;
/// A hash set of digests (see [`DigestHasher`]).
pub type DigestSet = std::collections::HashSet<Digest, DigestHasher>;

/// The kind of object being hashed, signed or MAC'd. Each has its own tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    Transaction,
    BlockHeader,
    Payload,
    Batch,
    Vote,
    Timeout,
    Checkpoint,
    ViewChange,
    PbftMessage,
    Genesis,
    StateLeaf,
    MacKeyDerivation,
    Mac,
    Address,
    StateRoot,
    Governance,
    StateCommitment,
}

impl Domain {
    /// The tag prefixed to the hashed or signed bytes.
    pub const fn tag(self) -> &'static [u8] {
        match self {
            Domain::Transaction => b"quorate/v1/transaction",
            Domain::BlockHeader => b"quorate/v1/block-header",
            Domain::Payload => b"quorate/v1/payload",
            Domain::Batch => b"quorate/v1/batch",
            Domain::Vote => b"quorate/v1/vote",
            Domain::Timeout => b"quorate/v1/timeout",
            Domain::Checkpoint => b"quorate/v1/checkpoint",
            Domain::ViewChange => b"quorate/v1/view-change",
            Domain::PbftMessage => b"quorate/v1/pbft-message",
            Domain::Genesis => b"quorate/v1/genesis",
            Domain::StateLeaf => b"quorate/v1/state-leaf",
            Domain::MacKeyDerivation => b"quorate/v1/mac-key-derivation",
            Domain::Mac => b"quorate/v1/mac",
            Domain::Address => b"quorate/v1/address",
            Domain::StateRoot => b"quorate/v1/state-root",
            Domain::Governance => b"quorate/v1/governance",
            Domain::StateCommitment => b"quorate/v1/state-commitment",
        }
    }

    /// The tag followed by its zero terminator: the exact prefix of every signed message.
    pub fn prefixed(self, bytes: &[u8]) -> Vec<u8> {
        let tag = self.tag();
        let mut out = Vec::with_capacity(tag.len() + 1 + bytes.len());
        out.extend_from_slice(tag);
        out.push(0);
        out.extend_from_slice(bytes);
        out
    }
}

/// Hashes `bytes` in `domain`.
pub fn hash(domain: Domain, bytes: &[u8]) -> Digest {
    let mut hasher = Hasher::new(domain);
    hasher.update(bytes);
    hasher.finalize()
}

/// Fills `out` with BLAKE3's extendable output over `bytes` in `domain`.
pub fn hash_xof(domain: Domain, bytes: &[u8], out: &mut [u8]) {
    let mut inner = blake3::Hasher::new();
    inner.update(domain.tag());
    inner.update(&[0]);
    inner.update(bytes);
    inner.finalize_xof().fill(out);
}

/// Incremental domain-separated hashing.
#[derive(Clone)]
pub struct Hasher(blake3::Hasher);

impl Hasher {
    pub fn new(domain: Domain) -> Self {
        let mut inner = blake3::Hasher::new();
        inner.update(domain.tag());
        inner.update(&[0]);
        Hasher(inner)
    }

    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }

    pub fn finalize(&self) -> Digest {
        Digest(*self.0.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate() {
        let a = hash(Domain::Transaction, b"x");
        let b = hash(Domain::BlockHeader, b"x");
        assert_ne!(a, b);
        assert_eq!(a, hash(Domain::Transaction, b"x"));
        assert_ne!(a, hash(Domain::Transaction, b"y"));
    }

    #[test]
    fn tags_are_distinct_and_zero_free() {
        let all = [
            Domain::Transaction,
            Domain::BlockHeader,
            Domain::Payload,
            Domain::Batch,
            Domain::Vote,
            Domain::Timeout,
            Domain::Checkpoint,
            Domain::ViewChange,
            Domain::PbftMessage,
            Domain::Genesis,
            Domain::StateLeaf,
            Domain::MacKeyDerivation,
            Domain::Mac,
            Domain::Address,
            Domain::StateRoot,
            Domain::Governance,
            Domain::StateCommitment,
        ];
        let tags: std::collections::HashSet<_> = all.iter().map(|d| d.tag()).collect();
        assert_eq!(tags.len(), all.len());
        assert!(all.iter().all(|d| !d.tag().contains(&0)));
    }

    #[test]
    fn digest_hex_and_json_round_trip() {
        let digest = hash(Domain::Batch, b"abc");
        let text = serde_json::to_string(&digest).unwrap_or_default();
        assert_eq!(text, format!("\"{}\"", digest.to_hex()));
        let back: Digest = serde_json::from_str(&text).unwrap_or(Digest::ZERO);
        assert_eq!(back, digest);
        assert!(Digest::from_hex("abcd").is_err());
        assert!(Digest::from_hex(&"zz".repeat(32)).is_err());
    }
}
