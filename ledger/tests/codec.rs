//! Property tests of the canonical encoding: every value round-trips to itself and to the same
//! bytes, and decoding arbitrary or hostile bytes returns an error without panicking or
//! allocating what a length prefix claims.

use proptest::prelude::*;
use quorate_crypto::{
    Address, BlsSignature, Digest, PublicKey, Signature, SignerBitmap, SigningKey,
};
use quorate_ledger::{
    codec, Batch, Block, BlockHeader, CheckpointCert, CheckpointData, Epoch, Height, QuorumCert,
    SeqNum, SignedTransaction, Transaction, TransactionKind, View, VoteData,
};

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

fn transaction() -> impl Strategy<Value = SignedTransaction> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 20]>(),
        "[a-z0-9-]{0,20}",
    )
        .prop_map(|(seed, nonce, amount, to, chain_id)| {
            let key = SigningKey::from_seed_insecure(seed % 64);
            Transaction {
                chain_id,
                sender: key.public(),
                nonce,
                kind: TransactionKind::Transfer {
                    to: Address(to),
                    amount,
                },
            }
            .sign(&key)
            .unwrap()
        })
}

fn header() -> impl Strategy<Value = BlockHeader> {
    (
        "[a-z]{0,10}",
        digest(),
        any::<(u64, u64, u64)>(),
        digest(),
        digest(),
        digest(),
        any::<u16>(),
        any::<u64>(),
    )
        .prop_map(
            |(
                chain_id,
                genesis_hash,
                (epoch, height, view),
                parent,
                payload_digest,
                state_root,
                proposer,
                timestamp_ms,
            )| {
                BlockHeader {
                    chain_id,
                    genesis_hash,
                    epoch: Epoch(epoch),
                    height: Height(height),
                    view: View(view),
                    parent,
                    payload_digest,
                    state_root,
                    proposer,
                    timestamp_ms,
                }
            },
        )
}

fn bitmap() -> impl Strategy<Value = SignerBitmap> {
    (1usize..200, prop::collection::vec(any::<usize>(), 0..50)).prop_map(|(len, signers)| {
        let mut bitmap = SignerBitmap::new(len);
        for signer in signers {
            bitmap.insert(signer % len);
        }
        bitmap
    })
}

fn round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = codec::encode(value).unwrap();
    let back: T = codec::decode(&bytes).unwrap();
    assert_eq!(&back, value);
    assert_eq!(
        codec::encode(&back).unwrap(),
        bytes,
        "encoding is not canonical"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn transactions_round_trip(tx in transaction()) {
        round_trip(&tx);
    }

    #[test]
    fn blocks_round_trip(header in header(), txs in prop::collection::vec(transaction(), 0..6), split in 0usize..6) {
        let split = split.min(txs.len());
        let block = Block {
            header,
            batches: vec![
                Batch { transactions: txs[..split].to_vec() },
                Batch { transactions: txs[split..].to_vec() },
            ],
        };
        round_trip(&block);
        round_trip(&block.header);
    }

    #[test]
    fn certificates_round_trip(
        data in (digest(), any::<u64>(), any::<u64>(), any::<u64>(), digest()),
        signers in bitmap(),
        signature in any::<[u8; 32]>(),
    ) {
        let (genesis_hash, epoch, view, height, block) = data;
        let mut sig = [0u8; 96];
        sig[..32].copy_from_slice(&signature);
        round_trip(&QuorumCert {
            data: VoteData { genesis_hash, epoch: Epoch(epoch), view: View(view), height: Height(height), block },
            signers: signers.clone(),
            signature: BlsSignature(sig),
        });
        round_trip(&CheckpointCert {
            data: CheckpointData { genesis_hash, epoch: Epoch(epoch), seq: SeqNum(view), height: Height(height), block, state_root: genesis_hash },
            signers,
            signature: BlsSignature(sig),
        });
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = codec::decode::<SignedTransaction>(&bytes);
        let _ = codec::decode::<Block>(&bytes);
        let _ = codec::decode::<BlockHeader>(&bytes);
        let _ = codec::decode::<QuorumCert>(&bytes);
        let _ = codec::decode::<CheckpointCert>(&bytes);
        let _ = codec::decode::<SignerBitmap>(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(tx in transaction(), position in any::<usize>(), byte in any::<u8>()) {
        let block = Block {
            header: BlockHeader {
                chain_id: "c".into(), genesis_hash: Digest::ZERO, epoch: Epoch(0), height: Height(1),
                view: View(1), parent: Digest::ZERO, payload_digest: Digest::ZERO,
                state_root: Digest::ZERO, proposer: 0, timestamp_ms: 0,
            },
            batches: vec![Batch { transactions: vec![tx] }],
        };
        let mut bytes = codec::encode(&block).unwrap();
        let index = position % bytes.len();
        bytes[index] = byte;
        if let Ok(decoded) = codec::decode::<Block>(&bytes) {
            // A mutation that still decodes yields a value that re-encodes to the mutated bytes.
            prop_assert_eq!(codec::encode(&decoded).unwrap(), bytes);
        }
    }
}

#[test]
fn huge_length_prefixes_are_refused_without_allocating() {
    // A block whose batch vector claims u64::MAX entries, and a transaction whose chain id claims
    // 4 GiB: both must fail fast on the decode limit, not try to allocate.
    let mut bytes = codec::encode(&Block {
        header: BlockHeader {
            chain_id: String::new(),
            genesis_hash: Digest::ZERO,
            epoch: Epoch(0),
            height: Height(0),
            view: View(0),
            parent: Digest::ZERO,
            payload_digest: Digest::ZERO,
            state_root: Digest::ZERO,
            proposer: 0,
            timestamp_ms: 0,
        },
        batches: vec![],
    })
    .unwrap();
    let length_at = bytes.len() - 8;
    bytes[length_at..].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(codec::decode::<Block>(&bytes).is_err());

    let mut tx = Vec::new();
    tx.extend_from_slice(&(4u64 << 30).to_le_bytes());
    tx.extend_from_slice(b"abc");
    assert!(codec::decode::<SignedTransaction>(&tx).is_err());

    let mut bitmap = Vec::new();
    bitmap.extend_from_slice(&u16::MAX.to_le_bytes());
    bitmap.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(codec::decode::<SignerBitmap>(&bitmap).is_err());
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = codec::encode(&Height(7)).unwrap();
    assert_eq!(codec::decode::<Height>(&bytes).unwrap(), Height(7));
    bytes.push(0);
    assert!(codec::decode::<Height>(&bytes).is_err());
}

#[test]
fn key_types_reject_wrong_lengths() {
    // A public key claiming 31 bytes, and a signature of 65.
    let mut short = Vec::new();
    short.extend_from_slice(&31u64.to_le_bytes());
    short.extend_from_slice(&[1u8; 31]);
    assert!(codec::decode::<PublicKey>(&short).is_err());
    let mut long = Vec::new();
    long.extend_from_slice(&65u64.to_le_bytes());
    long.extend_from_slice(&[1u8; 65]);
    assert!(codec::decode::<Signature>(&long).is_err());
}
