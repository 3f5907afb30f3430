//! The summary of many seeds: seed reports folded as they arrive, on every core.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Mutex;

/// The summary of many seeds (`quorate sim --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub protocol: &'static str,
    pub crypto: CryptoMode,
    pub validators: usize,
    pub byzantine: usize,
    pub behaviour: Behaviour,
    pub drop: f64,
    pub fault_inject: Option<&'static str>,
    pub seeds: u64,
    pub first_seed: u64,
    pub safety_violations: u64,
    pub first_violating_seed: Option<u64>,
    pub first_violation: Option<String>,
    pub liveness_failures: u64,
    pub first_stalled_seed: Option<u64>,
    pub min_committed: u64,
    pub mean_committed: f64,
    /// Blocks an honest validator commits per simulated second after GST (mean over honest
    /// validators and seeds): the liveness a Byzantine behaviour leaves, to compare with
    /// `silent` on the same seeds.
    pub committed_per_s: f64,
    pub msgs_per_block: f64,
    pub bytes_per_block: f64,
    pub timeouts_per_seed: f64,
    /// See [`SeedReport::lock_refusals`] and [`SeedReport::tc_proposals`].
    pub lock_refusals: u64,
    pub tc_proposals: u64,
    pub tc_proposals_below_high_qc: u64,
    /// Whether the seeds reconfigured the validator set, and the mean number of epochs the
    /// honest validators' committed chains went through.
    pub reconfigure: bool,
    pub mean_epochs: f64,
    /// Epoch endings whose last block was proven through a descendant (see
    /// [`SeedReport::descendant_proofs`]).
    pub descendant_proofs: u64,
    pub elapsed_s: f64,
    pub seeds_per_s: f64,
}

/// Seed reports folded as they come (a run of a million seeds keeps no per-seed data).
#[derive(Default)]
struct Tally {
    seeds: u64,
    /// (seed, what) of the lowest violating seed.
    first_violation: Option<(u64, String)>,
    violations: u64,
    first_stalled: Option<u64>,
    stalls: u64,
    min_committed: Option<u64>,
    committed_sum: u64,
    committed_count: u64,
    after_gst_committed: u64,
    after_gst_ms: u64,
    blocks: u64,
    messages: u64,
    bytes: u64,
    timeouts: u64,
    lock_refusals: u64,
    tc_proposals: u64,
    tc_proposals_below_high_qc: u64,
    epochs: u64,
    descendant_proofs: u64,
}

impl Tally {
    fn add(&mut self, report: SeedReport) {
        self.seeds += 1;
        if let Some(violation) = report.violation {
            self.violations += 1;
            if self
                .first_violation
                .as_ref()
                .is_none_or(|(s, _)| report.seed < *s)
            {
                self.first_violation = Some((report.seed, violation));
            }
        }
        if !report.live {
            self.stalls += 1;
            if self.first_stalled.is_none_or(|s| report.seed < s) {
                self.first_stalled = Some(report.seed);
            }
        }
        for &committed in &report.committed {
            self.min_committed = Some(self.min_committed.map_or(committed, |m| m.min(committed)));
            self.committed_sum += committed;
            self.committed_count += 1;
        }
        for &committed in &report.committed_after_gst {
            self.after_gst_committed += committed;
            self.after_gst_ms += report.after_gst_ms;
        }
        self.blocks += report.committed.iter().copied().max().unwrap_or(0);
        self.messages += report.messages;
        self.bytes += report.bytes;
        self.timeouts += report.timeouts;
        self.lock_refusals += report.lock_refusals;
        self.tc_proposals += report.tc_proposals;
        self.tc_proposals_below_high_qc += report.tc_proposals_below_high_qc;
        self.epochs += report.epochs;
        self.descendant_proofs += report.descendant_proofs;
    }

