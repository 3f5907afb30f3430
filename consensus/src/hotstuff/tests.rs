//! Unit tests of the safety rules, the commit rule, and restart from persisted state.

use super::*;
use crate::sim::{CryptoMode, Setup};
use crate::FaultInjection;
use quorate_crypto::{BlsAggregate, Domain};
use quorate_ledger::{Epoch, Height, TimeoutData};

struct Chain {
    setup: Setup,
    /// Every block made, so each is proposed by the leader the engine elects for it.
    tree: std::cell::RefCell<BlockTree>,
    leaders: LeaderSchedule,
}

impl Chain {
    fn new() -> Self {
        // Real BLS: these certificates also go through `verify_commit_proof`, as in audit.
        let setup = Setup::new(4, CryptoMode::Real).unwrap();
        let engine = HotStuff::new(setup.engine_config(0, FaultInjection::None)).unwrap();
        let root = engine.tree.get(&engine.root_qc.data.block).unwrap();
        let tree = BlockTree::new(engine.root_qc.data.block, HsBlock::clone(root));
        let leaders = LeaderSchedule::new(engine.config.validators.clone(), &[]);
        Chain {
            setup,
            tree: std::cell::RefCell::new(tree),
            leaders,
        }
    }

    /// The leader of `view` extending the block `justify` certifies: elected by that QC if it
    /// is for the view before, else round robin (the view was entered by a TC).
    fn leader(&self, view: u64, justify: &QuorumCert) -> u16 {
        let view = View(view);
        let elected = (justify.data.view.next() == view)
            .then(|| {
                self.leaders
                    .after(&self.tree.borrow(), &justify.data.block, view)
            })
            .flatten();
        elected.unwrap_or_else(|| self.leaders.round_robin(view)) as u16
    }

    fn config(&self, index: usize) -> EngineConfig {
        self.setup.engine_config(index, FaultInjection::None)
    }

    fn root(&self) -> (Digest, QuorumCert) {
        let engine = HotStuff::new(self.config(0)).unwrap();
        let qc = engine.root_qc.clone();
        (qc.data.block, qc)
    }

    /// Five blocks in views 1, 3, 4, 5, 6 (view 2 timed out), each justified by the QC of the
    /// one before (the first by `root_qc`).
    fn gapped(&self, root_qc: &QuorumCert) -> [HsBlock; 5] {
        let mut justify = root_qc.clone();
        let mut blocks = Vec::new();
        for (salt, view) in [1u64, 3, 4, 5, 6].into_iter().enumerate() {
            let (hash, block) = self.block(view, &justify, salt as u8 + 1);
            justify = self.qc(hash, &block);
            blocks.push(block);
        }
        blocks.try_into().unwrap()
    }

    /// A block in `view` extending the block certified by `justify`.
    fn block(&self, view: u64, justify: &QuorumCert, salt: u8) -> (Digest, HsBlock) {
        let config = self.config(0);
        let header = BlockHeader {
            chain_id: config.chain_id.clone(),
            genesis_hash: config.genesis_hash,
            epoch: Epoch(0),
            height: justify.data.height.next(),
            view: View(view),
            parent: justify.data.block,
            payload_digest: quorate_crypto::hash(Domain::Payload, &[salt]),
            state_root: Digest([salt; 32]),
            proposer: self.leader(view, justify),
            timestamp_ms: view,
        };
        let block = HsBlock {
            header,
            justify: justify.clone(),
        };
        let hash = block.hash().unwrap();
        self.tree.borrow_mut().insert(hash, block.clone());
        (hash, block)
    }

    /// A QC for `block` signed by validators 0, 1, 2.
    fn qc(&self, hash: Digest, block: &HsBlock) -> QuorumCert {
        self.qc_signed_by(hash, block, [0, 1, 2])
    }

    /// A QC for `block` signed by the three validators `signers`.
    fn qc_signed_by(&self, hash: Digest, block: &HsBlock, signers: [usize; 3]) -> QuorumCert {
        let config = self.config(0);
        let data = VoteData {
            genesis_hash: config.genesis_hash,
            epoch: Epoch(0),
            view: block.header.view,
            height: block.header.height,
            block: hash,
        };
        let bytes = data.signing_bytes().unwrap();
        let mut aggregate = BlsAggregate::new(4);
        for i in signers {
            aggregate
                .add(
                    i,
                    &self.setup.signer_for_tests(i).sign(Domain::Vote, &bytes),
                )
                .unwrap();
        }
        QuorumCert {
            data,
            signers: aggregate.bitmap().clone(),
            signature: aggregate.signature().unwrap(),
        }
    }

