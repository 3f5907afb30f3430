//! Ledger sync: a validator whose ledger stopped advancing (it was down, or partitioned, for longer
//! than peers keep blocks in their consensus engines) fetches committed blocks with their commit
//! proofs from peers, in bounded requests, verifies them and commits them through the executor;
//! then the engine restarts from the new head and rejoins consensus.
//!
//! Nothing a peer sends is trusted: blocks must extend our head hash by hash and height, belong to
//! our chain and epoch, and carry payload manifests that match their headers; a run of responses
//! is cut after its last block whose proof commits it (HotStuff's three-chain, PBFT's stable
//! checkpoint certificate): blocks before it are committed through the hash chain. A run is at
//! most `checkpoint_interval` + one request long, so a PBFT checkpoint is always within reach. The executor then re-executes every block and refuses one
//! whose state root differs, so a lying peer can make us wait, never commit something else.

use crate::executor::Job;
use crate::node::Shared;
use crate::wire::{NetRequest, NetResponse, MAX_BLOCKS_PER_REQUEST};
use quorate_consensus::{verify_commit_proof, CertificateVerifier, CommitProof, ProofStrength};
use quorate_crypto::Digest;
use quorate_ledger::{codec, Block, BlockHeader, CommittedBlock, Height};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

/// How long the ledger must stand still before peers are asked for blocks.
const STALL: Duration = Duration::from_secs(3);
/// How often peers are probed even while the ledger advances: a replica far behind can keep
/// committing slowly through its engine (headers fetched a peer's allowance at a time) and never
/// stall, yet never catch up either; a probe finds a peer `SYNC_LAG` ahead and sync takes over.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How far behind a peer's ledger this one must be for ledger sync to take over. Closer than
/// that, the engine catches up by itself (peers' engines keep 256 committed blocks), and the
/// engine is left alone.
const SYNC_LAG: u64 = 128;
/// How long the ledger must stand still before any lag at all brings in ledger sync. Peers'
/// engines may no longer hold the few blocks this one misses (every validator restarted: an
/// engine holds blocks from its own root up), so waiting for the engine can be waiting forever;
/// long enough that a chain merely slowed by timeouts does not restart engines for a block.
const LONG_STALL: Duration = Duration::from_secs(20);
/// How long one fetched range may take to be executed and committed.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Blocks of one response that are proven committed on top of `head`, in order.
fn verified_prefix(
    blocks: Vec<CommittedBlock>,
    head_height: Height,
    head_hash: Digest,
    shared: &Shared,
    genesis_hash: Digest,
    verifier: &CertificateVerifier,
) -> Result<Vec<(BlockHeader, CommitProof, Vec<Digest>)>, String> {
    let mut expected_parent = head_hash;
    let mut expected_height = head_height.next();
    let mut checked = Vec::new();
    let mut proven = 0;
    let epoch = shared.validators.epoch();
    for block in blocks {
        let header = block.header;
        if header.epoch != epoch {
            // The next epoch's blocks: their set is known once this node commits its epoch's
            // last block (whose proof its own epoch's set made), and the next epoch's sync
            // takes them.
            break;
        }
        if header.height != expected_height || header.parent != expected_parent {
            return Err(format!(
                "block at height {} does not extend height {} ({})",
                header.height, head_height, expected_parent
            ));
        }
        if header.chain_id != shared.chain_id || header.genesis_hash != genesis_hash {
            return Err(format!("block {} is of another chain", header.height));
        }
        if Block::payload_digest_of(&block.batches) != header.payload_digest {
            return Err(format!(
                "block {}'s batch list does not match its payload digest",
                header.height
            ));
        }
        let proof: CommitProof = codec::decode(&block.proof)
            .map_err(|e| format!("block {}'s proof: {e}", header.height))?;
        if !proof.is_of(shared.protocol) {
            return Err(format!(
                "block {} has a {} proof on a {} chain",
                header.height,
                proof.protocol_name(),
                shared.protocol
            ));
        }
        match verify_commit_proof(&header, &proof, genesis_hash, &shared.validators, verifier) {
            Ok(ProofStrength::Committed) => proven = checked.len() + 1,
            Ok(ProofStrength::Certified | ProofStrength::Chained) => {}
            Err(error) => return Err(format!("block {}: {error}", header.height)),
        }
        expected_parent = header
            .hash()
            .map_err(|e| format!("block {}: {e}", header.height))?;
        expected_height = header.height.next();
        checked.push((header, proof, block.batches));
    }
    checked.truncate(proven);
    Ok(checked)
}

