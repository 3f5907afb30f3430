//! The mempool: admitted transactions wait here, are sealed into batches that travel to every
//! validator, and batches wait (by digest) until a block that refers to them commits.
//!
//! Bounded: `max_transactions` counts pending transactions and those in uncommitted batches;
//! when it is reached, submissions are refused (RPC 503) instead of queueing without end; each
//! account holds at most `max_pending_per_account` of them (RPC 429 beyond).
//! Every signature is verified exactly once per node: on admission (RPC) or when a peer's batch
//! arrives (one ed25519 batch verification for the whole batch). Stored batches are trusted.
//!
//! Admission follows the ledger's nonce rule (see [`senders`]): a nonce already held is refused,
//! and so is a transfer that the sender's committed balance, less what its held transactions
//! will spend, cannot cover. Failed receipts then come only from races between validators or
//! from a leader's choice.
//!
//! Opaque payloads (bench chains only: `check_stateless` refuses them elsewhere) have no sender
//! to speak for: they bypass the per-sender views and count only against `max_transactions`.

mod senders;

use quorate_crypto::{Address, Digest, DigestSet};
use quorate_genesis::MempoolConfig;
use quorate_ledger::{
    Account, Batch, ChainRules, SignedTransaction, StateReadError, StateView, TransactionError,
};
use senders::{Entry, SenderView};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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
    #[error("nonce {nonce} is taken by pending transaction {pending}")]
    NonceTaken { nonce: u64, pending: Digest },
    #[error("amount {amount} exceeds the available balance {available} (committed balance {balance} less pending spends {pending})")]
    InsufficientBalance {
        amount: u64,
        available: u64,
        balance: u64,
        pending: u64,
    },
    #[error("the account already has {held} pending transactions (at most {max}); retry once some commit")]
    TooManyPending { held: usize, max: usize },
    #[error("transaction {0} is already pending")]
    Duplicate(Digest),
    #[error("transaction {0} is already committed")]
    AlreadyCommitted(Digest),
    #[error("mempool is full ({0} transactions); retry later")]
    Full(usize),
    #[error("signature does not verify: {0}")]
    BadSignature(String),
    /// The committed state could not be read (the node's disk, not the transaction).
    #[error(transparent)]
    State(#[from] StateReadError),
}

struct ReadyBatch {
    digest: Digest,
    transactions: Vec<Digest>,
    /// (sender, nonce) of each transaction, in order: what a proposal needs to keep every
    /// sender's nonces in sequence across batches. `None` for an opaque payload.
    nonces: Vec<Option<(Address, u64)>>,
    since: Instant,
    /// When it arrived here or this node last pushed it again ([`Mempool::due_for_repush`]).
    pushed: Instant,
}

pub struct Mempool {
    rules: ChainRules,
    config: MempoolConfig,
    max_batch: usize,
    /// Admitted transactions not yet sealed into a batch.
    pending: Vec<SignedTransaction>,
    /// Ids of pending transactions and of those in uncommitted batches.
    known: DigestSet,
    /// Per sender, its held transactions by nonce (pending, and in uncommitted batches).
    senders: HashMap<Address, SenderView>,
    /// Sealed batches (ours and peers') that no committed block refers to yet, oldest first.
    ready: VecDeque<ReadyBatch>,
    ready_digests: DigestSet,
    size: usize,
    /// Unsealed transactions dropped because they could no longer apply.
    evicted_total: u64,
}

impl Mempool {
    pub fn new(rules: ChainRules, config: MempoolConfig, max_batch: usize) -> Self {
        Mempool {
            rules,
            config,
            max_batch: max_batch.max(1),
            pending: Vec::new(),
            known: DigestSet::default(),
            senders: HashMap::new(),
            ready: VecDeque::new(),
            ready_digests: DigestSet::default(),
            size: 0,
            evicted_total: 0,
        }
    }

    /// The most transactions a batch may hold (the genesis `max_batch_transactions`).
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Transactions held (pending and in uncommitted batches).
    pub fn len(&self) -> usize {
        self.size
    }