    fn merge(&mut self, other: Tally) {
        if let Some((seed, violation)) = other.first_violation {
            if self.first_violation.as_ref().is_none_or(|(s, _)| seed < *s) {
                self.first_violation = Some((seed, violation));
            }
        }
        if let Some(seed) = other.first_stalled {
            if self.first_stalled.is_none_or(|s| seed < s) {
                self.first_stalled = Some(seed);
            }
        }
        if let Some(min) = other.min_committed {
            self.min_committed = Some(self.min_committed.map_or(min, |m| m.min(min)));
        }
        self.seeds += other.seeds;
        self.violations += other.violations;
        self.stalls += other.stalls;
        self.committed_sum += other.committed_sum;
        self.committed_count += other.committed_count;
        self.after_gst_committed += other.after_gst_committed;
        self.after_gst_ms += other.after_gst_ms;
        self.blocks += other.blocks;
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.timeouts += other.timeouts;
        self.lock_refusals += other.lock_refusals;
        self.tc_proposals += other.tc_proposals;
        self.tc_proposals_below_high_qc += other.tc_proposals_below_high_qc;
        self.epochs += other.epochs;
        self.descendant_proofs += other.descendant_proofs;
    }
}

/// Runs seeds `first_seed..first_seed + seeds` on `threads` threads.
pub fn run_seeds(
    setup: &Setup,
    config: &SimConfig,
    first_seed: u64,
    seeds: u64,
    threads: usize,
) -> Summary {
    let started = std::time::Instant::now();
    let next = AtomicU64::new(first_seed);
    let total = Mutex::new(Tally::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut tally = Tally::default();
                loop {
                    let seed = next.fetch_add(1, AtomicOrdering::Relaxed);
                    if seed >= first_seed.saturating_add(seeds) {
                        break;
                    }
                    tally.add(run_seed(setup, config, seed));
                }
                if let Ok(mut total) = total.lock() {
                    total.merge(tally);
                }
            });
        }
    });
    let tally = total.into_inner().unwrap_or_default();
    summarize(
        setup,
        config,
        first_seed,
        tally,
        started.elapsed().as_secs_f64(),
    )
}

fn summarize(
    setup: &Setup,
    config: &SimConfig,
    first_seed: u64,
    tally: Tally,
    elapsed_s: f64,
) -> Summary {
    let ratio = |total: u64, count: u64| {
        if count == 0 {
            0.0
        } else {
            total as f64 / count as f64
        }
    };
    let (first_violating_seed, first_violation) = match tally.first_violation {
        Some((seed, violation)) => (Some(seed), Some(violation)),
        None => (None, None),
    };
    Summary {
        protocol: config.protocol.as_str(),
        crypto: setup.crypto,
        validators: config.validators,
        byzantine: config.byzantine,
        behaviour: config.behaviour,
        drop: config.drop_probability,
        fault_inject: match config.fault {
            FaultInjection::None => None,
            FaultInjection::IgnoreLock => Some("ignore-lock"),
            FaultInjection::SkipPrepare => Some("skip-prepare"),
            FaultInjection::LowestPrepared => Some("lowest-prepared"),
        },
        seeds: tally.seeds,
        first_seed,
        safety_violations: tally.violations,
        first_violating_seed,
        first_violation,
        liveness_failures: tally.stalls,
        first_stalled_seed: tally.first_stalled,
        min_committed: tally.min_committed.unwrap_or(0),
        mean_committed: ratio(tally.committed_sum, tally.committed_count),
        committed_per_s: 1000.0 * ratio(tally.after_gst_committed, tally.after_gst_ms),
        msgs_per_block: ratio(tally.messages, tally.blocks),
        bytes_per_block: ratio(tally.bytes, tally.blocks),
        timeouts_per_seed: ratio(tally.timeouts, tally.seeds),
        lock_refusals: tally.lock_refusals,
        tc_proposals: tally.tc_proposals,
        tc_proposals_below_high_qc: tally.tc_proposals_below_high_qc,
        reconfigure: config.reconfigure,
        mean_epochs: ratio(tally.epochs, tally.seeds),
        descendant_proofs: tally.descendant_proofs,
        elapsed_s,
        seeds_per_s: if elapsed_s > 0.0 {
            tally.seeds as f64 / elapsed_s
        } else {
            0.0
        },
    }
}
