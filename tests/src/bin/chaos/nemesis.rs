//! The nemesis: at seeded random instants, one fault at a time (at most f validators faulty
//! at once), except the split, which deliberately takes the quorum away.

use crate::net::{Emulator, LinkFaults};
use crate::procs::Nodes;
use crate::Monitor;
use anyhow::{bail, Result};
use quorate_consensus::sim::Rng;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 a validator, restart it after a moment.
    Kill9,
    /// SIGSTOP a validator, SIGCONT it later.
    Pause,
    /// Cut one validator off from all others.
    Isolate,
    /// Split the validators into two halves, neither a quorum: the chain must halt, not fork.
    Split,
    /// Drop 30% of one validator's packets.
    Lossy,
    /// Add 200–300 ms to one validator's packets.
    Slow,
    /// kill -9 a validator and restart it with its wall clock seconds off.
    Skew,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::Kill9,
        Fault::Pause,
        Fault::Isolate,
        Fault::Split,
        Fault::Lossy,
        Fault::Slow,
        Fault::Skew,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill9",
            Fault::Pause => "pause",
            Fault::Isolate => "isolate",
            Fault::Split => "split",
            Fault::Lossy => "lossy",
            Fault::Slow => "slow",
            Fault::Skew => "skew",
        }
    }

    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Relative frequency: kill -9 restarts are the bulk of a campaign.
    fn weight(self) -> u64 {
        match self {
            Fault::Kill9 => 50,
            Fault::Pause | Fault::Isolate => 10,
            Fault::Split | Fault::Lossy | Fault::Slow | Fault::Skew => 7,
        }
    }
}

pub struct Nemesis<'a> {
    pub rng: Rng,
    pub nodes: &'a mut Nodes,
    pub emulator: &'a mut Emulator,
    pub monitor: &'a Monitor,
    pub faults: Vec<Fault>,
    pub injected: BTreeMap<&'static str, u64>,
    /// Splits during which a block committed anyway (must stay 0).
    pub commits_without_quorum: u64,
    /// Per split: seconds from the heal until the chain committed again (`None`: it did not
    /// within the recovery limit).
    pub split_resumed_s: Vec<Option<f64>>,
    /// Faults after which the nodes took longer than the recovery limit to catch up.
    pub slow_recoveries: u64,
    /// Nodes that exited on their own (must stay 0), with what they said.
    pub crashes: Vec<String>,
    pub log: Vec<String>,
    pub start: Instant,
}

/// Uniform in `low..=high` milliseconds.
fn millis(rng: &mut Rng, low: u64, high: u64) -> Duration {
    Duration::from_millis(rng.range(low, high))
}

/// How long the nodes get to catch up after a fault is healed before it counts as slow.
const RECOVERY: Duration = Duration::from_secs(30);

