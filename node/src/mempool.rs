//! The mempool: admitted transactions wait here, are sealed into batches that travel to every
//! validator, and batches wait (by digest) until a block that refers to them commits.
//!
//! Bounded: `max_transactions` counts pending transactions and those in uncommitted batches;
//! when it is reached, submissions are refused (RPC 503) instead of queueing without end.
//! Every signature is verified exactly once per node: on admission (RPC) or when a peer's batch
//! arrives (one ed25519 batch verification for the whole batch). Stored batches are trusted.

use quorate_crypto::{Address, Digest};
use quorate_genesis::MempoolConfig;
use quorate_ledger::{Account, Batch, SignedTransaction, TransactionError};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] TransactionError),
    #[error("nonce {nonce} is stale: the account's next nonce is {expected}")]
    StaleNonce { nonce: u64, expected: u64 },
    #[error("nonce {nonce} is too far ahead: the account's next nonce is {expected}, at most {max_gap} ahead is accepted")]
    FutureNonce {
        nonce: u64,
        expected: u64,
        max_gap: u64,
    },
    #[error("transaction {0} is already pending")]
    Duplicate(Digest),
    #[error("transaction {0} is already committed")]
    AlreadyCommitted(Digest),
    #[error("mempool is full ({0} transactions); retry later")]
    Full(usize),
    #[error("signature does not verify: {0}")]
    BadSignature(String),
}

struct ReadyBatch {
    digest: Digest,
    transactions: Vec<Digest>,
    /// (sender, nonce) of each transaction, in order: what a proposal needs to keep every
    /// sender's nonces in sequence across batches.
    nonces: Vec<(Address, u64)>,
    since: Instant,
}

pub struct Mempool {
    chain_id: String,
    config: MempoolConfig,
    max_batch: usize,
    /// Admitted transactions not yet sealed into a batch.
    pending: Vec<SignedTransaction>,
    /// Ids of pending transactions and of those in uncommitted batches.
    known: HashSet<Digest>,
    /// Per sender, one past the highest nonce admitted here (for the next nonce a client uses).
    next_nonce: HashMap<Address, u64>,
    /// Sealed batches (ours and peers') that no committed block refers to yet, oldest first.
    ready: VecDeque<ReadyBatch>,
    ready_digests: HashSet<Digest>,
    size: usize,
}

impl Mempool {
    pub fn new(chain_id: String, config: MempoolConfig, max_batch: usize) -> Self {
        Mempool {
            chain_id,
            config,
            max_batch: max_batch.max(1),
            pending: Vec::new(),
            known: HashSet::new(),
            next_nonce: HashMap::new(),
            ready: VecDeque::new(),
            ready_digests: HashSet::new(),
            size: 0,
        }
    }

    /// Transactions held (pending and in uncommitted batches).
    pub fn len(&self) -> usize {
        self.size
    }

    pub fn is_pending(&self, id: &Digest) -> bool {
        self.known.contains(id)
    }

    /// The nonce a client should use next for `address`, given its committed account.
    pub fn next_nonce(&self, address: &Address, committed: &Account) -> u64 {
        self.next_nonce
            .get(address)
            .copied()
            .unwrap_or(0)
            .max(committed.nonce)
    }

    /// Every check but the signature (which the caller runs off the async threads, then calls
    /// [`Mempool::insert`]). `committed` is the sender's committed account.
    pub fn precheck(&self, tx: &SignedTransaction, committed: &Account) -> Result<(), SubmitError> {
        tx.check_stateless(&self.chain_id)?;
        let nonce = tx.transaction().nonce;
        if nonce < committed.nonce {
            return Err(SubmitError::StaleNonce {
                nonce,
                expected: committed.nonce,
            });
        }
        if nonce > committed.nonce.saturating_add(self.config.max_nonce_gap) {
            return Err(SubmitError::FutureNonce {
                nonce,
                expected: committed.nonce,
                max_gap: self.config.max_nonce_gap,
            });
        }
        if self.known.contains(&tx.id()) {
            return Err(SubmitError::Duplicate(tx.id()));
        }
        if self.size >= self.config.max_transactions {
            return Err(SubmitError::Full(self.size));
        }
        Ok(())
    }

