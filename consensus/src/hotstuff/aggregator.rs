//! Collects votes into QCs and timeouts into TCs.
//!
//! Signatures are added unverified and aggregated optimistically; the aggregate is verified ONCE
//! when the signers reach a quorum. Only if that fails are the parts verified one by one, the bad
//! ones dropped (and their senders ignored for that view). Each validator counts once per view.
//! Memory is bounded: only views in a window around the current one are kept.

use super::messages::{Timeout, Vote};
use crate::crypto::Scheme;
use quorate_crypto::{BlsSignature, Committee, Digest, Domain, SignerBitmap};
use quorate_ledger::{QuorumCert, TimeoutCert, TimeoutData, TimeoutVote, View, VoteData};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How far ahead of the current view votes and timeouts are kept.
pub(crate) const FUTURE_VIEWS_MAX: u64 = 64;

struct Signed<D> {
    data: D,
    signatures: BTreeMap<usize, BlsSignature>,
    power: u64,
}

impl<D> Signed<D> {
    fn new(data: D) -> Self {
        Signed {
            data,
            signatures: BTreeMap::new(),
            power: 0,
        }
    }

    /// Aggregates; verifies once (`verify_all`); on failure verifies each part against what its
    /// member signed (`bytes_of`) and drops the bad ones. Returns the signer bitmap and
    /// aggregate once the good signatures reach a quorum.
    fn try_certify(
        &mut self,
        committee: &Committee,
        scheme: &Scheme,
        domain: Domain,
        bytes_of: impl Fn(usize) -> Option<Vec<u8>>,
        verify_all: impl Fn(&SignerBitmap, &BlsSignature) -> bool,
        banned: &mut BTreeSet<usize>,
    ) -> Option<(SignerBitmap, BlsSignature)> {
        if self.power < committee.quorum_power() {
            return None;
        }
        let certify = |signatures: &BTreeMap<usize, BlsSignature>| {
            let (bitmap, signature) = scheme.aggregate(
                committee.len(),
                signatures
                    .iter()
                    .map(|(index, signature)| (*index, signature)),
            )?;
            verify_all(&bitmap, &signature).then_some((bitmap, signature))
        };
        if let Some(done) = certify(&self.signatures) {
            return Some(done);
        }
        let bad: Vec<usize> = self
            .signatures
            .iter()
            .filter(|(index, signature)| {
                bytes_of(**index).is_none_or(|bytes| {
                    scheme
                        .verify_member(committee, **index, domain, &bytes, signature)
                        .is_err()
                })
            })
            .map(|(index, _)| *index)
            .collect();
        for index in bad {
            self.signatures.remove(&index);
            self.power -= committee.power(index);
            banned.insert(index);
        }
        if self.power < committee.quorum_power() {
            return None;
        }
        certify(&self.signatures)
    }
}

#[derive(Default)]
struct ViewVotes {
    /// What each validator voted for (its first vote counts; later ones are ignored).
    voted: BTreeMap<usize, Digest>,
    /// Votes by everything they sign: a vote never decides what another vote must say, so one
    /// with the right block hash and a wrong height (say) gathers its own signers and nobody
    /// else's. At most one entry per validator, since each counts once per view.
    blocks: HashMap<VoteData, Signed<VoteData>>,
    banned: BTreeSet<usize>,
    certified: bool,
}

#[derive(Default)]
pub(crate) struct VoteAggregator {
    views: BTreeMap<View, ViewVotes>,
}

impl VoteAggregator {
    /// Adds `from`'s vote; returns a QC when this vote completes one.
    pub fn add(
        &mut self,
        from: usize,
        vote: &Vote,
        committee: &Committee,
        scheme: &Scheme,
    ) -> Option<QuorumCert> {
        let view = self.views.entry(vote.data.view).or_default();
        if view.certified || view.banned.contains(&from) || view.voted.contains_key(&from) {
            return None;
        }
        view.voted.insert(from, vote.data.block);
        let signed = view
            .blocks
            .entry(vote.data)
            .or_insert_with(|| Signed::new(vote.data));
        signed.signatures.insert(from, vote.signature);
        signed.power += committee.power(from);
        let bytes = vote.data.signing_bytes().ok()?;
        let (signers, signature) = signed.try_certify(
            committee,
            scheme,
            Domain::Vote,
            |_| Some(bytes.clone()),
            |bitmap, signature| {
                scheme
                    .verify_quorum(committee, Domain::Vote, &bytes, bitmap, signature)
                    .is_ok()
            },
            &mut view.banned,
        )?;
        view.certified = true;
        Some(QuorumCert {
            data: signed.data,
            signers,
            signature,
        })
    }

    /// Forgets views below `view`.
    pub fn prune_below(&mut self, view: View) {
        self.views = self.views.split_off(&view);
    }
}

struct ViewTimeouts {
    signed: Signed<TimeoutData>,
    /// The view of the high QC each signer's timeout carried (and signed).
    high_qc_views: BTreeMap<usize, View>,
    banned: BTreeSet<usize>,
    certified: bool,
}

