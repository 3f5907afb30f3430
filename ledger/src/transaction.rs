//! Transactions: what an account signs, and the signed form that travels and is stored.

use crate::codec::{self, CodecError};
use crate::governance::ValidatorChange;
use crate::Epoch;
use quorate_crypto::{Address, CryptoError, Digest, Domain, PublicKey, Signature, SigningKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The longest chain id accepted.
pub const MAX_CHAIN_ID_BYTES: usize = 64;
/// The largest encoded signed transaction accepted.
pub const MAX_TRANSACTION_BYTES: usize = 64 * 1024;

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    /// Move `amount` from the sender to `to`.
    Transfer { to: Address, amount: u64 },
    /// Bytes that are ordered and stored but never executed, on chains whose genesis sets
    /// `allow_opaque_payloads` (benchmark networks: the consensus-only measure). Its sender,
    /// nonce and signature are not checked: it is unsigned, and touches no account.
    Opaque { data: OpaqueData },
    /// A member of governance proposes (or approves the identical proposal of another member)
    /// a change to the validator set for the epoch after `epoch`, the current one.
    Reconfigure {
        epoch: Epoch,
        change: Box<ValidatorChange>,
    },
}

/// The bytes of an opaque payload: hex in JSON, a byte string in the binary encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueData(pub Vec<u8>);

impl std::fmt::Debug for OpaqueData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpaqueData({} bytes)", self.0.len())
    }
}

impl Serialize for OpaqueData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for OpaqueData {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = OpaqueData;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("opaque payload bytes (hex in text formats)")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<OpaqueData, E> {
                hex::decode(text).map(OpaqueData).map_err(E::custom)
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<OpaqueData, E> {
                Ok(OpaqueData(bytes.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<OpaqueData, E> {
                Ok(OpaqueData(bytes))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Visitor)
        } else {
            deserializer.deserialize_byte_buf(Visitor)
        }
    }
}

/// What a chain accepts, from its genesis: the checks every node applies alike, at admission,
/// when a peer's batch arrives, at execution and in `audit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRules {
    pub chain_id: String,
    /// Whether [`TransactionKind::Opaque`] is accepted (genesis `allow_opaque_payloads`).
    pub allow_opaque: bool,
    /// Whether [`TransactionKind::Reconfigure`] is accepted. The node sets it only once its
    /// engines switch validator sets at an epoch boundary: a chain must never record an epoch
    /// change its consensus does not carry out.
    pub allow_reconfiguration: bool,
}

impl ChainRules {
    /// A chain of signed transactions only.
    pub fn signed_only(chain_id: impl Into<String>) -> Self {
        ChainRules {
            chain_id: chain_id.into(),
            allow_opaque: false,
            allow_reconfiguration: false,
        }
    }
}

/// The signed body of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub chain_id: String,
    pub sender: PublicKey,
    /// The sender's nonce: its first transaction has nonce 0, each committed one bumps it.
    pub nonce: u64,
    pub kind: TransactionKind,
}

#[derive(Debug, Error)]
pub enum TransactionError {
    #[error("chain id is {actual:?}, this chain is {expected:?}")]
    WrongChain { expected: String, actual: String },
    #[error("chain id of {bytes} bytes exceeds {MAX_CHAIN_ID_BYTES}")]
    ChainIdTooLong { bytes: usize },
    #[error("transaction of {bytes} bytes exceeds {MAX_TRANSACTION_BYTES}")]
    TooLarge { bytes: usize },
    #[error("transfer amount is zero")]
    ZeroAmount,
    #[error("opaque payloads are not allowed on this chain (its genesis does not set allow_opaque_payloads; only benchmark networks do)")]
    OpaqueNotAllowed,
    #[error("validator-set changes are not accepted on this chain (its genesis does not set allow_reconfiguration)")]
    ReconfigurationNotEnabled,
    #[error(transparent)]
    Governance(#[from] crate::governance::GovernanceError),
    #[error("bad signature: {0}")]
    Signature(#[from] CryptoError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl Transaction {
    /// The transaction's id: the hash of its canonical body. The signature covers exactly this.
    pub fn id(&self) -> Result<Digest, CodecError> {
        // Encoded on the stack (no allocation) for all but the largest payloads.
        codec::hash_encoded(Domain::Transaction, self)
    }

    /// Signs the body with the sender's key.
    pub fn sign(self, key: &SigningKey) -> Result<SignedTransaction, CodecError> {
        let id = self.id()?;
        let signature = key.sign(Domain::Transaction, &id.0);
        Ok(SignedTransaction {
            transaction: self,
            signature,
            id,
        })
    }
}

/// A transaction with its sender's signature. The id is computed on construction and decoding.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "WireTransaction")]
pub struct SignedTransaction {
    transaction: Transaction,
    signature: Signature,
    id: Digest,
}

#[derive(Serialize, Deserialize)]
struct WireTransaction {
    transaction: Transaction,
    signature: Signature,
}

impl TryFrom<WireTransaction> for SignedTransaction {
    type Error = CodecError;
    fn try_from(wire: WireTransaction) -> Result<Self, CodecError> {
        let id = wire.transaction.id()?;
        Ok(SignedTransaction {
            transaction: wire.transaction,
            signature: wire.signature,
            id,
        })
    }
}

/// [`WireTransaction`] by reference: encoding a transaction copies nothing first.
#[derive(Serialize)]
#[serde(rename = "WireTransaction")]
struct WireTransactionRef<'a> {
    transaction: &'a Transaction,
    signature: &'a Signature,
}

impl Serialize for SignedTransaction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireTransactionRef {
            transaction: &self.transaction,
            signature: &self.signature,
        }
        .serialize(serializer)
    }
}

