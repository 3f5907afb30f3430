//! Committing in order, checkpoints, and fetching the headers of decided blocks.

use super::messages::{Checkpoint, FetchChain, StablePoint};
use super::{Fetch, Pbft, PbftMessage, CHAIN_ALLOWANCE, CHAIN_MAX, QUERIES, WANTED_MAX};

/// CHECKPOINTs are taken up to this many windows above the stable point: a replica that fell
/// behind (it restarted, or was cut off) learns where the others are and catches up to the
/// certified block, as PBFT's state transfer does.
const CHECKPOINT_AHEAD: u64 = 4;
use crate::{Action, CommitProof, TimerId, ValidatorIndex};
use quorate_crypto::{Digest, Domain};
use quorate_ledger::{BlockHeader, CheckpointCert, CheckpointData, Height, SeqNum};

impl Pbft {
    /// The block decided at `height`: directly, or by walking down the parents of a decided
    /// block above it (everything below a decided block is decided). `Err(digest)`: the header
    /// of `digest` is needed to go on. `Ok(None)`: nothing decided at or above `height`.
    fn decided_at(&mut self, height: Height) -> Result<Option<Digest>, Digest> {
        if let Some(digest) = self.decided.get(&height) {
            return Ok(Some(*digest));
        }
        let Some((&above, &tip)) = self.decided.range(height..).next() else {
            return Ok(None);
        };
        let mut digest = tip;
        let mut at = above;
        while at > height {
            let Some(header) = self.headers.get(&digest) else {
                return Err(digest);
            };
            digest = header.parent;
            at = Height(at.0 - 1);
            self.decided.insert(at, digest);
        }
        Ok(Some(digest))
    }

    /// Commits every decided block it can, in height order, fetching missing headers.
    pub(super) fn advance(&mut self) {
        loop {
            let next = self.committed.height.next();
            let digest = match self.decided_at(next) {
                Ok(Some(digest)) => digest,
                Ok(None) => return,
                Err(missing) => {
                    self.want(missing);
                    return;
                }
            };
            let Some(header) = self.headers.get(&digest).cloned() else {
                self.want(digest);
                return;
            };
            if header.parent != self.committed_hash || header.height != next {
                // Only more than f Byzantine replicas can make this happen; say it once.
                if self.diverged_at != Some(next) {
                    self.diverged_at = Some(next);
                    tracing::error!(
                        replica = self.me(),
                        height = next.0,
                        "the decided block does not extend the committed chain"
                    );
                }
                self.decided.remove(&next);
                return;
            }
            self.commit_block(digest, header);
        }
    }

    fn commit_block(&mut self, digest: Digest, header: BlockHeader) {
        let height = header.height;
        let checkpoint = match &self.safety.stable {
            StablePoint::Certified(cert) if cert.data.block == digest => Some(cert.clone()),
            _ => None,
        };
        self.emit(Action::Commit {
            header: header.clone(),
            proof: CommitProof::Pbft { checkpoint },
        });
        self.committed = header.clone();
        self.committed_hash = digest;
        self.committed_hashes.insert(height, digest);
        self.decided.remove(&height);
        self.commits.remove(&height);
        self.failures = 0;
        for left in &mut self.served {
            *left = (*left + 1).min(CHAIN_ALLOWANCE);
        }
        if self.next_seq <= height {
            self.next_seq = height.next();
        }
        let interval = self.config.params.checkpoint_interval.max(1);
        if height.0.is_multiple_of(interval) && height > self.low_watermark() {
            self.send_checkpoint(digest, &header);
        }
        self.progressed();
        // The block above may have been waiting for this one as its parent.
        self.try_check(height.next());
        self.maybe_propose();
    }

    fn checkpoint_data(&self, digest: Digest, header: &BlockHeader) -> CheckpointData {
        CheckpointData {
            genesis_hash: self.config.genesis_hash,
            epoch: self.safety.epoch,
            seq: SeqNum(header.height.0),
            height: header.height,
            block: digest,
            state_root: header.state_root,
        }
    }

    fn send_checkpoint(&mut self, digest: Digest, header: &BlockHeader) {
        let data = self.checkpoint_data(digest, header);
        let Ok(bytes) = data.signing_bytes() else {
            return;
        };
        let checkpoint = Checkpoint {
            data,
            signature: self.config.keys.signer.sign(Domain::Checkpoint, &bytes),
        };
        self.broadcast(PbftMessage::Checkpoint(checkpoint.clone()));
        self.record_checkpoint(self.me(), checkpoint);
    }

