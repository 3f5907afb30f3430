//! `cargo bench -p quorate-crypto`: per-operation costs the protocols are designed around.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quorate_crypto::{
    hash, verify_batch, Authenticator, BlsAggregate, BlsKeyPair, Committee, Digest, Domain, MacKey,
    PublicKey, Signature, SigningKey,
};
use std::hint::black_box;

fn ed25519(c: &mut Criterion) {
    let key = SigningKey::from_seed_insecure(1);
    let message = [7u8; 32];
    let signature = key.sign(Domain::Transaction, &message);
    c.bench_function("ed25519/sign", |b| {
        b.iter(|| key.sign(Domain::Transaction, black_box(&message)))
    });
    c.bench_function("ed25519/verify", |b| {
        b.iter(|| {
            key.public()
                .verify(Domain::Transaction, black_box(&message), &signature)
        })
    });
    let mut group = c.benchmark_group("ed25519/verify_batch");
    for size in [64usize, 512] {
        let keys: Vec<SigningKey> = (0..size as u64)
            .map(SigningKey::from_seed_insecure)
            .collect();
        let messages: Vec<[u8; 32]> = (0..size)
            .map(|i| hash(Domain::Transaction, &i.to_le_bytes()).0)
            .collect();
        let signatures: Vec<Signature> = keys
            .iter()
            .zip(&messages)
            .map(|(k, m)| k.sign(Domain::Transaction, m))
            .collect();
        let publics: Vec<PublicKey> = keys.iter().map(SigningKey::public).collect();
        let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| verify_batch(Domain::Transaction, &refs, &signatures, &publics))
        });
    }
    // A transaction batch as the mempool seals it: 512 signatures from 48 senders.
    let senders: Vec<SigningKey> = (0..48u64).map(SigningKey::from_seed_insecure).collect();
    let messages: Vec<[u8; 32]> = (0..512usize)
        .map(|i| hash(Domain::Transaction, &i.to_le_bytes()).0)
        .collect();
    let signatures: Vec<Signature> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| senders[i % 48].sign(Domain::Transaction, m))
        .collect();
    let publics: Vec<PublicKey> = (0..512).map(|i| senders[i % 48].public()).collect();
    let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
    group.throughput(Throughput::Elements(512));
    group.bench_function("512_from_48_senders", |b| {
        b.iter(|| verify_batch(Domain::Transaction, &refs, &signatures, &publics))
    });
    group.finish();
}

fn committee(n: usize) -> (Vec<BlsKeyPair>, Committee) {
    let pairs: Vec<BlsKeyPair> = (0..n as u64).map(BlsKeyPair::from_seed_insecure).collect();
    let members: Vec<_> = pairs
        .iter()
        .map(|p| (p.public(), p.proof_of_possession(), 1))
        .collect();
    let committee = Committee::new(&members).expect("committee");
    (pairs, committee)
}

fn bls(c: &mut Criterion) {
    let pair = BlsKeyPair::from_seed_insecure(1);
    let message = [9u8; 80];
    let signature = pair.sign(Domain::Vote, &message);
    c.bench_function("bls/sign", |b| {
        b.iter(|| pair.sign(Domain::Vote, black_box(&message)))
    });
    c.bench_function("bls/verify", |b| {
        b.iter(|| {
            pair.public()
                .verify(Domain::Vote, black_box(&message), &signature)
        })
    });
    let mut group = c.benchmark_group("bls/verify_quorum");
    // Quorum 3 of n=4, and 67 of n=100.
    for (n, quorum) in [(4usize, 3usize), (100, 67)] {
        let (pairs, committee) = committee(n);
        let mut aggregate = BlsAggregate::new(n);
        for (i, p) in pairs.iter().enumerate().take(quorum) {
            aggregate
                .add(i, &p.sign(Domain::Vote, &message))
                .expect("add");
        }
        let bitmap = aggregate.bitmap().clone();
        let signature = aggregate.signature().expect("signature");
        group.bench_with_input(BenchmarkId::new("quorum", quorum), &quorum, |b, _| {
            b.iter(|| committee.verify_quorum(Domain::Vote, &message, &bitmap, &signature))
        });
        let votes: Vec<_> = pairs
            .iter()
            .take(quorum)
            .map(|p| p.sign(Domain::Vote, &message))
            .collect();
        group.bench_with_input(BenchmarkId::new("aggregate", quorum), &quorum, |b, _| {
            b.iter(|| {
                let mut aggregate = BlsAggregate::new(n);
                for (i, vote) in votes.iter().enumerate() {
                    aggregate.add(i, vote).expect("add");
                }
                aggregate.signature()
            })
        });
    }
    group.finish();
}

fn mac(c: &mut Criterion) {
    let mut group = c.benchmark_group("mac/authenticator");
    for n in [4usize, 100] {
        let keys: Vec<SigningKey> = (0..n as u64).map(SigningKey::from_seed_insecure).collect();
        let sender_keys: Vec<MacKey> = keys
            .iter()
            .map(|k| MacKey::derive(&keys[0], &k.public(), &Digest([0; 32])).expect("derive"))
            .collect();
        let receiver_key =
            MacKey::derive(&keys[1], &keys[0].public(), &Digest([0; 32])).expect("derive");
        let digest = hash(Domain::PbftMessage, b"prepare");
        let authenticator = Authenticator::create(&sender_keys, &digest);
        group.bench_with_input(BenchmarkId::new("make", n), &n, |b, _| {
            b.iter(|| Authenticator::create(&sender_keys, black_box(&digest)))
        });
        group.bench_with_input(BenchmarkId::new("check", n), &n, |b, _| {
            b.iter(|| authenticator.verify(1, &receiver_key, black_box(&digest), n))
        });
    }
    group.finish();
    let a = SigningKey::from_seed_insecure(1);
    let b_key = SigningKey::from_seed_insecure(2).public();
    c.bench_function("mac/derive_pairwise_key", |b| {
        b.iter(|| MacKey::derive(&a, black_box(&b_key), &Digest([0; 32])))
    });
}

fn hashing(c: &mut Criterion) {
    // A block header's canonical encoding is ~200 bytes.
    let header = [3u8; 200];
    c.bench_function("hash/block_header", |b| {
        b.iter(|| hash(Domain::BlockHeader, black_box(&header)))
    });
    // An opaque 512-byte transaction's body with its chain id, sender and nonce: its id.
    let transaction = [5u8; 600];
    c.bench_function("hash/opaque_transaction", |b| {
        b.iter(|| hash(Domain::Transaction, black_box(&transaction)))
    });
    let _ = Digest::ZERO;
}

criterion_group!(benches, ed25519, bls, mac, hashing);
criterion_main!(benches);