impl Nemesis<'_> {
    fn pick(&mut self) -> Fault {
        let total: u64 = self.faults.iter().map(|f| f.weight()).sum();
        let mut roll = self.rng.range(0, total - 1);
        for fault in &self.faults {
            if roll < fault.weight() {
                return *fault;
            }
            roll -= fault.weight();
        }
        self.faults[0]
    }

    /// Sleeps `duration`, sampling memory and noticing nodes that die on their own.
    pub fn wait(&mut self, duration: Duration) -> Result<()> {
        let end = Instant::now() + duration;
        loop {
            self.nodes.sample_rss();
            self.emulator.check()?;
            if let Some((i, status)) = self.nodes.crashed() {
                let log = std::fs::read_to_string(self.nodes.nodes[i].home.join("node.log"))
                    .unwrap_or_default();
                let last = log.lines().last().unwrap_or_default();
                let last: String = last.chars().take(300).collect();
                let crash = format!("node{i} exited by itself ({status}); its log ends: {last}");
                self.note(crash.clone());
                self.crashes.push(crash);
                if self.crashes.len() > 20 {
                    bail!("more than 20 nodes exited by themselves; stopping the campaign");
                }
                // Restarted as an operator's supervisor would, after a moment.
                std::thread::sleep(Duration::from_millis(500));
                self.nodes.start(i, 0)?;
            }
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(200)));
        }
    }

    fn note(&mut self, text: String) {
        let at = self.start.elapsed().as_secs_f64();
        eprintln!("[{at:7.1}s] {text}");
        self.log.push(format!("{at:.1}s {text}"));
    }

    /// Runs one fault from start to heal, then waits until every node has caught up.
    pub fn step(&mut self) -> Result<()> {
        let fault = self.pick();
        let n = self.nodes.nodes.len();
        let victim = self.rng.range(0, n as u64 - 1) as usize;
        *self.injected.entry(fault.name()).or_default() += 1;
        match fault {
            Fault::Kill9 => {
                let down = millis(&mut self.rng, 100, 2000);
                self.note(format!("kill -9 node{victim}, restart after {down:?}"));
                self.nodes.kill9(victim);
                self.wait(down)?;
                self.nodes.start(victim, 0)?;
            }
            Fault::Skew => {
                let seconds = self.rng.range(1, 30) as i64;
                let skew = if self.rng.chance(0.5) {
                    seconds
                } else {
                    -seconds
                };
                self.note(format!(
                    "kill -9 node{victim}, restart with clock {skew:+}s"
                ));
                self.nodes.kill9(victim);
                let down = millis(&mut self.rng, 100, 1000);
                self.wait(down)?;
                self.nodes.start(victim, skew)?;
            }
            Fault::Pause => {
                let hold = millis(&mut self.rng, 1000, 5000);
                self.note(format!("SIGSTOP node{victim} for {hold:?}"));
                self.nodes.pause(victim);
                self.wait(hold)?;
                self.nodes.resume(victim);
            }
            Fault::Isolate => {
                let hold = millis(&mut self.rng, 2000, 8000);
                self.note(format!("isolate node{victim} for {hold:?}"));
                self.emulator
                    .set(|f| f.side = (0..n).map(|i| u8::from(i == victim)).collect());
                self.wait(hold)?;
                self.emulator.set(|f| *f = LinkFaults::healthy(n));
            }
            Fault::Split => {
                let hold = millis(&mut self.rng, 4000, 8000);
                // A random half (the smaller side when n is odd): neither side is a quorum.
                let mut side = vec![0u8; n];
                for i in self.rng.choose(n, n / 2) {
                    side[i] = 1;
                }
                self.note(format!(
                    "split {side:?} for {hold:?} (no quorum on either side)"
                ));
                self.emulator.set(|f| f.side = side);
                // Blocks already certified may still land; after that nothing may commit.
                let settle = Duration::from_millis(2000);
                self.wait(settle)?;
                let before = self.monitor.max_height();
                self.monitor.set_quorum_lost(true);
                self.wait(hold.saturating_sub(settle))?;
                let after = self.monitor.max_height();
                if after > before {
                    self.commits_without_quorum += 1;
                    self.note(format!(
                        "COMMITTED WITHOUT A QUORUM: height {before} -> {after} during the split"
                    ));
                }
                self.emulator.set(|f| *f = LinkFaults::healthy(n));
                self.monitor.set_quorum_lost(false);
                let healed = Instant::now();
                let mut resumed = None;
                while healed.elapsed() < RECOVERY {
                    if self.monitor.max_height() > after {
                        resumed = Some(healed.elapsed().as_secs_f64());
                        break;
                    }
                    self.wait(Duration::from_millis(100))?;
                }
                self.note(match resumed {
                    Some(s) => format!("healed: committing again after {s:.1}s"),
                    None => format!("NOT RESUMED within {RECOVERY:?} of the heal"),
                });
                self.split_resumed_s.push(resumed);
            }
            Fault::Lossy => {
                let hold = millis(&mut self.rng, 3000, 10000);
                self.note(format!("drop 30% of node{victim}'s packets for {hold:?}"));
                self.emulator.set(|f| f.lossy = Some((victim, 30)));
                self.wait(hold)?;
                self.emulator.set(|f| f.lossy = None);
            }
            Fault::Slow => {
                let hold = millis(&mut self.rng, 3000, 10000);
                self.note(format!(
                    "delay node{victim}'s packets by 200+ ms for {hold:?}"
                ));
                self.emulator.set(|f| f.slow = Some((victim, 200)));
                self.wait(hold)?;
                self.emulator.set(|f| f.slow = None);
            }
        }
        self.recover()?;
        let gap = millis(&mut self.rng, 200, 1500);
        self.wait(gap)
    }

    /// Waits until every node reaches the height the highest had when the fault healed.
    fn recover(&mut self) -> Result<()> {
        let target = self.monitor.max_height();
        let deadline = Instant::now() + RECOVERY;
        while self.monitor.min_height() < target {
            if Instant::now() > deadline {
                self.slow_recoveries += 1;
                let heights = self.monitor.heights();
                self.note(format!(
                    "slow recovery: heights {heights:?} after {RECOVERY:?}, target {target}"
                ));
                return Ok(());
            }
            self.wait(Duration::from_millis(200))?;
        }
        Ok(())
    }
}

/// `--faults kill9,pause,...` into the list, every fault when empty.
pub fn parse_faults(names: &[String]) -> Result<Vec<Fault>> {
    if names.is_empty() {
        return Ok(Fault::ALL.to_vec());
    }
    names
        .iter()
        .map(|name| match Fault::parse(name) {
            Some(fault) => Ok(fault),
            None => bail!(
                "unknown fault {name:?}; known: {}",
                Fault::ALL.map(Fault::name).join(", ")
            ),
        })
        .collect()
}
