//! The auditor's verifier: checks a chain from genesis to head trusting nothing but the genesis
//! (SPEC "Audit"). The chain comes from any [`ChainSource`] (a node's database, or blocks
//! downloaded from a node that is not trusted); certificates are checked by a [`ProofCheck`] the
//! consensus crate provides, so this verifier serves every protocol.
//!
//! For each height, in order: the block is there; its height and parent hash link to the block
//! before; it names the chain and genesis; its batches are the ones its header commits to; every
//! transaction's signature verifies (one ed25519 batch verification per block) and names the
//! chain; re-executing the block from the audited state gives the stored receipts (nonces and
//! balances) and the header's state root; its certificate verifies. A block whose certificate
//! proves the commit rule directly covers itself and, through the hash chain, every block before
//! it; the head must be covered. The first failure stops the audit with its height and check.

use crate::governance::{Governance, GovernanceState};
use crate::records::CommittedBlock;
use crate::state::{execute, StateAccumulator, StateReadError, StateView};
use crate::{Account, Batch, Block, BlockHeader, Height, SignedTransaction};
use quorate_crypto::{Address, Digest};
use std::collections::{HashMap, VecDeque};
use thiserror::Error;

/// What a certificate proves about its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Certified {
    /// The block is committed by the protocol's commit rule (e.g. a HotStuff three-chain).
    Committed,
    /// The block is certified; a later committed block's hash chain must cover it.
    Certified,
    /// The proof carries no certificate (PBFT: committed by MAC'd COMMITs between checkpoints);
    /// a later committed block's hash chain covers it, or it is in the uncertified tail.
    Chained,
}

/// Checks a block's stored commit proof (protocol-specific; provided by the consensus crate).
pub trait ProofCheck {
    /// Checks `proof` for `header` against `governance`'s validator set: the set of the
    /// header's epoch, as the audited chain committed it.
    fn check(
        &self,
        header: &BlockHeader,
        proof: &[u8],
        governance: &Governance,
    ) -> Result<Certified, String>;
}

/// Where the audited blocks come from.
pub trait ChainSource {
    /// The height of the newest block the source claims to have.
    fn head_height(&self) -> Result<u64, String>;
    /// The committed block at `height` and its batches (in the block's order), if the source
    /// has it. A source returns what it holds; the verifier checks it.
    fn block(&self, height: u64) -> Result<Option<(CommittedBlock, Vec<Batch>)>, String>;
}

/// The trusted starting point: what the genesis file says.
pub struct AuditGenesis {
    /// The chain id and what the chain accepts (genesis `allow_opaque_payloads`).
    pub rules: crate::ChainRules,
    pub genesis_hash: Digest,
    /// The height-0 block every validator starts from.
    pub root: BlockHeader,
    pub accounts: Vec<(Address, Account)>,
    /// The governance state genesis starts from (epoch 0's validators).
    pub governance: Governance,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    pub blocks: u64,
    pub transactions: u64,
    pub failed_transactions: u64,
    pub head_height: u64,
    pub head_hash: Digest,
    pub state_root: Digest,
    /// Blocks after the last one whose proof commits it, all carrying no certificate (PBFT:
    /// after the last stable checkpoint). Reported, not failed: the next checkpoint covers them.
    pub uncertified_tail: u64,
    /// Epochs the chain went through: one more than the epoch its head leads to.
    pub epochs: u64,
}

/// The first check that failed, and where.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("height {height}: {check}: {detail}")]
pub struct AuditFailure {
    pub height: u64,
    /// A stable name: `source`, `missing_block`, `height`, `parent_hash`, `chain`, `payload`,
    /// `tx_signature`, `tx_chain_id`, `receipts`, `state_root`, `certificate`, `commit_rule`.
    pub check: &'static str,
    pub detail: String,
}

/// Blocks fetched ahead; their signatures are verified in parallel before they are checked in
/// order.
const WINDOW: u64 = 64;

struct Prefetched {
    record: CommittedBlock,
    digests: Vec<Digest>,
    transactions: Vec<SignedTransaction>,
    /// Indices of transactions whose signature does not verify.
    invalid: Vec<usize>,
}

