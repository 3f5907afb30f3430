//! The transaction index: a committed transaction's id to where it committed.
//!
//! A committed block's entries go into memory first; the block's record, written synced, holds
//! everything they are made from (its batches, its receipts). Every [`TX_INDEX_RUN`] entries
//! they are written, sorted, into one table file that RocksDB takes whole (ingestion), and a
//! watermark in `meta` records the height they cover. After a restart the blocks above the
//! watermark are read again; a read-only store reads them at its first lookup.
//!
//! Why not a put per transaction in the commit's write batch, as before: each was an insert into
//! the memtable's skiplist at a random key, a walk of cache misses, and at saturation those
//! inserts cost a validator more than anything but hashing (n=10, opaque, 30,000 offered, 10 s:
//! 7.6 µs of CPU per transaction per node with them and 26.7k tx/s committed; 6.4 µs and 29.2k
//! tx/s with no index at all). A sorted run is written front to back.

use super::{family_options, synced, Store, StoreError, CF_META, CF_TX_INDEX};
use crate::codec;
use crate::records::{CommittedBlock, TxLocation};
use crate::state::TxFailure;
use crate::Height;
use quorate_crypto::Digest;
use rocksdb::{IngestExternalFileOptions, SstFileWriter, DB};
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Entries kept in memory before they are written as one sorted table (~120 bytes each).
const TX_INDEX_RUN: usize = 65_536;
/// Meta key: the height (8 bytes, big-endian) up to which every entry is in the `tx_index`
/// family. Stores made before the runs have none: their index was written with each block.
pub(super) const KEY_TX_INDEXED: &[u8] = b"tx_indexed";
/// Where a run is written before RocksDB takes it (a name RocksDB does not claim).
const RUN_FILE: &str = "quorate-tx-index-run.tmp";

/// The entries of blocks above the watermark.
pub(super) struct RecentTxIndex {
    /// Not yet being written.
    active: HashMap<Digest, TxLocation>,
    /// Being written as a run: still answered from here until RocksDB has it.
    sealed: Option<Arc<HashMap<Digest, TxLocation>>>,
    /// Whether the blocks above the watermark were read (a read-only store reads them lazily).
    loaded: bool,
    /// Why writing a run failed: the next commit reports it (and the node stops; a restart
    /// reads the blocks above the watermark again).
    failure: Option<String>,
    /// Entries that make a run (a field so tests can make runs small).
    run: usize,
}

impl RecentTxIndex {
    fn get(&self, id: &Digest) -> Option<&TxLocation> {
        self.active
            .get(id)
            .or_else(|| self.sealed.as_ref().and_then(|sealed| sealed.get(id)))
    }

    fn len(&self) -> usize {
        self.active.len() + self.sealed.as_ref().map_or(0, |sealed| sealed.len())
    }
}

/// The index in memory, shared with the thread that writes runs; the condition variable wakes a
/// commit waiting for a run to be written.
pub(super) struct SharedTxIndex {
    state: Mutex<RecentTxIndex>,
    written: Condvar,
}