    /// A TC for `view` signed by validators 0, 1, 2, none of which held a QC past the root.
    fn tc(&self, view: u64) -> TimeoutCert {
        self.tc_with(view, [0, 0, 0])
    }

    /// A TC for `view` whose signers 0, 1, 2 held high QCs of `high_qc_views`.
    fn tc_with(&self, view: u64, high_qc_views: [u64; 3]) -> TimeoutCert {
        let config = self.config(0);
        let data = TimeoutData {
            genesis_hash: config.genesis_hash,
            epoch: Epoch(0),
            view: View(view),
        };
        let mut aggregate = BlsAggregate::new(4);
        for (i, high_qc_view) in high_qc_views.into_iter().enumerate() {
            let vote = quorate_ledger::TimeoutVote {
                data,
                high_qc_view: View(high_qc_view),
            };
            let bytes = vote.signing_bytes().unwrap();
            aggregate
                .add(
                    i,
                    &self.setup.signer_for_tests(i).sign(Domain::Timeout, &bytes),
                )
                .unwrap();
        }
        TimeoutCert {
            data,
            signers: aggregate.bitmap().clone(),
            high_qc_views: high_qc_views.into_iter().map(View).collect(),
            signature: aggregate.signature().unwrap(),
        }
    }
}

/// Delivers a proposal and answers its payload check; returns all actions.
fn deliver(engine: &mut HotStuff, block: &HsBlock, tc: Option<TimeoutCert>) -> Vec<Action> {
    let from = block.header.proposer as usize;
    let mut actions = engine.handle(Input::Message {
        from,
        message: Message::HotStuff(HsMessage::Proposal(Proposal {
            block: block.clone(),
            tc,
        })),
    });
    let checks: Vec<Digest> = actions
        .iter()
        .filter_map(|a| match a {
            Action::CheckPayload { header } => header.hash().ok(),
            _ => None,
        })
        .collect();
    for hash in checks {
        actions.extend(engine.handle(Input::PayloadChecked {
            block: hash,
            valid: true,
        }));
    }
    actions
}

fn votes(actions: &[Action]) -> Vec<Vote> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                message: Message::HotStuff(HsMessage::Vote(vote)),
                ..
            } => Some(vote.clone()),
            _ => None,
        })
        .collect()
}

fn commits(actions: &[Action]) -> Vec<(Height, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Commit {
                header,
                proof: CommitProof::HotStuff { three_chain, .. },
            } => Some((header.height, three_chain.is_some())),
            _ => None,
        })
        .collect()
}

#[test]
fn votes_once_per_view_and_persists_before_sending() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let (_, b1) = chain.block(1, &root_qc, 1);
    let actions = deliver(&mut engine, &b1, None);
    let persist_at = actions
        .iter()
        .position(|a| matches!(a, Action::PersistSafety { .. }))
        .expect("safety state persisted");
    let vote_at = actions
        .iter()
        .position(|a| matches!(a, Action::Send { .. }))
        .expect("vote sent");
    assert!(
        persist_at < vote_at,
        "the vote left before its view was durable"
    );
    assert_eq!(votes(&actions).len(), 1);
    // A conflicting block for the same view gets no vote.
    let (_, b1_conflict) = chain.block(1, &root_qc, 2);
    assert!(votes(&deliver(&mut engine, &b1_conflict, None)).is_empty());
}

#[test]
fn restarted_validator_refuses_a_second_vote_in_its_view() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let (_, b1) = chain.block(1, &root_qc, 1);
    let actions = deliver(&mut engine, &b1, None);
    let first_vote = votes(&actions).pop().expect("voted");
    let persisted = actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::PersistSafety { bytes } => Some(bytes.clone()),
            _ => None,
        })
        .expect("persisted");
    drop(engine);

    // Restart from what was persisted, with no stored blocks at all.
    let mut restarted = HotStuff::recover(chain.config(3), Some(&persisted), Vec::new()).unwrap();
    restarted.start();
    let (_, conflicting) = chain.block(1, &root_qc, 9);
    assert!(
        votes(&deliver(&mut restarted, &conflicting, None)).is_empty(),
        "restarted validator signed a second vote in view 1"
    );
    // Asked again for the very block it voted for, it returns the same vote (idempotent).
    let mut again = HotStuff::recover(chain.config(3), Some(&persisted), Vec::new()).unwrap();
    again.start();
    let repeated = votes(&deliver(&mut again, &b1, None));
    assert_eq!(repeated, vec![first_vote]);
}

