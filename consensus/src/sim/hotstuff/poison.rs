//! `poison`: a Byzantine validator that follows the views but never helps. It proposes nothing
//! and sends no honest vote or timeout. The moment a proposal reaches it, it sends every
//! validator votes that reuse the block's real hash with wrong data (another height, another
//! view) and a vote with the real data but a signature over other data; each timeout it would
//! send goes out signed over another view, carrying a poisoned last vote. The engine must count
//! none of it against the honest votes (issue: one such vote used to fix a block's vote data
//! and drop every honest vote after it).

use crate::hotstuff::{HsMessage, Proposal, Timeout, Vote};
use crate::sim::World;
use crate::Message;
use quorate_crypto::Domain;
use quorate_ledger::VoteData;

impl World<'_> {
    /// Signs `data` as validator `index` (a Byzantine validator signs only with its own key).
    fn sign_vote(&self, index: usize, data: &VoteData) -> Option<Vote> {
        let bytes = data.signing_bytes().ok()?;
        Some(Vote {
            data: *data,
            signature: self.setup.signers[index].sign(Domain::Vote, &bytes),
        })
    }

    /// Poisoned votes for the block of `proposal`, to every other validator at once (before
    /// the honest votes, which wait for the payload check).
    pub(in crate::sim) fn poison_votes(&mut self, node: usize, proposal: &Proposal) {
        let index = self.nodes[node].index;
        let Ok(block) = proposal.block.hash() else {
            return;
        };
        let header = &proposal.block.header;
        let real = VoteData {
            genesis_hash: self.setup.genesis_hash,
            epoch: header.epoch,
            view: header.view,
            height: header.height,
            block,
        };
        let wrong_height = VoteData {
            height: real.height.next(),
            ..real
        };
        let wrong_view = VoteData {
            view: real.view.next(),
            ..real
        };
        let mut votes: Vec<Vote> = [wrong_height, wrong_view]
            .iter()
            .filter_map(|data| self.sign_vote(index, data))
            .collect();
        // The real data under a signature over other data.
        if let Some(other) = self.sign_vote(index, &wrong_height) {
            votes.push(Vote {
                data: real,
                signature: other.signature,
            });
        }
        for vote in votes {
            self.deliver_to_others(node, Message::HotStuff(HsMessage::Vote(vote)));
        }
    }

    /// What the poisoner sends in place of what its engine wants sent: nothing for a proposal
    /// or a vote, a poisoned copy of a timeout, anything else as is.
    pub(in crate::sim) fn poison_outgoing(
        &mut self,
        node: usize,
        message: Message,
    ) -> Option<Message> {
        match message {
            Message::HotStuff(HsMessage::Proposal(_)) | Message::HotStuff(HsMessage::Vote(_)) => {
                None
            }
            Message::HotStuff(HsMessage::Timeout(timeout)) => Some(Message::HotStuff(
                HsMessage::Timeout(self.poison_timeout(node, timeout)?),
            )),
            other => Some(other),
        }
    }

    fn poison_timeout(&self, node: usize, timeout: Timeout) -> Option<Timeout> {
        let index = self.nodes[node].index;
        let mut poisoned = timeout;
        // Signed over the next view: the signature does not verify for the view it names.
        let mut other = poisoned.data;
        other.view = other.view.next();
        let bytes = other.signing_bytes().ok()?;
        poisoned.signature = self.setup.signers[index].sign(Domain::Timeout, &bytes);
        // Its last vote, if any, names the right block with the wrong height.
        if let Some(vote) = &poisoned.last_vote {
            let data = VoteData {
                height: vote.data.height.next(),
                ..vote.data
            };
            poisoned.last_vote = self.sign_vote(index, &data);
        }
        Some(poisoned)
    }
}