impl SharedTxIndex {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(SharedTxIndex {
            state: Mutex::new(RecentTxIndex {
                active: HashMap::new(),
                sealed: None,
                loaded: false,
                failure: None,
                run: TX_INDEX_RUN,
            }),
            written: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, RecentTxIndex> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(super) fn set_run(&self, run: usize) {
        self.lock().run = run;
    }
}

/// A run on its way to disk: its entries and the height they reach.
struct Run {
    entries: Arc<HashMap<Digest, TxLocation>>,
    height: Height,
}

/// The thread that writes runs (off the commit path: writing and syncing a table takes tens
/// of milliseconds, which a commit must not wait for). Dropping it lets the run in hand finish.
pub(super) struct RunWriter {
    sender: Option<SyncSender<Run>>,
    thread: Option<JoinHandle<()>>,
}

impl RunWriter {
    pub(super) fn start(db: Arc<DB>, index: Arc<SharedTxIndex>) -> Result<Self, StoreError> {
        let (sender, runs) = sync_channel::<Run>(1);
        let thread = std::thread::Builder::new()
            .name("tx-index".into())
            .spawn(move || {
                for run in runs {
                    let written = write_run(&db, &run.entries, run.height);
                    let mut state = index.lock();
                    state.sealed = None;
                    if let Err(error) = written {
                        // Kept in memory (what came in meanwhile is newer).
                        for (id, location) in run.entries.iter() {
                            state.active.entry(*id).or_insert_with(|| location.clone());
                        }
                        state.failure = Some(error.to_string());
                    }
                    index.written.notify_all();
                }
            })
            .map_err(|error| StoreError::TxIndexRun(format!("cannot start its thread: {error}")))?;
        Ok(RunWriter {
            sender: Some(sender),
            thread: Some(thread),
        })
    }
}

impl Drop for RunWriter {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes `run` as one sorted table, has RocksDB take it, then moves the watermark to `height`.
/// A crash between the two leaves the watermark lower: the blocks above it are read again and
/// the same entries written again, which changes nothing.
fn write_run(db: &DB, run: &HashMap<Digest, TxLocation>, height: Height) -> Result<(), StoreError> {
    // Sorted with the keys in the vector (no pointer chased per comparison), the first eight
    // bytes compared as one number.
    let mut entries: Vec<(u64, &Digest, &TxLocation)> = run
        .iter()
        .map(|(id, location)| (prefix(id), id, location))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    let path = db.path().join(RUN_FILE);
    let options = family_options(CF_TX_INDEX);
    let family = db
        .cf_handle(CF_TX_INDEX)
        .ok_or_else(|| StoreError::Corrupt(format!("missing column family {CF_TX_INDEX}")))?;
    let result = (|| -> Result<(), StoreError> {
        let mut writer = SstFileWriter::create(&options);
        writer.open(&path)?;
        for (_, id, location) in entries {
            writer.put(id.0, codec::encode(location)?)?;
        }
        writer.finish()?;
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        db.ingest_external_file_cf_opts(family, &ingest, vec![&path])?;
        Ok(())
    })();
    // Moved into the store on success; what is left of a failed attempt goes.
    let _ = std::fs::remove_file(&path);
    result?;
    put_watermark(db, height)
}

fn prefix(id: &Digest) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&id.0[..8]);
    u64::from_be_bytes(first)
}

/// Moves the watermark (synced).
pub(super) fn put_watermark(db: &DB, height: Height) -> Result<(), StoreError> {
    let meta = db
        .cf_handle(CF_META)
        .ok_or_else(|| StoreError::Corrupt(format!("missing column family {CF_META}")))?;
    db.put_cf_opt(meta, KEY_TX_INDEXED, height.0.to_be_bytes(), &synced())?;
    Ok(())
}

impl Store {
    /// Where the committed transaction `id` is, if it committed.
    pub fn tx(&self, id: &Digest) -> Result<Option<TxLocation>, StoreError> {
        self.load_tx_index()?;
        self.indexed(id)
    }

    /// Reads the blocks above the watermark into memory, once: at opening a store to write, at
    /// its first lookup in a read-only one.
    pub(super) fn load_tx_index(&self) -> Result<(), StoreError> {
        let mut index = self.tx_index.lock();
        if !index.loaded {
            self.replay_tx_index(&mut index)?;
            index.loaded = true;
        }
        Ok(())
    }

    /// The entry for `id` in memory or on disk (the memory holds the newer ones). An entry that
    /// leaves memory is on disk first, so a lookup between the two finds it.
    fn indexed(&self, id: &Digest) -> Result<Option<TxLocation>, StoreError> {
        if let Some(location) = self.tx_index.lock().get(id) {
            return Ok(Some(location.clone()));
        }
        self.get(CF_TX_INDEX, &id.0)
    }