#[test]
fn three_chain_with_consecutive_views_commits() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let (h1, b1) = chain.block(1, &root_qc, 1);
    let qc1 = chain.qc(h1, &b1);
    let (h2, b2) = chain.block(2, &qc1, 2);
    let qc2 = chain.qc(h2, &b2);
    let (h3, b3) = chain.block(3, &qc2, 3);
    let qc3 = chain.qc(h3, &b3);
    let (_, b4) = chain.block(4, &qc3, 4);
    assert!(commits(&deliver(&mut engine, &b1, None)).is_empty());
    assert!(commits(&deliver(&mut engine, &b2, None)).is_empty());
    assert!(commits(&deliver(&mut engine, &b3, None)).is_empty());
    assert_eq!(engine.safety_data().locked_qc.data.view, View(1));
    assert_eq!(
        commits(&deliver(&mut engine, &b4, None)),
        vec![(Height(1), true)]
    );
    assert_eq!(engine.safety_data().locked_qc.data.view, View(2));
}

#[test]
fn a_gap_in_views_delays_the_commit_until_a_consecutive_three_chain() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    // View 2 timed out; b2 is in view 3, justified by TC(2).
    let [b1, b2, b3, b4, b5] = chain.gapped(&root_qc);
    assert!(commits(&deliver(&mut engine, &b1, None)).is_empty());
    assert!(commits(&deliver(&mut engine, &b2, Some(chain.tc(2)))).is_empty());
    assert!(commits(&deliver(&mut engine, &b3, None)).is_empty());
    // QC(b3): b1 <- b2 <- b3 has views 1, 3, 4: not consecutive, nothing commits.
    assert!(commits(&deliver(&mut engine, &b4, None)).is_empty());
    // QC(b4): b2 <- b3 <- b4 has views 3, 4, 5: commits b1 (ancestor) then b2 (direct).
    assert_eq!(
        commits(&deliver(&mut engine, &b5, None)),
        vec![(Height(1), false), (Height(2), true)]
    );
}

#[test]
fn forged_certificates_are_rejected_before_touching_state() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let (h1, b1) = chain.block(1, &root_qc, 1);
    let mut qc1 = chain.qc(h1, &b1);
    // Claim validator 3 signed too, without its signature.
    qc1.signers.insert(3);
    let (_, b2) = chain.block(2, &qc1, 2);
    let actions = deliver(&mut engine, &b2, None);
    assert!(votes(&actions).is_empty());
    assert_eq!(engine.safety_data().high_qc.data.view, View(0));
    assert_eq!(engine.status().view, View(1));
    // A proposal from a validator that does not lead the view is ignored.
    let (_, mut wrong_leader) = chain.block(1, &root_qc, 3);
    wrong_leader.header.proposer = 2;
    assert!(votes(&deliver(&mut engine, &wrong_leader, None)).is_empty());
}

#[test]
fn safe_node_rule_refuses_a_fork_of_the_lock_unless_justified_by_a_newer_qc() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let key = crate::Signer::bls(std::sync::Arc::new(
        quorate_crypto::BlsKeyPair::from_seed_insecure(3),
    ));
    let (h1, b1) = chain.block(1, &root_qc, 1);
    let qc1 = chain.qc(h1, &b1);
    let (h2, b2) = chain.block(2, &qc1, 2);
    let qc2 = chain.qc(h2, &b2);
    let data = SafetyData {
        epoch: Epoch(0),
        last_voted_view: View(2),
        locked_qc: qc2.clone(),
        high_qc: qc2.clone(),
        last_tc: None,
        last_vote: None,
        last_proposed_view: View(0),
    };
    let rules = SafetyRules::new(key.clone(), data.clone(), FaultInjection::None);
    // A fork from b1 in view 3, justified by QC(b1) (older than the lock): refused.
    let (_, fork) = chain.block(3, &qc1, 7);
    assert!(matches!(
        rules.safe_to_vote(&fork, false, None),
        Err(VoteRefused::NotSafeNode { .. })
    ));
    // Extending the lock: accepted.
    let (_, extension) = chain.block(3, &qc2, 8);
    assert!(rules.safe_to_vote(&extension, true, None).is_ok());
    // Stale view: refused.
    let (_, stale) = chain.block(2, &qc1, 9);
    assert!(matches!(
        rules.safe_to_vote(&stale, true, None),
        Err(VoteRefused::StaleView { .. })
    ));
    // The fault-injected engine skips the lock check.
    let broken = SafetyRules::new(key, data, FaultInjection::IgnoreLock);
    assert!(broken.safe_to_vote(&fork, false, None).is_ok());
}