impl SignedTransaction {
    pub fn transaction(&self) -> &Transaction {
        &self.transaction
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The id (hash of the signed body).
    pub fn id(&self) -> Digest {
        self.id
    }

    pub fn sender(&self) -> Address {
        self.transaction.sender.address()
    }

    /// Whether this is an opaque payload (unsigned, never executed).
    pub fn is_opaque(&self) -> bool {
        matches!(self.transaction.kind, TransactionKind::Opaque { .. })
    }

    /// An opaque payload: unsigned (its signature is zeros and never checked) with `sender`
    /// and `nonce` only to tell copies apart.
    pub fn opaque(
        chain_id: impl Into<String>,
        sender: PublicKey,
        nonce: u64,
        data: Vec<u8>,
    ) -> Result<SignedTransaction, CodecError> {
        let transaction = Transaction {
            chain_id: chain_id.into(),
            sender,
            nonce,
            kind: TransactionKind::Opaque {
                data: OpaqueData(data),
            },
        };
        Ok(SignedTransaction {
            id: transaction.id()?,
            transaction,
            signature: Signature([0; Signature::LEN]),
        })
    }

    /// The checks that need no state and no signature verification: chain id, sizes, amounts,
    /// and whether the chain takes opaque payloads.
    pub fn check_stateless(&self, rules: &ChainRules) -> Result<(), TransactionError> {
        let chain_id = rules.chain_id.as_str();
        let tx = &self.transaction;
        if tx.chain_id.len() > MAX_CHAIN_ID_BYTES {
            return Err(TransactionError::ChainIdTooLong {
                bytes: tx.chain_id.len(),
            });
        }
        if tx.chain_id != chain_id {
            return Err(TransactionError::WrongChain {
                expected: chain_id.to_string(),
                actual: tx.chain_id.clone(),
            });
        }
        let bytes = codec::encoded_len(self)?;
        if bytes > MAX_TRANSACTION_BYTES {
            return Err(TransactionError::TooLarge { bytes });
        }
        match &tx.kind {
            TransactionKind::Transfer { amount: 0, .. } => Err(TransactionError::ZeroAmount),
            TransactionKind::Transfer { .. } => Ok(()),
            TransactionKind::Opaque { .. } if !rules.allow_opaque => {
                Err(TransactionError::OpaqueNotAllowed)
            }
            TransactionKind::Opaque { .. } => Ok(()),
            TransactionKind::Reconfigure { change, .. } => {
                change.check_fields()?;
                match rules.allow_reconfiguration {
                    true => Ok(()),
                    false => Err(TransactionError::ReconfigurationNotEnabled),
                }
            }
        }
    }

    /// Verifies the signature alone (use `verify_batch` for many). An opaque payload carries
    /// none and passes: [`SignedTransaction::check_stateless`], which every path runs first,
    /// refuses it on a chain that does not take opaque payloads.
    pub fn verify_signature(&self) -> Result<(), TransactionError> {
        if self.is_opaque() {
            return Ok(());
        }
        Ok(self
            .transaction
            .sender
            .verify(Domain::Transaction, &self.id.0, &self.signature)?)
    }

    /// Verifies many signatures in one batch; returns the indices of the invalid ones. Opaque
    /// payloads are skipped, as in [`SignedTransaction::verify_signature`].
    pub fn verify_batch(transactions: &[SignedTransaction]) -> Vec<usize> {
        let signed: Vec<usize> = (0..transactions.len())
            .filter(|&i| transactions.get(i).is_some_and(|t| !t.is_opaque()))
            .collect();
        let of = |i: &usize| transactions.get(*i);
        let messages: Vec<&[u8]> = signed
            .iter()
            .filter_map(of)
            .map(|t| t.id.0.as_slice())
            .collect();
        let signatures: Vec<Signature> =
            signed.iter().filter_map(of).map(|t| t.signature).collect();
        let keys: Vec<PublicKey> = signed
            .iter()
            .filter_map(of)
            .map(|t| t.transaction.sender)
            .collect();
        if keys.is_empty() {
            return Vec::new();
        }
        match quorate_crypto::verify_batch(Domain::Transaction, &messages, &signatures, &keys) {
            Ok(()) => Vec::new(),
            Err(CryptoError::BatchInvalid { invalid }) => invalid
                .into_iter()
                .filter_map(|k| signed.get(k).copied())
                .collect(),
            Err(_) => signed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn transfer(seed: u64, nonce: u64, amount: u64) -> SignedTransaction {
        let key = SigningKey::from_seed_insecure(seed);
        let to = SigningKey::from_seed_insecure(seed + 1000)
            .public()
            .address();
        Transaction {
            chain_id: "test".into(),
            sender: key.public(),
            nonce,
            kind: TransactionKind::Transfer { to, amount },
        }
        .sign(&key)
        .unwrap()
    }

    #[test]
    fn signed_transaction_round_trips_and_verifies() {
        let tx = transfer(1, 0, 5);
        let bytes = codec::encode(&tx).unwrap();
        let back: SignedTransaction = codec::decode(&bytes).unwrap();
        assert_eq!(back, tx);
        assert_eq!(back.id(), tx.id());
        assert!(back.verify_signature().is_ok());
        assert!(back
            .check_stateless(&ChainRules::signed_only("test"))
            .is_ok());
        let json = serde_json::to_string(&tx).unwrap();
        let from_json: SignedTransaction = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, tx);
        // Encoded by reference, byte for byte what the owned wire form encodes to.
        let wire = WireTransaction {
            transaction: tx.transaction().clone(),
            signature: *tx.signature(),
        };
        assert_eq!(codec::encode(&tx).unwrap(), codec::encode(&wire).unwrap());
        assert_eq!(json, serde_json::to_string(&wire).unwrap());
    }

    #[test]
    fn tampering_is_caught() {
        let tx = transfer(1, 0, 5);
        let mut body = tx.transaction().clone();
        body.kind = TransactionKind::Transfer {
            to: SigningKey::from_seed_insecure(7).public().address(),
            amount: 500,
        };
        let forged = SignedTransaction::try_from(WireTransaction {
            transaction: body,
            signature: *tx.signature(),
        })
        .unwrap();
        assert!(forged.verify_signature().is_err());
        assert_eq!(
            SignedTransaction::verify_batch(&[tx.clone(), forged, tx]),
            vec![1]
        );
    }

    #[test]
    fn stateless_checks() {
        let tx = transfer(1, 0, 5);
        assert!(matches!(
            tx.check_stateless(&ChainRules::signed_only("other")),
            Err(TransactionError::WrongChain { .. })
        ));
        assert!(matches!(
            transfer(1, 0, 0).check_stateless(&ChainRules::signed_only("test")),
            Err(TransactionError::ZeroAmount)
        ));
    }

    /// An opaque payload: unsigned, so signature checks pass it (alone or in a batch with
    /// signed ones, whose bad signatures are still found at their own index), refused by
    /// `check_stateless` unless the chain allows opaque payloads; hex in JSON, bytes in the
    /// canonical encoding, and both round-trip.
    #[test]
    fn opaque_payloads_are_unsigned_and_refused_unless_allowed() {
        let sender = SigningKey::from_seed_insecure(5).public();
        let opaque = SignedTransaction::opaque("test", sender, 9, vec![1, 2, 255]).unwrap();
        assert!(opaque.is_opaque());
        assert!(opaque.verify_signature().is_ok());
        let mut forged = transfer(1, 0, 5);
        forged.signature = transfer(2, 0, 5).signature;
        assert_eq!(
            SignedTransaction::verify_batch(&[
                opaque.clone(),
                forged,
                transfer(3, 0, 1),
                opaque.clone()
            ]),
            vec![1]
        );
        assert!(SignedTransaction::verify_batch(std::slice::from_ref(&opaque)).is_empty());
        assert!(matches!(
            opaque.check_stateless(&ChainRules::signed_only("test")),
            Err(TransactionError::OpaqueNotAllowed)
        ));
        let bench = ChainRules {
            chain_id: "test".into(),
            allow_opaque: true,
            allow_reconfiguration: false,
        };
        assert!(opaque.check_stateless(&bench).is_ok());
        let json = serde_json::to_string(&opaque).unwrap();
        assert!(json.contains("\"0102ff\""), "{json}");
        assert_eq!(
            serde_json::from_str::<SignedTransaction>(&json).unwrap(),
            opaque
        );
        let bytes = codec::encode(&opaque).unwrap();
        let back: SignedTransaction = codec::decode(&bytes).unwrap();
        assert_eq!(back, opaque);
        assert_eq!(back.id(), opaque.id());
    }
}
