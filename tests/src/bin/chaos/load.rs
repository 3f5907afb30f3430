//! The load client: signed transfers from many accounts, each account with one transaction in
//! flight, and a record of every acknowledgement a node gave (committed at this height, in this
//! block). A transaction is re-sent, byte for byte the same, until some node says it committed,
//! so nothing the client was told can depend on which node it asked.

use crate::http;
use quorate_consensus::sim::Rng;
use quorate_crypto::{Address, Digest, SigningKey};
use quorate_ledger::{SignedTransaction, Transaction, TransactionKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a node told the client about one transaction.
#[derive(Clone, Debug)]
pub struct Ack {
    pub id: Digest,
    pub height: u64,
    pub block_hash: String,
    pub ok: bool,
}

#[derive(Default)]
pub struct LoadStats {
    pub submitted: AtomicU64,
    pub resent: AtomicU64,
    pub refused: AtomicU64,
    pub request_errors: AtomicU64,
}

pub struct Account {
    pub key: SigningKey,
    pub address: Address,
}

struct InFlight {
    tx: SignedTransaction,
    id: Digest,
    sent: Instant,
    node: usize,
}

pub struct Load {
    pub acks: Arc<Mutex<Vec<Ack>>>,
    pub stats: Arc<LoadStats>,
    submitting: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const TIMEOUT: Duration = Duration::from_secs(2);
/// Re-send a transaction no node has reported committed after this long.
const RESEND_AFTER: Duration = Duration::from_secs(4);

impl Load {
    /// Starts `threads` client threads sharing `accounts` (every account sends to random
    /// others), against the nodes' RPC addresses.
    pub fn start(
        chain_id: &str,
        accounts: Vec<Account>,
        rpcs: Vec<SocketAddr>,
        threads: usize,
        seed: u64,
    ) -> Load {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(LoadStats::default());
        let submitting = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let addresses: Vec<Address> = accounts.iter().map(|a| a.address).collect();
        let mut shares: Vec<Vec<Account>> = (0..threads.max(1)).map(|_| Vec::new()).collect();
        let count = shares.len();
        for (j, account) in accounts.into_iter().enumerate() {
            shares[j % count].push(account);
        }
        let threads = shares
            .into_iter()
            .enumerate()
            .map(|(t, share)| {
                let worker = Worker {
                    chain_id: chain_id.to_string(),
                    rpcs: rpcs.clone(),
                    addresses: addresses.clone(),
                    rng: Rng::new(seed ^ (0x6c6f_6164 + t as u64)),
                    acks: acks.clone(),
                    stats: stats.clone(),
                };
                let (submitting, stop) = (submitting.clone(), stop.clone());
                std::thread::spawn(move || worker.run(share, &submitting, &stop))
            })
            .collect();
        Load {
            acks,
            stats,
            submitting,
            stop,
            threads,
        }
    }

    /// Stops starting new transactions; those in flight are still followed to their commit.
    pub fn drain(&self) {
        self.submitting.store(false, Ordering::Relaxed);
    }

    pub fn stop(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        acks.clone()
    }
}

struct Worker {
    chain_id: String,
    rpcs: Vec<SocketAddr>,
    addresses: Vec<Address>,
    rng: Rng,
    acks: Arc<Mutex<Vec<Ack>>>,
    stats: Arc<LoadStats>,
}

impl Worker {
    fn run(mut self, accounts: Vec<Account>, submitting: &AtomicBool, stop: &AtomicBool) {
        let mut next_nonce = vec![0u64; accounts.len()];
        let mut in_flight: Vec<Option<InFlight>> = accounts.iter().map(|_| None).collect();
        while !stop.load(Ordering::Relaxed) {
            let round = Instant::now();
            for (j, account) in accounts.iter().enumerate() {
                match in_flight[j].take() {
                    None if submitting.load(Ordering::Relaxed) => {
                        let Some(tx) = self.transfer(account, next_nonce[j]) else {
                            continue;
                        };
                        let id = tx.id();
                        let node = self.rng.range(0, self.rpcs.len() as u64 - 1) as usize;
                        self.send(&tx, node);
                        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
                        in_flight[j] = Some(InFlight {
                            tx,
                            id,
                            sent: Instant::now(),
                            node,
                        });
                    }
                    None => {}
                    Some(mut flight) => match self.status(&flight) {
                        Some(ack) => {
                            self.acks
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(ack);
                            next_nonce[j] += 1;
                        }
                        None => {
                            if flight.sent.elapsed() > RESEND_AFTER {
                                flight.node = (flight.node
                                    + 1
                                    + self.rng.range(0, self.rpcs.len() as u64 - 2) as usize)
                                    % self.rpcs.len();
                                self.send(&flight.tx, flight.node);
                                self.stats.resent.fetch_add(1, Ordering::Relaxed);
                                flight.sent = Instant::now();
                            }
                            in_flight[j] = Some(flight);
                        }
                    },
                }
            }
            if let Some(rest) = Duration::from_millis(100).checked_sub(round.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }

    fn transfer(&mut self, from: &Account, nonce: u64) -> Option<SignedTransaction> {
        let to = loop {
            let to = self.addresses[self.rng.range(0, self.addresses.len() as u64 - 1) as usize];
            if to != from.address || self.addresses.len() == 1 {
                break to;
            }
        };
        Transaction {
            chain_id: self.chain_id.clone(),
            sender: from.key.public(),
            nonce,
            kind: TransactionKind::Transfer {
                to,
                amount: self.rng.range(1, 1000),
            },
        }
        .sign(&from.key)
        .ok()
    }

    fn send(&self, tx: &SignedTransaction, node: usize) {
        let Ok(body) = serde_json::to_vec(tx) else {
            return;
        };
        match http::call(self.rpcs[node], "POST", "/v1/tx", Some(&body), TIMEOUT) {
            Ok((200, _)) => {}
            // Refusals (already pending, already committed, mempool full) are answers too:
            // the transaction is followed until a node reports it committed.
            Ok(_) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.request_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The acknowledgement, if the node we asked says the transaction committed.
    fn status(&self, flight: &InFlight) -> Option<Ack> {
        let path = format!("/v1/tx/{}", flight.id);
        let (status, body) = match http::get(self.rpcs[flight.node], &path, TIMEOUT) {
            Ok(reply) => reply,
            Err(_) => {
                self.stats.request_errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        if status != 200 || body["status"] != "committed" {
            return None;
        }
        Some(Ack {
            id: flight.id,
            height: body["height"].as_u64()?,
            block_hash: body["block_hash"].as_str()?.to_string(),
            ok: body["result"] == "ok",
        })
    }
}