fn commit_proofs(actions: &[Action]) -> Vec<(BlockHeader, CommitProof)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Commit { header, proof } => Some((header.clone(), proof.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn emitted_commit_proofs_verify_on_their_own_and_tampering_is_caught() {
    use crate::{verify_commit_proof, CertificateVerifier, ProofError, ProofStrength};
    let chain = Chain::new();
    let config = chain.config(3);
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    // Views 1, 3, 4, 5, 6: b1 is committed as an ancestor, b2 directly.
    let [b1, b2, b3, b4, b5] = chain.gapped(&root_qc);
    deliver(&mut engine, &b1, None);
    deliver(&mut engine, &b2, Some(chain.tc(2)));
    deliver(&mut engine, &b3, None);
    deliver(&mut engine, &b4, None);
    let proofs = commit_proofs(&deliver(&mut engine, &b5, None));
    assert_eq!(proofs.len(), 2);
    let verifier = CertificateVerifier::new();
    let check = |header: &BlockHeader, proof: &CommitProof| {
        verify_commit_proof(
            header,
            proof,
            config.genesis_hash,
            &config.validators,
            &verifier,
        )
    };
    assert_eq!(
        check(&proofs[0].0, &proofs[0].1),
        Ok(ProofStrength::Certified)
    );
    assert_eq!(
        check(&proofs[1].0, &proofs[1].1),
        Ok(ProofStrength::Committed)
    );
    // The proof of b2 does not prove b1, nor a b2 with another state root.
    assert!(matches!(
        check(&proofs[0].0, &proofs[1].1),
        Err(ProofError::WrongBlock { .. })
    ));
    let mut altered = proofs[1].0.clone();
    altered.state_root = quorate_crypto::hash(Domain::StateRoot, b"other");
    assert!(check(&altered, &proofs[1].1).is_err());
    // A three-chain whose views are not consecutive, or whose QC lost a signer, fails.
    let CommitProof::HotStuff { qc, three_chain } = proofs[1].1.clone() else {
        panic!("a HotStuff engine committed with a PBFT proof");
    };
    let mut chain3 = three_chain.clone().unwrap();
    chain3.grandchild.view = View(chain3.grandchild.view.0 + 1);
    assert!(check(
        &proofs[1].0,
        &CommitProof::HotStuff {
            qc: qc.clone(),
            three_chain: Some(chain3)
        }
    )
    .is_err());
    let mut weak = three_chain.unwrap();
    let signer = weak.grandchild_qc.signers.signers().next().unwrap();
    weak.grandchild_qc.signers.remove(signer);
    assert!(matches!(
        check(
            &proofs[1].0,
            &CommitProof::HotStuff {
                qc,
                three_chain: Some(weak)
            }
        ),
        Err(ProofError::BadCertificate { .. })
    ));
}

fn payload_requests(actions: &[Action]) -> Vec<(View, Digest)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RequestPayload { view, parent, .. } => Some((*view, parent.hash().unwrap())),
            _ => None,
        })
        .collect()
}

