//! Account state, its incremental commitment, and deterministic execution of transactions.
//!
//! The state root is a lattice (multiset) hash (Bellare–Micciancio's AdHash in the LtHash
//! form, as used by Solana's accounts hash): every account `(address, balance, nonce)` maps to a
//! vector of 1024 16-bit lanes (BLAKE3 extendable output); the accumulator is their lane-wise
//! sum modulo 2^16 and the root is the hash of the accumulator. Changing an account subtracts its
//! old vector and adds the new one, so a block costs O(accounts it touches), never a rescan.
//! It commits to the whole state but gives no membership proofs (a Merkle tree would).

use crate::{ChainRules, SignedTransaction, TransactionKind};
use quorate_crypto::{Address, Digest, Domain};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Lanes of the state accumulator.
pub const ACCUMULATOR_LANES: usize = 1024;

/// One account's state. An account that never received funds is `Account::default()` and is
/// not part of the state (it contributes nothing to the root).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: u64,
    /// The nonce its next transaction must carry.
    pub nonce: u64,
}

impl Account {
    pub fn is_empty(&self) -> bool {
        *self == Account::default()
    }
}

/// The lattice-hash accumulator over all accounts.
#[derive(Clone, PartialEq, Eq)]
pub struct StateAccumulator(Box<[u16; ACCUMULATOR_LANES]>);

impl std::fmt::Debug for StateAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateAccumulator({})", self.root())
    }
}

impl Default for StateAccumulator {
    fn default() -> Self {
        StateAccumulator(Box::new([0; ACCUMULATOR_LANES]))
    }
}

fn leaf(address: &Address, account: &Account) -> [u16; ACCUMULATOR_LANES] {
    let mut input = [0u8; 20 + 16];
    for (slot, byte) in input.iter_mut().zip(
        address
            .0
            .iter()
            .chain(&account.balance.to_le_bytes())
            .chain(&account.nonce.to_le_bytes()),
    ) {
        *slot = *byte;
    }
    let mut bytes = [0u8; ACCUMULATOR_LANES * 2];
    quorate_crypto::hash_xof(Domain::StateLeaf, &input, &mut bytes);
    let mut lanes = [0u16; ACCUMULATOR_LANES];
    for (lane, pair) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
        if let [low, high] = pair {
            *lane = u16::from_le_bytes([*low, *high]);
        }
    }
    lanes
}

impl StateAccumulator {
    /// Replaces `old` by `new` for `address` (empty accounts are absent from the state).
    pub fn update(&mut self, address: &Address, old: &Account, new: &Account) {
        if old == new {
            return;
        }
        if !old.is_empty() {
            for (lane, value) in self.0.iter_mut().zip(leaf(address, old)) {
                *lane = lane.wrapping_sub(value);
            }
        }
        if !new.is_empty() {
            for (lane, value) in self.0.iter_mut().zip(leaf(address, new)) {
                *lane = lane.wrapping_add(value);
            }
        }
    }

    /// The state root: a hash of the accumulator.
    pub fn root(&self) -> Digest {
        quorate_crypto::hash(Domain::StateRoot, &self.to_bytes())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|lane| lane.to_le_bytes()).collect()
    }

    /// Parses the encoding of [`StateAccumulator::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ACCUMULATOR_LANES * 2 {
            return None;
        }
        let mut lanes = Box::new([0u16; ACCUMULATOR_LANES]);
        for (lane, pair) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            if let [low, high] = pair {
                *lane = u16::from_le_bytes([*low, *high]);
            }
        }
        Some(StateAccumulator(lanes))
    }
}

/// Why a transaction in a committed block did not apply. Every node reaches the same verdict.
/// (Externally tagged: the canonical encoding cannot decode internally tagged enums.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxFailure {
    /// The nonce is not the sender's next one (stale, replayed, or ahead of a gap).
    BadNonce {
        expected: u64,
        actual: u64,
    },
    InsufficientBalance {
        balance: u64,
        amount: u64,
    },
    /// The transfer would overflow the receiver's balance.
    Overflow,
    /// The transaction is for another chain.
    WrongChain,
    ZeroAmount,
    /// An opaque payload on a chain that does not take them (admission refuses these; this
    /// verdict is the executor's own check).
    OpaqueNotAllowed,
}

impl TxFailure {
    /// Whether the transaction consumed its nonce (it executed, without effect on balances): a
    /// failure of its effect. A bad nonce or another chain's transaction changes nothing.
    pub fn consumes_nonce(&self) -> bool {
        match self {
            TxFailure::BadNonce { .. } | TxFailure::WrongChain | TxFailure::OpaqueNotAllowed => {
                false
            }
            TxFailure::InsufficientBalance { .. } | TxFailure::Overflow | TxFailure::ZeroAmount => {
                true
            }
        }
    }
}

