//! PBFT engine tests: what one replica does with messages made by hand (the simulator runs the
//! protocol as a whole: `sim/tests.rs`).

use super::*;
use crate::sim::{CryptoMode, Setup};
use crate::FaultInjection;
use quorate_crypto::{Domain, MacKey};
use quorate_ledger::{CheckpointCert, CheckpointData, Epoch, View};
use std::sync::Arc;

struct Net {
    setup: Setup,
}

impl Net {
    fn new() -> Net {
        Net {
            setup: Setup::new(4, CryptoMode::Fast).unwrap(),
        }
    }

    fn config(&self, index: usize) -> EngineConfig {
        let mut config = self.setup.engine_config(index, FaultInjection::None);
        config.keys.mac_keys = self.setup.mac_keys(index);
        config
    }

    fn replica(&self, index: usize) -> Pbft {
        let mut engine = Pbft::recover(self.config(index), None, Vec::new()).unwrap();
        engine.start();
        engine
    }

    fn keys(&self, index: usize) -> Arc<[MacKey]> {
        self.setup.mac_keys(index)
    }

    fn root(&self) -> BlockHeader {
        self.config(0).root
    }

    /// A block at height 1 on the root, proposed in `view` by its primary.
    fn block(&self, view: u64, salt: u8) -> BlockHeader {
        let root = self.root();
        BlockHeader {
            chain_id: root.chain_id.clone(),
            genesis_hash: root.genesis_hash,
            epoch: Epoch(0),
            height: Height(1),
            view: View(view),
            parent: root.hash().unwrap(),
            payload_digest: Digest([salt; 32]),
            state_root: Digest([salt; 32]),
            proposer: (view % 4) as u16,
            timestamp_ms: 1,
        }
    }

    /// A PRE-PREPARE from `from` to `to`, with the MAC of the key they share.
    fn pre_prepare(&self, from: usize, to: usize, view: u64, header: BlockHeader) -> Input {
        let body = PrePrepare {
            view: View(view),
            header,
        };
        let sealed = Authenticated::seal(KIND_PRE_PREPARE, body, &self.keys(from)[to]).unwrap();
        Input::Message {
            from,
            message: Message::Pbft(PbftMessage::PrePrepare(sealed)),
        }
    }

    fn view_change(
        &self,
        replica: usize,
        view: u64,
        prepared: Option<(u64, Digest)>,
    ) -> ViewChange {
        let root = self.root();
        let data = ViewChangeData {
            genesis_hash: root.genesis_hash,
            epoch: Epoch(0),
            view: View(view),
            replica: replica as u16,
            stable: StablePoint::Root {
                height: Height(0),
                block: root.hash().unwrap(),
            },
            prepared: prepared
                .map(|(v, digest)| PreparedEntry {
                    seq: Height(1),
                    view: View(v),
                    digest,
                })
                .into_iter()
                .collect(),
            pre_prepared: prepared
                .map(|(v, digest)| PrePreparedEntry {
                    seq: Height(1),
                    blocks: vec![(digest, View(v))],
                })
                .into_iter()
                .collect(),
        };
        let bytes = data.signing_bytes().unwrap();
        ViewChange {
            signature: self
                .setup
                .signer_for_tests(replica)
                .sign(Domain::ViewChange, &bytes),
            data,
        }
    }

    fn new_view(
        &self,
        to: usize,
        view: u64,
        changes: Vec<ViewChange>,
        reissued: Vec<BlockHeader>,
    ) -> Input {
        let from = (view % 4) as usize;
        let body = NewView {
            view: View(view),
            view_changes: changes,
            reissued,
        };
        let sealed = Authenticated::seal(KIND_NEW_VIEW, body, &self.keys(from)[to]).unwrap();
        Input::Message {
            from,
            message: Message::Pbft(PbftMessage::NewView(sealed)),
        }
    }
}

fn checks(actions: &[Action]) -> Vec<Digest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CheckPayload { header } => header.hash().ok(),
            _ => None,
        })
        .collect()
}

fn prepares(actions: &[Action]) -> Vec<Digest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to: 0,
                message: Message::Pbft(PbftMessage::Prepare(p)),
            } => Some(p.body.digest),
            _ => None,
        })
        .collect()
}

fn misbehaved(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Misbehaved { .. }))
}