type Fetched = Result<Option<Prefetched>, String>;

/// Fetches heights `from..=to` (stopping after the first that is missing or fails) and verifies
/// every transaction signature of them, one ed25519 batch per block, on all cores.
fn prefetch(source: &dyn ChainSource, from: u64, to: u64) -> VecDeque<Fetched> {
    let mut fetched: Vec<Fetched> = Vec::new();
    for height in from..=to {
        let block = source.block(height).map(|found| {
            found.map(|(record, batches)| Prefetched {
                record,
                digests: batches.iter().map(Batch::digest).collect(),
                transactions: batches
                    .into_iter()
                    .flat_map(|b| b.transactions.into_iter())
                    .collect(),
                invalid: Vec::new(),
            })
        });
        let stop = !matches!(block, Ok(Some(_)));
        fetched.push(block);
        if stop {
            break;
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut blocks: Vec<&mut Prefetched> = fetched
        .iter_mut()
        .filter_map(|f| f.as_mut().ok().and_then(Option::as_mut))
        .collect();
    let per_thread = blocks.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for chunk in blocks.chunks_mut(per_thread) {
            scope.spawn(move || {
                for block in chunk.iter_mut() {
                    block.invalid = SignedTransaction::verify_batch(&block.transactions);
                }
            });
        }
    });
    fetched.into()
}

fn fail(height: u64, check: &'static str, detail: impl Into<String>) -> AuditFailure {
    AuditFailure {
        height,
        check,
        detail: detail.into(),
    }
}

/// Account state as audited so far (every account the genesis or a block touched).
struct AuditState(HashMap<Address, Account>);

impl StateView for AuditState {
    fn account(&self, address: &Address) -> Result<Account, StateReadError> {
        Ok(self.0.get(address).copied().unwrap_or_default())
    }
}