impl std::fmt::Display for TxFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxFailure::BadNonce { expected, actual } => {
                write!(f, "nonce {actual}, expected {expected}")
            }
            TxFailure::InsufficientBalance { balance, amount } => {
                write!(f, "balance {balance} is less than amount {amount}")
            }
            TxFailure::Overflow => write!(f, "receiver balance would overflow"),
            TxFailure::WrongChain => write!(f, "wrong chain id"),
            TxFailure::ZeroAmount => write!(f, "zero amount"),
            TxFailure::OpaqueNotAllowed => write!(f, "opaque payloads are not allowed"),
        }
    }
}

/// The outcome of one transaction in a block.
pub type Receipt = Result<(), TxFailure>;

/// Reads committed (or speculative) account state.
pub trait StateView {
    /// The account at `address` (`Account::default()` if it never received funds), or why it
    /// could not be read (a broken or corrupt disk: a node must stop, not guess).
    fn account(&self, address: &Address) -> Result<Account, StateReadError>;
}

/// Account state that could not be read.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("state read failed: {0}")]
pub struct StateReadError(pub String);

/// The result of executing a block's transactions on a state.
#[derive(Clone, Debug)]
pub struct Execution {
    /// The final value of every account the block touched.
    pub changes: BTreeMap<Address, Account>,
    /// One per transaction, in block order.
    pub receipts: Vec<Receipt>,
    pub accumulator: StateAccumulator,
}

impl Execution {
    pub fn state_root(&self) -> Digest {
        self.accumulator.root()
    }
}

/// Executes `transactions` in order on `state` whose accumulator is `accumulator`. Signatures
/// are NOT checked here: the node admits only batches whose signatures it verified.
///
/// The nonce rule: a transaction for this chain that carries its sender's next nonce consumes
/// that nonce whatever its effect; if the effect cannot apply (zero amount, insufficient balance,
/// overflow) its receipt says so and only the nonce changes. A transaction for another chain or
/// with any other nonce changes nothing. So a signed transaction executes at most once: a
/// transfer that failed can never be carried out later, by anyone holding its bytes.
///
/// An opaque payload (where `rules` allow them) changes nothing and succeeds: it is ordered and
/// stored, not executed.
pub fn execute<'a>(
    rules: &ChainRules,
    state: &dyn StateView,
    accumulator: &StateAccumulator,
    transactions: impl IntoIterator<Item = &'a SignedTransaction>,
) -> Result<Execution, StateReadError> {
    let mut changes: BTreeMap<Address, Account> = BTreeMap::new();
    let mut receipts = Vec::new();
    let read = |changes: &BTreeMap<Address, Account>, address: &Address| match changes.get(address)
    {
        Some(account) => Ok(*account),
        None => state.account(address),
    };
    for signed in transactions {
        let tx = signed.transaction();
        let sender = signed.sender();
        if tx.chain_id != rules.chain_id {
            receipts.push(Err(TxFailure::WrongChain));
            continue;
        }
        if signed.is_opaque() {
            receipts.push(match rules.allow_opaque {
                true => Ok(()),
                false => Err(TxFailure::OpaqueNotAllowed),
            });
            continue;
        }
        let mut from = read(&changes, &sender)?;
        if tx.nonce != from.nonce {
            receipts.push(Err(TxFailure::BadNonce {
                expected: from.nonce,
                actual: tx.nonce,
            }));
            continue;
        }
        // From here on the nonce is consumed, whatever the effect.
        from.nonce += 1;
        changes.insert(sender, from);
        let receipt = match tx.kind {
            TransactionKind::Transfer { to, amount } => {
                apply_transfer(&mut changes, &read, sender, to, amount)?
            }
            // Handled above, before the nonce.
            TransactionKind::Opaque { .. } => Ok(()),
        };
        receipts.push(receipt);
    }
    let mut accumulator = accumulator.clone();
    for (address, new) in &changes {
        accumulator.update(address, &state.account(address)?, new);
    }
    Ok(Execution {
        changes,
        receipts,
        accumulator,
    })
}

type Read<'r> =
    &'r dyn Fn(&BTreeMap<Address, Account>, &Address) -> Result<Account, StateReadError>;