fn proposals(actions: &[Action]) -> Vec<Proposal> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast {
                message: Message::HotStuff(HsMessage::Proposal(proposal)),
            } => Some(proposal.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn leader_rebuilds_its_payload_when_a_newer_qc_arrives_meanwhile() {
    let chain = Chain::new();
    let (root, root_qc) = chain.root();
    // Validator 3 leads view 3; it enters it by TC(2) knowing only the root's QC.
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let (b1_hash, b1) = chain.block(1, &root_qc, 1);
    deliver(&mut engine, &b1, None);
    let sync = |high_qc: QuorumCert, last_tc: Option<TimeoutCert>| Input::Message {
        from: 0,
        message: Message::HotStuff(HsMessage::SyncInfo(SyncInfo { high_qc, last_tc })),
    };
    let actions = engine.handle(sync(root_qc.clone(), Some(chain.tc(2))));
    assert_eq!(payload_requests(&actions), vec![(View(3), root)]);
    // While the payload is built on the root, the QC of b1 arrives.
    let actions = engine.handle(sync(chain.qc(b1_hash, &b1), None));
    assert!(proposals(&actions).is_empty());
    let payload = |salt: u8| PayloadProposal {
        payload_digest: quorate_crypto::hash(Domain::Payload, &[salt]),
        state_root: Digest([salt; 32]),
        timestamp_ms: 10,
        empty: false,
    };
    // The payload built on the root is not proposed on top of b1: it is built again on b1.
    let actions = engine.handle(Input::PayloadReady {
        view: View(3),
        payload: payload(7),
    });
    assert!(proposals(&actions).is_empty(), "stale payload proposed");
    assert_eq!(payload_requests(&actions), vec![(View(3), b1_hash)]);
    let actions = engine.handle(Input::PayloadReady {
        view: View(3),
        payload: payload(8),
    });
    let proposed = proposals(&actions);
    assert_eq!(proposed.len(), 1);
    assert_eq!(proposed[0].block.header.parent, b1_hash);
    assert_eq!(proposed[0].block.header.state_root, Digest([8; 32]));
}

#[test]
fn leader_restarted_before_its_own_vote_never_proposes_twice_in_a_view() {
    let chain = Chain::new();
    // Validator 1 leads view 1, the first view after the root.
    let mut engine = HotStuff::new(chain.config(1)).unwrap();
    let actions = engine.start();
    assert_eq!(payload_requests(&actions).len(), 1);
    let actions = engine.handle(Input::PayloadReady {
        view: View(1),
        payload: PayloadProposal {
            payload_digest: quorate_crypto::hash(Domain::Payload, b"first"),
            state_root: Digest([1; 32]),
            timestamp_ms: 1,
            empty: false,
        },
    });
    let persist_at = actions
        .iter()
        .position(|a| matches!(a, Action::PersistSafety { .. }))
        .expect("the proposal is recorded durably");
    let proposal_at = actions
        .iter()
        .position(|a| matches!(a, Action::Broadcast { .. }))
        .expect("proposed");
    assert!(
        persist_at < proposal_at,
        "the proposal left before it was durable"
    );
    let Some(Action::PersistSafety { bytes }) = actions.get(persist_at) else {
        unreachable!()
    };
    // Crash here: the proposal is out, the leader's own vote was never signed or persisted.
    let mut restarted = HotStuff::recover(chain.config(1), Some(bytes), Vec::new()).unwrap();
    let mut actions = restarted.start();
    actions.extend(restarted.handle(Input::PayloadReady {
        view: View(1),
        payload: PayloadProposal {
            payload_digest: quorate_crypto::hash(Domain::Payload, b"second"),
            state_root: Digest([2; 32]),
            timestamp_ms: 2,
            empty: false,
        },
    }));
    assert!(payload_requests(&actions).is_empty());
    assert!(
        proposals(&actions).is_empty(),
        "a second proposal in view 1"
    );
}

#[test]
fn safety_data_of_the_previous_layout_is_read_on_upgrade() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let (h1, b1) = chain.block(1, &root_qc, 1);
    let old = safety::SafetyDataV1 {
        epoch: Epoch(0),
        last_voted_view: View(5),
        locked_qc: root_qc.clone(),
        high_qc: chain.qc(h1, &b1),
        last_tc: None,
        last_vote: None,
    };
    let bytes = quorate_ledger::codec::encode(&old).unwrap();
    let engine = HotStuff::recover(chain.config(1), Some(&bytes), Vec::new()).unwrap();
    let data = engine.safety_data();
    assert_eq!(data.last_voted_view, View(5));
    assert_eq!(data.last_proposed_view, View(5));
    assert_eq!(data.high_qc.data.block, h1);
    // Garbage is still refused, naming the current layout's problem.
    assert!(
        HotStuff::recover(chain.config(1), Some(&bytes[..bytes.len() - 1]), Vec::new()).is_err()
    );
    // The layout before timeouts named their high QC: its last TC cannot be checked now and is
    // dropped; everything else is kept.
    let old_tc = chain.tc(4);
    let v2 = safety::SafetyDataV2 {
        epoch: Epoch(0),
        last_voted_view: View(5),
        locked_qc: root_qc.clone(),
        high_qc: chain.qc(h1, &b1),
        last_tc: Some(safety::TimeoutCertV1 {
            data: old_tc.data,
            signers: old_tc.signers,
            signature: old_tc.signature,
        }),
        last_vote: None,
        last_proposed_view: View(3),
    };
    let bytes = quorate_ledger::codec::encode(&v2).unwrap();
    let engine = HotStuff::recover(chain.config(1), Some(&bytes), Vec::new()).unwrap();
    let data = engine.safety_data();
    assert_eq!(data.last_voted_view, View(5));
    assert_eq!(data.last_proposed_view, View(3));
    assert_eq!(data.high_qc.data.block, h1);
    assert!(data.last_tc.is_none());
}

#[test]
fn a_leaders_second_proposal_in_a_view_is_neither_verified_nor_stored() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let stored = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::StoreBlock { .. }))
            .count()
    };
    let (_, first) = chain.block(1, &root_qc, 1);
    assert_eq!(stored(&deliver(&mut engine, &first, None)), 1);
    // The equivocating leader of view 1 sends many more blocks for the same view: before this
    // bound every one was inserted into the tree and written to the store until the next commit.
    for salt in 2..40u8 {
        let (_, other) = chain.block(1, &root_qc, salt);
        let actions = deliver(&mut engine, &other, None);
        assert_eq!(stored(&actions), 0, "equivocation {salt} was stored");
        assert!(votes(&actions).is_empty());
    }
    assert_eq!(engine.tree.chain(&first.hash().unwrap(), 10).len(), 2);
    // The first one is still there and the chain goes on from it.
    let qc1 = chain.qc(first.hash().unwrap(), &first);
    let (_, second) = chain.block(2, &qc1, 50);
    assert_eq!(stored(&deliver(&mut engine, &second, None)), 1);
}

