//! A peer that completes the libp2p handshake with a validator's identity and then speaks garbage
//! on the consensus protocol: the node refuses every frame, scores the peer down, and keeps
//! committing (issue: node end to end).

use futures::prelude::*;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol};
use quorate_genesis::ValidatorKeyFile;
use quorate_tests::Cluster;
use std::io;
use std::time::Duration;

/// Writes raw bytes as a request and reads whatever comes back.
#[derive(Clone, Default)]
struct Raw;

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

/// Frames that pass the length prefix but do not decode, and one that claims 4 GiB.
fn garbage(round: u32) -> Vec<u8> {
    if round == 0 {
        return vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    }
    let body: Vec<u8> = (0..1000u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(round) >> 13) as u8)
        .collect();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// Dials `address` as `identity`, sends `rounds` garbage requests, returns how many the remote
/// refused (closed without an answer, or failed) rather than answered.
async fn speak_garbage(
    identity: libp2p::identity::Keypair,
    address: Multiaddr,
    rounds: u32,
) -> u32 {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::<Raw>::new(
                [(StreamProtocol::new("/quorate/1"), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(10)))
        .build();
    swarm.dial(address).unwrap();
    let mut sent = 0;
    let mut refused = 0;
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while refused + answered < rounds {
        let event = tokio::select! {
            event = swarm.select_next_some() => event,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if sent == 0 => {
                for round in 0..rounds {
                    swarm.behaviour_mut().send_request(&peer_id, garbage(round));
                    sent += 1;
                }
            }
            // A refused frame gets its stream closed without an answer.
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }) => {
                if response.is_empty() {
                    refused += 1;
                } else {
                    answered += 1;
                }
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => refused += 1,
            SwarmEvent::OutgoingConnectionError { .. } => break,
            _ => {}
        }
    }
    assert!(sent > 0, "never connected");
    refused
}

#[test]
fn a_validator_speaking_garbage_over_libp2p_is_refused_and_the_node_keeps_committing() {
    let mut cluster = Cluster::start(4, 1);
    cluster.wait_height(0, 1, 60);
    // Node3 goes down; its identity (a genuine validator key) now speaks garbage to node0.
    cluster.kill9(3);
    let keys = ValidatorKeyFile::load(&cluster.home(3).join("validator.key.json")).unwrap();
    let mut secret = *keys.identity.secret().as_bytes();
    let identity = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).unwrap();
    let address: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", cluster.p2p_port(0))
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let refused = runtime.block_on(speak_garbage(identity, address, 8));
    assert!(refused >= 5, "only {refused} garbage frames were refused");
    assert!(
        cluster.is_running(0),
        "node0 died; log:\n{}",
        cluster.log(0)
    );
    // The other three go on committing.
    let height = cluster.height(0).unwrap();
    cluster.wait_height(0, height + 2, 60);
    cluster.wait_height(1, height + 2, 60);
    let log = cluster.full_log(0);
    assert!(
        log.contains("peer fault") && log.contains("disconnecting a misbehaving peer"),
        "node0 did not score and disconnect the peer:\n{}",
        cluster.log(0)
    );
}
