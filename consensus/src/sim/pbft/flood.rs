//! PBFT's `flood`: a Byzantine replica that follows the views, sends nothing useful, and for
//! every message its engine wants sent sends every other replica a burst instead: a CHECKPOINT
//! whose signature is over other bytes (it costs a signature check and fails it), a VIEW-CHANGE
//! validly signed for a view far ahead, requests for a chain of headers nobody has and for the
//! longest one everybody has, a chain nobody asked for, a query for everyone's stable
//! checkpoint certificate, a "certificate" of its own signature alone, and a replay of an old
//! message. Honest replicas must pay for the forged signatures once, not per copy (the engine
//! ignores a replica that sent one for a while), answer a query once per checkpoint, and drop
//! the rest cheaply.

use crate::pbft::{FetchChain, PbftMessage, StablePoint, ViewChange, ViewChangeData};
use crate::sim::{SimEngine, World};
use crate::{Message, ProtocolStatus};
use quorate_crypto::{Domain, Hasher};
use quorate_ledger::{CheckpointCert, CheckpointData, Epoch, Height, SeqNum, View};

/// How far ahead its VIEW-CHANGEs are.
const FUTURE: u64 = 1_000;

impl World<'_> {
    /// The burst the PBFT flooder sends in place of its engine's message.
    pub(in crate::sim) fn pbft_flood(&mut self, node: usize) {
        let index = self.nodes[node].index;
        let Some(status) = self.nodes[node]
            .engine
            .as_ref()
            .map(|engine| SimEngine::engine(engine).status())
        else {
            return;
        };
        let ProtocolStatus::Pbft {
            stable_checkpoint, ..
        } = status.protocol
        else {
            return;
        };
        let mut junk = Hasher::new(Domain::Payload);
        junk.update(b"flood").update(&status.view.0.to_le_bytes());
        let junk = junk.finalize();
        let interval = self.setup.params.checkpoint_interval.max(1);
        let mut burst = Vec::new();
        // A CHECKPOINT whose signature is over other bytes.
        let data = CheckpointData {
            genesis_hash: self.setup.genesis_hash,
            epoch: Epoch(0),
            seq: SeqNum(stable_checkpoint.0 + interval),
            height: Height(stable_checkpoint.0 + interval),
            block: junk,
            state_root: junk,
        };
        let signature = self.setup.signers[index].sign(Domain::Checkpoint, b"other bytes");
        // The same, as a certificate of one signer: short of a quorum, and forged besides.
        if let Some((signers, aggregate)) = self
            .setup
            .verifier
            .scheme()
            .aggregate(self.setup.validators.len(), [(index, &signature)])
        {
            burst.push(Message::Pbft(PbftMessage::StableCert(CheckpointCert {
                data,
                signers,
                signature: aggregate,
            })));
        }
        burst.push(Message::Pbft(PbftMessage::Checkpoint(
            crate::pbft::Checkpoint { data, signature },
        )));
        // Everyone's stable checkpoint certificate, asked for from the bottom.
        burst.push(Message::Pbft(PbftMessage::StableQuery(Height(0))));
        // A VIEW-CHANGE for a view far ahead, validly signed.
        let far = ViewChangeData {
            genesis_hash: self.setup.genesis_hash,
            epoch: Epoch(0),
            view: View(status.view.0.saturating_add(FUTURE)),
            replica: index as u16,
            stable: StablePoint::Root {
                height: self.setup.root.height,
                block: self
                    .setup
                    .root
                    .hash()
                    .unwrap_or(quorate_crypto::Digest::ZERO),
            },
            prepared: Vec::new(),
            pre_prepared: Vec::new(),
        };
        if let Some(bytes) = far.signing_bytes() {
            let signature = self.setup.signers[index].sign(Domain::ViewChange, &bytes);
            burst.push(Message::Pbft(PbftMessage::ViewChange(ViewChange {
                data: far,
                signature,
            })));
        }
        // A chain nobody has, and the longest chain everyone has (each peer serves it a few
        // times per height and view, then not at all).
        burst.push(Message::Pbft(PbftMessage::FetchChain(FetchChain {
            tip: junk,
            above: Height(0),
        })));
        burst.push(Message::Pbft(PbftMessage::FetchChain(FetchChain {
            tip: status.committed_hash,
            above: Height(0),
        })));
        // A chain nobody asked for: its own head, and a made-up header on top.
        if let Some(head) = self.nodes[node]
            .headers
            .get(&status.committed_hash)
            .cloned()
        {
            let mut made_up = head.clone();
            made_up.height = head.height.next();
            made_up.parent = status.committed_hash;
            made_up.payload_digest = junk;
            burst.push(Message::Pbft(PbftMessage::Chain(vec![made_up, head])));
        }
        // A replay of something old.
        let kept = self.nodes[node].replays.len();
        if kept > 0 {
            let pick = self.rng.range(0, kept as u64 - 1) as usize;
            if let Some(old) = self.nodes[node].replays.get(pick).cloned() {
                burst.push(old);
            }
        }
        for message in burst {
            self.deliver_to_others(node, message);
        }
    }
}