    /// Adds a verified transaction. Returns a sealed batch if the pending list reached a full
    /// batch.
    pub fn insert(&mut self, tx: SignedTransaction) -> Result<Option<Batch>, SubmitError> {
        if !self.known.insert(tx.id()) {
            return Err(SubmitError::Duplicate(tx.id()));
        }
        if self.size >= self.config.max_transactions {
            self.known.remove(&tx.id());
            return Err(SubmitError::Full(self.size));
        }
        let next = self.next_nonce.entry(tx.sender()).or_insert(0);
        *next = (*next).max(tx.transaction().nonce + 1);
        self.size += 1;
        self.pending.push(tx);
        if self.pending.len() >= self.max_batch {
            return Ok(self.seal());
        }
        Ok(None)
    }

    /// Seals the pending transactions into a batch (None if there are none). The caller stores
    /// and broadcasts it, then calls [`Mempool::add_ready`].
    pub fn seal(&mut self) -> Option<Batch> {
        if self.pending.is_empty() {
            return None;
        }
        let take = self.pending.len().min(self.max_batch);
        let transactions: Vec<SignedTransaction> = self.pending.drain(..take).collect();
        self.size -= transactions.len();
        Some(Batch { transactions })
    }

    /// Whether a batch can be taken in (peers' batches are refused when full).
    pub fn has_room(&self, transactions: usize) -> bool {
        self.size + transactions <= self.config.max_transactions
    }