#[test]
fn a_peer_that_sends_a_forged_certificate_costs_one_check_then_is_ignored() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let (h1, b1) = chain.block(1, &root_qc, 1);
    let mut forged = chain.qc(h1, &b1);
    forged.signers.insert(3); // claims a signature it does not carry
    let sync = |qc: &QuorumCert| Input::Message {
        from: 2,
        message: Message::HotStuff(HsMessage::SyncInfo(SyncInfo {
            high_qc: qc.clone(),
            last_tc: None,
        })),
    };
    let misbehaved = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Misbehaved { peer: 2, .. }))
            .count()
    };
    assert_eq!(misbehaved(&engine.handle(sync(&forged))), 1);
    // The flood that follows costs nothing: before this budget every copy was a pairing.
    for _ in 0..50 {
        assert!(engine.handle(sync(&forged)).is_empty());
    }
    // Even a valid certificate from it is ignored for now...
    let valid = chain.qc(h1, &b1);
    assert!(engine.handle(sync(&valid)).is_empty());
    assert_eq!(engine.safety_data().high_qc.data.view, View(0));
    // ...while the same certificate from an honest peer is taken.
    engine.handle(Input::Message {
        from: 1,
        message: Message::HotStuff(HsMessage::SyncInfo(SyncInfo {
            high_qc: valid,
            last_tc: None,
        })),
    });
    assert_eq!(engine.safety_data().high_qc.data.view, View(1));
}

/// Honest validators forward the epoch root's certificate, which has no signers (a restarted
/// validator's root is a later block, so it is not that validator's own root QC): failing it
/// costs no pairing and must not mark the sender Byzantine.
#[test]
fn a_certificate_without_signers_is_refused_without_blaming_the_sender() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let mut unsigned = root_qc.clone();
    unsigned.data.view = View(7);
    let actions = engine.handle(Input::Message {
        from: 2,
        message: Message::HotStuff(HsMessage::SyncInfo(SyncInfo {
            high_qc: unsigned,
            last_tc: None,
        })),
    });
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::Misbehaved { .. })));
    // The sender is still heard.
    let (h1, b1) = chain.block(1, &root_qc, 1);
    engine.handle(Input::Message {
        from: 2,
        message: Message::HotStuff(HsMessage::SyncInfo(SyncInfo {
            high_qc: chain.qc(h1, &b1),
            last_tc: None,
        })),
    });
    assert_eq!(engine.safety_data().high_qc.data.view, View(1));
}

fn sync_from(from: usize, high_qc: QuorumCert, last_tc: Option<TimeoutCert>) -> Input {
    Input::Message {
        from,
        message: Message::HotStuff(HsMessage::SyncInfo(SyncInfo { high_qc, last_tc })),
    }
}

/// Jolteon: a TC names the high QC of each signer, and a proposal it justifies must extend a QC
/// at least that high. Here validators 0 and 1 held QC(b1) when they timed out in view 4; the
/// leader of view 5 pairs their genuine TC with the root's QC, forking below b1. The lock alone
/// (still the root's QC) would let validator 3 vote for it.
#[test]
fn a_proposal_extending_a_qc_older_than_its_tc_signers_held_gets_no_vote() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let (h1, b1) = chain.block(1, &root_qc, 1);
    deliver(&mut engine, &b1, None);
    engine.handle(sync_from(0, chain.qc(h1, &b1), None));
    assert_eq!(engine.safety_data().high_qc.data.view, View(1));
    assert_eq!(engine.safety_data().locked_qc.data.view, View(0));
    let tc = chain.tc_with(4, [1, 1, 0]);
    assert_eq!(tc.high_qc_view(), View(1));
    let (_, fork) = chain.block(5, &root_qc, 2);
    let actions = deliver(&mut engine, &fork, Some(tc.clone()));
    assert_eq!(engine.status().view, View(5), "the TC itself is sound");
    assert!(votes(&actions).is_empty(), "voted for a fork below the TC");
    // On the QC the signers held, the same TC justifies a block that gets the vote.
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    deliver(&mut engine, &b1, None);
    let (_, extension) = chain.block(5, &chain.qc(h1, &b1), 3);
    assert_eq!(votes(&deliver(&mut engine, &extension, Some(tc))).len(), 1);
}