    /// Unsealed transactions evicted so far because they could no longer apply.
    pub fn evicted_total(&self) -> u64 {
        self.evicted_total
    }

    pub fn is_pending(&self, id: &Digest) -> bool {
        self.known.contains(id)
    }

    /// The nonce a client should use next for `address`: past every held transaction that will
    /// consume its nonce, and no further.
    pub fn next_nonce(
        &self,
        address: &Address,
        state: &dyn StateView,
    ) -> Result<u64, StateReadError> {
        let committed = state.account(address)?;
        Ok(match self.senders.get(address) {
            Some(view) => view.run(&committed).next_nonce,
            None => committed.nonce,
        })
    }

    /// Every check but the signature (which the caller runs off the async threads, then calls
    /// [`Mempool::insert`], which checks again). `state` is the committed state.
    pub fn precheck(
        &self,
        tx: &SignedTransaction,
        state: &dyn StateView,
    ) -> Result<(), SubmitError> {
        tx.check_stateless(&self.rules)?;
        if tx.is_opaque() {
            return self.admissible_opaque(tx);
        }
        self.admissible(tx, &state.account(&tx.sender())?)
    }

    fn admissible_opaque(&self, tx: &SignedTransaction) -> Result<(), SubmitError> {
        if self.known.contains(&tx.id()) {
            return Err(SubmitError::Duplicate(tx.id()));
        }
        if self.size >= self.config.max_transactions {
            return Err(SubmitError::Full(self.size));
        }
        Ok(())
    }

    fn admissible(&self, tx: &SignedTransaction, committed: &Account) -> Result<(), SubmitError> {
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
        let entry = Entry::of(tx, false);
        let view = self.senders.get(&tx.sender());
        if let Some(view) = view {
            if let Some(held) = view.by_nonce.get(&nonce) {
                return Err(SubmitError::NonceTaken {
                    nonce,
                    pending: held.id,
                });
            }
            let held = view.by_nonce.len();
            if held >= self.config.max_pending_per_account {
                return Err(SubmitError::TooManyPending {
                    held,
                    max: self.config.max_pending_per_account,
                });
            }
        }
        let available = view.map_or(committed.balance, |view| view.run(committed).available);
        if entry.need > available {
            return Err(SubmitError::InsufficientBalance {
                amount: entry.need,
                available,
                balance: committed.balance,
                pending: committed.balance - available,
            });
        }
        if self.size >= self.config.max_transactions {
            return Err(SubmitError::Full(self.size));
        }
        Ok(())
    }