#[derive(Default)]
pub(crate) struct TimeoutAggregator {
    views: BTreeMap<View, ViewTimeouts>,
}

impl TimeoutAggregator {
    /// Adds `from`'s timeout (its signature covers the view of the high QC it carries, which the
    /// caller has verified). Returns the power that has timed out in that view, and a TC when
    /// this timeout completes one.
    pub fn add(
        &mut self,
        from: usize,
        timeout: &Timeout,
        committee: &Committee,
        scheme: &Scheme,
    ) -> (u64, Option<TimeoutCert>) {
        let view = self
            .views
            .entry(timeout.data.view)
            .or_insert_with(|| ViewTimeouts {
                signed: Signed::new(timeout.data),
                high_qc_views: BTreeMap::new(),
                banned: BTreeSet::new(),
                certified: false,
            });
        let high_qc_view = timeout.high_qc.data.view;
        if view.certified
            || view.banned.contains(&from)
            || view.signed.signatures.contains_key(&from)
            || view.signed.data != timeout.data
            || high_qc_view >= timeout.data.view
        {
            return (view.signed.power, None);
        }
        view.signed.signatures.insert(from, timeout.signature);
        view.high_qc_views.insert(from, high_qc_view);
        view.signed.power += committee.power(from);
        let data = view.signed.data;
        let views = &view.high_qc_views;
        let certificate = |signers: &SignerBitmap, signature: &BlsSignature| TimeoutCert {
            data,
            signers: signers.clone(),
            high_qc_views: signers
                .signers()
                .filter_map(|index| views.get(&index).copied())
                .collect(),
            signature: *signature,
        };
        let certified = view.signed.try_certify(
            committee,
            scheme,
            Domain::Timeout,
            |index| {
                let high_qc_view = *views.get(&index)?;
                TimeoutVote { data, high_qc_view }.signing_bytes().ok()
            },
            |signers, signature| {
                certificate(signers, signature)
                    .verify_with(&|domain, groups, signature| {
                        scheme.verify_quorum_multi(committee, domain, groups, signature)
                    })
                    .is_ok()
            },
            &mut view.banned,
        );
        match certified {
            Some((signers, signature)) => {
                let tc = certificate(&signers, &signature);
                view.certified = true;
                (view.signed.power, Some(tc))
            }
            None => (view.signed.power, None),
        }
    }

    pub fn prune_below(&mut self, view: View) {
        self.views = self.views.split_off(&view);
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::sim::{CryptoMode, Setup};
    use quorate_ledger::{Epoch, Height};

    fn vote(setup: &Setup, from: usize, data: VoteData) -> Vote {
        let bytes = data.signing_bytes().unwrap();
        Vote {
            data,
            signature: setup.signer_for_tests(from).sign(Domain::Vote, &bytes),
        }
    }

    /// A vote's data for a block in view 1 at height 1.
    fn data(setup: &Setup, block: u8) -> VoteData {
        VoteData {
            genesis_hash: setup.genesis_hash_for_tests(),
            epoch: Epoch(0),
            view: View(1),
            height: Height(1),
            block: Digest([block; 32]),
        }
    }

    /// The first reproduction of the vote-poisoning hole: validator 3 votes at once for the
    /// right block hash with a wrong height; the honest votes that follow must still form a QC.
    #[test]
    fn a_vote_with_the_right_block_and_a_wrong_height_poisons_nobody() {
        for crypto in [CryptoMode::Fast, CryptoMode::Real] {
            let setup = Setup::new(4, crypto).unwrap();
            let (committee, scheme) = (setup.committee_for_tests(), setup.scheme_for_tests());
            let data = data(&setup, 7);
            let poisoned = VoteData {
                height: Height(9),
                ..data
            };
            let mut votes = VoteAggregator::default();
            let mut add =
                |from, data| votes.add(from, &vote(&setup, from, data), committee, scheme);
            assert!(add(3, poisoned).is_none());
            assert!(add(0, data).is_none());
            assert!(add(1, data).is_none());
            let qc = add(2, data).expect("the honest votes form a QC");
            assert_eq!(qc.data, data);
            assert_eq!(qc.signers.signers().collect::<Vec<_>>(), vec![0, 1, 2]);
        }
    }

    /// A validator counts once per view, whatever it signs.
    #[test]
    fn a_second_vote_in_a_view_counts_for_nothing() {
        let setup = Setup::new(4, CryptoMode::Fast).unwrap();
        let (committee, scheme) = (setup.committee_for_tests(), setup.scheme_for_tests());
        let (data, other) = (data(&setup, 7), data(&setup, 8));
        let mut votes = VoteAggregator::default();
        let mut add = |from, data| votes.add(from, &vote(&setup, from, data), committee, scheme);
        assert!(add(0, other).is_none());
        assert!(add(0, data).is_none());
        assert!(add(1, data).is_none());
        assert!(add(2, data).is_none());
        assert!(add(3, data).is_some());
    }
}
