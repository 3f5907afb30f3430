//! Writes the committed seed corpus (`tests/fuzz/corpus/<target>/`): real values of every
//! type the targets decode — consensus traffic sampled from simulator runs of both protocols
//! with Byzantine validators, signed transfers, blocks, a testnet's genesis and config.
//!
//! `cargo run --release --bin seed_corpus -- tests/fuzz/corpus` (from the repository root,
//! inside tests/fuzz: `cargo run --release --bin seed_corpus -- corpus`).

use quorate_consensus::sim::{sample_messages, Behaviour, CryptoMode, Setup, SimConfig};
use quorate_consensus::wire::{NetRequest, NetResponse};
use quorate_crypto::{Digest, SigningKey};
use quorate_genesis::{generate_testnet, ConsensusParams, Protocol, TestnetSpec};
use quorate_ledger::{
    codec, Batch, Block, BlockHeader, CommittedBlock, Epoch, SignedTransaction, Transaction,
    TransactionKind,
};
use std::path::{Path, PathBuf};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("corpus file");
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    // Consensus traffic of both protocols, honest and Byzantine.
    let setup = Setup::new(4, CryptoMode::Real).expect("setup");
    let mut messages = Vec::new();
    for protocol in [Protocol::HotStuff, Protocol::Pbft] {
        let mut config = SimConfig::new(4, 1, Behaviour::Random);
        config.protocol = protocol;
        config.after_gst_ms = 3_000;
        for seed in 0..4 {
            messages.extend(sample_messages(&setup, &config, seed, 12));
        }
    }
    for (i, message) in messages.iter().enumerate() {
        let encoded = codec::encode(message).expect("encode");
        let mut tagged = vec![i as u8];
        tagged.extend_from_slice(&encoded);
        write(
            &out,
            "consensus_message",
            &format!("message-{i:03}"),
            &tagged,
        );
        let request =
            codec::encode(&NetRequest::Consensus(Epoch(0), message.clone())).expect("encode");
        if i % 4 == 0 {
            write(
                &out,
                "wire_frame",
                &format!("consensus-{i:03}"),
                &frame(&request),
            );
        }
    }

    // Signed transfers, a batch, blocks.
    let key = SigningKey::from_seed_insecure(1);
    let to = SigningKey::from_seed_insecure(2).public().address();
    let txs: Vec<SignedTransaction> = (0..3)
        .map(|nonce| {
            Transaction {
                chain_id: "quorate-testnet".into(),
                sender: key.public(),
                nonce,
                kind: TransactionKind::Transfer {
                    to,
                    amount: 10 + nonce,
                },
            }
            .sign(&key)
            .expect("sign")
        })
        .collect();
    for (i, tx) in txs.iter().enumerate() {
        write(
            &out,
            "transaction",
            &format!("transfer-{i}"),
            &codec::encode(tx).expect("encode"),
        );
        let json = serde_json::to_vec_pretty(tx).expect("json");
        write(&out, "rpc_json", &format!("tx-{i}.json"), &json);
    }
    write(
        &out,
        "rpc_json",
        "txs.json",
        &serde_json::to_vec(&txs).expect("json"),
    );
    // An opaque payload (bench chains).
    let opaque = SignedTransaction::opaque("quorate-testnet", key.public(), 7, vec![0xab; 64])
        .expect("opaque");
    write(
        &out,
        "transaction",
        "opaque",
        &codec::encode(&opaque).expect("encode"),
    );
    write(
        &out,
        "rpc_json",
        "opaque.json",
        &serde_json::to_vec(&opaque).expect("json"),
    );
    let batch = Batch {
        transactions: txs.clone(),
    };
    let mut header = BlockHeader::genesis("quorate-testnet", Digest::ZERO, Digest::ZERO, 0);
    header.height = quorate_ledger::Height(1);
    header.payload_digest = Block::payload_digest_of(&[batch.digest()]);
    let block = Block {
        header: header.clone(),
        batches: vec![batch.clone()],
    };
    for (name, kind, bytes) in [
        ("block", 0u8, codec::encode(&block).expect("encode")),
        ("header", 1, codec::encode(&header).expect("encode")),
        ("batch", 2, codec::encode(&batch).expect("encode")),
    ] {
        let mut tagged = vec![kind];
        tagged.extend_from_slice(&bytes);
        write(&out, "block", name, &tagged);
    }
    let record = CommittedBlock {
        header,
        proof: vec![0; 8],
        batches: vec![batch.digest()],
        receipts: vec![Ok(()); txs.len()],
    };
    let raw = codec::encode(&(record.clone(), vec![batch.clone()])).expect("encode");
    write(
        &out,
        "raw_block",
        "block-1.hex",
        hex::encode(raw).as_bytes(),
    );

    let requests = [
        NetRequest::Batch(std::sync::Arc::new(batch.clone())),
        NetRequest::Manifest {
            payload: block.header.payload_digest,
            batches: vec![batch.digest()],
        },
        NetRequest::GetManifest(block.header.payload_digest),
        NetRequest::GetBatches(vec![batch.digest()]),
        NetRequest::GetCommitted { from: 1, count: 64 },
    ];
    for (i, request) in requests.iter().enumerate() {
        let body = codec::encode(request).expect("encode");
        write(&out, "wire_frame", &format!("request-{i}"), &frame(&body));
    }
    let responses = [
        NetResponse::Ack,
        NetResponse::Manifest(Some(vec![batch.digest()])),
        NetResponse::Batches(vec![std::sync::Arc::new(batch)]),
        NetResponse::Committed(vec![record]),
    ];
    for (i, response) in responses.iter().enumerate() {
        let body = codec::encode(response).expect("encode");
        write(&out, "wire_frame", &format!("response-{i}"), &frame(&body));
    }

    // A testnet's genesis.json and config.toml, both protocols.
    for protocol in [Protocol::HotStuff, Protocol::Pbft] {
        let dir = std::env::temp_dir().join(format!(
            "quorate-seed-corpus-{}-{protocol}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        generate_testnet(&TestnetSpec {
            validators: 4,
            protocol,
            accounts: 3,
            governance: 1,
            dir: dir.clone(),
            base_port: 26600,
            hosts: Vec::new(),
            chain_id: "quorate-testnet".into(),
            initial_balance: 1_000_000,
            genesis_time_ms: 1_700_000_000_000,
            params: ConsensusParams::default(),
        })
        .expect("testnet");
        let genesis = std::fs::read(dir.join("genesis.json")).expect("genesis");
        write(&out, "genesis_json", &format!("{protocol}.json"), &genesis);
        let config = std::fs::read(dir.join("node0/config.toml")).expect("config");
        write(&out, "config_toml", &format!("{protocol}.toml"), &config);
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!("seed corpus written to {}", out.display());
}