    /// Adds a verified transaction after checking it again against the committed state (others
    /// may have been admitted since its precheck). Returns a sealed batch if the pending list
    /// reached a full batch.
    pub fn insert(
        &mut self,
        tx: SignedTransaction,
        state: &dyn StateView,
    ) -> Result<Option<Batch>, SubmitError> {
        if tx.is_opaque() {
            // `precheck` ran the stateless checks (which refuse opaque payloads where the
            // chain does not allow them), as for transfers.
            self.admissible_opaque(&tx)?;
            self.known.insert(tx.id());
            self.size += 1;
            self.pending.push(tx);
            return Ok((self.pending.len() >= self.max_batch)
                .then(|| self.seal())
                .flatten());
        }
        let committed = state.account(&tx.sender())?;
        self.admissible(&tx, &committed)?;
        let sender = tx.sender();
        let view = self.senders.entry(sender).or_default();
        view.by_nonce
            .insert(tx.transaction().nonce, Entry::of(&tx, false));
        self.known.insert(tx.id());
        self.size += 1;
        self.pending.push(tx);
        // Filling a gap may bring in a held transaction that can no longer apply.
        self.evict_what_cannot_apply(&sender, &committed);
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

    /// A stored, verified batch becomes available for proposals. Its transactions are sealed:
    /// they will consume their nonces when a block carries them, so the senders' views count
    /// them, and an unsealed transaction of ours with the same nonce is evicted.
    pub fn add_ready(&mut self, digest: Digest, batch: &Batch) {
        if !self.ready_digests.insert(digest) {
            return;
        }
        let ids: Vec<Digest> = batch.transactions.iter().map(|t| t.id()).collect();
        // Ours, unsealed, and now in this batch (ours or a peer's): it moves into the batch.
        let mut moved = HashSet::new();
        // Ours, unsealed, at a nonce this batch takes with another transaction: it cannot apply.
        let mut displaced = HashSet::new();
        for tx in batch.transactions.iter().filter(|tx| !tx.is_opaque()) {
            let nonce = tx.transaction().nonce;
            let view = self.senders.entry(tx.sender()).or_default();
            match view.by_nonce.get(&nonce) {
                Some(held) if held.sealed => continue, // two sealed at one nonce: one will fail
                Some(held) if held.id == tx.id() => moved.insert(held.id),
                Some(held) => displaced.insert(held.id),
                None => true,
            };
            view.by_nonce.insert(nonce, Entry::of(tx, true));
        }
        self.drop_pending(&moved, false);
        self.drop_pending(&displaced, true);
        self.known.extend(ids.iter().copied());
        self.size += ids.len();
        self.ready.push_back(ReadyBatch {
            digest,
            transactions: ids,
            nonces: batch
                .transactions
                .iter()
                .map(|t| (!t.is_opaque()).then(|| (t.sender(), t.transaction().nonce)))
                .collect(),
            since: Instant::now(),
            pushed: Instant::now(),
        });
    }

    /// Ready batches that have waited `older_than` since they arrived or were last pushed again,
    /// oldest first, at most `max`; each is marked pushed now. On an idle chain a batch that only
    /// some validators hold (the others' mempools were full, or a Byzantine validator pushed it
    /// selectively) would otherwise wait for ever: its holders time the leader out, but too few
    /// of them for a timeout certificate. Pushed again, it reaches the leader.
    pub fn due_for_repush(&mut self, older_than: Duration, max: usize) -> Vec<Digest> {
        let now = Instant::now();
        let mut due = Vec::new();
        for batch in self.ready.iter_mut() {
            if due.len() >= max {
                break;
            }
            if now.duration_since(batch.pushed) >= older_than {
                batch.pushed = now;
                due.push(batch.digest);
            }
        }
        due
    }

    /// Whether the batch `digest` is offered for proposals.
    pub fn is_ready(&self, digest: &Digest) -> bool {
        self.ready_digests.contains(digest)
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
                // A batch larger than a block can never be proposed (ingest refuses such
                // batches; this keeps one from blocking every proposal if it got in anyway).
                if taken[i]
                    || exclude.contains(&batch.digest)
                    || batch.transactions.len() > max_transactions
                {
                    continue;
                }
                let mut trial: HashMap<Address, u64> = HashMap::new();
                let mut in_sequence = true;
                for (sender, nonce) in batch.nonces.iter().flatten() {
                    let expected = match trial.get(sender).or_else(|| next.get(sender)) {
                        Some(n) => *n,
                        None => nonce_of(sender),
                    };
                    if *nonce > expected {
                        in_sequence = false;
                        break;
                    }
                    trial.insert(*sender, expected.max(nonce.saturating_add(1)));
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

    /// A block referring to `batches` committed, leaving the accounts it touched as in
    /// `changes`: its batches leave the mempool, and so does every held transaction whose nonce
    /// is now taken or that can no longer apply.
    pub fn on_commit(&mut self, batches: &[Digest], changes: &BTreeMap<Address, Account>) {
        let committed: HashSet<&Digest> = batches.iter().collect();
        let size = &mut self.size;
        let known = &mut self.known;
        let ready_digests = &mut self.ready_digests;
        let senders = &mut self.senders;
        self.ready.retain(|batch| {
            if !committed.contains(&batch.digest) {
                return true;
            }
            ready_digests.remove(&batch.digest);
            for (id, entry) in batch.transactions.iter().zip(&batch.nonces) {
                known.remove(id);
                let Some((sender, nonce)) = entry else {
                    continue;
                };
                if let Some(view) = senders.get_mut(sender) {
                    if view.by_nonce.get(nonce).is_some_and(|held| held.id == *id) {
                        view.by_nonce.remove(nonce);
                    }
                }
            }
            *size -= batch.transactions.len();
            false
        });
        for (address, account) in changes {
            let Some(view) = self.senders.get_mut(address) else {
                continue;
            };
            let taken: HashSet<Digest> = view.drop_below(account.nonce).into_iter().collect();
            self.drop_pending(&taken, true);
            self.evict_what_cannot_apply(address, account);
        }
        self.senders.retain(|_, view| !view.by_nonce.is_empty());
    }

    /// Evicts the unsealed transactions of `sender` that can no longer apply, given its committed
    /// account: each one that its balance, after the transactions before it, cannot cover.
    fn evict_what_cannot_apply(&mut self, sender: &Address, committed: &Account) {
        loop {
            let Some(view) = self.senders.get_mut(sender) else {
                return;
            };
            let Some(nonce) = view.run(committed).cannot_apply else {
                return;
            };
            let Some(entry) = view.by_nonce.remove(&nonce) else {
                return;
            };
            self.drop_pending(&HashSet::from([entry.id]), true);
        }
    }

    /// Removes unsealed transactions by id. `evicted`: they can no longer apply (counted),
    /// rather than moved into a batch.
    fn drop_pending(&mut self, ids: &HashSet<Digest>, evicted: bool) {
        if ids.is_empty() {
            return;
        }
        let before = self.pending.len();
        self.pending.retain(|tx| !ids.contains(&tx.id()));
        let dropped = before - self.pending.len();
        self.size -= dropped;
        if evicted {
            for id in ids {
                self.known.remove(id);
            }
            self.evicted_total += dropped as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_crypto::SigningKey;
    use quorate_ledger::{Transaction, TransactionKind};

    /// Committed state for the tests: one account per address.
    #[derive(Default)]
    struct Committed(HashMap<Address, Account>);

    impl StateView for Committed {
        fn account(&self, address: &Address) -> Result<Account, StateReadError> {
            Ok(self.0.get(address).copied().unwrap_or_default())
        }
    }

    fn committed(key: &SigningKey, balance: u64, nonce: u64) -> Committed {
        Committed(HashMap::from([(
            key.public().address(),
            Account { balance, nonce },
        )]))
    }

    fn transfer(key: &SigningKey, nonce: u64, to: Address, amount: u64) -> SignedTransaction {
        Transaction {
            chain_id: "c".into(),
            sender: key.public(),
            nonce,
            kind: TransactionKind::Transfer { to, amount },
        }
        .sign(key)
        .unwrap()
    }

    /// A transfer of 1 to the sender itself.
    fn tx(key: &SigningKey, nonce: u64) -> SignedTransaction {
        transfer(key, nonce, key.public().address(), 1)
    }

    fn other() -> Address {
        SigningKey::from_seed_insecure(99).public().address()
    }

    #[test]
    fn bounded_deduplicated_and_nonce_checked() {
        let key = SigningKey::from_seed_insecure(1);
        let config = MempoolConfig {
            max_transactions: 3,
            max_nonce_gap: 10,
            max_pending_per_account: 100,
        };
        let mut pool = Mempool::new(ChainRules::signed_only("c"), config, 2);
        let state = committed(&key, 10, 5);
        assert!(matches!(
            pool.precheck(&tx(&key, 4), &state),
            Err(SubmitError::StaleNonce { .. })
        ));
        assert!(matches!(
            pool.precheck(&tx(&key, 16), &state),
            Err(SubmitError::FutureNonce { .. })
        ));
        pool.precheck(&tx(&key, 5), &state).unwrap();
        assert!(pool.insert(tx(&key, 5), &state).unwrap().is_none());
        assert!(matches!(
            pool.precheck(&tx(&key, 5), &state),
            Err(SubmitError::Duplicate(_))
        ));
        let batch = pool
            .insert(tx(&key, 6), &state)
            .unwrap()
            .expect("a full batch");
        assert_eq!(batch.transactions.len(), 2);
        pool.add_ready(batch.digest(), &batch);
        assert_eq!(pool.next_nonce(&key.public().address(), &state).unwrap(), 7);
        pool.insert(tx(&key, 7), &state).unwrap();
        assert!(matches!(
            pool.precheck(&tx(&key, 8), &state),
            Err(SubmitError::Full(3))
        ));
        assert_eq!(
            pool.propose(&HashSet::new(), 100, |_| 0, Duration::ZERO),
            vec![batch.digest()]
        );
        let after = committed(&key, 10, 7);
        pool.on_commit(&[batch.digest()], &after.0.clone().into_iter().collect());
        assert_eq!(pool.len(), 1);
        assert!(!pool.is_pending(&tx(&key, 5).id()));
        assert_eq!(pool.next_nonce(&key.public().address(), &after).unwrap(), 8);
        pool.precheck(&tx(&key, 8), &after).unwrap();
    }

    /// Opaque payloads: refused unless the chain allows them; where it does, no nonce, balance
    /// or per-account rule applies (they spend nothing and have no sender to speak for), but
    /// the mempool's bound and deduplication do, and a batch mixing them with transfers keeps
    /// the transfers' nonces in sequence and leaves the mempool on commit.
    #[test]
    fn opaque_payloads_bypass_sender_rules_but_not_the_bound() {
        let key = SigningKey::from_seed_insecure(4);
        let opaque = |nonce: u64| {
            SignedTransaction::opaque("c", key.public(), nonce, vec![nonce as u8; 64]).unwrap()
        };
        let state = committed(&key, 0, 0); // no balance at all
        let strict = Mempool::new(ChainRules::signed_only("c"), MempoolConfig::default(), 3);
        assert!(matches!(
            strict.precheck(&opaque(0), &state),
            Err(SubmitError::Invalid(TransactionError::OpaqueNotAllowed))
        ));
        let config = MempoolConfig {
            max_transactions: 4,
            max_pending_per_account: 1,
            ..MempoolConfig::default()
        };
        let rules = ChainRules {
            chain_id: "c".into(),
            allow_opaque: true,
            allow_reconfiguration: false,
        };
        let mut pool = Mempool::new(rules, config, 3);
        // The same nonce twice, far ahead, past the per-account limit: all fine when opaque.
        pool.precheck(&opaque(500), &state).unwrap();
        assert!(pool.insert(opaque(500), &state).unwrap().is_none());
        assert!(matches!(
            pool.precheck(&opaque(500), &state),
            Err(SubmitError::Duplicate(_))
        ));
        assert!(pool.insert(opaque(0), &state).unwrap().is_none());
        let funded = committed(&key, 10, 0);
        let batch = pool
            .insert(tx(&key, 0), &funded)
            .unwrap()
            .expect("a full batch");
        pool.add_ready(batch.digest(), &batch);
        assert_eq!(
            pool.next_nonce(&key.public().address(), &funded).unwrap(),
            1
        );
        pool.insert(opaque(1), &state).unwrap();
        assert!(matches!(
            pool.precheck(&opaque(2), &state),
            Err(SubmitError::Full(4))
        ));
        assert_eq!(
            pool.propose(&HashSet::new(), 100, |_| 0, Duration::ZERO),
            vec![batch.digest()]
        );
        let after = committed(&key, 10, 1);
        pool.on_commit(&[batch.digest()], &after.0.clone().into_iter().collect());
        assert_eq!(pool.len(), 1);
        assert!(!pool.is_pending(&opaque(500).id()));
        pool.precheck(&opaque(2), &state).unwrap();
    }

    #[test]
    fn admission_refuses_taken_nonces_overdrafts_and_too_many_per_account() {
        let key = SigningKey::from_seed_insecure(3);
        let config = MempoolConfig {
            max_pending_per_account: 3,
            ..MempoolConfig::default()
        };
        let mut pool = Mempool::new(ChainRules::signed_only("c"), config, 100);
        let state = committed(&key, 10, 0);
        pool.insert(transfer(&key, 0, other(), 6), &state).unwrap();
        assert!(matches!(
            pool.precheck(&transfer(&key, 0, other(), 1), &state),
            Err(SubmitError::NonceTaken { nonce: 0, .. })
        ));
        assert!(matches!(
            pool.insert(transfer(&key, 1, other(), 5), &state),
            Err(SubmitError::InsufficientBalance {
                amount: 5,
                available: 4,
                balance: 10,
                pending: 6
            })
        ));
        // A gapped transfer is held to the same available balance.
        assert!(matches!(
            pool.precheck(&transfer(&key, 7, other(), 5), &state),
            Err(SubmitError::InsufficientBalance { .. })
        ));
        pool.insert(transfer(&key, 1, other(), 4), &state).unwrap();
        // All 10 are spoken for: even a transfer to itself needs its amount.
        assert!(matches!(
            pool.insert(tx(&key, 2), &state),
            Err(SubmitError::InsufficientBalance { available: 0, .. })
        ));
        assert_eq!(pool.next_nonce(&key.public().address(), &state).unwrap(), 2);
        // An account with no balance cannot get anything in.
        let broke = SigningKey::from_seed_insecure(4);
        assert!(matches!(
            pool.precheck(&transfer(&broke, 0, other(), 1), &Committed::default()),
            Err(SubmitError::InsufficientBalance { available: 0, .. })
        ));
        let config = MempoolConfig {
            max_pending_per_account: 2,
            ..MempoolConfig::default()
        };
        let mut pool = Mempool::new(ChainRules::signed_only("c"), config, 100);
        pool.insert(tx(&key, 0), &state).unwrap();
        pool.insert(tx(&key, 1), &state).unwrap();
        assert!(matches!(
            pool.precheck(&tx(&key, 2), &state),
            Err(SubmitError::TooManyPending { held: 2, max: 2 })
        ));
    }

    #[test]
    fn a_gap_filled_evicts_an_unsealed_transaction_that_can_no_longer_apply() {
        let key = SigningKey::from_seed_insecure(5);
        let address = key.public().address();
        let state = committed(&key, 10, 0);
        let mut pool = Mempool::new(ChainRules::signed_only("c"), MempoolConfig::default(), 100);
        let gapped = transfer(&key, 1, other(), 7);
        pool.insert(gapped.clone(), &state).unwrap(); // nothing before it: 7 of 10 is free
        assert_eq!(pool.next_nonce(&address, &state).unwrap(), 0);
        pool.insert(transfer(&key, 0, other(), 7), &state).unwrap();
        // Nonce 0 leaves 3: the unsealed nonce-1 transfer cannot apply and is evicted.
        assert!(!pool.is_pending(&gapped.id()));
        assert_eq!(pool.evicted_total(), 1);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.next_nonce(&address, &state).unwrap(), 1);
        let batch = pool.seal().unwrap();
        assert_eq!(batch.transactions.len(), 1);
    }

    #[test]
    fn a_sealed_transaction_that_will_fail_still_takes_its_nonce() {
        let key = SigningKey::from_seed_insecure(6);
        let address = key.public().address();
        let state = committed(&key, 10, 0);
        let mut pool = Mempool::new(ChainRules::signed_only("c"), MempoolConfig::default(), 100);
        pool.insert(transfer(&key, 1, other(), 7), &state).unwrap();
        let sealed = pool.seal().unwrap();
        pool.add_ready(sealed.digest(), &sealed);
        pool.insert(transfer(&key, 0, other(), 7), &state).unwrap();
        // The sealed nonce-1 transfer will fail for want of funds, but it consumes nonce 1.
        assert_eq!(pool.evicted_total(), 0);
        assert_eq!(pool.next_nonce(&address, &state).unwrap(), 2);
        assert!(matches!(
            pool.precheck(&transfer(&key, 2, other(), 4), &state),
            Err(SubmitError::InsufficientBalance { available: 3, .. })
        ));
    }

    #[test]
    fn a_commit_evicts_what_its_nonces_took_and_what_it_left_unaffordable() {
        let key = SigningKey::from_seed_insecure(7);
        let address = key.public().address();
        let state = committed(&key, 10, 0);
        let mut pool = Mempool::new(ChainRules::signed_only("c"), MempoolConfig::default(), 100);
        let mine = transfer(&key, 0, other(), 2);
        let next = transfer(&key, 1, other(), 5);
        pool.insert(mine.clone(), &state).unwrap();
        pool.insert(next.clone(), &state).unwrap();
        assert_eq!(pool.next_nonce(&address, &state).unwrap(), 2);
        // Another validator's transaction with nonce 0 committed first and spent 9.
        let after = committed(&key, 1, 1);
        pool.on_commit(&[], &after.0.clone().into_iter().collect());
        assert!(!pool.is_pending(&mine.id()));
        assert!(!pool.is_pending(&next.id()));
        assert_eq!(pool.evicted_total(), 2);
        assert_eq!(pool.len(), 0);
        assert_eq!(pool.next_nonce(&address, &after).unwrap(), 1);
        assert!(pool.seal().is_none());
    }

    #[test]
    fn a_peers_batch_takes_the_place_of_our_unsealed_transaction_at_its_nonce() {
        let key = SigningKey::from_seed_insecure(8);
        let state = committed(&key, 10, 0);
        let mut pool = Mempool::new(ChainRules::signed_only("c"), MempoolConfig::default(), 100);
        let mine = transfer(&key, 0, other(), 2);
        pool.insert(mine.clone(), &state).unwrap();
        let theirs = Batch {
            transactions: vec![transfer(&key, 0, other(), 3)],
        };
        pool.add_ready(theirs.digest(), &theirs);
        assert!(!pool.is_pending(&mine.id()));
        assert_eq!(pool.len(), 1);
        assert!(pool.seal().is_none());
        assert_eq!(pool.next_nonce(&key.public().address(), &state).unwrap(), 1);
    }

    #[test]
    fn a_batch_larger_than_a_block_never_blocks_a_proposal() {
        let key = SigningKey::from_seed_insecure(9);
        let other_key = SigningKey::from_seed_insecure(10);
        let mut pool = Mempool::new(ChainRules::signed_only("c"), MempoolConfig::default(), 2);
        let huge = Batch {
            transactions: (0..5).map(|n| tx(&key, n)).collect(),
        };
        let fits = Batch {
            transactions: vec![tx(&other_key, 0)],
        };
        pool.add_ready(huge.digest(), &huge);
        pool.add_ready(fits.digest(), &fits);
        assert_eq!(
            pool.propose(&HashSet::new(), 4, |_| 0, Duration::ZERO),
            vec![fits.digest()]
        );
    }

    #[test]
    fn proposals_keep_each_senders_nonces_in_sequence_across_batches() {
        let key = SigningKey::from_seed_insecure(2);
        let mut pool = Mempool::new(ChainRules::signed_only("c"), MempoolConfig::default(), 2);
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

    #[test]
    fn a_ready_batch_is_due_for_another_push_once_per_period() {
        let key = SigningKey::from_seed_insecure(9);
        let state = committed(&key, 10, 0);
        let mut pool = Mempool::new(ChainRules::signed_only("c"), MempoolConfig::default(), 100);
        pool.insert(transfer(&key, 0, other(), 1), &state).unwrap();
        let sealed = pool.seal().unwrap();
        pool.add_ready(sealed.digest(), &sealed);
        assert!(pool.due_for_repush(Duration::from_secs(60), 8).is_empty());
        assert_eq!(
            pool.due_for_repush(Duration::ZERO, 8),
            vec![sealed.digest()]
        );
        assert!(pool.due_for_repush(Duration::from_secs(60), 8).is_empty());
        assert!(pool.due_for_repush(Duration::ZERO, 0).is_empty());
    }
}
