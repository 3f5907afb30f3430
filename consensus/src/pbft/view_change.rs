//! What a NEW-VIEW must re-issue, decided from a quorum of VIEW-CHANGEs (Castro & Liskov, TOCS
//! 2002, section 4.5.2, with signed VIEW-CHANGEs in place of view-change acks).
//!
//! For each sequence number n above the chosen stable checkpoint, block d (prepared in view v by
//! some VIEW-CHANGE's P) is chosen when
//! - A1: VIEW-CHANGEs of quorum power report no prepared entry for n, or one from a view below
//!   v, or (v, d) itself; and
//! - A2: VIEW-CHANGEs of validity power (f+1) report that they pre-prepared (or prepared) d at
//!   n in v or later.
//!
//! A1 keeps the choice to what a quorum does not contradict; A2 keeps it to a block some honest
//! replica accepted, so a liar's prepared entry with a made-up view cannot win. Where
//! - B: VIEW-CHANGEs of quorum power report no prepared entry for n,
//!
//! nothing at n can have committed, and the choices stop there. Where neither holds, the
//! VIEW-CHANGEs at hand cannot tell, and the new primary waits for more (with every honest
//! replica's, one of them holds). The re-issued blocks are the chosen ones from the stable point
//! up, as long as each names the one before as its parent; the new primary proposes fresh
//! blocks above them.
//!
//! The invariant: a block that committed at one honest replica at n is re-issued, with the same
//! digest, by every later NEW-VIEW whose stable point is below n. Committed means a quorum sent
//! COMMIT, so f+1 honest replicas prepared it and keep it in P (a later view can only prepare
//! it again); they make A1 hold for it and B fail, and its pre-prepares make A2 hold. A replica
//! sends COMMIT for n only once it committed n-1 or sent COMMIT for it, so all of n's ancestors
//! above the stable point are chosen and chained too.

use super::messages::{PrePreparedEntry, PreparedEntry, StablePoint, ViewChangeData};
use crate::FaultInjection;
use quorate_crypto::Digest;
use quorate_ledger::{Height, View};

/// The outcome: the stable point the new view starts from, and the blocks chosen above it, in
/// sequence order (each still to be checked against its header: see
/// [`reissued_prefix`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub stable: StablePoint,
    pub chosen: Vec<Digest>,
}

/// Decides over `changes` (already checked: one per replica, all for the same view), where
/// `power(i)` is replica i's voting power. `None`: more VIEW-CHANGEs are needed.
pub(crate) fn decide(
    changes: &[&ViewChangeData],
    power: &dyn Fn(usize) -> u64,
    quorum: u64,
    validity: u64,
    window: u64,
    fault: FaultInjection,
) -> Option<Decision> {
    // The highest stable point: every honest replica's log below it is settled.
    let stable = changes
        .iter()
        .map(|c| &c.stable)
        .max_by(|a, b| {
            a.height()
                .cmp(&b.height())
                // Two certificates at one height name one block unless a quorum lied; the tie
                // is broken the same way by everyone.
                .then_with(|| b.block().0.cmp(&a.block().0))
        })?
        .clone();
    let mut chosen = Vec::new();
    let mut seq = stable.height().next();
    while seq.0 <= stable.height().0.saturating_add(window) {
        let pick = match fault {
            FaultInjection::LowestPrepared => lowest_prepared(changes, seq),
            _ => choose(changes, seq, power, quorum, validity),
        };
        match pick {
            Some(digest) => chosen.push(digest),
            None => {
                let unprepared = changes
                    .iter()
                    .filter(|c| prepared_at(c, seq).is_none())
                    .map(|c| power(c.replica as usize))
                    .fold(0, u64::saturating_add);
                let condition_b = unprepared >= quorum || fault == FaultInjection::LowestPrepared;
                // Neither A nor B: these VIEW-CHANGEs cannot tell what may have committed.
                return condition_b.then_some(Decision { stable, chosen });
            }
        }
        seq = seq.next();
    }
    Some(Decision { stable, chosen })
}

