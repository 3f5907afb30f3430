//! A Byzantine validator on real processes costs the honest ones no more than its silence
//! (issue: no Byzantine behaviour may hurt more than silence). Four validators; node3's keys
//! (its libp2p identity and its BLS voting key) are taken over by a stand-in that, for every
//! proposal it receives, sends every honest validator votes for the real block with the wrong
//! height (validly signed: vote poisoning), a burst of SyncInfos whose QC claims a signer it
//! does not carry (each a pairing to refuse), and once a second a well-signed batch larger than
//! any batch may be. The three honest validators must commit transfers and blocks at no less
//! than 80% of the rate they reach with node3 simply stopped, and stay under a memory bound.

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol};
use quorate_consensus::hotstuff::{HsMessage, SyncInfo, Vote};
use quorate_consensus::wire::NetRequest;
use quorate_consensus::Message;
use quorate_crypto::{BlsKeyPair, Domain, SigningKey};
use quorate_genesis::{AccountKeyFile, ValidatorKeyFile};
use quorate_ledger::{Batch, SignedTransaction, Transaction, TransactionKind, VoteData};
use quorate_tests::peer::{validator_identity, Raw};
use quorate_tests::{http, Cluster};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long each phase is measured.
const WINDOW: Duration = Duration::from_secs(20);
/// Transfers offered per second (by one client thread, round-robin over the honest nodes).
const OFFERED_PER_S: u64 = 20;
/// Forged-certificate SyncInfos sent per proposal received.
const FORGED_PER_PROPOSAL: usize = 20;
/// Resident memory an honest validator stays under, attack or not.
const RSS_BOUND_MB: u64 = 512;

