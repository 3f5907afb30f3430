//! Collects votes into QCs and timeouts into TCs.
//!
//! Signatures are added unverified and aggregated optimistically; the aggregate is verified ONCE
//! when the signers reach a quorum. Only if that fails are the parts verified one by one, the bad
//! ones dropped (and their senders ignored for that view). Each validator counts once per view.
//! Memory is bounded: only views in a window around the current one are kept.

use super::messages::{Timeout, Vote};
use quorate_crypto::{BlsAggregate, BlsSignature, Committee, Digest, Domain};
use quorate_ledger::{QuorumCert, TimeoutCert, TimeoutData, View, VoteData};
use std::collections::{BTreeMap, BTreeSet};

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

    /// Aggregates; verifies once; on failure verifies each part and drops the bad ones.
    /// Returns the signer bitmap and aggregate once the good signatures reach `quorum`.
    fn try_certify(
        &mut self,
        committee: &Committee,
        domain: Domain,
        bytes: &[u8],
        banned: &mut BTreeSet<usize>,
    ) -> Option<(quorate_crypto::SignerBitmap, BlsSignature)> {
        if self.power < committee.quorum_power() {
            return None;
        }
        let certify = |signatures: &BTreeMap<usize, BlsSignature>| {
            let mut aggregate = BlsAggregate::new(committee.len());
            for (index, signature) in signatures {
                aggregate.add(*index, signature).ok()?;
            }
            let signature = aggregate.signature()?;
            let bitmap = aggregate.bitmap().clone();
            committee
                .verify_quorum(domain, bytes, &bitmap, &signature)
                .ok()
                .map(|()| (bitmap, signature))
        };
        if let Some(done) = certify(&self.signatures) {
            return Some(done);
        }
        let bad: Vec<usize> = self
            .signatures
            .iter()
            .filter(|(index, signature)| {
                committee
                    .verify_member(**index, domain, bytes, signature)
                    .is_err()
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
    /// Which block each validator voted for (its first vote counts; later ones are ignored).
    voted: BTreeMap<usize, Digest>,
    blocks: BTreeMap<Digest, Signed<VoteData>>,
    banned: BTreeSet<usize>,
    certified: bool,
}

#[derive(Default)]
pub(crate) struct VoteAggregator {
    views: BTreeMap<View, ViewVotes>,
}

impl VoteAggregator {
    /// Adds `from`'s vote; returns a QC when this vote completes one.
    pub fn add(&mut self, from: usize, vote: &Vote, committee: &Committee) -> Option<QuorumCert> {
        let view = self.views.entry(vote.data.view).or_default();
        if view.certified || view.banned.contains(&from) || view.voted.contains_key(&from) {
            return None;
        }
        view.voted.insert(from, vote.data.block);
        let signed = view
            .blocks
            .entry(vote.data.block)
            .or_insert_with(|| Signed::new(vote.data));
        if signed.data != vote.data {
            return None;
        }
        signed.signatures.insert(from, vote.signature);
        signed.power += committee.power(from);
        let bytes = vote.data.signing_bytes().ok()?;
        let (signers, signature) =
            signed.try_certify(committee, Domain::Vote, &bytes, &mut view.banned)?;
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
    banned: BTreeSet<usize>,
    certified: bool,
}

#[derive(Default)]
pub(crate) struct TimeoutAggregator {
    views: BTreeMap<View, ViewTimeouts>,
}

impl TimeoutAggregator {
    /// Adds `from`'s timeout. Returns the power that has timed out in that view, and a TC when
    /// this timeout completes one.
    pub fn add(
        &mut self,
        from: usize,
        timeout: &Timeout,
        committee: &Committee,
    ) -> (u64, Option<TimeoutCert>) {
        let view = self
            .views
            .entry(timeout.data.view)
            .or_insert_with(|| ViewTimeouts {
                signed: Signed::new(timeout.data),
                banned: BTreeSet::new(),
                certified: false,
            });
        if view.certified
            || view.banned.contains(&from)
            || view.signed.signatures.contains_key(&from)
            || view.signed.data != timeout.data
        {
            return (view.signed.power, None);
        }
        view.signed.signatures.insert(from, timeout.signature);
        view.signed.power += committee.power(from);
        let Ok(bytes) = timeout.data.signing_bytes() else {
            return (view.signed.power, None);
        };
        match view
            .signed
            .try_certify(committee, Domain::Timeout, &bytes, &mut view.banned)
        {
            Some((signers, signature)) => {
                view.certified = true;
                (
                    view.signed.power,
                    Some(TimeoutCert {
                        data: view.signed.data,
                        signers,
                        signature,
                    }),
                )
            }
            None => (view.signed.power, None),
        }
    }

    pub fn prune_below(&mut self, view: View) {
        self.views = self.views.split_off(&view);
    }
}
