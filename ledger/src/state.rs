//! Account state, its incremental commitment, and deterministic execution of transactions.
//!
//! The state root is a lattice (multiset) hash (Bellare–Micciancio's AdHash in the LtHash
//! form, as used by Solana's accounts hash): every account `(address, balance, nonce)` maps to a
//! vector of 1024 16-bit lanes (BLAKE3 extendable output); the accumulator is their lane-wise
//! sum modulo 2^16 and the root is the hash of the accumulator. Changing an account subtracts its
//! old vector and adds the new one, so a block costs O(accounts it touches), never a rescan.
//! It commits to the whole state but gives no membership proofs (a Merkle tree would).

use crate::governance::{GovernanceError, GovernanceState};
use crate::{ChainRules, Height, SignedTransaction, TransactionKind};
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

    /// The accounts' digest: a hash of the accumulator. The state root combines it with the
    /// governance digest ([`state_root`]).
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

/// The state root a header carries: the accounts' digest and the governance digest, so that
/// the validator set a block leads to can be proven from the header with the governance state
/// and 32 bytes (the accounts' digest), without the accounts.
pub fn state_root(accounts: Digest, governance: Digest) -> Digest {
    let mut bytes = [0u8; 64];
    for (slot, byte) in bytes.iter_mut().zip(accounts.0.iter().chain(&governance.0)) {
        *slot = *byte;
    }
    quorate_crypto::hash(Domain::StateCommitment, &bytes)
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
    /// A validator-set change refused by governance's rules.
    Governance(GovernanceError),
    /// A validator-set change on a chain that does not take them yet (admission refuses
    /// these; this verdict is the executor's own check).
    ReconfigurationNotEnabled,
}

