//! `bad-payload`: a Byzantine leader whose blocks carry payloads no honest validator accepts
//! (a state root that lies about executing the payload on the parent, alternately with the
//! payload and root of a block it made up on another parent). It sends nothing else: as a
//! replica it is silent. Honest validators check the payload before they vote, so each such
//! view must cost them no more than a silent leader's (the node also refuses oversized and
//! undecodable batches at ingest; the simulator has no batches, only payload digests).

use crate::hotstuff::{HsMessage, Proposal};
use crate::sim::World;
use crate::Message;
use quorate_crypto::{Digest, Domain, Hasher};

impl World<'_> {
    /// What the bad-payload validator sends in place of what its engine wants sent.
    pub(in crate::sim) fn bad_payload_outgoing(&mut self, message: Message) -> Option<Message> {
        match message {
            Message::HotStuff(HsMessage::Proposal(proposal)) => Some(Message::HotStuff(
                HsMessage::Proposal(self.corrupt_payload(proposal)),
            )),
            _ => None,
        }
    }

    fn corrupt_payload(&mut self, mut proposal: Proposal) -> Proposal {
        let header = &mut proposal.block.header;
        let mut hasher = Hasher::new(Domain::Payload);
        hasher
            .update(b"bad-payload")
            .update(&header.view.0.to_le_bytes());
        let junk = hasher.finalize();
        if self.rng.chance(0.5) {
            // Right payload, lying state root.
            header.state_root = junk;
        } else {
            // A payload and a root that belong together, but on a parent that is not this one.
            header.payload_digest = junk;
            header.state_root = crate::sim::state_root(&Digest::ZERO, &junk);
        }
        proposal
    }
}