fn frame(request: &NetRequest) -> Vec<u8> {
    let body = quorate_ledger::encode(request).unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// The consensus message in a request frame from the node, if it is one.
fn consensus_message(frame: &[u8]) -> Option<Message> {
    match quorate_ledger::decode(frame.get(4..)?).ok()? {
        NetRequest::Consensus(_, message) => Some(message),
        _ => None,
    }
}

/// `NetResponse::Ack` as a frame.
fn ack() -> Vec<u8> {
    let mut frame = 4u32.to_be_bytes().to_vec();
    frame.extend([0, 0, 0, 0]);
    frame
}

struct Attack {
    identity: libp2p::identity::Keypair,
    bls: BlsKeyPair,
    honest: Vec<Multiaddr>,
    oversized: Batch,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

impl Attack {
    fn poison(&self, message: &Message) -> Vec<Vec<u8>> {
        let Message::HotStuff(HsMessage::Proposal(proposal)) = message else {
            return Vec::new();
        };
        let header = &proposal.block.header;
        let mut frames = Vec::new();
        let wrong = VoteData {
            genesis_hash: header.genesis_hash,
            epoch: header.epoch,
            view: header.view,
            height: header.height.next(),
            block: proposal.block.hash().unwrap(),
        };
        let vote = Vote {
            data: wrong,
            signature: self.bls.sign(Domain::Vote, &wrong.signing_bytes().unwrap()),
        };
        frames.push(frame(&NetRequest::Consensus(
            header.epoch,
            Message::HotStuff(HsMessage::Vote(vote)),
        )));
        let mut forged = proposal.block.justify.clone();
        for i in 0..4 {
            forged.signers.insert(i);
        }
        let sync = Message::HotStuff(HsMessage::SyncInfo(SyncInfo {
            high_qc: forged,
            last_tc: None,
        }));
        for _ in 0..FORGED_PER_PROPOSAL {
            frames.push(frame(&NetRequest::Consensus(header.epoch, sync.clone())));
        }
        frames
    }

    async fn run(self) {
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(self.identity.clone())
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
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(5)),
                )
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let mut peers = Vec::new();
        let mut redial = tokio::time::interval(Duration::from_secs(1));
        let batch = frame(&NetRequest::Batch(std::sync::Arc::new(
            self.oversized.clone(),
        )));
        while !self.stop.load(Ordering::Relaxed) {
            tokio::select! {
                _ = redial.tick() => {
                    // (Re)connect (a scored-down peer is dropped for a while) and send the batch.
                    for address in &self.honest {
                        let _ = swarm.dial(address.clone());
                    }
                    for peer in &peers {
                        swarm.behaviour_mut().send_request(peer, batch.clone());
                        self.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                event = swarm.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { peer_id, .. }
                        if !peers.contains(&peer_id) =>
                    {
                        peers.push(peer_id);
                    }
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Request { request, channel, .. },
                        ..
                    }) => {
                        let _ = swarm.behaviour_mut().send_response(channel, ack());
                        if let Some(message) = consensus_message(&request) {
                            for bad in self.poison(&message) {
                                for peer in &peers {
                                    swarm.behaviour_mut().send_request(peer, bad.clone());
                                    self.sent.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    _ => {}
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

/// Offers transfers at OFFERED_PER_S until `stop`, from two accounts, round-robin over the
/// honest nodes.
fn load(cluster_ports: Vec<u16>, chain_id: String, keys: Vec<SigningKey>, stop: Arc<AtomicBool>) {
    let mut nonces = vec![0u64; keys.len()];
    let mut k = 0usize;
    let interval = Duration::from_millis(1000 / OFFERED_PER_S);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let a = k % keys.len();
        let key = &keys[a];
        let tx: SignedTransaction = Transaction {
            chain_id: chain_id.clone(),
            sender: key.public(),
            nonce: nonces[a],
            kind: TransactionKind::Transfer {
                to: keys[(a + 1) % keys.len()].public().address(),
                amount: 1,
            },
        }
        .sign(key)
        .unwrap();
        let port = cluster_ports[k % cluster_ports.len()];
        let (status, _) = http(
            port,
            "POST",
            "/v1/tx",
            serde_json::to_string(&tx).unwrap().as_bytes(),
        );
        if status == 200 {
            nonces[a] += 1;
        }
        k += 1;
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

fn committed_transactions(cluster: &Cluster, i: usize) -> u64 {
    let (_, text) = http(cluster.rpc_port(i), "GET", "/metrics", b"");
    text.lines()
        .find_map(|l| l.strip_prefix("quorate_committed_transactions_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// (transactions, blocks) node0 commits per second over WINDOW.
fn rates(cluster: &Cluster) -> (f64, f64) {
    let (tx0, h0, t0) = (
        committed_transactions(cluster, 0),
        cluster.height(0).unwrap(),
        Instant::now(),
    );
    std::thread::sleep(WINDOW);
    let (tx1, h1) = (
        committed_transactions(cluster, 0),
        cluster.height(0).unwrap(),
    );
    let secs = t0.elapsed().as_secs_f64();
    ((tx1 - tx0) as f64 / secs, (h1 - h0) as f64 / secs)
}

#[test]
fn a_byzantine_validator_costs_the_honest_ones_no_more_than_its_silence() {
    let mut cluster = Cluster::start_with(4, 2, &[("idle_interval_ms", 100)]);
    cluster.wait_height(0, 2, 60);
    cluster.kill9(3);
    let chain_id = cluster.query(0, &["status"]).unwrap()["chain_id"]
        .as_str()
        .unwrap()
        .to_string();
    let keys: Vec<SigningKey> = (0..2)
        .map(|j| AccountKeyFile::load(&cluster.account_key(j)).unwrap())
        .collect();
    let stop_load = Arc::new(AtomicBool::new(false));
    let load_thread = {
        let ports = (0..3).map(|i| cluster.rpc_port(i)).collect();
        let (chain_id, keys, stop) = (chain_id.clone(), keys.clone(), stop_load.clone());
        std::thread::spawn(move || load(ports, chain_id, keys, stop))
    };
    std::thread::sleep(Duration::from_secs(3));

    // Node3 silent.
    let (silent_tx, silent_blocks) = rates(&cluster);

    // Node3's keys in Byzantine hands.
    let node3 = ValidatorKeyFile::load(&cluster.home(3).join("validator.key.json")).unwrap();
    let oversized = Batch {
        transactions: (0..501)
            .map(|nonce| {
                Transaction {
                    chain_id: chain_id.clone(),
                    sender: keys[1].public(),
                    nonce: 1_000_000 + nonce,
                    kind: TransactionKind::Transfer {
                        to: keys[1].public().address(),
                        amount: 1,
                    },
                }
                .sign(&keys[1])
                .unwrap()
            })
            .collect(),
    };
    let stop_attack = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let attack = Attack {
        identity: validator_identity(&cluster.home(3)),
        bls: node3.bls,
        honest: (0..3)
            .map(|i| {
                format!("/ip4/127.0.0.1/tcp/{}", cluster.p2p_port(i))
                    .parse()
                    .unwrap()
            })
            .collect(),
        oversized,
        stop: stop_attack.clone(),
        sent: sent.clone(),
    };
    let attacker = std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(attack.run())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (byzantine_tx, byzantine_blocks) = rates(&cluster);
    let rss: Vec<u64> = (0..3).map(|i| rss_mb(cluster.pid(i).unwrap())).collect();
    stop_attack.store(true, Ordering::Relaxed);
    stop_load.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    load_thread.join().unwrap();

    eprintln!(
        "node3 silent: {silent_tx:.1} tx/s, {silent_blocks:.2} blocks/s; node3 Byzantine \
         ({} frames sent): {byzantine_tx:.1} tx/s, {byzantine_blocks:.2} blocks/s; honest RSS MB {rss:?}",
        sent.load(Ordering::Relaxed)
    );
    assert!(sent.load(Ordering::Relaxed) > 100, "the attack hardly ran");
    assert!(silent_tx > 0.0 && silent_blocks > 0.0);
    assert!(
        byzantine_tx >= 0.8 * silent_tx,
        "transfers: {byzantine_tx:.1}/s under attack, {silent_tx:.1}/s with node3 stopped"
    );
    assert!(
        byzantine_blocks >= 0.8 * silent_blocks,
        "blocks: {byzantine_blocks:.2}/s under attack, {silent_blocks:.2}/s with node3 stopped"
    );
    for (i, mb) in rss.iter().enumerate() {
        assert!(*mb < RSS_BOUND_MB, "node{i} uses {mb} MB");
    }
    let log = cluster.full_log(0);
    assert!(
        log.contains("whose signature does not verify"),
        "node0 never saw a forged certificate:\n{}",
        cluster.log(0)
    );
    for i in 0..3 {
        assert!(cluster.is_running(i), "node{i} died:\n{}", cluster.log(i));
    }
}
