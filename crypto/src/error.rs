use thiserror::Error;

/// Everything that can be wrong with a key, signature, certificate or MAC.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CryptoError {
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("invalid {what} length: expected {expected} bytes, got {actual}")]
    Length {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("weak (small-order) ed25519 public key")]
    WeakPublicKey,
    #[error("ed25519 signature does not verify")]
    BadSignature,
    #[error("batch verification failed; invalid entries at {invalid:?}")]
    BatchInvalid { invalid: Vec<usize> },
    #[error("batch has {messages} messages, {signatures} signatures, {keys} keys")]
    BatchShape {
        messages: usize,
        signatures: usize,
        keys: usize,
    },
    #[error("BLS signature does not verify")]
    BadBlsSignature,
    #[error("BLS public key is not a valid group element")]
    BadBlsPublicKey,
    #[error("proof of possession does not verify for this BLS key")]
    BadProofOfPossession,
    #[error("duplicate member in committee at index {index}")]
    DuplicateMember { index: usize },
    #[error("committee has no members")]
    EmptyCommittee,
    #[error("member {index} has zero voting power")]
    ZeroPower { index: usize },
    #[error("total voting power overflows")]
    PowerOverflow,
    #[error("signer bitmap covers {bitmap_len} validators, committee has {committee_len}")]
    BitmapSize {
        bitmap_len: usize,
        committee_len: usize,
    },
    #[error("signer bitmap is malformed: {reason}")]
    BitmapMalformed { reason: &'static str },
    #[error("signers' voting power {power} is below the quorum {quorum}")]
    BelowQuorum { power: u64, quorum: u64 },
    #[error("no signers")]
    NoSigners,
    #[error("MAC authenticator has {actual} entries, expected {expected}")]
    AuthenticatorSize { expected: usize, actual: usize },
    #[error("MAC for receiver {receiver} does not verify")]
    BadMac { receiver: usize },
}
