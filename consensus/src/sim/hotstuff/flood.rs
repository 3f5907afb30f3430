//! `flood`: a Byzantine validator that follows the views, sends nothing useful, and for every
//! message its engine wants sent sends every other validator a burst instead: a SyncInfo whose
//! QC claims a signer that did not sign (a certificate that costs a check and fails it), votes
//! and timeouts for views far in the future, and replays of old messages it received. Honest
//! validators must pay for the forged certificate once, not per copy (the engine ignores a
//! validator that sent one for a while), and drop the rest cheaply.

use crate::hotstuff::{HsMessage, SyncInfo, Vote};
use crate::sim::{SimEngine, World};
use crate::{Engine, Message};
use quorate_crypto::Domain;
use quorate_ledger::View;

/// Old messages a flooder keeps to replay.
pub(in crate::sim) const REPLAYS_KEPT: usize = 16;
/// How far ahead its future-view votes are.
const FUTURE: u64 = 1_000;

impl World<'_> {
    /// Keeps a copy of a message the flooder received, to replay later.
    pub(in crate::sim) fn flood_remember(&mut self, node: usize, message: &Message) {
        let kept = &mut self.nodes[node].replays;
        if kept.len() >= REPLAYS_KEPT {
            kept.pop_front();
        }
        kept.push_back(message.clone());
    }

    /// The burst the flooder sends in place of `message`.
    pub(in crate::sim) fn flood(&mut self, node: usize, message: &Message) {
        if self.config.protocol == quorate_genesis::Protocol::Pbft {
            self.pbft_flood(node);
            return;
        }
        let index = self.nodes[node].index;
        let Some(engine) = self.nodes[node]
            .engine
            .as_ref()
            .and_then(SimEngine::hotstuff)
        else {
            return;
        };
        let data = engine.safety_data();
        let high_qc = data.high_qc.clone();
        let view = engine.status().view;
        let mut burst = Vec::new();
        // A QC that claims one signer more than signed it.
        let mut forged = high_qc.clone();
        if let Some(missing) =
            (0..self.setup.validators.len()).find(|&i| !forged.signers.contains(i))
        {
            forged.signers.insert(missing);
            burst.push(Message::HotStuff(HsMessage::SyncInfo(SyncInfo {
                high_qc: forged,
                last_tc: None,
            })));
        }
        // A vote far in the future, validly signed by its own key.
        let mut future = high_qc.data;
        future.view = View(view.0.saturating_add(FUTURE));
        if let Ok(bytes) = future.signing_bytes() {
            let signature = self.setup.signers[index].sign(Domain::Vote, &bytes);
            burst.push(Message::HotStuff(HsMessage::Vote(Vote {
                data: future,
                signature,
            })));
        }
        // A replay of something old.
        let kept = self.nodes[node].replays.len();
        if kept > 0 {
            let pick = self.rng.range(0, kept as u64 - 1) as usize;
            if let Some(old) = self.nodes[node].replays.get(pick).cloned() {
                burst.push(old);
            }
        }
        // What its engine wanted to send is not among them: a flooder never helps.
        let _ = message;
        for message in burst {
            self.deliver_to_others(node, message);
        }
    }
}