#[test]
fn prepare_goes_out_after_its_pre_prepare_is_persisted_and_survives_a_restart() {
    let net = Net::new();
    let mut backup = net.replica(1);
    let a = net.block(0, 1);
    let digest_a = a.hash().unwrap();
    let actions = backup.handle(net.pre_prepare(0, 1, 0, a));
    assert_eq!(checks(&actions), vec![digest_a]);
    let actions = backup.handle(Input::PayloadChecked {
        block: digest_a,
        valid: true,
    });
    let persist = actions
        .iter()
        .position(|a| matches!(a, Action::PersistSafety { .. }))
        .expect("Q is persisted");
    let prepare = actions
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Send {
                    message: Message::Pbft(PbftMessage::Prepare(_)),
                    ..
                }
            )
        })
        .expect("PREPARE goes out");
    assert!(persist < prepare, "PREPARE left before Q was persisted");
    let Some(Action::PersistSafety { bytes }) = actions.get(persist).cloned() else {
        unreachable!()
    };
    // Restarted from what it persisted, the replica refuses another block at (view 0, seq 1):
    // it does not even ask for its payload to be checked.
    let mut restarted = Pbft::recover(net.config(1), Some(&bytes), Vec::new()).unwrap();
    restarted.start();
    let b = net.block(0, 2);
    let actions = restarted.handle(net.pre_prepare(0, 1, 0, b.clone()));
    assert!(
        checks(&actions).is_empty(),
        "a second block at one (view, seq)"
    );
    // A fresh replica would have taken it.
    let mut fresh = net.replica(1);
    let actions = fresh.handle(net.pre_prepare(0, 1, 0, b.clone()));
    assert_eq!(checks(&actions), vec![b.hash().unwrap()]);
}

#[test]
fn messages_with_a_wrong_mac_or_from_a_non_primary_are_ignored() {
    let net = Net::new();
    let mut backup = net.replica(1);
    let a = net.block(0, 1);
    // Replica 2 cannot speak for the primary: its MACs are keyed with its own pair keys.
    let body = PrePrepare {
        view: View(0),
        header: a.clone(),
    };
    let forged = Authenticated::seal(KIND_PRE_PREPARE, body, &net.keys(2)[1]).unwrap();
    let actions = backup.handle(Input::Message {
        from: 0,
        message: Message::Pbft(PbftMessage::PrePrepare(forged)),
    });
    assert!(checks(&actions).is_empty());
    // A genuine pre-prepare from a backup is not one from the primary.
    let actions = backup.handle(net.pre_prepare(2, 1, 0, a.clone()));
    assert!(checks(&actions).is_empty());
    // The real one is taken.
    let actions = backup.handle(net.pre_prepare(0, 1, 0, a.clone()));
    assert_eq!(checks(&actions), vec![a.hash().unwrap()]);
}

#[test]
fn a_view_change_with_a_forged_signature_is_reported() {
    let net = Net::new();
    let mut replica = net.replica(2);
    let mut change = net.view_change(3, 1, None);
    change.signature = net.view_change(0, 1, None).signature;
    let actions = replica.handle(Input::Message {
        from: 3,
        message: Message::Pbft(PbftMessage::ViewChange(change)),
    });
    assert!(misbehaved(&actions));
    // Its signed messages are ignored for a while now: a forgery costs one check.
    let actions = replica.handle(Input::Message {
        from: 3,
        message: Message::Pbft(PbftMessage::ViewChange(net.view_change(3, 2, None))),
    });
    assert!(actions.is_empty());
    // A root that is not the epoch's is refused too.
    let mut replica = net.replica(2);
    let mut change = net.view_change(3, 1, None);
    change.data.stable = StablePoint::Root {
        height: Height(5),
        block: Digest([9; 32]),
    };
    let bytes = change.data.signing_bytes().unwrap();
    change.signature = net
        .setup
        .signer_for_tests(3)
        .sign(Domain::ViewChange, &bytes);
    let actions = replica.handle(Input::Message {
        from: 3,
        message: Message::Pbft(PbftMessage::ViewChange(change)),
    });
    assert!(misbehaved(&actions));
}

