//! The event queue: simulated time, ordered by (time, sequence), and the run loop with its
//! crash schedule.

use super::*;

pub(super) enum Event {
    Deliver {
        to: usize,
        from: usize,
        /// The sender's epoch when it sent the message.
        epoch: usize,
        message: Message,
        bytes: Digest,
    },
    Timer {
        node: usize,
        incarnation: u64,
        timer: TimerId,
    },
    Local {
        node: usize,
        incarnation: u64,
        input: Input,
    },
    Crash {
        node: usize,
        restart_at: u64,
    },
    Restart {
        node: usize,
    },
    Repartition,
    /// Ledger sync's check for validators left in a finished epoch (with reconfigurations).
    LedgerSync,
    /// The proof that `node`'s epoch ended, from a validator in a later epoch that received
    /// one of its messages.
    EpochProof {
        node: usize,
    },
}

/// Events pending at once beyond which a seed stops with a violation.
const MAX_QUEUED_EVENTS: usize = 200_000;

pub(super) struct Scheduled {
    pub(super) time: u64,
    pub(super) seq: u64,
    pub(super) event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on (time, seq).
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

impl World<'_> {
    pub(super) fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            time: self.now + delay,
            seq: self.seq,
            event,
        });
    }

    pub(super) fn run(&mut self) {
        for node in 0..self.nodes.len() {
            if self.nodes[node].role == Role::Silent {
                continue;
            }
            self.boot(node);
        }
        if self.config.reconfigure {
            self.schedule(epochs::SYNC_EVERY_MS, Event::LedgerSync);
        }
        if self.config.asynchrony {
            self.schedule(0, Event::Repartition);
            // Crash one honest validator for a while before GST, in half the seeds.
            if self.gst > 200 && self.rng.chance(0.5) {
                let honest: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].role == Role::Honest)
                    .collect();
                if !honest.is_empty() {
                    let victim = honest[self.rng.range(0, honest.len() as u64 - 1) as usize];
                    let at = self.rng.range(0, self.gst - 100);
                    let restart_at = (at + self.rng.range(100, 1_000)).min(self.gst);
                    self.schedule(
                        at,
                        Event::Crash {
                            node: victim,
                            restart_at,
                        },
                    );
                }
            }
            // Every honest validator crashes at one instant and restarts together, in a share
            // of the seeds: only what each had synced survives, and the chain must go on from
            // that alone (a PBFT chain once stalled here: no restarted replica held the headers
            // of the committed blocks a NEW-VIEW had to re-issue).
            if self.gst > 200 && self.rng.chance(self.config.restart_all) {
                let at = self.rng.range(100, self.gst - 100);
                let restart_at = (at + self.rng.range(50, 500)).min(self.gst);
                for node in 0..self.nodes.len() {
                    if self.nodes[node].role == Role::Honest {
                        self.schedule(at, Event::Crash { node, restart_at });
                    }
                }
            }
        }
        while let Some(next) = self.queue.pop() {
            // After a safety violation the rest of the run shows nothing more (and engines on
            // diverged chains, possible only with an injected fault, can keep fetching forever).
            if next.time > self.end || self.violation.is_some() {
                break;
            }
            // A message storm is a finding in itself (an engine that answers messages with more
            // messages without bound), not something to run out of memory on.
            if self.queue.len() > MAX_QUEUED_EVENTS {
                self.violation.get_or_insert(format!(
                    "message storm: {} events queued at {} ms",
                    self.queue.len(),
                    self.now
                ));
                break;
            }
            self.now = next.time;
            self.dispatch(next.event);
        }
    }
}