fn prepared_at(change: &ViewChangeData, seq: Height) -> Option<&PreparedEntry> {
    change
        .prepared
        .binary_search_by(|e| e.seq.cmp(&seq))
        .ok()
        .and_then(|i| change.prepared.get(i))
}

fn pre_prepared_at(change: &ViewChangeData, seq: Height) -> Option<&PrePreparedEntry> {
    change
        .pre_prepared
        .binary_search_by(|e| e.seq.cmp(&seq))
        .ok()
        .and_then(|i| change.pre_prepared.get(i))
}

fn choose(
    changes: &[&ViewChangeData],
    seq: Height,
    power: &dyn Fn(usize) -> u64,
    quorum: u64,
    validity: u64,
) -> Option<Digest> {
    // Candidates, highest view first (then by digest, so everyone scans in one order).
    let mut candidates: Vec<(View, Digest)> = changes
        .iter()
        .filter_map(|c| prepared_at(c, seq))
        .map(|e| (e.view, e.digest))
        .collect();
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1 .0.cmp(&b.1 .0)));
    candidates.dedup();
    candidates.into_iter().find_map(|(view, digest)| {
        let a1: u64 = changes
            .iter()
            .filter(|c| match prepared_at(c, seq) {
                None => true,
                Some(e) => e.view < view || (e.view == view && e.digest == digest),
            })
            .map(|c| power(c.replica as usize))
            .fold(0, u64::saturating_add);
        // A prepared entry implies the pre-prepare it was prepared from.
        let a2: u64 = changes
            .iter()
            .filter(|c| {
                pre_prepared_at(c, seq)
                    .is_some_and(|e| e.blocks.iter().any(|(d, v)| *d == digest && *v >= view))
                    || prepared_at(c, seq).is_some_and(|e| e.digest == digest && e.view >= view)
            })
            .map(|c| power(c.replica as usize))
            .fold(0, u64::saturating_add);
        (a1 >= quorum && a2 >= validity).then_some(digest)
    })
}

/// The deliberately broken rule (`FaultInjection::LowestPrepared`).
fn lowest_prepared(changes: &[&ViewChangeData], seq: Height) -> Option<Digest> {
    changes
        .iter()
        .filter_map(|c| prepared_at(c, seq))
        .min_by(|a, b| {
            a.view
                .cmp(&b.view)
                .then_with(|| a.digest.0.cmp(&b.digest.0))
        })
        .map(|e| e.digest)
}