/// Block A was prepared in view 0 by replicas 0 and 2 (so it may have committed). The NEW-VIEW
/// of view 1 must re-issue it: one that drops it (as if the new primary dropped a prepared
/// request) is refused and reported; the right one is taken, and A is pre-prepared again in
/// view 1.
#[test]
fn a_new_view_that_drops_a_prepared_block_is_refused() {
    let net = Net::new();
    let a = net.block(0, 1);
    let digest_a = a.hash().unwrap();
    let changes = vec![
        net.view_change(0, 1, Some((0, digest_a))),
        net.view_change(2, 1, Some((0, digest_a))),
        net.view_change(3, 1, None),
    ];
    let mut first = net.replica(3);
    let actions = first.handle(net.new_view(3, 1, changes.clone(), Vec::new()));
    assert!(
        misbehaved(&actions),
        "a NEW-VIEW without the prepared block"
    );
    assert_eq!(first.status().view, View(0));
    // Below quorum.
    let mut second = net.replica(2);
    let actions = second.handle(net.new_view(2, 1, changes[..2].to_vec(), vec![a.clone()]));
    assert!(misbehaved(&actions));
    // Another block in its place.
    let mut third = net.replica(2);
    let actions = third.handle(net.new_view(2, 1, changes.clone(), vec![net.block(0, 7)]));
    assert!(misbehaved(&actions));
    // The right one.
    let mut fourth = net.replica(2);
    let actions = fourth.handle(net.new_view(2, 1, changes, vec![a]));
    assert!(!misbehaved(&actions));
    assert_eq!(fourth.status().view, View(1));
    assert_eq!(checks(&actions), vec![digest_a]);
    let actions = fourth.handle(Input::PayloadChecked {
        block: digest_a,
        valid: true,
    });
    assert_eq!(prepares(&actions), vec![digest_a]);
}

/// A PRE-PREPARE of the next view that arrives before its NEW-VIEW is kept and taken once the
/// NEW-VIEW is; a forged one sent first is not kept, and does not take the slot.
#[test]
fn a_pre_prepare_that_outruns_its_new_view_is_kept_if_genuine() {
    let net = Net::new();
    let changes = vec![
        net.view_change(0, 1, None),
        net.view_change(2, 1, None),
        net.view_change(3, 1, None),
    ];
    let fresh = net.block(1, 5);
    let forged_block = net.block(1, 6);
    let mut replica = net.replica(2);
    // Replica 3 forges the primary's PRE-PREPARE (its MAC is keyed with its own pair key),
    // then replica 1, primary of view 1, pre-prepares: both before replica 2 entered view 1.
    let body = PrePrepare {
        view: View(1),
        header: forged_block,
    };
    let forged = Authenticated::seal(KIND_PRE_PREPARE, body, &net.keys(3)[2]).unwrap();
    let actions = replica.handle(Input::Message {
        from: 1,
        message: Message::Pbft(PbftMessage::PrePrepare(forged)),
    });
    assert!(checks(&actions).is_empty());
    let actions = replica.handle(net.pre_prepare(1, 2, 1, fresh.clone()));
    assert!(checks(&actions).is_empty());
    let actions = replica.handle(net.new_view(2, 1, changes, Vec::new()));
    assert_eq!(replica.status().view, View(1));
    assert_eq!(checks(&actions), vec![fresh.hash().unwrap()]);
}

/// Replica `index` of a chain without a heartbeat, a checkpoint at every block.
fn idle_replica(net: &Net, index: usize) -> Pbft {
    let mut config = net.config(index);
    config.params.checkpoint_interval = 1;
    config.params.idle_interval_ms = 0;
    let mut engine = Pbft::recover(config, None, Vec::new()).unwrap();
    engine.start();
    engine
}

/// What a CHECKPOINT for `block` at height 1 signs.
fn checkpoint_data(net: &Net, block: &BlockHeader) -> CheckpointData {
    CheckpointData {
        genesis_hash: net.root().genesis_hash,
        epoch: Epoch(0),
        seq: quorate_ledger::SeqNum(1),
        height: Height(1),
        block: block.hash().unwrap(),
        state_root: block.state_root,
    }
}

fn checkpoint_from(net: &Net, replica: usize, block: &BlockHeader) -> Checkpoint {
    let data = checkpoint_data(net, block);
    let bytes = data.signing_bytes().unwrap();
    Checkpoint {
        signature: net
            .setup
            .signer_for_tests(replica)
            .sign(Domain::Checkpoint, &bytes),
        data,
    }
}

/// The certificate of `signers`' CHECKPOINTs for `block` at height 1.
fn checkpoint_cert(net: &Net, signers: &[usize], block: &BlockHeader) -> CheckpointCert {
    let votes: Vec<(usize, Checkpoint)> = signers
        .iter()
        .map(|&i| (i, checkpoint_from(net, i, block)))
        .collect();
    let (signers, signature) = net
        .config(0)
        .verifier
        .scheme()
        .aggregate(4, votes.iter().map(|(i, vote)| (*i, &vote.signature)))
        .unwrap();
    CheckpointCert {
        data: checkpoint_data(net, block),
        signers,
        signature,
    }
}