/// Moves `amount` from `sender` (whose nonce is already consumed in `changes`) to `to`, or
/// changes nothing more and says why not (the receipt); `Err` only if state cannot be read.
fn apply_transfer(
    changes: &mut BTreeMap<Address, Account>,
    read: Read<'_>,
    sender: Address,
    to: Address,
    amount: u64,
) -> Result<Receipt, StateReadError> {
    if amount == 0 {
        return Ok(Err(TxFailure::ZeroAmount));
    }
    let mut from = read(changes, &sender)?;
    if from.balance < amount {
        return Ok(Err(TxFailure::InsufficientBalance {
            balance: from.balance,
            amount,
        }));
    }
    if to == sender {
        return Ok(Ok(()));
    }
    let mut receiver = read(changes, &to)?;
    let Some(balance) = receiver.balance.checked_add(amount) else {
        return Ok(Err(TxFailure::Overflow));
    };
    receiver.balance = balance;
    from.balance -= amount;
    changes.insert(sender, from);
    changes.insert(to, receiver);
    Ok(Ok(()))
}

/// The accumulator of an initial state (genesis balances).
pub fn initial_accumulator<'a>(
    accounts: impl IntoIterator<Item = (&'a Address, &'a Account)>,
) -> StateAccumulator {
    let mut accumulator = StateAccumulator::default();
    for (address, account) in accounts {
        accumulator.update(address, &Account::default(), account);
    }
    accumulator
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Transaction;
    use quorate_crypto::SigningKey;
    use std::collections::HashMap;

    struct Map(HashMap<Address, Account>);
    impl StateView for Map {
        fn account(&self, address: &Address) -> Result<Account, StateReadError> {
            Ok(self.0.get(address).copied().unwrap_or_default())
        }
    }

    fn transfer(key: &SigningKey, nonce: u64, to: Address, amount: u64) -> SignedTransaction {
        transfer_on("c", key, nonce, to, amount)
    }

    #[test]
    fn every_failure_round_trips_through_the_canonical_encoding() {
        let failures = vec![
            Ok(()),
            Err(TxFailure::BadNonce {
                expected: 3,
                actual: 7,
            }),
            Err(TxFailure::InsufficientBalance {
                balance: 1,
                amount: 2,
            }),
            Err(TxFailure::Overflow),
            Err(TxFailure::WrongChain),
            Err(TxFailure::ZeroAmount),
            Err(TxFailure::OpaqueNotAllowed),
        ];
        let bytes = crate::codec::encode(&failures).unwrap();
        let back: Vec<Result<(), TxFailure>> = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, failures);
    }

    fn transfer_on(
        chain: &str,
        key: &SigningKey,
        nonce: u64,
        to: Address,
        amount: u64,
    ) -> SignedTransaction {
        Transaction {
            chain_id: chain.into(),
            sender: key.public(),
            nonce,
            kind: TransactionKind::Transfer { to, amount },
        }
        .sign(key)
        .unwrap()
    }

    /// Alice (100 coins, nonce 0), Bob's address, and the state holding Alice's account.
    fn alice_with_100() -> (SigningKey, Address, HashMap<Address, Account>) {
        let alice = SigningKey::from_seed_insecure(1);
        let bob = SigningKey::from_seed_insecure(2).public().address();
        let map = HashMap::from([(
            alice.public().address(),
            Account {
                balance: 100,
                nonce: 0,
            },
        )]);
        (alice, bob, map)
    }

    /// Opaque payloads are ordered, never executed: on a bench chain they succeed and change
    /// no account (not even their sender's nonce); anywhere else they fail and change nothing.
    #[test]
    fn opaque_payloads_touch_no_state_and_fail_where_not_allowed() {
        let (alice, bob, map) = alice_with_100();
        let accumulator = initial_accumulator(map.iter());
        let state = Map(map);
        let opaque = SignedTransaction::opaque("c", alice.public(), 0, vec![7; 300]).unwrap();
        let txs = vec![opaque.clone(), transfer(&alice, 0, bob, 30), opaque];
        let bench = ChainRules {
            chain_id: "c".into(),
            allow_opaque: true,
        };
        let out = execute(&bench, &state, &accumulator, &txs).unwrap();
        assert_eq!(out.receipts, vec![Ok(()), Ok(()), Ok(())]);
        let sender = out.changes[&alice.public().address()];
        assert_eq!((sender.balance, sender.nonce), (70, 1));
        assert_eq!(out.changes.len(), 2, "only the transfer's two accounts");

        let out = execute(&ChainRules::signed_only("c"), &state, &accumulator, &txs).unwrap();
        assert_eq!(
            out.receipts,
            vec![
                Err(TxFailure::OpaqueNotAllowed),
                Ok(()),
                Err(TxFailure::OpaqueNotAllowed)
            ]
        );
        let only_transfer = execute(
            &ChainRules::signed_only("c"),
            &state,
            &accumulator,
            &txs[1..2],
        )
        .unwrap();
        assert_eq!(out.state_root(), only_transfer.state_root());
    }

    #[test]
    fn failed_transfers_consume_their_nonce_and_nothing_else() {
        let (alice, bob, map) = alice_with_100();
        let accumulator = initial_accumulator(map.iter());
        let state = Map(map.clone());
        let txs = vec![
            transfer(&alice, 0, bob, 30),
            transfer(&alice, 0, bob, 30), // replay: bad nonce, changes nothing
            transfer(&alice, 1, bob, 500), // too much: fails, consumes nonce 1
            transfer(&alice, 1, bob, 70), // nonce 1 is taken now
            transfer(&alice, 2, bob, 60),
            transfer(&alice, 3, bob, 0), // zero: fails, consumes nonce 3
            transfer_on("other", &alice, 4, bob, 1), // another chain: changes nothing
            transfer(&alice, 4, alice.public().address(), 1), // to itself: only the nonce moves
        ];
        let out = execute(&ChainRules::signed_only("c"), &state, &accumulator, &txs).unwrap();
        assert_eq!(
            out.receipts,
            vec![
                Ok(()),
                Err(TxFailure::BadNonce {
                    expected: 1,
                    actual: 0
                }),
                Err(TxFailure::InsufficientBalance {
                    balance: 70,
                    amount: 500
                }),
                Err(TxFailure::BadNonce {
                    expected: 2,
                    actual: 1
                }),
                Ok(()),
                Err(TxFailure::ZeroAmount),
                Err(TxFailure::WrongChain),
                Ok(()),
            ]
        );
        assert_eq!(
            out.changes[&alice.public().address()],
            Account {
                balance: 10,
                nonce: 5
            }
        );
        assert_eq!(
            out.changes[&bob],
            Account {
                balance: 90,
                nonce: 0
            }
        );
        // The incremental root equals the root computed from scratch over the final state.
        let mut full = map;
        full.extend(out.changes.clone());
        let scratch = initial_accumulator(full.iter().filter(|(_, a)| !a.is_empty()));
        assert_eq!(out.state_root(), scratch.root());
        assert_ne!(out.state_root(), accumulator.root());
    }

    #[test]
    fn a_failed_transfer_never_executes_later_even_once_funded() {
        let alice = SigningKey::from_seed_insecure(5);
        let bob = SigningKey::from_seed_insecure(6).public().address();
        let address = alice.public().address();
        let mut map = HashMap::new();
        map.insert(
            address,
            Account {
                balance: 10,
                nonce: 0,
            },
        );
        let accumulator = initial_accumulator(map.iter());
        let payment = transfer(&alice, 0, bob, 500);
        let first = execute(
            &ChainRules::signed_only("c"),
            &Map(map.clone()),
            &accumulator,
            [&payment],
        )
        .unwrap();
        assert_eq!(
            first.receipts,
            vec![Err(TxFailure::InsufficientBalance {
                balance: 10,
                amount: 500
            })]
        );
        assert_eq!(
            first.changes[&address],
            Account {
                balance: 10,
                nonce: 1
            }
        );
        // Funded meanwhile; a Byzantine leader puts the same bytes in a later block.
        map.insert(
            address,
            Account {
                balance: 1_000,
                nonce: 1,
            },
        );
        let funded = initial_accumulator(map.iter());
        let again = execute(
            &ChainRules::signed_only("c"),
            &Map(map),
            &funded,
            [&payment],
        )
        .unwrap();
        assert_eq!(
            again.receipts,
            vec![Err(TxFailure::BadNonce {
                expected: 1,
                actual: 0
            })]
        );
        assert!(again.changes.is_empty());
        assert_eq!(again.state_root(), funded.root());
    }

    #[test]
    fn accumulator_is_order_independent_and_round_trips() {
        let a = SigningKey::from_seed_insecure(3).public().address();
        let b = SigningKey::from_seed_insecure(4).public().address();
        let x = Account {
            balance: 5,
            nonce: 1,
        };
        let y = Account {
            balance: 7,
            nonce: 0,
        };
        let one = initial_accumulator([(&a, &x), (&b, &y)]);
        let two = initial_accumulator([(&b, &y), (&a, &x)]);
        assert_eq!(one.root(), two.root());
        let mut three = one.clone();
        three.update(&a, &x, &Account::default());
        assert_eq!(three.root(), initial_accumulator([(&b, &y)]).root());
        assert_eq!(StateAccumulator::from_bytes(&one.to_bytes()), Some(one));
        assert_eq!(StateAccumulator::from_bytes(&[0; 3]), None);
    }
}