/// Audits heights 1..=head of `source`. `progress(height, head)` is called after each block.
pub fn audit(
    genesis: &AuditGenesis,
    source: &dyn ChainSource,
    proofs: &dyn ProofCheck,
    mut progress: impl FnMut(u64, u64),
) -> Result<AuditReport, AuditFailure> {
    let head = source.head_height().map_err(|e| fail(0, "source", e))?;
    let mut state = AuditState(genesis.accounts.iter().copied().collect());
    let mut accumulator: StateAccumulator =
        crate::state::initial_accumulator(genesis.accounts.iter().map(|(a, b)| (a, b)));
    let mut governance = GovernanceState::new(genesis.governance.clone())
        .map_err(|e| fail(0, "source", e.to_string()))?;
    if crate::state::state_root(accumulator.root(), governance.digest()) != genesis.root.state_root
    {
        return Err(fail(
            0,
            "state_root",
            "genesis accounts and validators do not give the root's state root",
        ));
    }
    let mut previous = genesis
        .root
        .hash()
        .map_err(|e| fail(0, "source", e.to_string()))?;
    let mut report = AuditReport {
        blocks: 0,
        transactions: 0,
        failed_transactions: 0,
        head_height: 0,
        head_hash: previous,
        state_root: genesis.root.state_root,
        uncertified_tail: 0,
        epochs: 1,
    };
    // Heights certified (or chained) but not yet covered by a directly committed descendant,
    // and the first of them that carries a certificate of its own (which a later block must
    // cover: a certified head is not a committed one).
    let mut uncovered_from: Option<u64> = None;
    let mut certified_from: Option<u64> = None;
    let mut window: VecDeque<Fetched> = VecDeque::new();
    for height in 1..=head {
        if window.is_empty() {
            window = prefetch(source, height, head.min(height + WINDOW - 1));
        }
        let fetched = window
            .pop_front()
            .ok_or_else(|| fail(height, "source", "nothing fetched"))?;
        let Prefetched {
            record,
            digests,
            transactions,
            invalid,
        } = fetched
            .map_err(|e| fail(height, "source", e))?
            .ok_or_else(|| fail(height, "missing_block", "the source has no block here"))?;
        let header = &record.header;
        if header.height != Height(height) {
            return Err(fail(
                height,
                "height",
                format!("block claims height {}", header.height),
            ));
        }
        if header.parent != previous {
            return Err(fail(
                height,
                "parent_hash",
                format!(
                    "parent {} but the block before is {previous}",
                    header.parent
                ),
            ));
        }
        if header.chain_id != genesis.rules.chain_id || header.genesis_hash != genesis.genesis_hash
        {
            return Err(fail(
                height,
                "chain",
                "block names another chain or genesis",
            ));
        }
        if header.epoch != governance.epoch() {
            return Err(fail(
                height,
                "epoch",
                format!(
                    "block names epoch {}, but the chain before it is in epoch {}",
                    header.epoch,
                    governance.epoch()
                ),
            ));
        }
        if let Some(first) = invalid.first() {
            return Err(fail(
                height,
                "tx_signature",
                format!(
                    "{} of {} signatures do not verify (first: transaction {} at index {first})",
                    invalid.len(),
                    transactions.len(),
                    transactions
                        .get(*first)
                        .map(|t| t.id().to_string())
                        .unwrap_or_default()
                ),
            ));
        }
        if let Some(bad) = transactions
            .iter()
            .find(|t| t.check_stateless(&genesis.rules).is_err())
        {
            return Err(fail(
                height,
                "tx_chain_id",
                format!("transaction {} fails the stateless checks", bad.id()),
            ));
        }
        if digests != record.batches
            || Block::payload_digest_of(&record.batches) != header.payload_digest
        {
            return Err(fail(
                height,
                "payload",
                "the batches do not match the header's payload digest",
            ));
        }
        let execution = execute(
            &genesis.rules,
            &state,
            &accumulator,
            &governance,
            header.height,
            &transactions,
        )
        .map_err(|e| fail(height, "state", e.to_string()))?;
        if execution.receipts != record.receipts {
            let at = execution
                .receipts
                .iter()
                .zip(&record.receipts)
                .position(|(a, b)| a != b)
                .unwrap_or(execution.receipts.len().min(record.receipts.len()));
            return Err(fail(
                height,
                "receipts",
                format!("re-execution differs from the recorded results at transaction {at}"),
            ));
        }
        if execution.state_root() != header.state_root {
            return Err(fail(
                height,
                "state_root",
                format!(
                    "header says {}, re-execution gives {}",
                    header.state_root,
                    execution.state_root()
                ),
            ));
        }
        // The block that ends an epoch names the next set in its state: only its own epoch's
        // set can vouch for it, so its proof must commit it by itself (no later block's hash
        // chain, which the next epoch's set would certify).
        let ends_epoch = execution.governance.epoch() > governance.epoch();
        match proofs.check(header, &record.proof, governance.get()) {
            Ok(Certified::Certified | Certified::Chained) if ends_epoch => {
                return Err(fail(
                    height,
                    "epoch_change",
                    format!(
                        "the last block of epoch {} carries no proof of its own that its set committed it",
                        governance.epoch()
                    ),
                ));
            }
            Ok(Certified::Committed) => {
                uncovered_from = None;
                certified_from = None;
            }
            Ok(Certified::Certified) => {
                uncovered_from.get_or_insert(height);
                certified_from.get_or_insert(height);
            }
            Ok(Certified::Chained) => {
                uncovered_from.get_or_insert(height);
            }
            Err(why) => return Err(fail(height, "certificate", why)),
        }
        report.failed_transactions +=
            execution.receipts.iter().filter(|r| r.is_err()).count() as u64;
        report.transactions += transactions.len() as u64;
        state.0.extend(execution.changes);
        accumulator = execution.accumulator;
        governance = execution.governance;
        previous = header
            .hash()
            .map_err(|e| fail(height, "source", e.to_string()))?;
        report.blocks += 1;
        report.head_height = height;
        report.head_hash = previous;
        report.state_root = header.state_root;
        progress(height, head);
    }
    if let Some(from) = certified_from {
        return Err(fail(
            from,
            "commit_rule",
            "certified, but no later block's certificate proves it committed",
        ));
    }
    if let Some(from) = uncovered_from {
        report.uncertified_tail = head - from + 1;
    }
    report.epochs = governance.epoch().0 + 1;
    Ok(report)
}