    /// Whether `id` has an entry, in `memory` or on disk.
    fn is_indexed(&self, memory: &RecentTxIndex, id: &Digest) -> Result<bool, StoreError> {
        if memory.get(id).is_some() {
            return Ok(true);
        }
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_TX_INDEX)?, id.0)?
            .is_some())
    }

    /// [`Store::tx_index_entries`] against the entries in memory now.
    pub(super) fn new_tx_index_entries(
        &self,
        record: &CommittedBlock,
        hash: Digest,
        transactions: &[Digest],
    ) -> Result<Vec<(Digest, TxLocation)>, StoreError> {
        let index = self.tx_index.lock();
        self.tx_index_entries(&index, record, hash, transactions)
    }

    /// Entries in memory (bounded by a run of [`TX_INDEX_RUN`] and one block).
    pub fn recent_tx_index_entries(&self) -> usize {
        self.tx_index.lock().len()
    }

    /// The height up to which the index is on disk. A store made before the runs wrote its
    /// index with each block: up to its head.
    pub(super) fn tx_indexed(&self) -> Result<Option<Height>, StoreError> {
        match self.db.get_cf(self.cf(CF_META)?, KEY_TX_INDEXED)? {
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt(format!("tx index watermark of {} bytes", bytes.len()))
                })?;
                Ok(Some(Height(u64::from_be_bytes(bytes))))
            }
            None => Ok(self.head()?.map(|head| head.height)),
        }
    }

    /// The entries block `record` (whose hash is `hash`) adds, in block order: a transaction
    /// executes at most once (it consumes its nonce then); a later copy, in another block or in
    /// this one (two validators batched it), fails without effect and must not hide where it
    /// executed. A later entry for one id replaces an earlier one.
    fn tx_index_entries(
        &self,
        memory: &RecentTxIndex,
        record: &CommittedBlock,
        hash: Digest,
        transactions: &[Digest],
    ) -> Result<Vec<(Digest, TxLocation)>, StoreError> {
        if transactions.len() != record.receipts.len() {
            return Err(StoreError::ReceiptCount {
                height: record.header.height.0,
                transactions: transactions.len(),
                receipts: record.receipts.len(),
            });
        }
        let mut entries = Vec::with_capacity(transactions.len());
        let mut here = HashSet::with_capacity(transactions.len());
        for (index, (id, receipt)) in transactions.iter().zip(&record.receipts).enumerate() {
            let executed = receipt.as_ref().err().is_none_or(TxFailure::consumes_nonce);
            let first_here = here.insert(*id);
            if !executed && (!first_here || self.is_indexed(memory, id)?) {
                continue;
            }
            let location = TxLocation {
                height: record.header.height,
                block_hash: hash,
                index: index as u32,
                receipt: receipt.clone(),
            };
            entries.push((*id, location));
        }
        Ok(entries)
    }

    /// Puts a committed block's entries (from [`Store::tx_index_entries`]) in memory, and hands
    /// a run to the writer when enough have gathered. `height` is that block's. A commit waits
    /// only if a whole run gathered while the last one was still being written.
    pub(super) fn add_tx_index_entries(
        &self,
        height: Height,
        entries: Vec<(Digest, TxLocation)>,
    ) -> Result<(), StoreError> {
        let mut index = self.tx_index.lock();
        if let Some(failure) = &index.failure {
            return Err(StoreError::TxIndexRun(failure.clone()));
        }
        if index.active.is_empty() {
            let run = index.run;
            index.active.reserve(run);
        }
        index.active.extend(entries);
        if index.active.len() < index.run {
            return Ok(());
        }
        let Some(writer) = &self.tx_index_writer else {
            return Ok(()); // read-only: nothing is written
        };
        while index.sealed.is_some() {
            if index.active.len() < 2 * index.run {
                return Ok(());
            }
            index = self
                .tx_index
                .written
                .wait(index)
                .unwrap_or_else(|p| p.into_inner());
        }
        if let Some(failure) = &index.failure {
            return Err(StoreError::TxIndexRun(failure.clone()));
        }
        let entries = Arc::new(std::mem::take(&mut index.active));
        index.sealed = Some(entries.clone());
        drop(index);
        writer
            .sender
            .as_ref()
            .ok_or_else(|| StoreError::TxIndexRun("its thread has stopped".into()))?
            .send(Run { entries, height })
            .map_err(|_| StoreError::TxIndexRun("its thread has stopped".into()))
    }

    /// Reads the blocks above the watermark back into memory.
    fn replay_tx_index(&self, index: &mut RecentTxIndex) -> Result<(), StoreError> {
        let (Some(from), Some(head)) = (self.tx_indexed()?, self.head()?) else {
            return Ok(());
        };
        for height in from.0.saturating_add(1)..=head.height.0 {
            let record = self.committed(Height(height))?.ok_or_else(|| {
                StoreError::Corrupt(format!("committed block {height} is missing"))
            })?;
            let mut transactions = Vec::with_capacity(record.receipts.len());
            for digest in &record.batches {
                let batch = self.batch(digest)?.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "batch {digest} of committed block {height} is missing"
                    ))
                })?;
                transactions.extend(batch.transactions.iter().map(|tx| tx.id()));
            }
            let hash = record.header.hash()?;
            let entries = self.tx_index_entries(index, &record, hash, &transactions)?;
            index.active.extend(entries);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fixture, gov, Fixture};
    use super::*;
    use crate::state::execute;
    use crate::{Batch, ChainRules, SignedTransaction, Transaction, TransactionKind};
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// Alice's transfers of 1 to Bob with these nonces.
    fn transfers(f: &Fixture, nonces: std::ops::Range<u64>) -> Vec<SignedTransaction> {
        nonces
            .map(|nonce| {
                Transaction {
                    chain_id: "c".into(),
                    sender: f.alice.public(),
                    nonce,
                    kind: TransactionKind::Transfer {
                        to: f.bob,
                        amount: 1,
                    },
                }
                .sign(&f.alice)
                .unwrap()
            })
            .collect()
    }

    /// A new store at `dir` with the fixture's genesis, making runs of `run` entries.
    fn initialized(dir: &Path, f: &Fixture, run: usize) -> Store {
        let store = Store::open(dir).unwrap();
        store
            .initialize(&f.genesis, &f.accounts, &f.accumulator, &gov())
            .unwrap();
        store.tx_index.set_run(run);
        store
    }

    /// Commits the next block, carrying `txs` in one batch.
    fn commit(store: &Store, txs: &[SignedTransaction]) -> Result<(), StoreError> {
        let head = store.head().unwrap().unwrap();
        let batch = Batch {
            transactions: txs.to_vec(),
        };
        store
            .put_batch(&batch.digest(), &Arc::new(batch.clone()))
            .unwrap();
        let height = head.height.next();
        let execution = execute(
            &ChainRules::signed_only("c"),
            store,
            &store.accumulator().unwrap(),
            &store.governance().unwrap(),
            height,
            txs.iter(),
        )
        .unwrap();
        let mut header = head.header.clone();
        header.height = height;
        header.parent = head.hash;
        header.state_root = execution.state_root();
        let record = CommittedBlock {
            header,
            proof: Vec::new(),
            batches: vec![batch.digest()],
            receipts: execution.receipts.clone(),
        };
        let ids: Vec<Digest> = txs.iter().map(|tx| tx.id()).collect();
        store.commit(&record, &execution, &ids)
    }

    /// Waits until the run reaching `height` is on disk and out of memory.
    fn written_up_to(store: &Store, height: u64) {
        let start = Instant::now();
        while store.tx_indexed().unwrap() != Some(Height(height))
            || store.tx_index.lock().sealed.is_some()
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no run reached {height}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn on_disk(store: &Store, id: &Digest) -> bool {
        let family = store.cf(CF_TX_INDEX).unwrap();
        store.db.get_pinned_cf(family, id.0).unwrap().is_some()
    }

    /// Transaction `i` of `txs`, committed three to a block from height 1, is where it should be.
    fn assert_located(store: &Store, txs: &[SignedTransaction]) {
        for (i, tx) in txs.iter().enumerate() {
            let location = store.tx(&tx.id()).unwrap().unwrap();
            let height = Height(1 + i as u64 / 3);
            assert_eq!(
                (location.height, location.index, &location.receipt),
                (height, (i % 3) as u32, &Ok(()))
            );
            let block = store.committed(height).unwrap().unwrap();
            assert_eq!(location.block_hash, block.header.hash().unwrap());
        }
    }

    #[test]
    fn entries_go_to_disk_in_runs_and_a_restart_reads_the_rest_back_from_the_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let txs = transfers(&f, 0..9);
        {
            let store = initialized(dir.path(), &f, 4);
            assert_eq!(store.tx_indexed().unwrap(), Some(Height(0)));
            commit(&store, &txs[0..3]).unwrap();
            // In memory only, and found there.
            assert_eq!(store.recent_tx_index_entries(), 3);
            assert!(!on_disk(&store, &txs[0].id()));
            assert_located(&store, &txs[0..3]);
            // Six entries make a run (of four or more): written up to height 2.
            commit(&store, &txs[3..6]).unwrap();
            written_up_to(&store, 2);
            assert_eq!(store.recent_tx_index_entries(), 0);
            assert!(txs[0..6].iter().all(|tx| on_disk(&store, &tx.id())));
            assert_located(&store, &txs[0..6]);
            commit(&store, &txs[6..9]).unwrap();
            assert!(!on_disk(&store, &txs[8].id()));
        }
        // Closed with block 3's entries in memory only: read back from the block.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.tx_indexed().unwrap(), Some(Height(2)));
        assert_eq!(store.recent_tx_index_entries(), 3);
        assert_located(&store, &txs);
        drop(store);
        // Read-only: the same, read back at the first lookup, and nothing written.
        let store = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(store.recent_tx_index_entries(), 0);
        assert_located(&store, &txs);
        assert_eq!(store.recent_tx_index_entries(), 3);
        assert_eq!(store.tx_indexed().unwrap(), Some(Height(2)));
        assert!(store.tx(&Digest([9; 32])).unwrap().is_none());
    }

    #[test]
    fn a_crash_between_a_run_and_its_watermark_writes_the_same_entries_again() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let txs = transfers(&f, 0..9);
        {
            let store = initialized(dir.path(), &f, 4);
            commit(&store, &txs[0..3]).unwrap();
            commit(&store, &txs[3..6]).unwrap();
            written_up_to(&store, 2);
            // The run is in, the watermark did not move.
            put_watermark(&store.db, Height(0)).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.recent_tx_index_entries(), 6);
        assert_located(&store, &txs[0..6]);
        store.tx_index.set_run(4);
        commit(&store, &txs[6..9]).unwrap();
        written_up_to(&store, 3);
        assert!(txs.iter().all(|tx| on_disk(&store, &tx.id())));
        assert_located(&store, &txs);
    }

    #[test]
    fn a_store_made_before_the_runs_has_its_index_on_disk_and_gets_a_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let txs = transfers(&f, 0..3);
        {
            let store = initialized(dir.path(), &f, 1);
            commit(&store, &txs).unwrap();
            written_up_to(&store, 1);
            // As a store made before the runs: every entry on disk, no watermark.
            store
                .db
                .delete_cf(store.cf(CF_META).unwrap(), KEY_TX_INDEXED)
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let meta = store.cf(CF_META).unwrap();
        assert_eq!(
            store.db.get_cf(meta, KEY_TX_INDEXED).unwrap(),
            Some(1u64.to_be_bytes().to_vec())
        );
        assert_eq!(store.recent_tx_index_entries(), 0);
        assert_located(&store, &txs);
    }

    #[test]
    fn a_failed_run_keeps_its_entries_and_the_next_commit_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let txs = transfers(&f, 0..9);
        {
            let store = initialized(dir.path(), &f, 4);
            // The run's file cannot be written where a directory stands.
            let blocker = store.db.path().join(RUN_FILE);
            std::fs::create_dir(&blocker).unwrap();
            commit(&store, &txs[0..3]).unwrap();
            commit(&store, &txs[3..6]).unwrap();
            let start = Instant::now();
            while store.tx_index.lock().failure.is_none() {
                assert!(start.elapsed() < Duration::from_secs(30));
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(store.recent_tx_index_entries(), 6);
            assert_located(&store, &txs[0..6]);
            // Block 3 is written (synced) before its entries are refused.
            assert!(matches!(
                commit(&store, &txs[6..9]),
                Err(StoreError::TxIndexRun(_))
            ));
            assert_eq!(store.tx_indexed().unwrap(), Some(Height(0)));
            std::fs::remove_dir(&blocker).unwrap();
        }
        // The restart the node makes: everything read back from the blocks.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head().unwrap().unwrap().height, Height(3));
        assert_eq!(store.recent_tx_index_entries(), 9);
        assert_located(&store, &txs);
    }

    #[test]
    fn a_failed_copy_after_a_run_keeps_the_entry_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let store = initialized(dir.path(), &f, 1);
        commit(&store, std::slice::from_ref(&f.tx)).unwrap();
        written_up_to(&store, 1);
        // The same transfer again: its nonce is spent, it fails, and its entry stays.
        commit(&store, std::slice::from_ref(&f.tx)).unwrap();
        let location = store.tx(&f.tx.id()).unwrap().unwrap();
        assert_eq!((location.height, location.receipt), (Height(1), Ok(())));
        // A block with no entries makes no run: the next one's run reaches past it.
        commit(&store, &transfers(&f, 1..2)).unwrap();
        written_up_to(&store, 3);
        let location = store.tx(&f.tx.id()).unwrap().unwrap();
        assert_eq!((location.height, location.receipt), (Height(1), Ok(())));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.recent_tx_index_entries(), 0);
        let location = store.tx(&f.tx.id()).unwrap().unwrap();
        assert_eq!((location.height, location.receipt), (Height(1), Ok(())));
    }
}
