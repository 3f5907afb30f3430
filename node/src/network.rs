//! libp2p networking: TCP + noise + yamux, one request-response protocol.
//!
//! A validator's PeerId is its ed25519 identity key, so the noise handshake authenticates it.
//! The epoch's validators are dialled from their multiaddrs and redialled with backoff. Any other
//! key is a guest (a follower): at most [`MAX_GUESTS`] at once, each with a budget of
//! [`GUEST_REQUESTS_PER_SECOND`], and only the requests a follower needs (committed blocks,
//! payload data, and batches of transactions it forwards); a guest never reaches consensus. A
//! peer that sends undecodable frames or breaks a rule is scored down and, past a threshold,
//! disconnected and shunned for a while.

use crate::wire::{EncodedBatch, Frame, NetRequest, NetResponse, WireCodec, WireRequest};
use anyhow::{Context, Result};
use futures::StreamExt;
use libp2p::request_response::{self, Event, Message, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use quorate_crypto::{PublicKey, SigningKey};
use quorate_ledger::Batch;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Undecodable or failed inbound frames tolerated from a peer before it is disconnected.
const MAX_PEER_FAULTS: u32 = 5;
/// How long a disconnected misbehaving peer is refused.
const SHUN_DURATION: Duration = Duration::from_secs(30);
const REDIAL_MIN: Duration = Duration::from_millis(250);
const REDIAL_MAX: Duration = Duration::from_secs(8);
const PROTOCOL: &str = "/quorate/1";
/// Commands (messages to send, faults to score) queued for the network task at most. Past it a
/// message is dropped and counted: consensus survives a lost message (timeouts, sync), a node
/// does not survive unbounded memory.
const COMMANDS_MAX: usize = 8192;
/// Connected peers outside the validator set at most; more are disconnected at once.
pub const MAX_GUESTS: usize = 16;
/// Requests a guest may make per second (with a burst of as many); more are dropped unanswered.
pub const GUEST_REQUESTS_PER_SECOND: f64 = 50.0;
/// A guest that asked nothing for this long gives its place to a new one when all are taken
/// (idle connections cannot hold every place).
const GUEST_IDLE_EVICT: Duration = Duration::from_secs(30);
/// Shunned guests remembered at most (the oldest shun is forgotten first).
const MAX_SHUNNED_GUESTS: usize = 1024;

/// Who sent a request: a validator of the epoch (its index), or a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Validator(usize),
    Guest(PeerId),
}

pub fn peer_id(key: &PublicKey) -> Result<PeerId> {
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(key.as_bytes())
        .context("identity key is not a valid ed25519 key")?;
    Ok(libp2p::identity::PublicKey::from(public).to_peer_id())
}

/// Answers peers' requests. Must not block: long work is handed to other tasks.
pub trait Handler: Send + Sync + 'static {
    /// A request from a validator of the epoch or a guest. A guest's consensus messages and
    /// manifests never reach consensus (they may be an honest validator's of another epoch).
    fn on_request(&self, from: Origin, request: NetRequest) -> NetResponse;
    /// A batch a peer pushed, with the encoding it arrived in (`bytes()`: stored as it is).
    fn on_batch(&self, from: Origin, batch: Arc<Batch>, encoded: EncodedBatch) -> NetResponse;
    /// A peer answered a message of ours with [`NetResponse::LaterEpoch`].
    fn on_later_epoch(&self, epoch: quorate_ledger::Epoch);
}

enum Command {
    Send {
        to: usize,
        request: NetRequest,
    },
    Broadcast {
        request: NetRequest,
    },
    /// A request encoded once, to every validator.
    BroadcastFrame(Frame),
    Request {
        to: usize,
        request: NetRequest,
        reply: oneshot::Sender<Option<NetResponse>>,
    },
    /// A peer sent something that decoded but broke a rule (scored like an undecodable frame).
    Fault {
        peer: Origin,
        why: String,
    },
}

/// A cheap, cloneable handle to the network task.
#[derive(Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<Command>,
    connected: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    guests_refused: Arc<AtomicU64>,
    /// Configured sources, addressed after the validators (`validators + k`).
    sources: usize,
}