    /// A stored, verified batch becomes available for proposals.
    pub fn add_ready(&mut self, digest: Digest, batch: &Batch) {
        if !self.ready_digests.insert(digest) {
            return;
        }
        let ids: Vec<Digest> = batch.transactions.iter().map(|t| t.id()).collect();
        // A transaction of ours that a peer batched too must not be batched again by us.
        let mut dropped = 0;
        self.pending.retain(|t| {
            let keep = !ids.contains(&t.id());
            if !keep {
                dropped += 1;
            }
            keep
        });
        self.size -= dropped;
        self.known.extend(ids.iter().copied());
        self.size += ids.len();
        self.ready.push_back(ReadyBatch {
            digest,
            transactions: ids,
            nonces: batch
                .transactions
                .iter()
                .map(|t| (t.sender(), t.transaction().nonce))
                .collect(),
            since: Instant::now(),
        });
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Batches for a new block, oldest first, skipping `exclude` (already in the chain being
    /// extended), up to `max_transactions` transactions in all.
    ///
    /// Batches reach a validator out of order (peers' batches are verified concurrently), and a
    /// sender's consecutive transactions may sit in different batches. A batch holding a
    /// transaction whose nonce is ahead of the sender's next one (given `nonce_of`, the nonces
    /// at the parent block, and the batches chosen before it) is held back while it waits for the
    /// batch with the missing nonce, for at most `patience`; after that it goes in anyway, and
    /// its gapped transactions fail as they would.
    pub fn propose(
        &self,
        exclude: &HashSet<Digest>,
        max_transactions: usize,
        nonce_of: impl Fn(&Address) -> u64,
        patience: Duration,
    ) -> Vec<Digest> {
        let mut out = Vec::new();
        let mut count = 0;
        let mut next: HashMap<Address, u64> = HashMap::new();
        let mut taken = vec![false; self.ready.len()];
        loop {
            let mut progress = false;
            for (i, batch) in self.ready.iter().enumerate() {
                if taken[i] || exclude.contains(&batch.digest) {
                    continue;
                }
                let mut trial: HashMap<Address, u64> = HashMap::new();
                let mut in_sequence = true;
                for (sender, nonce) in &batch.nonces {
                    let expected = match trial.get(sender).or_else(|| next.get(sender)) {
                        Some(n) => *n,
                        None => nonce_of(sender),
                    };
                    if *nonce > expected {
                        in_sequence = false;
                        break;
                    }
                    trial.insert(*sender, expected.max(nonce + 1));
                }
                if !in_sequence && batch.since.elapsed() < patience {
                    continue;
                }
                if count + batch.transactions.len() > max_transactions && !out.is_empty() {
                    return out;
                }
                if in_sequence {
                    next.extend(trial);
                }
                count += batch.transactions.len();
                out.push(batch.digest);
                taken[i] = true;
                progress = true;
            }
            if !progress {
                return out;
            }
        }
    }

    /// A block referring to `batches` committed: they leave the mempool.
    pub fn on_commit(&mut self, batches: &[Digest]) {
        let committed: HashSet<&Digest> = batches.iter().collect();
        let size = &mut self.size;
        let known = &mut self.known;
        let ready_digests = &mut self.ready_digests;
        self.ready.retain(|batch| {
            if !committed.contains(&batch.digest) {
                return true;
            }
            ready_digests.remove(&batch.digest);
            for id in &batch.transactions {
                known.remove(id);
            }
            *size -= batch.transactions.len();
            false
        });
    }

    /// Forgets per-sender nonce hints at or below the committed nonce (keeps the map bounded
    /// by the senders with pending transactions).
    pub fn prune_nonces(&mut self, committed: impl Fn(&Address) -> u64) {
        self.next_nonce
            .retain(|address, next| *next > committed(address));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_crypto::SigningKey;
    use quorate_ledger::{Transaction, TransactionKind};

    fn tx(key: &SigningKey, nonce: u64) -> SignedTransaction {
        Transaction {
            chain_id: "c".into(),
            sender: key.public(),
            nonce,
            kind: TransactionKind::Transfer {
                to: key.public().address(),
                amount: 1,
            },
        }
        .sign(key)
        .unwrap()
    }

    #[test]
    fn bounded_deduplicated_and_nonce_checked() {
        let key = SigningKey::from_seed_insecure(1);
        let config = MempoolConfig {
            max_transactions: 3,
            max_nonce_gap: 10,
        };
        let mut pool = Mempool::new("c".into(), config, 2);
        let committed = Account {
            balance: 10,
            nonce: 5,
        };
        assert!(matches!(
            pool.precheck(&tx(&key, 4), &committed),
            Err(SubmitError::StaleNonce { .. })
        ));
        assert!(matches!(
            pool.precheck(&tx(&key, 16), &committed),
            Err(SubmitError::FutureNonce { .. })
        ));
        pool.precheck(&tx(&key, 5), &committed).unwrap();
        assert!(pool.insert(tx(&key, 5)).unwrap().is_none());
        assert!(matches!(
            pool.precheck(&tx(&key, 5), &committed),
            Err(SubmitError::Duplicate(_))
        ));
        let batch = pool.insert(tx(&key, 6)).unwrap().expect("a full batch");
        assert_eq!(batch.transactions.len(), 2);
        pool.add_ready(batch.digest(), &batch);
        assert_eq!(pool.next_nonce(&key.public().address(), &committed), 7);
        pool.insert(tx(&key, 7)).unwrap();
        assert!(matches!(
            pool.precheck(&tx(&key, 8), &committed),
            Err(SubmitError::Full(3))
        ));
        assert_eq!(
            pool.propose(&HashSet::new(), 100, |_| 0, Duration::ZERO),
            vec![batch.digest()]
        );
        pool.on_commit(&[batch.digest()]);
        assert_eq!(pool.len(), 1);
        assert!(!pool.is_pending(&tx(&key, 5).id()));
        pool.precheck(&tx(&key, 8), &committed).unwrap();
    }

    #[test]
    fn proposals_keep_each_senders_nonces_in_sequence_across_batches() {
        let key = SigningKey::from_seed_insecure(2);
        let mut pool = Mempool::new("c".into(), MempoolConfig::default(), 2);
        let early = Batch {
            transactions: vec![tx(&key, 0), tx(&key, 1)],
        };
        let late = Batch {
            transactions: vec![tx(&key, 2), tx(&key, 3)],
        };
        let gapped = Batch {
            transactions: vec![tx(&key, 9)],
        };
        // They become ready out of order.
        pool.add_ready(gapped.digest(), &gapped);
        pool.add_ready(late.digest(), &late);
        pool.add_ready(early.digest(), &early);
        let patient = Duration::from_secs(3600);
        assert_eq!(
            pool.propose(&HashSet::new(), 100, |_| 0, patient),
            vec![early.digest(), late.digest()]
        );
        // With nonces 0..=1 already in the chain, the later batch alone is in sequence.
        let exclude: HashSet<Digest> = [early.digest()].into();
        assert_eq!(
            pool.propose(&exclude, 100, |_| 2, patient),
            vec![late.digest()]
        );
        // Past its patience a gapped batch goes in anyway (its transaction will fail).
        assert_eq!(
            pool.propose(&HashSet::new(), 100, |_| 0, Duration::ZERO),
            vec![gapped.digest(), late.digest(), early.digest()]
        );
    }
}