fn broadcasts_view_change(actions: &[Action]) -> bool {
    actions.iter().any(|a| {
        matches!(
            a,
            Action::Broadcast {
                message: Message::Pbft(PbftMessage::ViewChange(_))
            }
        )
    })
}

/// A replica that prepared block 1 on an idle chain, then heard nothing more: the others
/// committed it and reached the checkpoint, but their COMMITs and CHECKPOINTs were lost.
fn prepared_and_left_behind(net: &Net, index: usize) -> (Pbft, BlockHeader) {
    let mut replica = idle_replica(net, index);
    let a = net.block(0, 1);
    replica.handle(net.pre_prepare(0, index, 0, a.clone()));
    let actions = replica.handle(Input::PayloadChecked {
        block: a.hash().unwrap(),
        valid: true,
    });
    assert_eq!(prepares(&actions), vec![a.hash().unwrap()]);
    replica.handle(Input::PayloadPending(false));
    (replica, a)
}

fn progress_timer(replica: &Pbft) -> TimerId {
    TimerId::Progress {
        view: View(0),
        mark: replica.progress_mark,
    }
}

/// Replica 1 with nothing pending, whose progress timer has fired once and passed (idle: no
/// message, the same timer again).
fn idle_after_a_firing(net: &Net) -> (Pbft, TimerId) {
    let mut replica = idle_replica(net, 1);
    replica.handle(Input::PayloadPending(false));
    let timer = progress_timer(&replica);
    let actions = replica.handle(Input::Timer(timer));
    assert!(
        matches!(&actions[..], [Action::SetTimer { timer: t, .. }] if *t == timer),
        "{actions:?}"
    );
    (replica, timer)
}

/// The fresh progress timer `actions` armed for a whole period in place of `old`, which now
/// passes without a word.
fn restarted_progress_timer(replica: &mut Pbft, old: TimerId, actions: &[Action]) -> TimerId {
    let fresh = progress_timer(replica);
    assert_ne!(fresh, old);
    let period = replica.progress_timer_ms();
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::SetTimer { timer, duration_ms } if *timer == fresh && *duration_ms == period
        )),
        "{actions:?}"
    );
    let stale = replica.handle(Input::Timer(old));
    assert!(stale.is_empty(), "{stale:?}");
    fresh
}

#[test]
fn work_arriving_on_an_idle_chain_gets_a_whole_timer_period_before_the_replica_acts() {
    let net = Net::new();
    let (mut replica, timer) = idle_after_a_firing(&net);
    let sends = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Broadcast { .. } | Action::Send { .. }))
            .count()
    };
    // Work arrives between two firings: a whole period from now, on a fresh timer; the old
    // one passes without a word ...
    let actions = replica.handle(Input::PayloadPending(true));
    let fresh = restarted_progress_timer(&mut replica, timer, &actions);
    // ... and the fresh one acts (asks the others first, as any stalled replica does).
    let actions = replica.handle(Input::Timer(fresh));
    assert!(sends(&actions) > 0, "{actions:?}");
}

#[test]
fn a_pre_prepare_on_an_idle_chain_gets_a_whole_timer_period_before_the_replica_acts() {
    // A replica with nothing pending learns of work only from the primary's PRE-PREPARE (at
    // n=100 and 10 tx/s, most replicas never hold a transaction themselves). The timer it
    // armed when the chain went idle must not act on that block after part of a period.
    let net = Net::new();
    let (mut replica, timer) = idle_after_a_firing(&net);
    let actions = replica.handle(net.pre_prepare(0, 1, 0, net.block(0, 7)));
    let fresh = restarted_progress_timer(&mut replica, timer, &actions);
    // A second PRE-PREPARE-less input on the now busy chain does not restart it.
    let actions = replica.handle(Input::PayloadPending(true));
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(progress_timer(&replica), fresh);
}

#[test]
fn a_pre_prepare_from_a_non_primary_or_sent_twice_does_not_restart_the_progress_timer() {
    let net = Net::new();
    let (mut replica, timer) = idle_after_a_firing(&net);
    // Replica 2 is not view 0's primary: its PRE-PREPARE leaves the chain idle.
    replica.handle(net.pre_prepare(2, 1, 0, net.block(0, 7)));
    assert_eq!(progress_timer(&replica), timer);
    // The primary's, twice: the first restarts the timer, the second (and a conflicting one)
    // change nothing.
    let actions = replica.handle(net.pre_prepare(0, 1, 0, net.block(0, 7)));
    let fresh = restarted_progress_timer(&mut replica, timer, &actions);
    for salt in [7, 8] {
        let actions = replica.handle(net.pre_prepare(0, 1, 0, net.block(0, salt)));
        assert!(
            !actions.iter().any(|a| matches!(a, Action::SetTimer { .. })),
            "{actions:?}"
        );
        assert_eq!(progress_timer(&replica), fresh);
    }
}