impl NetHandle {
    /// Queues a command without waiting; at the bound it is dropped and counted.
    fn queue(&self, command: Command) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.commands.try_send(command) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn send(&self, to: usize, request: NetRequest) {
        self.queue(Command::Send { to, request });
    }

    pub fn broadcast(&self, request: NetRequest) {
        self.queue(Command::Broadcast { request });
    }

    /// Sends a frame encoded once ([`Frame::encode`]) to every validator.
    pub fn broadcast_frame(&self, frame: Frame) {
        self.queue(Command::BroadcastFrame(frame));
    }

    /// Sends a request and waits for the answer (`None` if the peer failed to answer). Waits
    /// for room in the queue rather than dropping: the caller is waiting anyway.
    pub async fn request(&self, to: usize, request: NetRequest) -> Option<NetResponse> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request { to, request, reply })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }

    /// Scores validator `peer` down for `why` (enough faults disconnect it for a while).
    pub fn report_fault(&self, peer: usize, why: String) {
        self.report(Origin::Validator(peer), why);
    }

    /// Scores a validator or guest down for `why`.
    pub fn report(&self, peer: Origin, why: String) {
        self.queue(Command::Fault { peer, why });
    }

    /// Commands dropped at the queue's bound since start.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Validators currently connected.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// How many configured sources (see [`Source`]) follow the validators' indices.
    pub fn sources(&self) -> usize {
        self.sources
    }

    /// Guests' requests dropped over their budget, and guests refused at [`MAX_GUESTS`].
    pub fn guests_refused_total(&self) -> u64 {
        self.guests_refused.load(Ordering::Relaxed)
    }
}

struct Peer {
    id: PeerId,
    address: Multiaddr,
    connected: bool,
    next_dial: Instant,
    backoff: Duration,
    faults: u32,
    shunned_until: Option<Instant>,
}

/// A connected peer outside the validator set.
struct Guest {
    faults: u32,
    /// Requests it may still make now (refilled at [`GUEST_REQUESTS_PER_SECOND`]).
    tokens: f64,
    /// When it last asked something (or connected).
    refilled: Instant,
}

impl Guest {
    fn new() -> Self {
        Guest {
            faults: 0,
            tokens: GUEST_REQUESTS_PER_SECOND,
            refilled: Instant::now(),
        }
    }

