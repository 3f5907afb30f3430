//! A peer that completes the libp2p handshake with a validator's identity and then speaks garbage
//! on the consensus protocol: the node refuses every frame, scores the peer down, and keeps
//! committing (issue: node end to end).

use libp2p::Multiaddr;
use quorate_crypto::Digest;
use quorate_genesis::AccountKeyFile;
use quorate_ledger::{Batch, Block, SignedTransaction, Transaction, TransactionKind};
use quorate_tests::peer::{
    batch_frame, manifest_frame, push_batch, send_frames, validator_identity, Answer,
};
use quorate_tests::Cluster;

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

#[test]
fn a_validator_speaking_garbage_over_libp2p_is_refused_and_the_node_keeps_committing() {
    let mut cluster = Cluster::start(4, 1);
    cluster.wait_height(0, 1, 60);
    // Node3 goes down; its identity (a genuine validator key) now speaks garbage to node0.
    cluster.kill9(3);
    let identity = validator_identity(&cluster.home(3));
    let address: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", cluster.p2p_port(0))
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answers = runtime.block_on(send_frames(
        identity,
        address,
        (0..8).map(garbage).collect(),
    ));
    // A refused frame gets its stream closed without an answer.
    let refused = answers.iter().filter(|a| **a == Answer::Refused).count();
    assert!(refused >= 5, "only {refused} garbage frames were refused");
    assert!(
        cluster.is_running(0),
        "node0 died; log:\n{}",
        cluster.log(0)
    );
    // The same identity hands node1 a well-signed batch larger than any batch may be (it would
    // sit in the way of every proposal): refused at ingest, and the sender scored down.
    let key = AccountKeyFile::load(&cluster.account_key(0)).unwrap();
    let chain_id = cluster.query(1, &["status"]).unwrap()["chain_id"]
        .as_str()
        .unwrap()
        .to_string();
    let oversized = Batch {
        transactions: (0..501)
            .map(|nonce| {
                Transaction {
                    chain_id: chain_id.clone(),
                    sender: key.public(),
                    nonce,
                    kind: TransactionKind::Transfer {
                        to: key.public().address(),
                        amount: 1,
                    },
                }
                .sign(&key)
                .unwrap()
            })
            .collect(),
    };
    let address: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", cluster.p2p_port(1))
        .parse()
        .unwrap();
    let identity = validator_identity(&cluster.home(3));
    // And manifests no block can have: one whose digest is not its batch list's, and one of more
    // batches than a block holds transactions (each batch holds one at least).
    let genesis = quorate_genesis::Genesis::load(&cluster.net().join("genesis.json")).unwrap();
    let max_block = genesis.params.max_block_transactions;
    let batches: Vec<Digest> = (0..4u8).map(|k| Digest([k; 32])).collect();
    let too_many: Vec<Digest> = (0..=max_block)
        .map(|k| {
            let mut bytes = [7; 32];
            bytes[..4].copy_from_slice(&k.to_le_bytes());
            Digest(bytes)
        })
        .collect();
    runtime.block_on(send_frames(
        identity,
        address,
        vec![
            batch_frame(&oversized),
            manifest_frame(Digest([9; 32]), &batches),
            manifest_frame(Block::payload_digest_of(&too_many), &too_many),
        ],
    ));
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
    let log = cluster.full_log(1);
    assert!(
        log.contains("refusing a batch outside the batch size limits")
            && log.contains("peer fault: invalid batch"),
        "node1 took in an oversized batch:\n{}",
        cluster.log(1)
    );
    assert!(
        log.contains("manifest does not match its digest")
            && log.contains(&format!("manifest of {} batches", max_block + 1)),
        "node1 took in a manifest no block can have:\n{}",
        cluster.log(1)
    );
}

/// A validator pushes a batch holding an opaque payload to a chain whose genesis does not allow
/// them: every node refuses the whole batch at ingest (so the transfer beside it never commits
/// from it), scores the peer down, and keeps committing.
#[test]
fn an_opaque_payload_pushed_to_a_chain_that_does_not_allow_them_is_refused() {
    let mut cluster = Cluster::start(4, 1);
    cluster.wait_height(0, 1, 60);
    cluster.kill9(3);
    let identity = validator_identity(&cluster.home(3));
    let chain_id = cluster.query(0, &["status"]).unwrap()["chain_id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = AccountKeyFile::load(&cluster.account_key(0)).unwrap();
    let transfer = Transaction {
        chain_id: chain_id.clone(),
        sender: key.public(),
        nonce: 0,
        kind: TransactionKind::Transfer {
            to: key.public().address(),
            amount: 1,
        },
    }
    .sign(&key)
    .unwrap();
    let opaque = SignedTransaction::opaque(chain_id, key.public(), 1, vec![5; 300]).unwrap();
    let batch = Batch {
        transactions: vec![transfer.clone(), opaque],
    };
    push_batch(&cluster, 3, &identity, &batch);
    let height = cluster.height(0).unwrap();
    cluster.wait_height(0, height + 3, 60);
    for i in 0..3 {
        let log = cluster.full_log(i);
        assert!(
            log.contains("opaque payloads are not allowed on this chain")
                && log.contains("peer fault: invalid batch"),
            "node{i} took in the opaque batch:\n{}",
            cluster.log(i)
        );
        let (code, text) = quorate_tests::http(
            cluster.rpc_port(i),
            "GET",
            &format!("/v1/tx/{}", transfer.id()),
            b"",
        );
        assert_eq!(code, 200, "{text}");
        assert!(
            text.contains("\"unknown\""),
            "node{i} took the transfer from the refused batch: {text}"
        );
    }
}
