//! The checker: after the faults are healed, what the client was told against what every node
//! holds.

use crate::http;
use crate::load::Ack;
use anyhow::{bail, Context, Result};
use quorate_crypto::{Address, Digest};
use quorate_ledger::{codec, Batch, CommittedBlock, TransactionKind};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Verdict {
    /// Heights compared on every node.
    pub height: u64,
    /// Heights at which two nodes hold different blocks (or the same block with other
    /// transactions).
    pub divergent: u64,
    pub first_divergent: Option<u64>,
    /// Acknowledged transactions not committed where and how the client was told.
    pub lost: u64,
    pub first_lost: Option<String>,
    /// Transactions applied (with a successful receipt) more than once.
    pub applied_twice: u64,
    /// Transactions included more than once at all (the later copies must have failed).
    pub included_twice: u64,
    /// (node, account) pairs whose balance is not genesis plus the committed transfers.
    pub balance_mismatches: u64,
    pub first_balance_mismatch: Option<String>,
    pub transactions: u64,
}

pub fn height(rpc: SocketAddr) -> Option<u64> {
    let (status, body) = http::get(rpc, "/v1/status", Duration::from_secs(1)).ok()?;
    (status == 200).then_some(())?;
    body["height"].as_u64()
}

/// Waits until every node has reached the highest height any of them reports.
pub fn converge(rpcs: &[SocketAddr], timeout: Duration) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let heights: Vec<Option<u64>> = rpcs.iter().map(|rpc| height(*rpc)).collect();
        let target = heights.iter().flatten().max().copied().unwrap_or(0);
        if heights.iter().all(|h| h.is_some_and(|h| h >= target)) {
            return Ok(target);
        }
        if Instant::now() > deadline {
            bail!("the nodes did not converge within {timeout:?}: heights {heights:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn raw_block(rpc: SocketAddr, height: u64) -> Result<(CommittedBlock, Vec<Batch>)> {
    let mut last = None;
    for _ in 0..5 {
        match http::get(rpc, &format!("/v1/block/{height}/raw"), TIMEOUT) {
            Ok((200, body)) => {
                let text = body["hex"].as_str().context("no hex field")?;
                let bytes = hex::decode(text).context("block is not hex")?;
                return codec::decode(&bytes).context("block does not decode");
            }
            Ok((status, body)) => last = Some(format!("{status} {body}")),
            Err(e) => last = Some(format!("{e:#}")),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("block {height} from {rpc}: {}", last.unwrap_or_default())
}

fn account(rpc: SocketAddr, address: &Address) -> Result<(u64, u64)> {
    let (status, body) = http::get(rpc, &format!("/v1/account/{address}"), TIMEOUT)?;
    if status != 200 {
        bail!("account {address} from {rpc}: {status} {body}");
    }
    Ok((
        body["balance"].as_u64().context("no balance")?,
        body["height"].as_u64().context("no height")?,
    ))
}

/// Compares every node's chain, the acknowledgements and the balances. `genesis` holds the
/// initial balances.
pub fn check(rpcs: &[SocketAddr], acks: &[Ack], genesis: &[(Address, u64)]) -> Result<Verdict> {
    let mut verdict = Verdict::default();
    // Balances first, each with the height it was read at; then the chain up to the highest.
    let mut answers = Vec::new();
    for (node, rpc) in rpcs.iter().enumerate() {
        for (address, _) in genesis {
            let (balance, at) = account(*rpc, address)?;
            answers.push((node, *address, balance, at));
        }
    }
    let top = answers.iter().map(|a| a.3).max().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let target = loop {
        let target = converge(rpcs, Duration::from_secs(120))?;
        if target >= top {
            break target;
        }
        if Instant::now() > deadline {
            bail!("the nodes stay below height {top}");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    verdict.height = target;

    let mut balances: BTreeMap<Address, u64> = genesis.iter().copied().collect();
    let mut by_height: HashMap<u64, Vec<(Address, u64)>> = HashMap::new();
    for answer in &answers {
        by_height
            .entry(answer.3)
            .or_default()
            .push((answer.1, answer.2));
    }
    // id -> every (height, block hash, applied) it was included with.
    let mut included: HashMap<Digest, Vec<(u64, String, bool)>> = HashMap::new();
    let check_balances = |height: u64, balances: &BTreeMap<Address, u64>, v: &mut Verdict| {
        for (address, balance) in by_height.get(&height).into_iter().flatten() {
            let expected = balances.get(address).copied().unwrap_or(0);
            if expected != *balance {
                v.balance_mismatches += 1;
                v.first_balance_mismatch.get_or_insert_with(|| {
                    format!("{address} at height {height}: {balance}, expected {expected}")
                });
            }
        }
    };
    check_balances(0, &balances, &mut verdict);
    for height in 1..=target {
        let mut reference: Option<(Digest, Vec<Digest>)> = None;
        let mut first = None;
        for rpc in rpcs {
            let (record, batches) = raw_block(*rpc, height)?;
            let hash = record.header.hash().context("header hash")?;
            let ids: Vec<Digest> = batches
                .iter()
                .flat_map(|b| b.transactions.iter().map(|t| t.id()))
                .collect();
            match &reference {
                None => {
                    reference = Some((hash, ids));
                    first = Some((record, batches));
                }
                Some(seen) if *seen != (hash, ids) => {
                    verdict.divergent += 1;
                    verdict.first_divergent.get_or_insert(height);
                    break;
                }
                Some(_) => {}
            }
        }
        let (Some((hash, _)), Some((record, batches))) = (reference, first) else {
            continue;
        };
        let hash_text = hash.to_string();
        let transactions = batches.iter().flat_map(|b| b.transactions.iter());
        for (tx, receipt) in transactions.zip(record.receipts.iter()) {
            verdict.transactions += 1;
            let applied = receipt.is_ok();
            included
                .entry(tx.id())
                .or_default()
                .push((height, hash_text.clone(), applied));
            if applied {
                let TransactionKind::Transfer { to, amount } = &tx.transaction().kind else {
                    anyhow::bail!("height {height}: an opaque payload applied on a chaos chain");
                };
                let from = tx.sender();
                let debit = balances.entry(from).or_insert(0);
                *debit = debit
                    .checked_sub(*amount)
                    .context("a balance went negative")?;
                let credit = balances.entry(*to).or_insert(0);
                *credit = credit
                    .checked_add(*amount)
                    .context("a balance overflowed")?;
            }
        }
        check_balances(height, &balances, &mut verdict);
    }
    for copies in included.values() {
        if copies.len() > 1 {
            verdict.included_twice += 1;
        }
        if copies.iter().filter(|c| c.2).count() > 1 {
            verdict.applied_twice += 1;
        }
    }
    for ack in acks {
        let told = (ack.height, ack.block_hash.clone(), ack.ok);
        let held = included.get(&ack.id);
        if held.is_none_or(|copies| copies.first() != Some(&told)) {
            verdict.lost += 1;
            verdict.first_lost.get_or_insert_with(|| {
                format!(
                    "{}: told height {} block {} ok={}, chain holds {:?}",
                    ack.id, ack.height, ack.block_hash, ack.ok, held
                )
            });
        }
    }
    Ok(verdict)
}
