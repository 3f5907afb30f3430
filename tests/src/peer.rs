//! A stand-in validator on libp2p: it completes the handshake with a genuine validator identity
//! and sends whatever frames a test gives it on the consensus protocol (`/quorate/1`), as a
//! Byzantine validator would.

use futures::prelude::*;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol};
use quorate_consensus::wire::NetRequest;
use quorate_ledger::Batch;
use std::io;
use std::time::Duration;

/// Writes raw bytes as a request and reads whatever comes back (frames included: a request is
/// the 4-byte length and the body, as the node writes it).
#[derive(Clone, Default)]
pub struct Raw;

impl request_response::Codec for Raw {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut bytes = Vec::new();
        io.take(1 << 20).read_to_end(&mut bytes).await?;
        Ok(bytes)
    }

    async fn read_response<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_request(p, io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&r).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_request(p, io, r).await
    }
}

/// The libp2p identity of the validator whose home is `home` (its `validator.key.json`).
pub fn validator_identity(home: &std::path::Path) -> libp2p::identity::Keypair {
    let keys = quorate_genesis::ValidatorKeyFile::load(&home.join("validator.key.json"))
        .expect("validator key file");
    let mut secret = *keys.identity.secret().as_bytes();
    libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).expect("an ed25519 identity")
}

/// What came back for one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The remote answered with these bytes (a frame of its own).
    Answered(Vec<u8>),
    /// The remote closed the stream without an answer, or the request failed.
    Refused,
}

/// Dials `address` as `identity`, sends every frame as one request and returns what came back
/// for each, in the order the answers arrived (at most 30 s in all).
pub async fn send_frames(
    identity: libp2p::identity::Keypair,
    address: Multiaddr,
    frames: Vec<Vec<u8>>,
) -> Vec<Answer> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp transport")
        .with_behaviour(|_| {
            request_response::Behaviour::<Raw>::new(
                [(StreamProtocol::new("/quorate/1"), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(10)))
        .build();
    swarm.dial(address).expect("dial");
    let total = frames.len();
    let mut frames = Some(frames);
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while answers.len() < total {
        let event = tokio::select! {
            event = swarm.select_next_some() => event,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                for frame in frames.take().into_iter().flatten() {
                    swarm.behaviour_mut().send_request(&peer_id, frame);
                }
            }
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }) => answers.push(if response.is_empty() {
                Answer::Refused
            } else {
                Answer::Answered(response)
            }),
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                answers.push(Answer::Refused)
            }
            SwarmEvent::OutgoingConnectionError { .. } => break,
            _ => {}
        }
    }
    assert!(frames.is_none(), "never connected");
    answers
}

/// One wire frame (4-byte big-endian length, canonical encoding) carrying `request`.
pub fn request_frame(request: &NetRequest) -> Vec<u8> {
    let body = quorate_ledger::encode(request).expect("encodable request");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// One wire frame (4-byte big-endian length, canonical encoding) carrying `batch`.
/// Pushes `batch` as `identity` (a validator's key) to nodes `0..count` of `cluster`, one
/// connection each, as a validator pushing a batch would.
pub fn push_batch(
    cluster: &crate::Cluster,
    count: usize,
    identity: &libp2p::identity::Keypair,
    batch: &Batch,
) {
    let frame = batch_frame(batch);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    for i in 0..count {
        let address: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", cluster.p2p_port(i))
            .parse()
            .expect("multiaddr");
        runtime.block_on(send_frames(identity.clone(), address, vec![frame.clone()]));
    }
}

pub fn batch_frame(batch: &Batch) -> Vec<u8> {
    request_frame(&NetRequest::Batch(std::sync::Arc::new(batch.clone())))
}

/// One wire frame announcing that `payload` is made of `batches` (true or not).
pub fn manifest_frame(
    payload: quorate_crypto::Digest,
    batches: &[quorate_crypto::Digest],
) -> Vec<u8> {
    request_frame(&NetRequest::Manifest {
        payload,
        batches: batches.to_vec(),
    })
}