/// How many of `decision.chosen` are re-issued, given the headers the NEW-VIEW carries for them
/// (`headers[i]` for `chosen[i]`, hashes already checked): they stop at the first block that
/// does not name the one before it (the stable point's block for the first) as its parent. A
/// block that committed anywhere is never cut: a replica sends COMMIT for n only once it holds
/// n-1 prepared or committed, so everything below a committed block is chosen and chained too.
///
/// `Err(needed)`: the NEW-VIEW must carry the header of `chosen[needed]` too (all of them up to
/// and including the first that breaks the chain, so that a backup can see where it breaks).
pub(crate) fn reissued_prefix(decision: &Decision, parents: &[Digest]) -> Result<usize, usize> {
    let mut previous = decision.stable.block();
    for (i, digest) in decision.chosen.iter().enumerate() {
        let Some(parent) = parents.get(i) else {
            return Err(i);
        };
        if *parent != previous {
            return Ok(i);
        }
        previous = *digest;
    }
    Ok(decision.chosen.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_ledger::Epoch;

    fn d(byte: u8) -> Digest {
        Digest([byte; 32])
    }

    fn change(
        replica: u16,
        prepared: &[(u64, u64, u8)],
        pre_prepared: &[(u64, &[(u8, u64)])],
    ) -> ViewChangeData {
        ViewChangeData {
            genesis_hash: d(0),
            epoch: Epoch(0),
            view: View(10),
            replica,
            stable: StablePoint::Root {
                height: Height(0),
                block: d(100),
            },
            prepared: prepared
                .iter()
                .map(|&(seq, view, digest)| PreparedEntry {
                    seq: Height(seq),
                    view: View(view),
                    digest: d(digest),
                })
                .collect(),
            pre_prepared: pre_prepared
                .iter()
                .map(|&(seq, blocks)| PrePreparedEntry {
                    seq: Height(seq),
                    blocks: blocks.iter().map(|&(b, v)| (d(b), View(v))).collect(),
                })
                .collect(),
        }
    }

    fn run(changes: &[ViewChangeData], fault: FaultInjection) -> Option<Vec<Digest>> {
        let refs: Vec<&ViewChangeData> = changes.iter().collect();
        decide(&refs, &|_| 1, 3, 2, 16, fault).map(|decision| decision.chosen)
    }

    #[test]
    fn a_block_prepared_by_a_quorum_is_chosen_over_a_liars_higher_view() {
        // Replicas 0 and 1 prepared block 1 at seq 1 in view 2 (so it may have committed);
        // replica 3 lies: prepared block 9 in view 7, which nobody else pre-prepared.
        let mut changes = vec![
            change(0, &[(1, 2, 1)], &[(1, &[(1, 2)])]),
            change(1, &[(1, 2, 1)], &[(1, &[(1, 2)])]),
            change(3, &[(1, 7, 9)], &[(1, &[(9, 7)])]),
        ];
        // The liar's entry contradicts block 1 (A1 fails) and nothing else qualifies, but a
        // quorum did prepare something (B fails): wait for more.
        assert_eq!(run(&changes, FaultInjection::None), None);
        // With the fourth replica's (it prepared nothing), block 1 is chosen.
        changes.push(change(2, &[], &[]));
        assert_eq!(run(&changes, FaultInjection::None), Some(vec![d(1)]));
        // A1 alone would take the liar's: A2 (f+1 pre-prepared it) is what refuses it. With
        // three VIEW-CHANGEs, B cannot hold either (the liar is one of them): wait; with the
        // fourth, a quorum prepared nothing at 1, and nothing is re-issued.
        let mut changes = vec![
            change(0, &[], &[]),
            change(1, &[], &[]),
            change(3, &[(1, 7, 9)], &[(1, &[(9, 7)])]),
        ];
        assert_eq!(run(&changes, FaultInjection::None), None);
        changes.push(change(2, &[], &[]));
        assert_eq!(run(&changes, FaultInjection::None), Some(vec![]));
    }

    #[test]
    fn a_later_view_prepare_wins_when_no_quorum_contradicts_it() {
        // Block 1 prepared at view 2 by one replica only (cannot have committed); block 2
        // prepared at view 4 by two, pre-prepared by two.
        let changes = [
            change(0, &[(1, 2, 1)], &[(1, &[(1, 2)])]),
            change(1, &[(1, 4, 2)], &[(1, &[(2, 4)])]),
            change(2, &[(1, 4, 2)], &[(1, &[(2, 4), (1, 2)])]),
        ];
        assert_eq!(run(&changes, FaultInjection::None), Some(vec![d(2)]));
        // The broken rule takes the lowest view instead.
        assert_eq!(
            run(&changes, FaultInjection::LowestPrepared),
            Some(vec![d(1)])
        );
    }

    #[test]
    fn choices_stop_at_the_first_gap_and_prefix_stops_at_a_broken_chain() {
        let changes = [
            change(
                0,
                &[(1, 1, 1), (2, 1, 2), (4, 1, 4)],
                &[(1, &[(1, 1)]), (2, &[(2, 1)]), (4, &[(4, 1)])],
            ),
            change(
                1,
                &[(1, 1, 1), (2, 1, 2), (4, 1, 4)],
                &[(1, &[(1, 1)]), (2, &[(2, 1)]), (4, &[(4, 1)])],
            ),
            change(2, &[], &[]),
            change(3, &[], &[]),
        ];
        let refs: Vec<&ViewChangeData> = changes.iter().collect();
        let decision = decide(&refs, &|_| 1, 3, 2, 16, FaultInjection::None).unwrap();
        assert_eq!(decision.chosen, vec![d(1), d(2)]);
        assert_eq!(reissued_prefix(&decision, &[d(100), d(1)]), Ok(2));
        assert_eq!(reissued_prefix(&decision, &[d(100), d(7)]), Ok(1));
        assert_eq!(reissued_prefix(&decision, &[d(100)]), Err(1));
    }
}