/// A TC is applied only by a validator that holds a QC as high as its signers did: one that
/// does not stays in its view rather than lead the next on an older QC.
#[test]
fn a_tc_naming_a_newer_qc_than_any_held_is_not_applied() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let (h1, b1) = chain.block(1, &root_qc, 1);
    deliver(&mut engine, &b1, None);
    let tc = chain.tc_with(2, [0, 1, 0]);
    engine.handle(sync_from(0, root_qc.clone(), Some(tc.clone())));
    assert_eq!(engine.status().view, View(1));
    assert!(engine.safety_data().last_tc.is_none());
    engine.handle(sync_from(0, chain.qc(h1, &b1), Some(tc)));
    assert_eq!(engine.status().view, View(3));
    assert_eq!(
        engine.safety_data().last_tc.as_ref().unwrap().data.view,
        View(2)
    );
}

/// Each signer's high-QC view is part of what it signed: a TC whose recorded views are altered
/// (to hide a newer QC) or do not match its signers does not verify.
#[test]
fn a_tc_with_altered_high_qc_views_does_not_verify() {
    let chain = Chain::new();
    let committee = chain.setup.committee_for_tests();
    let tc = chain.tc_with(4, [1, 3, 0]);
    tc.verify(committee).expect("genuine");
    let mut lowered = tc.clone();
    lowered.high_qc_views[1] = View(1);
    assert_eq!(
        lowered.verify(committee),
        Err(quorate_crypto::CryptoError::BadBlsSignature)
    );
    let mut short = tc.clone();
    short.high_qc_views.pop();
    assert!(matches!(
        short.verify(committee),
        Err(quorate_crypto::CryptoError::Malformed { .. })
    ));
    let mut from_the_future = tc;
    from_the_future.high_qc_views[0] = View(4);
    assert!(matches!(
        from_the_future.verify(committee),
        Err(quorate_crypto::CryptoError::Malformed { .. })
    ));
}

/// Views are network data: a vote or timeout for view u64::MAX (unsigned, or carried as a
/// timeout's `last_vote`) is out of the window and dropped. Before the window check saturated,
/// `view + 1` overflowed and every node that received one panicked.
#[test]
fn a_vote_or_timeout_for_the_last_possible_view_is_dropped_not_a_panic() {
    let chain = Chain::new();
    let (h0, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let (h1, b1) = chain.block(1, &root_qc, 1);
    let genuine = votes(&deliver(&mut engine, &b1, None)).remove(0);
    let config = chain.config(0);
    let last = View(u64::MAX);
    let vote = Vote {
        data: VoteData {
            genesis_hash: config.genesis_hash,
            epoch: Epoch(0),
            view: last,
            height: Height(1),
            // A block nobody knows: no leader to check, straight to the view window.
            block: Digest([9; 32]),
        },
        signature: genuine.signature,
    };
    for from in 0..3 {
        let actions = engine.handle(Input::Message {
            from,
            message: Message::HotStuff(HsMessage::Vote(vote.clone())),
        });
        assert!(actions.is_empty());
    }
    let timeout = Timeout {
        data: TimeoutData {
            genesis_hash: config.genesis_hash,
            epoch: Epoch(0),
            view: last,
        },
        high_qc: root_qc.clone(),
        last_tc: None,
        last_vote: Some(vote),
        signature: genuine.signature,
    };
    for from in 0..3 {
        engine.handle(Input::Message {
            from,
            message: Message::HotStuff(HsMessage::Timeout(timeout.clone())),
        });
    }
    let status = engine.status();
    assert_eq!(status.view, View(1));
    assert_eq!(status.timeouts, 0);
    assert_eq!(engine.safety_data().high_qc.data.block, h0);
    // The engine goes on: validator 3 votes for block 2 (to itself, the next leader).
    let (_, b2) = chain.block(2, &chain.qc(h1, &b1), 2);
    deliver(&mut engine, &b2, None);
    assert_eq!(engine.safety_data().last_voted_view, View(2));
}

fn block_requests(actions: &[Action]) -> Vec<(ValidatorIndex, Digest)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to,
                message: Message::HotStuff(HsMessage::BlockRequest(request)),
            } => Some((*to, request.hash)),
            _ => None,
        })
        .collect()
}