impl TxFailure {
    /// Whether the transaction consumed its nonce (it executed, without effect on balances): a
    /// failure of its effect. A bad nonce or another chain's transaction changes nothing.
    pub fn consumes_nonce(&self) -> bool {
        match self {
            TxFailure::BadNonce { .. }
            | TxFailure::WrongChain
            | TxFailure::OpaqueNotAllowed
            | TxFailure::ReconfigurationNotEnabled => false,
            TxFailure::InsufficientBalance { .. }
            | TxFailure::Overflow
            | TxFailure::ZeroAmount
            | TxFailure::Governance(_) => true,
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
            TxFailure::Governance(error) => write!(f, "{error}"),
            TxFailure::ReconfigurationNotEnabled => {
                write!(
                    f,
                    "validator-set changes are not accepted on this chain yet"
                )
            }
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
    /// The governance state after the block (the parent's, shared, if the block left it alone).
    pub governance: GovernanceState,
    /// Whether the block touched the governance state (the store writes it only then).
    pub governance_changed: bool,
}

impl Execution {
    pub fn state_root(&self) -> Digest {
        state_root(self.accumulator.root(), self.governance.digest())
    }
}

/// Executes `transactions`, the block at `height`, in order on `state` whose accumulator is
/// `accumulator` and whose governance state is `governance`. Signatures
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
///
/// A validator-set change ([`TransactionKind::Reconfigure`]) consumes its nonce like a transfer;
/// governance's verdict is its receipt. After the transactions, the block ends the epoch if
/// it is the one a scheduled change takes effect at.
pub fn execute<'a>(
    rules: &ChainRules,
    state: &dyn StateView,
    accumulator: &StateAccumulator,
    governance: &GovernanceState,
    height: Height,
    transactions: impl IntoIterator<Item = &'a SignedTransaction>,
) -> Result<Execution, StateReadError> {
    // Cloned on the first change only: most blocks leave governance alone.
    let mut changed_governance = None;
    let mut changes: BTreeMap<Address, Account> = BTreeMap::new();
    let mut receipts = Vec::new();
    let read = |changes: &BTreeMap<Address, Account>, address: &Address| match changes.get(address)
    {
        Some(account) => Ok(*account),
        None => state.account(address),
    };
    for signed in transactions {
        let tx = signed.transaction();
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
        if matches!(tx.kind, TransactionKind::Reconfigure { .. }) && !rules.allow_reconfiguration {
            receipts.push(Err(TxFailure::ReconfigurationNotEnabled));
            continue;
        }
        let sender = signed.sender();
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
            TransactionKind::Reconfigure { epoch, ref change } => changed_governance
                .get_or_insert_with(|| governance.get().clone())
                .apply(&sender, epoch, change, height)
                .map(|_| ())
                .map_err(TxFailure::Governance),
        };
        receipts.push(receipt);
    }
    let mut accumulator = accumulator.clone();
    for (address, new) in &changes {
        accumulator.update(address, &state.account(address)?, new);
    }
    let ends_epoch =
        |g: &crate::Governance| g.scheduled.as_ref().is_some_and(|s| s.height <= height);
    if changed_governance.is_none() && ends_epoch(governance.get()) {
        changed_governance = Some(governance.get().clone());
    }
    let governance_changed = changed_governance.is_some();
    let governance = match changed_governance {
        None => governance.clone(),
        Some(mut next) => {
            next.end_block(height);
            GovernanceState::new(next)
                .map_err(|e| StateReadError(format!("encoding the governance state: {e}")))?
        }
    };
    Ok(Execution {
        changes,
        receipts,
        accumulator,
        governance,
        governance_changed,
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
    use crate::governance::ValidatorChange;
    use crate::Transaction;
    use quorate_crypto::SigningKey;
    use std::collections::HashMap;

    const H: Height = Height(1);

    fn gov() -> GovernanceState {
        GovernanceState::new(crate::governance::tests::four()).unwrap()
    }

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
            Err(TxFailure::Governance(GovernanceError::NotMember {
                sender: SigningKey::from_seed_insecure(1).public().address(),
            })),
            Err(TxFailure::Governance(GovernanceError::NoReachableQuorum {
                staying: 4,
                quorum: 5,
            })),
            Err(TxFailure::ReconfigurationNotEnabled),
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
            allow_reconfiguration: false,
        };
        let out = execute(&bench, &state, &accumulator, &gov(), H, &txs).unwrap();
        assert_eq!(out.receipts, vec![Ok(()), Ok(()), Ok(())]);
        let sender = out.changes[&alice.public().address()];
        assert_eq!((sender.balance, sender.nonce), (70, 1));
        assert_eq!(out.changes.len(), 2, "only the transfer's two accounts");

        let out = execute(
            &ChainRules::signed_only("c"),
            &state,
            &accumulator,
            &gov(),
            H,
            &txs,
        )
        .unwrap();
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
            &gov(),
            H,
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
        let out = execute(
            &ChainRules::signed_only("c"),
            &state,
            &accumulator,
            &gov(),
            H,
            &txs,
        )
        .unwrap();
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
        assert_eq!(out.state_root(), state_root(scratch.root(), gov().digest()));
        assert_ne!(
            out.state_root(),
            state_root(accumulator.root(), gov().digest())
        );
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
            &gov(),
            H,
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
            &gov(),
            H,
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
        assert_eq!(
            again.state_root(),
            state_root(funded.root(), gov().digest())
        );
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

    fn reconfigure(
        key: &SigningKey,
        nonce: u64,
        epoch: u64,
        change: &ValidatorChange,
    ) -> SignedTransaction {
        Transaction {
            chain_id: "c".into(),
            sender: key.public(),
            nonce,
            kind: TransactionKind::Reconfigure {
                epoch: crate::Epoch(epoch),
                change: Box::new(change.clone()),
            },
        }
        .sign(key)
        .unwrap()
    }

    /// Governance through execution: members' approvals schedule the change, the block at the
    /// scheduled height ends the epoch, the state root follows the governance state, a refusal
    /// consumes the nonce and is the receipt; on a chain that does not take changes nothing at
    /// all happens.
    #[test]
    fn validator_changes_are_approved_scheduled_and_take_effect_through_execution() {
        use crate::governance::tests::{four, validator};
        let rules = ChainRules {
            chain_id: "c".into(),
            allow_opaque: false,
            allow_reconfiguration: true,
        };
        let members: Vec<SigningKey> = (0..3)
            .map(|s| SigningKey::from_seed_insecure(100 + s))
            .collect();
        let outsider = SigningKey::from_seed_insecure(9);
        let add = ValidatorChange::Add {
            validator: validator(4, 1),
        };
        let state = Map(HashMap::new());
        let accumulator = StateAccumulator::default();
        let genesis = GovernanceState::new(four()).unwrap();
        let txs = vec![
            reconfigure(&outsider, 0, 0, &add),
            reconfigure(&members[0], 0, 0, &add),
            reconfigure(&members[0], 1, 0, &add),
            reconfigure(&members[1], 0, 0, &add),
        ];
        let out = execute(&rules, &state, &accumulator, &genesis, Height(10), &txs).unwrap();
        assert_eq!(
            out.receipts,
            vec![
                Err(TxFailure::Governance(GovernanceError::NotMember {
                    sender: outsider.public().address()
                })),
                Ok(()),
                Err(TxFailure::Governance(GovernanceError::AlreadyApproved {
                    sender: members[0].public().address()
                })),
                Ok(()),
            ]
        );
        assert!(out.governance_changed);
        assert_eq!(out.changes[&outsider.public().address()].nonce, 1);
        assert_eq!(out.changes[&members[0].public().address()].nonce, 2);
        let scheduled = out.governance.get().scheduled.clone().unwrap();
        assert_eq!(scheduled.height, Height(13));
        assert_eq!(out.governance.epoch(), crate::Epoch(0));
        assert_eq!(
            out.state_root(),
            state_root(out.accumulator.root(), out.governance.digest())
        );
        assert_ne!(out.governance.digest(), genesis.digest());

        // Blocks before the scheduled height leave governance alone (and share it).
        let quiet = execute(
            &rules,
            &state,
            &accumulator,
            &out.governance,
            Height(12),
            [],
        )
        .unwrap();
        assert!(!quiet.governance_changed);
        assert_eq!(quiet.governance, out.governance);
        // The block at the scheduled height ends epoch 0.
        let boundary = execute(
            &rules,
            &state,
            &accumulator,
            &out.governance,
            Height(13),
            [],
        )
        .unwrap();
        assert!(boundary.governance_changed);
        assert_eq!(boundary.governance.epoch(), crate::Epoch(1));
        assert_eq!(boundary.governance.get().validators.len(), 5);
        assert_ne!(boundary.state_root(), quiet.state_root());

        // A chain that does not take changes: refused, no nonce consumed, nothing changed.
        let closed = execute(
            &ChainRules::signed_only("c"),
            &state,
            &accumulator,
            &genesis,
            Height(10),
            &txs[1..2],
        )
        .unwrap();
        assert_eq!(
            closed.receipts,
            vec![Err(TxFailure::ReconfigurationNotEnabled)]
        );
        assert!(closed.changes.is_empty() && !closed.governance_changed);
        assert_eq!(
            txs[1]
                .check_stateless(&ChainRules::signed_only("c"))
                .unwrap_err()
                .to_string(),
            crate::TransactionError::ReconfigurationNotEnabled.to_string()
        );
        assert!(txs[1].check_stateless(&rules).is_ok());
    }
}