    /// Takes one request from the budget, if there is one.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * GUEST_REQUESTS_PER_SECOND;
        self.tokens = (self.tokens + earned).min(GUEST_REQUESTS_PER_SECOND);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A node named by address in the node's config (`peers`, `quorate init --peer`): dialled like
/// a validator, its key learnt when the connection opens. Ledger sync may ask it (index
/// `validators + k`): that is how a node finds the chain when every validator of the epoch it is
/// in has retired. What it serves is verified like any peer's.
struct Source {
    address: Multiaddr,
    id: Option<PeerId>,
    connected: bool,
    next_dial: Instant,
    backoff: Duration,
}

type Behaviour = request_response::Behaviour<WireCodec>;

pub struct Network {
    swarm: Swarm<Behaviour>,
    /// This node's index in the epoch's set; `None` for a follower.
    me: Option<usize>,
    peers: Vec<Peer>,
    sources: Vec<Source>,
    guests: HashMap<PeerId, Guest>,
    shunned_guests: HashMap<PeerId, Instant>,
    /// Guest requests dropped over their budget, and guests refused at the bound.
    guests_refused: Arc<AtomicU64>,
    index: HashMap<PeerId, usize>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Option<NetResponse>>>,
    commands: mpsc::Receiver<Command>,
    connected: Arc<AtomicUsize>,
}

impl Network {
    /// Builds the swarm and starts listening. `validators` are (identity key, multiaddr) in
    /// validator-set order; `me` is this node's index (`None`: a follower); `sources` are
    /// multiaddrs of other nodes to sync from (see [`Source`]).
    pub fn new(
        identity: &SigningKey,
        listen: &str,
        validators: &[(PublicKey, String)],
        me: Option<usize>,
        sources: &[String],
    ) -> Result<(Network, NetHandle)> {
        let mut secret = *identity.secret().as_bytes();
        let keypair =
            libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).context("identity key")?;
        zeroize_bytes(&mut secret);
        let codec_config = request_response::Config::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_max_concurrent_streams(4096);
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .context("building the TCP transport")?
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    WireCodec::default(),
                    [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                    codec_config,
                )
            })
            .context("building the network behaviour")?
            .with_swarm_config(|config| {
                config.with_idle_connection_timeout(Duration::from_secs(24 * 3600))
            })
            .build();
        let listen: Multiaddr = listen
            .parse()
            .with_context(|| format!("p2p listen address {listen:?} is not a multiaddr"))?;
        swarm
            .listen_on(listen.clone())
            .with_context(|| format!("listening on {listen}"))?;
        let mut peers = Vec::with_capacity(validators.len());
        let mut index = HashMap::new();
        for (i, (key, address)) in validators.iter().enumerate() {
            let id = peer_id(key)?;
            let address: Multiaddr = address
                .parse()
                .with_context(|| format!("validator {i} address {address:?}"))?;
            if Some(i) != me {
                swarm.add_peer_address(id, address.clone());
            }
            index.insert(id, i);
            peers.push(Peer {
                id,
                address,
                connected: false,
                next_dial: Instant::now(),
                backoff: REDIAL_MIN,
                faults: 0,
                shunned_until: None,
            });
        }
        let (tx, commands) = mpsc::channel(COMMANDS_MAX);
        let connected = Arc::new(AtomicUsize::new(0));
        let sources = sources
            .iter()
            .map(|address| {
                Ok(Source {
                    address: address
                        .parse()
                        .with_context(|| format!("peer address {address:?} is not a multiaddr"))?,
                    id: None,
                    connected: false,
                    next_dial: Instant::now(),
                    backoff: REDIAL_MIN,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let guests_refused = Arc::new(AtomicU64::new(0));
        let handle = NetHandle {
            commands: tx,
            connected: connected.clone(),
            dropped: Arc::new(AtomicU64::new(0)),
            guests_refused: guests_refused.clone(),
            sources: sources.len(),
        };
        Ok((
            Network {
                swarm,
                me,
                peers,
                sources,
                guests: HashMap::new(),
                shunned_guests: HashMap::new(),
                guests_refused,
                index,
                pending: HashMap::new(),
                commands,
                connected,
            },
            handle,
        ))
    }

    fn usable(&self, to: usize) -> Option<PeerId> {
        if let Some(k) = to.checked_sub(self.peers.len()) {
            let source = self.sources.get(k)?;
            return source.id.filter(|_| source.connected);
        }
        let peer = self.peers.get(to)?;
        if Some(to) == self.me || peer.shunned_until.is_some_and(|t| t > Instant::now()) {
            return None;
        }
        Some(peer.id)
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send { to, request } => {
                if let Some(id) = self.usable(to) {
                    self.swarm
                        .behaviour_mut()
                        .send_request(&id, WireRequest::Value(request));
                }
            }
            // Encoded once for all.
            Command::Broadcast { request } => match Frame::encode(&request) {
                Ok(frame) => self.broadcast_frame(frame),
                Err(error) => warn!(%error, "encoding a message to broadcast"),
            },
            Command::BroadcastFrame(frame) => self.broadcast_frame(frame),
            Command::Fault { peer, why } => match peer {
                Origin::Validator(i) => {
                    if let Some(id) = self.peers.get(i).map(|p| p.id) {
                        self.fault(id, &why);
                    }
                }
                Origin::Guest(id) => self.fault(id, &why),
            },
            Command::Request { to, request, reply } => match self.usable(to) {
                Some(id) => {
                    let request_id = self
                        .swarm
                        .behaviour_mut()
                        .send_request(&id, WireRequest::Value(request));
                    self.pending.insert(request_id, reply);
                }
                None => {
                    let _ = reply.send(None);
                }
            },
        }
    }

    fn broadcast_frame(&mut self, frame: Frame) {
        for to in 0..self.peers.len() {
            if let Some(id) = self.usable(to) {
                self.swarm
                    .behaviour_mut()
                    .send_request(&id, WireRequest::Frame(frame.clone()));
            }
        }
    }

    fn fault(&mut self, peer: PeerId, why: &str) {
        let Some(&i) = self.index.get(&peer) else {
            self.guest_fault(peer, why);
            return;
        };
        let p = &mut self.peers[i];
        p.faults += 1;
        warn!(peer = i, faults = p.faults, "peer fault: {why}");
        if p.faults >= MAX_PEER_FAULTS {
            p.faults = 0;
            p.shunned_until = Some(Instant::now() + SHUN_DURATION);
            warn!(peer = i, "disconnecting a misbehaving peer");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn guest_fault(&mut self, peer: PeerId, why: &str) {
        let Some(guest) = self.guests.get_mut(&peer) else {
            return;
        };
        guest.faults += 1;
        warn!(%peer, faults = guest.faults, "guest fault: {why}");
        if guest.faults >= MAX_PEER_FAULTS {
            self.guests.remove(&peer);
            self.shun_guest(peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn shun_guest(&mut self, peer: PeerId) {
        let now = Instant::now();
        self.shunned_guests.retain(|_, until| *until > now);
        if self.shunned_guests.len() >= MAX_SHUNNED_GUESTS {
            if let Some(oldest) = self
                .shunned_guests
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(id, _)| *id)
            {
                self.shunned_guests.remove(&oldest);
            }
        }
        self.shunned_guests.insert(peer, now + SHUN_DURATION);
    }

    /// Admits a connection from a key outside the set, within the bounds.
    fn admit_guest(&mut self, peer: PeerId) {
        if self.guests.contains_key(&peer) {
            return;
        }
        let shunned = self
            .shunned_guests
            .get(&peer)
            .is_some_and(|until| *until > Instant::now());
        if !shunned && self.guests.len() >= MAX_GUESTS {
            // Full: the longest idle guest, if idle long enough, makes room.
            let idle = self
                .guests
                .iter()
                .min_by_key(|(_, guest)| guest.refilled)
                .filter(|(_, guest)| guest.refilled.elapsed() >= GUEST_IDLE_EVICT)
                .map(|(id, _)| *id);
            if let Some(idle) = idle {
                debug!(peer = %idle, "evicting an idle guest");
                self.guests.remove(&idle);
                let _ = self.swarm.disconnect_peer_id(idle);
            }
        }
        if shunned || self.guests.len() >= MAX_GUESTS {
            debug!(%peer, shunned, "refusing a guest");
            self.guests_refused.fetch_add(1, Ordering::Relaxed);
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        debug!(%peer, "guest connected");
        self.guests.insert(peer, Guest::new());
    }

    fn on_event(
        &mut self,
        event: SwarmEvent<Event<WireRequest, NetResponse>>,
        handler: &dyn Handler,
    ) {
        match event {
            SwarmEvent::Behaviour(Event::Message { peer, message, .. }) => match message {
                Message::Request {
                    request, channel, ..
                } => {
                    if let WireRequest::Value(NetRequest::Undecodable(why)) = &request {
                        // No answer: the stream is dropped.
                        self.fault(peer, why);
                        return;
                    }
                    let from = match self.index.get(&peer) {
                        Some(&i) => Origin::Validator(i),
                        None => {
                            let Some(guest) = self.guests.get_mut(&peer) else {
                                let _ = self.swarm.disconnect_peer_id(peer);
                                return;
                            };
                            if !guest.take() {
                                // Over its budget: no answer (the stream is dropped).
                                self.guests_refused.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            Origin::Guest(peer)
                        }
                    };
                    let response = match request {
                        WireRequest::Value(request) => handler.on_request(from, request),
                        WireRequest::Batch(batch, encoded) => {
                            handler.on_batch(from, batch, encoded)
                        }
                        // Only ever written.
                        WireRequest::Frame(_) => NetResponse::Ack,
                    };
                    let _ = self.swarm.behaviour_mut().send_response(channel, response);
                }
                Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(Some(response));
                    } else if let NetResponse::LaterEpoch(epoch) = response {
                        handler.on_later_epoch(epoch);
                    }
                }
            },
            SwarmEvent::Behaviour(Event::OutboundFailure {
                request_id, error, ..
            }) => {
                debug!(%error, "outbound request failed");
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(None);
                }
            }
            SwarmEvent::Behaviour(Event::InboundFailure { peer, error, .. }) => {
                if let request_response::InboundFailure::Io(error) = &error {
                    if error.kind() == std::io::ErrorKind::InvalidData {
                        self.fault(peer, &error.to_string());
                        return;
                    }
                }
                debug!(%error, "inbound request failed");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let mut source = false;
                if let libp2p::core::ConnectedPoint::Dialer { address, .. } = &endpoint {
                    for s in self.sources.iter_mut().filter(|s| s.address == *address) {
                        if !s.connected {
                            info!(%address, %peer_id, "connected to a configured peer");
                        }
                        s.id = Some(peer_id);
                        s.connected = true;
                        s.backoff = REDIAL_MIN;
                        source = true;
                    }
                }
                match self.index.get(&peer_id).copied() {
                    Some(i) if Some(i) != self.me => {
                        let p = &mut self.peers[i];
                        if p.shunned_until.is_some_and(|t| t > Instant::now()) {
                            let _ = self.swarm.disconnect_peer_id(peer_id);
                            return;
                        }
                        if !p.connected {
                            p.connected = true;
                            p.backoff = REDIAL_MIN;
                            info!(peer = i, "connected");
                        }
                    }
                    Some(_) => {
                        // Our own key from elsewhere.
                        let _ = self.swarm.disconnect_peer_id(peer_id);
                    }
                    // A configured peer is a guest beyond the bound (the operator chose it).
                    None if source => {
                        self.guests.entry(peer_id).or_insert_with(Guest::new);
                    }
                    None => self.admit_guest(peer_id),
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(&i) = self.index.get(&peer_id) {
                    if self.peers[i].connected {
                        info!(peer = i, "disconnected");
                    }
                    self.peers[i].connected = false;
                } else {
                    self.guests.remove(&peer_id);
                }
                for s in self.sources.iter_mut().filter(|s| s.id == Some(peer_id)) {
                    s.connected = false;
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => info!(%address, "p2p listening"),
            _ => {}
        }
        let count = self.peers.iter().filter(|p| p.connected).count();
        self.connected.store(count, Ordering::Relaxed);
    }

    fn redial(&mut self) {
        let now = Instant::now();
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            if Some(i) == self.me || p.connected || p.next_dial > now {
                continue;
            }
            if p.shunned_until.is_some_and(|t| t > now) {
                continue;
            }
            p.next_dial = now + p.backoff;
            p.backoff = (p.backoff * 2).min(REDIAL_MAX);
            let address = p.address.clone().with_p2p(p.id).unwrap_or_else(|a| a);
            if let Err(error) = self.swarm.dial(address) {
                debug!(peer = i, %error, "dial failed");
            }
        }
        for s in &mut self.sources {
            if s.connected || s.next_dial > now {
                continue;
            }
            s.next_dial = now + s.backoff;
            s.backoff = (s.backoff * 2).min(REDIAL_MAX);
            if let Err(error) = self.swarm.dial(s.address.clone()) {
                debug!(address = %s.address, %error, "dial failed");
            }
        }
    }

    /// Runs until the handle side is dropped.
    pub async fn run(mut self, handler: Arc<dyn Handler>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return,
                },
                event = self.swarm.select_next_some() => self.on_event(event, handler.as_ref()),
                _ = tick.tick() => self.redial(),
            }
        }
    }
}

fn zeroize_bytes(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        // SAFETY: a volatile write to a valid, exclusively borrowed byte.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_past_the_command_bound_are_dropped_and_counted() {
        let (commands, mut queue) = mpsc::channel(4);
        let handle = NetHandle {
            commands,
            connected: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            guests_refused: Arc::new(AtomicU64::new(0)),
            sources: 0,
        };
        for _ in 0..10 {
            handle.broadcast(NetRequest::GetCommitted { from: 1, count: 1 });
        }
        handle.report_fault(1, "test".into());
        assert_eq!(handle.dropped_total(), 7);
        let mut queued = 0;
        while queue.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 4);
    }
}