/// A proposal whose parent is missing is parked while the parent is fetched; so is one whose
/// leader cannot be checked yet (its QC's block is missing too). Before proposals were parked
/// per sender, a Byzantine validator's proposal for the same view displaced the real leader's,
/// and (sent first) it took the one request for the parent, which it never answered.
#[test]
fn a_byzantine_proposal_cannot_displace_a_parked_one_or_its_fetch() {
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let (h1, b1) = chain.block(1, &root_qc, 1);
    // Validator 3 also fetches b1 from a signer of QC(b1): in view 2, the first of the others
    // (0, 1) by round robin. That is the Byzantine one here, and it never answers.
    let qc1 = chain.qc_signed_by(h1, &b1, [0, 1, 3]);
    let byzantine = 0;
    let (_, b2) = chain.block(2, &qc1, 2);
    let leader = b2.header.proposer as usize;
    assert_ne!(leader, byzantine);
    let (_, mut forged) = chain.block(2, &qc1, 3);
    forged.header.proposer = byzantine as u16;
    let propose = |from: usize, block: &HsBlock| Input::Message {
        from,
        message: Message::HotStuff(HsMessage::Proposal(Proposal {
            block: block.clone(),
            tc: None,
        })),
    };
    for byzantine_first in [false, true] {
        let mut engine = HotStuff::new(chain.config(3)).unwrap();
        engine.start();
        let mut sent = Vec::new();
        let order = if byzantine_first {
            [(byzantine, &forged), (leader, &b2)]
        } else {
            [(leader, &b2), (byzantine, &forged)]
        };
        for (from, block) in order {
            sent.extend(block_requests(&engine.handle(propose(from, block))));
        }
        assert!(
            sent.contains(&(leader, h1)),
            "the leader was not asked for b1 (byzantine first: {byzantine_first})"
        );
        // The leader answers; the Byzantine validator never does.
        let actions = engine.handle(Input::Message {
            from: leader,
            message: Message::HotStuff(HsMessage::BlockResponse(BlockResponse {
                blocks: vec![b1.clone()],
            })),
        });
        let checked: Vec<Digest> = actions
            .iter()
            .filter_map(|a| match a {
                Action::CheckPayload { header } => header.hash().ok(),
                _ => None,
            })
            .collect();
        assert_eq!(
            checked,
            vec![b2.hash().unwrap()],
            "byzantine first: {byzantine_first}"
        );
        engine.handle(Input::PayloadChecked {
            block: checked[0],
            valid: true,
        });
        assert_eq!(engine.safety_data().last_voted_view, View(2));
    }
}

fn timeouts_sent(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Broadcast {
                    message: Message::HotStuff(HsMessage::Timeout(_))
                }
            )
        })
        .count()
}

#[test]
fn an_idle_validator_lets_its_view_timer_pass_until_payload_waits() {
    // The simulator's parameters have no heartbeat (idle_interval_ms 0).
    let chain = Chain::new();
    let (_, root_qc) = chain.root();
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    let view = engine.pacemaker.view();
    // Nothing pending, nothing uncommitted: the timer is re-armed and nothing is sent.
    engine.handle(Input::PayloadPending(false));
    let actions = engine.handle(Input::Timer(TimerId::View(view)));
    assert_eq!(timeouts_sent(&actions), 0);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::SetTimer { timer, .. } if *timer == TimerId::View(view))));
    // Payload pending here: a leader that proposes nothing is timed out, once it has had a
    // whole period since the chain was last idle (the work may have arrived just before this
    // firing).
    engine.handle(Input::PayloadPending(true));
    let actions = engine.handle(Input::Timer(TimerId::View(view)));
    assert_eq!(timeouts_sent(&actions), 0);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::SetTimer { timer, .. } if *timer == TimerId::View(view))));
    let actions = engine.handle(Input::Timer(TimerId::View(view)));
    assert_eq!(timeouts_sent(&actions), 1);

    // Work that arrives before the first firing on an idle chain gets a whole period too.
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    engine.handle(Input::PayloadPending(false));
    engine.handle(Input::PayloadPending(true));
    let view = engine.pacemaker.view();
    let actions = engine.handle(Input::Timer(TimerId::View(view)));
    assert_eq!(timeouts_sent(&actions), 0);
    let actions = engine.handle(Input::Timer(TimerId::View(view)));
    assert_eq!(timeouts_sent(&actions), 1);

    // Nothing pending, but a certified block with payload waits for its three-chain.
    let mut engine = HotStuff::new(chain.config(3)).unwrap();
    engine.start();
    engine.handle(Input::PayloadPending(false));
    let (h1, b1) = chain.block(1, &root_qc, 1);
    deliver(&mut engine, &b1, None);
    let (_, b2) = chain.block(2, &chain.qc(h1, &b1), 2);
    deliver(&mut engine, &b2, None);
    let view = engine.pacemaker.view();
    let actions = engine.handle(Input::Timer(TimerId::View(view)));
    assert_eq!(timeouts_sent(&actions), 1);
}
