//! Counters for `/metrics` (Prometheus text format).

use quorate_ledger::BlockHeader;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (ms) of the commit-latency histogram buckets.
const LATENCY_BUCKETS_MS: [u64; 10] = [50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600];

#[derive(Default)]
pub struct Metrics {
    pub height: AtomicU64,
    pub view: AtomicU64,
    /// The epoch this node runs consensus in (each epoch change moves it on by one).
    pub epoch: AtomicU64,
    pub committed_blocks: AtomicU64,
    pub committed_transactions: AtomicU64,
    pub timeouts: AtomicU64,
    pub lock_refusals: AtomicU64,
    /// PBFT: the last stable checkpoint (the low watermark) and the high watermark.
    pub stable_checkpoint: AtomicU64,
    pub high_watermark: AtomicU64,
    pub mempool_size: AtomicU64,
    pub mempool_evicted: AtomicU64,
    pub peers: AtomicU64,
    pub rejected_transactions: AtomicU64,
    pub inbox_messages: AtomicU64,
    pub inbox_dropped: AtomicU64,
    pub net_commands_dropped: AtomicU64,
    pub manifests_forgotten: AtomicU64,
    /// Guests (followers) refused at the bound, and guests' requests dropped over their budget.
    pub guests_refused: AtomicU64,
    pub batches_forgotten: AtomicU64,
    /// Pushed batches dropped unverified at the bound on those in flight.
    pub batches_refused: AtomicU64,
    /// Bytes of stored batches kept decoded in memory until a little after their block commits.
    pub recent_batch_bytes: AtomicU64,
    /// Transaction index entries kept in memory until they are written in a sorted run.
    pub recent_tx_index_entries: AtomicU64,
    /// Proposed blocks waiting for data before they can be checked, and those dropped at the
    /// executor's bound.
    pub checks_waiting: AtomicU64,
    pub checks_dropped: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    latency_sum_ms: AtomicU64,
    latency_count: AtomicU64,
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Metrics {
    /// A block committed: latency is from its proposal timestamp to now.
    pub fn on_commit(&self, header: &BlockHeader, transactions: usize) {
        self.height.store(header.height.0, Ordering::Relaxed);
        self.committed_blocks.fetch_add(1, Ordering::Relaxed);
        self.committed_transactions
            .fetch_add(transactions as u64, Ordering::Relaxed);
        let latency = now_ms().saturating_sub(header.timestamp_ms);
        for (bound, bucket) in LATENCY_BUCKETS_MS.iter().zip(&self.latency_buckets) {
            if latency <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_ms.fetch_add(latency, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            "quorate_height",
            "Height of the last committed block.",
            "gauge",
            get(&self.height),
        );
        gauge(
            "quorate_epoch",
            "Epoch of the validator set this node runs consensus with.",
            "gauge",
            get(&self.epoch),
        );
        gauge(
            "quorate_view",
            "Current consensus view.",
            "gauge",
            get(&self.view),
        );
        gauge(
            "quorate_committed_blocks_total",
            "Blocks committed since start.",
            "counter",
            get(&self.committed_blocks),
        );
        gauge(
            "quorate_committed_transactions_total",
            "Transactions committed since start.",
            "counter",
            get(&self.committed_transactions),
        );
        gauge(
            "quorate_view_timeouts_total",
            "Views this validator timed out (HotStuff) or left by a view change (PBFT).",
            "counter",
            get(&self.timeouts),
        );
        gauge(
            "quorate_lock_refusals_total",
            "Proposals this validator refused to vote for because of its locked QC (a leader \
             forking below the lock: Byzantine, or badly out of date).",
            "counter",
            get(&self.lock_refusals),
        );
        gauge(
            "quorate_pbft_stable_checkpoint",
            "PBFT: height of the last stable checkpoint (the low watermark); 0 under HotStuff.",
            "gauge",
            get(&self.stable_checkpoint),
        );
        gauge(
            "quorate_pbft_high_watermark",
            "PBFT: the highest sequence number that may be pre-prepared; 0 under HotStuff.",
            "gauge",
            get(&self.high_watermark),
        );
        gauge(
            "quorate_mempool_transactions",
            "Transactions in the mempool.",
            "gauge",
            get(&self.mempool_size),
        );
        gauge(
            "quorate_mempool_evicted_total",
            "Unsealed transactions dropped from the mempool because they could no longer apply \
             (their nonce taken, or their sender's balance no longer covers them).",
            "counter",
            get(&self.mempool_evicted),
        );
        gauge(
            "quorate_peers",
            "Connected validators.",
            "gauge",
            get(&self.peers),
        );
        gauge(
            "quorate_rejected_transactions_total",
            "Transactions refused at submission.",
            "counter",
            get(&self.rejected_transactions),
        );
        gauge(
            "quorate_engine_inbox_messages",
            "Peers' consensus messages waiting for the engine.",
            "gauge",
            get(&self.inbox_messages),
        );
        gauge(
            "quorate_engine_inbox_dropped_total",
            "Peers' consensus messages dropped because the sender's inbox queue was full (its \
             oldest go first).",
            "counter",
            get(&self.inbox_dropped),
        );
        gauge(
            "quorate_p2p_commands_dropped_total",
            "Messages to peers dropped because the network task's queue was full.",
            "counter",
            get(&self.net_commands_dropped),
        );
        gauge(
            "quorate_guests_refused_total",
            "Guest connections refused at the bound, and guest requests dropped over budget (this epoch).",
            "counter",
            get(&self.guests_refused),
        );
        gauge(
            "quorate_manifests_forgotten_total",
            "Uncommitted manifests deleted because their sender had sent too many newer ones.",
            "counter",
            get(&self.manifests_forgotten),
        );
        gauge(
            "quorate_batches_forgotten_total",
            "Uncommitted batches deleted because their sender had pushed too many newer ones.",
            "counter",
            get(&self.batches_forgotten),
        );
        gauge(
            "quorate_pushed_batches_refused_total",
            "Batches peers pushed, dropped unverified because those being verified and stored already held the bound (256 MiB); fetched again if a block names them.",
            "counter",
            get(&self.batches_refused),
        );
        gauge(
            "quorate_recent_batch_bytes",
            "Bytes of stored batches kept decoded in memory until a few blocks after one carrying them commits (bounded; the oldest go first).",
            "gauge",
            get(&self.recent_batch_bytes),
        );
        gauge(
            "quorate_recent_tx_index_entries",
            "Transaction index entries kept in memory until they are written to disk in one sorted run (bounded; a restart reads them back from the committed blocks).",
            "gauge",
            get(&self.recent_tx_index_entries),
        );
        gauge(
            "quorate_checks_waiting",
            "Proposed blocks waiting for data (parent, batches) before they can be checked.",
            "gauge",
            get(&self.checks_waiting),
        );
        gauge(
            "quorate_checks_dropped_total",
            "Proposed blocks dropped unchecked because too many waited for data.",
            "counter",
            get(&self.checks_dropped),
        );
        gauge(
            "quorate_p2p_large_frames_refused_total",
            "Frames over 1 MiB refused because large frames being read already used the shared \
             budget.",
            "counter",
            crate::wire::LARGE_FRAMES_REFUSED.load(Ordering::Relaxed),
        );
        gauge(
            "quorate_p2p_sent_messages_total",
            "Messages (requests) sent to other validators.",
            "counter",
            crate::wire::SENT_MESSAGES.load(Ordering::Relaxed),
        );
        gauge(
            "quorate_p2p_sent_bytes_total",
            "Bytes of frames (requests and answers) sent to other validators.",
            "counter",
            crate::wire::SENT_BYTES.load(Ordering::Relaxed),
        );
        let keys = quorate_crypto::key_cache_stats();
        gauge(
            "quorate_key_cache_keys",
            "Decoded ed25519 keys kept for batch verification (bounded; emptied at the bound).",
            "gauge",
            keys.len,
        );
        gauge(
            "quorate_key_cache_hits_total",
            "Signature checks whose key was already decoded.",
            "counter",
            keys.hits,
        );
        gauge(
            "quorate_key_cache_misses_total",
            "Keys decoded for signature checks.",
            "counter",
            keys.misses,
        );
        gauge(
            "quorate_key_cache_cleared_total",
            "Times the key cache was emptied at its bound.",
            "counter",
            keys.cleared,
        );
        let _ = writeln!(
            out,
            "# HELP quorate_commit_latency_ms Proposal timestamp to local commit.\n# TYPE quorate_commit_latency_ms histogram"
        );
        for (bound, bucket) in LATENCY_BUCKETS_MS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "quorate_commit_latency_ms_bucket{{le=\"{bound}\"}} {}",
                get(bucket)
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(
            out,
            "quorate_commit_latency_ms_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "quorate_commit_latency_ms_sum {}",
            get(&self.latency_sum_ms)
        );
        let _ = writeln!(out, "quorate_commit_latency_ms_count {count}");
        out
    }
}