#[test]
fn an_idle_replica_left_behind_asks_for_the_stable_checkpoint_before_changing_view() {
    let net = Net::new();
    let (mut replica, a) = prepared_and_left_behind(&net, 1);
    let timer = progress_timer(&replica);
    let actions = replica.handle(Input::Timer(timer));
    assert!(!broadcasts_view_change(&actions), "{actions:?}");
    assert!(!replica.safety.view_changing);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Broadcast {
            message: Message::Pbft(PbftMessage::StableQuery(Height(0)))
        }
    )));
    // A peer's certificate: the block commits with it as its proof, and the replica is idle.
    let cert = checkpoint_cert(&net, &[0, 2, 3], &a);
    let actions = replica.handle(Input::Message {
        from: 0,
        message: Message::Pbft(PbftMessage::StableCert(cert)),
    });
    assert!(actions.iter().any(|action| matches!(
        action,
        Action::Commit { header, proof: crate::CommitProof::Pbft { checkpoint: Some(_) } }
            if header.height == Height(1)
    )));
    let timer = progress_timer(&replica);
    let actions = replica.handle(Input::Timer(timer));
    assert!(
        actions.iter().all(|a| matches!(a, Action::SetTimer { .. })),
        "{actions:?}"
    );
    assert!(!replica.safety.view_changing);
}

#[test]
fn without_an_answer_the_view_change_follows_a_short_grace() {
    let net = Net::new();
    let (mut replica, _) = prepared_and_left_behind(&net, 1);
    let timer = progress_timer(&replica);
    let half_grace = replica.timeout_ms() / QUERY_GRACE_DIVISOR / QUERIES;
    // Two queries, half the grace apart (a lost query or answer is asked for again).
    for _ in 0..QUERIES {
        let actions = replica.handle(Input::Timer(timer));
        assert!(!broadcasts_view_change(&actions), "{actions:?}");
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Broadcast {
                message: Message::Pbft(PbftMessage::StableQuery(_))
            }
        )));
        let rearmed = actions.iter().find_map(|a| match a {
            Action::SetTimer {
                timer: t,
                duration_ms,
            } if *t == timer => Some(*duration_ms),
            _ => None,
        });
        assert_eq!(rearmed, Some(half_grace));
    }
    let actions = replica.handle(Input::Timer(timer));
    assert!(broadcasts_view_change(&actions), "{actions:?}");
    assert!(replica.safety.view_changing);
}

#[test]
fn a_replica_answers_stable_queries_twice_per_checkpoint_and_refuses_a_short_certificate() {
    let net = Net::new();
    let mut replica = idle_replica(&net, 0);
    let a = net.block(0, 1);
    for from in [1, 2, 3] {
        replica.handle(Input::Message {
            from,
            message: Message::Pbft(PbftMessage::Checkpoint(checkpoint_from(&net, from, &a))),
        });
    }
    assert_eq!(replica.low_watermark(), Height(1));
    let query = |from| Input::Message {
        from,
        message: Message::Pbft(PbftMessage::StableQuery(Height(0))),
    };
    let answers = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Send {
                        message: Message::Pbft(PbftMessage::StableCert(_)),
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(answers(&replica.handle(query(1))), 1);
    assert_eq!(
        answers(&replica.handle(query(1))),
        1,
        "asked again: the answer may be lost"
    );
    assert_eq!(answers(&replica.handle(query(1))), 0, "asked a third time");
    assert_eq!(answers(&replica.handle(query(2))), 1);
    // A replica at the same checkpoint gets nothing.
    let up_to_date = Input::Message {
        from: 3,
        message: Message::Pbft(PbftMessage::StableQuery(Height(1))),
    };
    assert_eq!(answers(&replica.handle(up_to_date)), 0);

    // Two signatures are not a quorum of four: refused, and the sender reported.
    let (mut behind, _) = prepared_and_left_behind(&net, 1);
    let actions = behind.handle(Input::Message {
        from: 2,
        message: Message::Pbft(PbftMessage::StableCert(checkpoint_cert(&net, &[0, 2], &a))),
    });
    assert!(misbehaved(&actions));
    assert_eq!(behind.low_watermark(), Height(0));
}
