//! The simulated network: delays (long before GST, bounded after), drops and partitions before
//! GST, and where Byzantine validators replace what their engines send.

use super::*;

/// A message's encoded length (what the network carries) and the digest of its encoding (what
/// the trace records), computed once however many validators it goes to.
pub(super) fn fingerprint(message: &Message) -> Option<(u64, Digest)> {
    let encoded = codec::encode(message).ok()?;
    Some((
        encoded.len() as u64,
        quorate_crypto::hash(Domain::Batch, &encoded),
    ))
}

impl World<'_> {
    pub(super) fn delay(&mut self) -> u64 {
        if self.now < self.gst {
            self.rng.range(1, 300)
        } else {
            self.rng.range(5, 50)
        }
    }

    pub(super) fn deliver(&mut self, from_node: usize, to_node: usize, message: Message) {
        if let Some(fingerprint) = fingerprint(&message) {
            self.deliver_fingerprinted(from_node, to_node, message, fingerprint);
        }
    }

    /// [`World::deliver`] of a message whose fingerprint is known (a broadcast encodes once).
    pub(super) fn deliver_fingerprinted(
        &mut self,
        from_node: usize,
        to_node: usize,
        message: Message,
        (length, bytes): (u64, Digest),
    ) {
        self.messages += 1;
        self.bytes += length;
        if self.samples.len() < self.sample_limit && self.messages.is_multiple_of(13) {
            self.samples.push(message.clone());
        }
        if let Some(sides) = &self.partition {
            if sides[from_node] != sides[to_node] {
                return;
            }
        }
        // Links lose messages until GST; after it the network is healed (eventual synchrony:
        // every message arrives within the bound), which is when liveness is owed.
        if self.now < self.gst && self.rng.chance(self.config.drop_probability) {
            return;
        }
        let delay = self.delay();
        let from = self.nodes[from_node].index;
        let epoch = self.nodes[from_node].epoch;
        self.schedule(
            delay,
            Event::Deliver {
                to: to_node,
                from,
                epoch,
                message,
                bytes,
            },
        );
    }

    /// What a Byzantine validator sends in place of what its engine wants sent (`None`:
    /// nothing); an honest validator's message unchanged.
    pub(super) fn outgoing(&mut self, node: usize, message: Message) -> Option<Message> {
        match self.nodes[node].role {
            Role::Poisoner => self.poison_outgoing(node, message),
            Role::BadPayload if self.config.protocol == Protocol::Pbft => {
                Self::pbft_bad_payload_keeps(&message).then_some(message)
            }
            Role::BadPayload => self.bad_payload_outgoing(message),
            Role::Flooder => {
                self.flood(node, &message);
                None
            }
            Role::Honest | Role::Silent | Role::Equivocator | Role::Twin => Some(message),
        }
    }

    /// To every validator but the sender's own index.
    pub(super) fn deliver_to_others(&mut self, node: usize, message: Message) {
        let index = self.nodes[node].index;
        let Some(fingerprint) = fingerprint(&message) else {
            return;
        };
        for target in 0..self.nodes.len() {
            if self.nodes[target].index != index {
                self.deliver_fingerprinted(node, target, message.clone(), fingerprint);
            }
        }
    }

    pub(super) fn send(&mut self, node: usize, to: usize, message: Message) {
        let Some(message) = self.outgoing(node, message) else {
            return;
        };
        if self.nodes[node].role == Role::Equivocator {
            if let Message::HotStuff(HsMessage::Vote(vote)) = &message {
                self.equivocating_votes(node, to, vote);
            }
            if self.config.protocol == Protocol::Pbft
                && self.pbft_equivocate_send(node, to, &message)
            {
                return;
            }
        }
        if self.nodes[node].role == Role::BadPayload
            && self.config.protocol == Protocol::Pbft
            && self.pbft_bad_payload_send(node, to, &message)
        {
            return;
        }
        let Some(fingerprint) = fingerprint(&message) else {
            return;
        };
        for target in self.by_index[to].clone() {
            if target != node {
                self.deliver_fingerprinted(node, target, message.clone(), fingerprint);
            }
        }
    }

    pub(super) fn broadcast(&mut self, node: usize, message: Message) {
        let Some(message) = self.outgoing(node, message) else {
            return;
        };
        self.check_tc_proposal(node, &message);
        let index = self.nodes[node].index;
        let targets: Vec<usize> = (0..self.nodes.len())
            .filter(|&t| self.nodes[t].index != index)
            .collect();
        if self.nodes[node].role == Role::Equivocator {
            let handled = match self.config.protocol {
                Protocol::HotStuff => self.equivocate_proposal(node, &message, &targets),
                Protocol::Pbft => self.pbft_equivocate(node, &message, &targets),
            };
            if handled {
                return;
            }
        }
        let Some(fingerprint) = fingerprint(&message) else {
            return;
        };
        for target in targets {
            self.deliver_fingerprinted(node, target, message.clone(), fingerprint);
        }
    }
}