    /// Whether a checkpoint of this chain and epoch, at a checkpoint height above the stable
    /// point and at most `CHECKPOINT_AHEAD` windows above it, is taken.
    fn takes_checkpoint(&self, data: &CheckpointData) -> bool {
        let interval = self.config.params.checkpoint_interval.max(1);
        data.genesis_hash == self.config.genesis_hash
            && data.epoch == self.safety.epoch
            && data.seq.0 == data.height.0
            && data.height.0.is_multiple_of(interval)
            && data.height > self.low_watermark()
            && data.height.0
                <= self
                    .low_watermark()
                    .0
                    .saturating_add(CHECKPOINT_AHEAD * self.window())
    }

    pub(super) fn on_checkpoint(&mut self, from: ValidatorIndex, checkpoint: Checkpoint) {
        let data = &checkpoint.data;
        if !self.takes_checkpoint(data) {
            return;
        }
        if self
            .checkpoint_votes
            .get(&data.height)
            .is_some_and(|votes| votes.contains_key(&from))
        {
            return;
        }
        let Ok(bytes) = data.signing_bytes() else {
            return;
        };
        let committee = self.config.validators.committee();
        if let Err(error) = self.config.verifier.scheme().verify_member(
            committee,
            from,
            Domain::Checkpoint,
            &bytes,
            &checkpoint.signature,
        ) {
            self.penalize(
                from,
                format!("CHECKPOINT signature does not verify: {error}"),
            );
            return;
        }
        self.record_checkpoint(from, checkpoint);
    }

    /// A peer's stable checkpoint is at `height`: if ours is certified and higher, it gets our
    /// certificate, at most `QUERIES` times per stable checkpoint of ours however often it asks
    /// (its own queries, and a lost answer, are covered).
    pub(super) fn on_stable_query(&mut self, from: ValidatorIndex, height: Height) {
        let StablePoint::Certified(cert) = &self.safety.stable else {
            return;
        };
        let ours = cert.data.height;
        let Some((last, times)) = self.answered.get_mut(from) else {
            return;
        };
        if *last < ours {
            (*last, *times) = (ours, 0);
        }
        if ours <= height || *times >= QUERIES {
            return;
        }
        *times += 1;
        let cert = cert.clone();
        self.send(from, PbftMessage::StableCert(cert));
    }

    /// A stable checkpoint certificate from a peer: taken on the same terms as CHECKPOINTs,
    /// once it verifies (a quorum signed it, so it proves itself whoever hands it on).
    pub(super) fn on_stable_cert(&mut self, from: ValidatorIndex, cert: CheckpointCert) {
        if !self.takes_checkpoint(&cert.data) {
            return;
        }
        if let Err(error) = self
            .config
            .verifier
            .verify_checkpoint(&cert, self.config.validators.committee())
        {
            self.penalize(
                from,
                format!("checkpoint certificate does not verify: {error}"),
            );
            return;
        }
        self.stabilize(cert);
    }

    fn record_checkpoint(&mut self, from: ValidatorIndex, checkpoint: Checkpoint) {
        let data = checkpoint.data;
        let votes = self.checkpoint_votes.entry(data.height).or_default();
        votes.insert(from, checkpoint);
        let signers: Vec<ValidatorIndex> = votes
            .iter()
            .filter(|(_, vote)| vote.data == data)
            .map(|(index, _)| *index)
            .collect();
        let power = signers
            .iter()
            .map(|index| self.power(*index))
            .fold(0, u64::saturating_add);
        if power < self.quorum() {
            return;
        }
        let Some(votes) = self.checkpoint_votes.get(&data.height) else {
            return;
        };
        let signatures = votes
            .iter()
            .filter(|(_, vote)| vote.data == data)
            .map(|(index, vote)| (*index, &vote.signature));
        let Some((signers, signature)) = self
            .config
            .verifier
            .scheme()
            .aggregate(self.n(), signatures)
        else {
            return;
        };
        self.stabilize(CheckpointCert {
            data,
            signers,
            signature,
        });
    }