/// Runs until the node stops. `restart_engine` asks the runtime to rebuild the engine from the
/// ledger's head once a sync brought it forward.
pub async fn run(
    shared: Arc<Shared>,
    genesis_hash: Digest,
    verifier: Arc<CertificateVerifier>,
    restart_engine: UnboundedSender<()>,
) {
    let n = shared.validators.len();
    let me = shared.me;
    // A follower has no engine to catch up with: sync is how it moves at all, so it asks for
    // every block at once (no lag first), every second while peers have more.
    let follower = me.is_none();
    // The epoch's validators, then the configured peers (which serve a node whose epoch's
    // validators have all retired).
    let total = n + shared.net.sources();
    let mut cursor = me.unwrap_or(0);
    let mut last_height = Height(0);
    let mut last_progress = Instant::now();
    let mut last_probe = Instant::now();
    let mut synced = 0u64;
    // Set while peers have more: the next request goes out at once.
    let mut eager = false;
    // Set when a peer showed it is in a later epoch: probe at once, for any lag.
    let mut behind = false;
    let mut stalled_probe_every = Duration::from_secs(1);
    loop {
        let Ok(Some(head)) = shared.store.head() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if head.height > last_height {
            last_height = head.height;
            last_progress = Instant::now();
            stalled_probe_every = Duration::from_secs(1);
        }
        let stalled = last_progress.elapsed() >= STALL;
        // While stalled, probe every second at first, then less often while no peer is ahead
        // (an idle chain stalls for good, and needs no n·(n-1) probes a second).
        let probe_every = if stalled || follower {
            stalled_probe_every
        } else {
            PROBE_EVERY
        };
        let others = if me.is_some() { total - 1 } else { total };
        if others == 0 || (!eager && !behind && last_probe.elapsed() < probe_every) {
            behind = wait(&shared).await;
            continue;
        }
        let behind_round = std::mem::take(&mut behind);
        last_probe = Instant::now();
        let eager_round = std::mem::take(&mut eager);
        // Ask each other validator in turn until one gives proven blocks.
        let mut applied = false;
        let mut more = false;
        for _ in 0..others {
            cursor = (cursor + 1) % total;
            if Some(cursor) == me {
                cursor = (cursor + 1) % total;
            }
            let peer = cursor;
            if !eager_round {
                // Is this peer's ledger far enough ahead? One block at our head + lag says.
                let lag = if follower || behind_round || last_progress.elapsed() >= LONG_STALL {
                    1
                } else {
                    SYNC_LAG
                };
                let probe = NetRequest::GetCommitted {
                    from: head.height.0 + lag,
                    count: 1,
                };
                match shared.net.request(peer, probe).await {
                    Some(NetResponse::Committed(blocks)) if !blocks.is_empty() => {}
                    _ => continue,
                }
            }
            // Fetch in bounded requests until a block's proof commits it: HotStuff's QCs with
            // three-chains come every few blocks, PBFT's checkpoint certificates every
            // checkpoint_interval blocks (those between are committed by the hash chain).
            let mut run: Vec<CommittedBlock> = Vec::new();
            let mut full = false;
            let mut refused = false;
            let mut proven = Vec::new();
            while (run.len() as u64) < shared.sync_run_max {
                let request = NetRequest::GetCommitted {
                    from: head.height.0 + 1 + run.len() as u64,
                    count: MAX_BLOCKS_PER_REQUEST,
                };
                let Some(NetResponse::Committed(blocks)) = shared.net.request(peer, request).await
                else {
                    break;
                };
                if blocks.is_empty() {
                    break;
                }
                full = blocks.len() as u64 >= MAX_BLOCKS_PER_REQUEST;
                run.extend(blocks.into_iter().take(MAX_BLOCKS_PER_REQUEST as usize));
                let (shared2, verifier2) = (shared.clone(), verifier.clone());
                let (head_height, head_hash) = (head.height, head.hash);
                let candidate = run.clone();
                let verdict = tokio::task::spawn_blocking(move || {
                    verified_prefix(
                        candidate,
                        head_height,
                        head_hash,
                        &shared2,
                        genesis_hash,
                        &verifier2,
                    )
                })
                .await;
                match verdict {
                    Ok(Ok(checked)) if !checked.is_empty() => {
                        proven = checked;
                        break;
                    }
                    Ok(Ok(_)) if full => continue,
                    Ok(Ok(_)) => break,
                    Ok(Err(why)) => {
                        warn!(peer, "sync: refusing blocks: {why}");
                        refused = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if refused || proven.is_empty() {
                continue;
            }
            full = full && proven.len() == run.len();
            let target = proven
                .last()
                .map(|(h, _, _)| h.height)
                .unwrap_or(head.height);
            info!(
                peer,
                from = head.height.0 + 1,
                to = target.0,
                "sync: applying committed blocks"
            );
            for (header, proof, batches) in proven {
                if let Err(error) = shared.store.put_manifest(&header.payload_digest, &batches) {
                    warn!(%error, "sync: storing a manifest");
                }
                let _ = shared.jobs.send(Job::Commit { header, proof });
            }
            let deadline = Instant::now() + APPLY_TIMEOUT;
            while Instant::now() < deadline {
                match shared.store.head() {
                    Ok(Some(now)) if now.height >= target => break,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            if let Ok(Some(now)) = shared.store.head() {
                if now.height > head.height {
                    synced += now.height.0 - head.height.0;
                    applied = true;
                    more = full;
                }
            }
            break;
        }
        if !applied {
            stalled_probe_every = (stalled_probe_every * 2).min(PROBE_EVERY);
        }
        if applied && more {
            // Keep going at once while peers have more.
            eager = true;
            continue;
        }
        if synced > 0 && follower {
            synced = 0;
        }
        if synced > 0 {
            // Within one request of the peers' committed head: the engine, still rooted where
            // the ledger was, restarts from the new head and catches the rest by consensus.
            info!(
                blocks = synced,
                height = shared.store.head().ok().flatten().map(|h| h.height.0),
                "sync: caught up; restarting consensus from the ledger's head"
            );
            synced = 0;
            let _ = restart_engine.send(());
            last_progress = Instant::now();
        }
        behind = wait(&shared).await;
    }
}

/// Waits a second, or a quarter of one if a peer shows a later epoch (then `true`): a Byzantine
/// peer that claims one can cost this node four probes a second at most.
async fn wait(shared: &Shared) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => false,
        _ = shared.sync_now.notified() => {
            tokio::time::sleep(Duration::from_millis(250)).await;
            true
        }
    }
}
