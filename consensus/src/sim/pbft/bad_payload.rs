//! PBFT's `bad-payload`: a Byzantine primary whose blocks carry payloads no honest replica
//! accepts (a state root that lies about executing the payload on the parent, or the payload and
//! root of a block made up on another parent); it sends nothing else, so as a backup it is
//! silent. Honest replicas check the payload before they PREPARE: each such view must cost no
//! more than a silent primary's.

use crate::pbft::{Authenticated, PbftMessage, PrePrepare, KIND_PRE_PREPARE};
use crate::sim::World;
use crate::Message;
use quorate_crypto::{Digest, Domain, Hasher};

impl World<'_> {
    /// Whether the bad-payload replica sends this message at all (only its PRE-PREPAREs).
    pub(in crate::sim) fn pbft_bad_payload_keeps(message: &Message) -> bool {
        matches!(message, Message::Pbft(PbftMessage::PrePrepare(_)))
    }

    /// Sends the corrupted PRE-PREPARE in place of `message` to validator `to`; false if
    /// `message` is not a PRE-PREPARE.
    pub(in crate::sim) fn pbft_bad_payload_send(
        &mut self,
        node: usize,
        to: usize,
        message: &Message,
    ) -> bool {
        let Message::Pbft(PbftMessage::PrePrepare(pre_prepare)) = message else {
            return false;
        };
        let mut header = pre_prepare.body.header.clone();
        let mut hasher = Hasher::new(Domain::Payload);
        hasher
            .update(b"bad-payload")
            .update(&header.height.0.to_le_bytes())
            .update(&header.view.0.to_le_bytes());
        let junk = hasher.finalize();
        // The same lie to everyone: which one depends on the block, not on the receiver.
        if junk.0[0] & 1 == 0 {
            header.state_root = junk;
        } else {
            header.payload_digest = junk;
            header.state_root = crate::sim::state_root(&Digest::ZERO, &junk);
        }
        let body = PrePrepare {
            view: pre_prepare.body.view,
            header,
        };
        for target in self.by_index[to].clone() {
            let Some(key) = self.key_for(node, target) else {
                continue;
            };
            if let Some(sealed) = Authenticated::seal(KIND_PRE_PREPARE, body.clone(), &key) {
                self.deliver(node, target, Message::Pbft(PbftMessage::PrePrepare(sealed)));
            }
        }
        true
    }
}