    /// A stable checkpoint (its certificate checked): the window moves up, the log below it
    /// is forgotten, and its block gets its proof or is caught up with.
    pub(super) fn stabilize(&mut self, cert: CheckpointCert) {
        let height = cert.data.height;
        if height <= self.low_watermark() {
            return;
        }
        let block = cert.data.block;
        self.safety.stabilize(StablePoint::Certified(cert.clone()));
        let above = height.next();
        self.slots = self.slots.split_off(&above);
        self.commits = self.commits.split_off(&above);
        self.checkpoint_votes = self.checkpoint_votes.split_off(&above);
        // Keep a window's worth of committed headers below it for laggards.
        let keep_from = Height(height.0.saturating_sub(self.window()));
        self.committed_hashes = self.committed_hashes.split_off(&keep_from);
        let committed = self.committed.height;
        self.headers.retain(|_, header| header.height >= keep_from);
        if !self.persist() {
            return;
        }
        if committed >= height {
            if self.committed_hashes.get(&height) == Some(&block) {
                if let Some(header) = self.headers.get(&block).cloned() {
                    self.emit(Action::Certify {
                        header,
                        proof: CommitProof::Pbft {
                            checkpoint: Some(cert),
                        },
                    });
                }
            } else {
                tracing::error!(
                    replica = self.me(),
                    height = height.0,
                    "a stable checkpoint names another block than the one committed here"
                );
            }
        } else {
            self.decided = self.decided.split_off(&committed.next());
            self.decide(height, block);
        }
        if self.next_seq <= height {
            self.next_seq = height.next();
        }
        self.progressed();
        self.maybe_propose();
    }

    /// Fetches the header `tip` and its ancestors down to the committed head.
    pub(super) fn want(&mut self, tip: Digest) {
        if self.fetch.is_some_and(|fetch| fetch.tip == tip) {
            return;
        }
        if !self.wanted.contains(&tip) {
            if self.wanted.len() >= WANTED_MAX {
                self.wanted.pop_front();
            }
            self.wanted.push_back(tip);
        }
        self.fetch_attempts += 1;
        let attempt = self.fetch_attempts;
        self.fetch = Some(Fetch { tip, attempt });
        self.send_fetch();
    }

    fn send_fetch(&mut self) {
        let Some(fetch) = self.fetch else { return };
        let n = self.n() as u64;
        // Ask the others in turn, starting after this replica.
        let offset = 1 + fetch.attempt % n.saturating_sub(1).max(1);
        let peer = ((self.me() as u64 + offset) % n) as ValidatorIndex;
        let request = FetchChain {
            tip: fetch.tip,
            above: self.committed.height,
        };
        self.send(peer, PbftMessage::FetchChain(request));
        self.emit(Action::SetTimer {
            timer: TimerId::Fetch {
                attempt: fetch.attempt,
            },
            duration_ms: self.config.params.view_timeout_ms,
        });
    }

    pub(super) fn on_fetch_timer(&mut self, attempt: u64) {
        let Some(fetch) = self.fetch else { return };
        if fetch.attempt != attempt {
            return;
        }
        self.fetch_attempts += 1;
        self.fetch = Some(Fetch {
            tip: fetch.tip,
            attempt: self.fetch_attempts,
        });
        self.send_fetch();
    }

    /// Serves a chain of headers out of the peer's allowance (see [`CHAIN_ALLOWANCE`]): a peer
    /// catching up gets what it needs, one asking without end gets a header per block this
    /// replica commits, as any follower would.
    pub(super) fn on_fetch_chain(&mut self, from: ValidatorIndex, request: FetchChain) {
        let allowance = self.served.get(from).copied().unwrap_or(0).min(CHAIN_MAX);
        let mut chain = Vec::new();
        let mut digest = request.tip;
        while chain.len() < allowance {
            let Some(header) = self.headers.get(&digest) else {
                break;
            };
            if header.height <= request.above {
                break;
            }
            digest = header.parent;
            chain.push(header.clone());
        }
        if chain.is_empty() {
            tracing::debug!(
                replica = self.me(),
                peer = from,
                allowance,
                tip = %request.tip,
                known = self.headers.contains_key(&request.tip),
                "FetchChain: nothing to serve"
            );
            return;
        }
        if let Some(left) = self.served.get_mut(from) {
            *left = left.saturating_sub(chain.len());
        }
        self.send(from, PbftMessage::Chain(chain));
    }

    /// Takes a chain only if it starts at the header asked for and each next header is the
    /// parent of the one before.
    pub(super) fn on_chain(&mut self, _from: ValidatorIndex, chain: Vec<BlockHeader>) {
        if chain.len() > CHAIN_MAX {
            return;
        }
        let Some(tip) = chain.first().and_then(|header| header.hash().ok()) else {
            return;
        };
        let Some(position) = self.wanted.iter().position(|wanted| *wanted == tip) else {
            return;
        };
        self.wanted.remove(position);
        let mut expected = tip;
        let mut taken = Vec::new();
        for header in chain {
            let Ok(digest) = header.hash() else { break };
            if digest != expected || header.height <= self.committed.height {
                break;
            }
            expected = header.parent;
            taken.push((digest, header));
        }
        if taken.is_empty() {
            return;
        }
        if self.fetch.is_some_and(|fetch| fetch.tip == tip) {
            self.fetch = None;
        }
        for (digest, header) in taken {
            self.keep_header(digest, header);
        }
        self.advance();
        self.try_new_view();
    }
}
