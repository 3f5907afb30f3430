//! Transactions: what an account signs, and the signed form that travels and is stored.

use crate::codec::{self, CodecError};
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
    #[error("bad signature: {0}")]
    Signature(#[from] CryptoError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl Transaction {
    /// The transaction's id: the hash of its canonical body. The signature covers exactly this.
    pub fn id(&self) -> Result<Digest, CodecError> {
        Ok(quorate_crypto::hash(
            Domain::Transaction,
            &codec::encode(self)?,
        ))
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireTransaction", into = "WireTransaction")]
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

impl From<SignedTransaction> for WireTransaction {
    fn from(signed: SignedTransaction) -> Self {
        WireTransaction {
            transaction: signed.transaction,
            signature: signed.signature,
        }
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

    /// The checks that need no state and no signature verification: chain id, sizes, amounts.
    pub fn check_stateless(&self, chain_id: &str) -> Result<(), TransactionError> {
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
        let bytes = codec::encode(self)?.len();
        if bytes > MAX_TRANSACTION_BYTES {
            return Err(TransactionError::TooLarge { bytes });
        }
        match tx.kind {
            TransactionKind::Transfer { amount: 0, .. } => Err(TransactionError::ZeroAmount),
            TransactionKind::Transfer { .. } => Ok(()),
        }
    }

    /// Verifies the signature alone (use `verify_batch` for many).
    pub fn verify_signature(&self) -> Result<(), TransactionError> {
        Ok(self
            .transaction
            .sender
            .verify(Domain::Transaction, &self.id.0, &self.signature)?)
    }

    /// Verifies many signatures in one batch; returns the indices of the invalid ones.
    pub fn verify_batch(transactions: &[SignedTransaction]) -> Vec<usize> {
        let messages: Vec<&[u8]> = transactions.iter().map(|t| t.id.0.as_slice()).collect();
        let signatures: Vec<Signature> = transactions.iter().map(|t| t.signature).collect();
        let keys: Vec<PublicKey> = transactions.iter().map(|t| t.transaction.sender).collect();
        match quorate_crypto::verify_batch(Domain::Transaction, &messages, &signatures, &keys) {
            Ok(()) => Vec::new(),
            Err(CryptoError::BatchInvalid { invalid }) => invalid,
            Err(_) => (0..transactions.len()).collect(),
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
        assert!(back.check_stateless("test").is_ok());
        let json = serde_json::to_string(&tx).unwrap();
        let from_json: SignedTransaction = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, tx);
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
            tx.check_stateless("other"),
            Err(TransactionError::WrongChain { .. })
        ));
        assert!(matches!(
            transfer(1, 0, 0).check_stateless("test"),
            Err(TransactionError::ZeroAmount)
        ));
    }
}
