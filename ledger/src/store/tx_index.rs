//! The transaction index: a committed transaction's id to where it committed.
//!
//! A committed block's entries go into memory first; the block's record, written synced, holds
//! everything they are made from (its batches, its receipts). Every [`TX_INDEX_RUN`] entries,
//! or [`TX_INDEX_RUN_BLOCKS`] blocks, a thread writes them, sorted, into one table file that
//! RocksDB takes whole (ingestion), and moves a watermark in `meta` to the height they cover. A
//! block that adds no entry while nothing is in memory moves the watermark in its own write.
//! After a restart the blocks above the watermark are read again; a read-only store reads them
//! at its first lookup.
//!
//! An entry is the block's height and the transaction's position in it ([`IndexEntry`], 12
//! bytes); a lookup reads the rest of a [`TxLocation`] (the block's hash, the receipt) from the
//! block's record. Entries written before held the whole location (48 bytes and more, the
//! block's hash repeated in each): they still read, told apart by their length. With the id,
//! an entry on disk went from 80 bytes to 44, which every run and every compaction writes.
//!
//! Why not a put per transaction in the commit's write batch, as before: each was an insert into
//! the memtable's skiplist at a random key, a walk of cache misses, and at saturation those
//! inserts cost a validator more than anything but hashing (n=10, opaque, 30,000 offered, 10 s:
//! 7.6 µs of CPU per transaction per node with them and 26.7k tx/s committed; 6.4 µs and 29.2k
//! tx/s with no index at all). A sorted run is written front to back. At n=4 (opaque, 10 s runs,
//! interleaved): PBFT at 80,000 offered 69,579 and 71,925 tx/s at p50 185-203 ms, against
//! 58,366 and 64,288 at p50 509-765 ms before; HotStuff at 75,000 offered 66,917-68,014 at p50
//! 237-380 ms, against 65,004-65,907 at p50 427-598 ms.

use super::{family, family_options, synced, Store, StoreError, CF_META, CF_TX_INDEX};
use crate::codec::{self, CodecError};
use crate::records::{CommittedBlock, TxLocation};
use crate::state::TxFailure;
use crate::Height;
use quorate_crypto::{Digest, DigestMap, DigestSet};
use rocksdb::{IngestExternalFileOptions, SstFileWriter, DB};
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Entries kept in memory before they are written as one sorted table (~90 bytes each, with
/// the id's map).
const TX_INDEX_RUN: usize = 65_536;
/// Blocks after which the entries in memory are written whatever their number: a quiet chain's
/// restart reads back at most this many blocks.
const TX_INDEX_RUN_BLOCKS: u64 = 4_096;
/// Meta key: the height (8 bytes, big-endian) up to which every entry is in the `tx_index`
/// family. Stores made before the runs have none: their index was written with each block.
pub(super) const KEY_TX_INDEXED: &[u8] = b"tx_indexed";
/// Where a run is written before RocksDB takes it (a name RocksDB does not claim).
const RUN_FILE: &str = "quorate-tx-index-run.tmp";

/// A run as written: the values' encodings one after another, and each id (sorted) with the
/// range of its value in them.
type EncodedRun = (Vec<u8>, Vec<(Digest, usize, usize)>);

/// Where a committed transaction is: its block's height and its position in the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct IndexEntry {
    height: Height,
    index: u32,
}

/// The encoded length of an [`IndexEntry`]; a [`TxLocation`] (what entries held before) is
/// longer.
const ENTRY_BYTES: usize = 12;

impl IndexEntry {
    /// An entry as stored: an [`IndexEntry`], or a whole [`TxLocation`] from before.
    fn decode(bytes: &[u8]) -> Result<IndexEntry, CodecError> {
        if bytes.len() == ENTRY_BYTES {
            return codec::decode(bytes);
        }
        let location: TxLocation = codec::decode(bytes)?;
        Ok(IndexEntry {
            height: location.height,
            index: location.index,
        })
    }
}

/// Entries in the order they came in, with each id's newest: a run reads them front to back
/// (reading a hash map of 65,536 entries in its own order missed the cache at almost every
/// entry, ~250 ns each at n=10).
#[derive(Default)]
struct Entries {
    list: Vec<(Digest, IndexEntry)>,
    /// Id to its newest position in `list`.
    newest: DigestMap<u32>,
}

impl Entries {
    fn get(&self, id: &Digest) -> Option<IndexEntry> {
        let position = *self.newest.get(id)?;
        self.list.get(position as usize).map(|(_, entry)| *entry)
    }

    /// Adds or replaces `id`'s entry: one row per id, so memory follows the distinct ids (a
    /// block may carry one opaque payload many times, each copy an entry).
    fn insert(&mut self, id: Digest, entry: IndexEntry) {
        if let Some(&position) = self.newest.get(&id) {
            if let Some(row) = self.list.get_mut(position as usize) {
                row.1 = entry;
                return;
            }
        }
        self.newest.insert(id, self.list.len() as u32);
        self.list.push((id, entry));
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn reserve(&mut self, entries: usize) {
        self.list.reserve(entries);
        self.newest.reserve(entries);
    }

    /// Each id's entry (one per id: [`Entries::insert`] replaces), sorted by id, its value encoded: the encodings one after another,
    /// and per id where its encoding is in them.
    fn encoded_sorted(&self) -> Result<EncodedRun, CodecError> {
        // One pass front to back copies each id and encodes each value; sorting and writing
        // then touch only those. Read in key order, the list (written long before, by another
        // thread) missed the cache at almost every entry: ~250 ns each at n=10.
        let mut values = Vec::with_capacity(self.list.len() * ENTRY_BYTES);
        let mut sorted = Vec::with_capacity(self.list.len());
        for (id, entry) in &self.list {
            let start = values.len();
            codec::encode_append(entry, &mut values)?;
            sorted.push((*id, start, values.len()));
        }
        sorted.sort_unstable_by_key(|entry| entry.0);
        Ok((values, sorted))
    }
}

/// The entries of blocks above the watermark.
pub(super) struct RecentTxIndex {
    /// Not yet being written.
    active: Entries,
    /// The height of the oldest block with entries in `active`.
    oldest: Option<Height>,
    /// Being written as a run: still answered from here until RocksDB has it.
    sealed: Option<(Arc<Entries>, Height)>,
    /// Whether the blocks above the watermark were read (a read-only store reads them lazily).
    loaded: bool,
    /// Why writing a run failed: the next commit reports it (and the node stops; a restart
    /// reads the blocks above the watermark again).
    failure: Option<String>,
    /// Entries that make a run, and blocks after which a run is written anyway (fields so
    /// tests can make runs small).
    run: usize,
    run_blocks: u64,
}

impl RecentTxIndex {
    fn empty() -> Self {
        RecentTxIndex {
            active: Entries::default(),
            oldest: None,
            sealed: None,
            loaded: false,
            failure: None,
            run: TX_INDEX_RUN,
            run_blocks: TX_INDEX_RUN_BLOCKS,
        }
    }

    /// Takes in the entries of block `height`.
    fn add(&mut self, height: Height, entries: Vec<(Digest, IndexEntry)>) {
        if entries.is_empty() {
            return;
        }
        if self.active.is_empty() && entries.len() >= 256 {
            // A busy chain: room for a whole run at once, not grown by doubling.
            self.active.reserve(self.run);
        }
        self.oldest.get_or_insert(height);
        for (id, entry) in entries {
            self.active.insert(id, entry);
        }
    }

    /// Whether a run is due after block `height`.
    fn run_due(&self, height: Height) -> bool {
        self.active.len() >= self.run
            || self
                .oldest
                .is_some_and(|oldest| height.0.saturating_sub(oldest.0) >= self.run_blocks)
    }

    /// Puts the entries of a run that will not reach the disk back (what came in meanwhile is
    /// newer) and records why: the next commit reports it.
    fn fail(&mut self, run: &Entries, why: String, height: Height) {
        let newer = std::mem::take(&mut self.active);
        for (id, entry) in run.list.iter().chain(&newer.list) {
            self.active.insert(*id, *entry);
        }
        if !run.is_empty() {
            self.oldest = Some(self.oldest.map_or(height, |oldest| oldest.min(height)));
        }
        self.failure.get_or_insert(why);
    }

    fn get(&self, id: &Digest) -> Option<IndexEntry> {
        self.active
            .get(id)
            .or_else(|| self.sealed.as_ref().and_then(|(sealed, _)| sealed.get(id)))
    }

    fn len(&self) -> usize {
        self.active.len() + self.sealed.as_ref().map_or(0, |(sealed, _)| sealed.len())
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
            state: Mutex::new(RecentTxIndex::empty()),
            written: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, RecentTxIndex> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(super) fn set_run(&self, run: usize, run_blocks: u64) {
        let mut state = self.lock();
        state.run = run;
        state.run_blocks = run_blocks;
    }

    /// Whether nothing is in memory or on its way to disk, and nothing failed: a block without
    /// entries can then move the watermark itself.
    pub(super) fn idle(&self) -> bool {
        let state = self.lock();
        state.active.is_empty() && state.sealed.is_none() && state.failure.is_none()
    }
}

/// A run on its way to disk: its entries, the height they reach and the oldest they hold.
struct Run {
    entries: Arc<Entries>,
    height: Height,
    oldest: Height,
}

/// Held by the writer thread: if it stops by a panic, the run in hand goes back into memory and
/// commits learn of it, instead of waiting for a run that never ends.
struct Stopped(Arc<SharedTxIndex>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut state = self.0.lock();
            if let Some((run, oldest)) = state.sealed.take() {
                state.fail(&run, "its thread panicked".into(), oldest);
            }
            state
                .failure
                .get_or_insert_with(|| "its thread panicked".into());
            self.0.written.notify_all();
        }
    }
}

/// The thread that writes runs (off the commit path: writing and syncing a table takes tens
/// of milliseconds, which a commit must not wait for). Dropping it lets the run in hand finish.
pub(super) struct RunWriter {
    sender: Option<SyncSender<Run>>,
    thread: Option<JoinHandle<()>>,
}

impl RunWriter {
    pub(super) fn start(db: Arc<DB>, index: Arc<SharedTxIndex>) -> Result<Self, StoreError> {
        // What a crash left between writing a run and RocksDB taking it.
        let _ = std::fs::remove_file(db.path().join(RUN_FILE));
        let (sender, runs) = sync_channel::<Run>(1);
        let thread = std::thread::Builder::new()
            .name("tx-index".into())
            .spawn(move || {
                let _stopped = Stopped(index.clone());
                for run in runs {
                    let written = write_run(&db, &run.entries, run.height);
                    let mut state = index.lock();
                    state.sealed = None;
                    if let Err(error) = written {
                        state.fail(&run.entries, error.to_string(), run.oldest);
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
/// The run's file goes through the page cache: RocksDB's table file writer takes its own
/// default file options, not the direct I/O of the store's flushes and compactions (a run of
/// 65,536 entries is under 3 MB, written about once a second at saturation).
fn write_run(db: &DB, run: &Entries, height: Height) -> Result<(), StoreError> {
    let path = db.path().join(RUN_FILE);
    let options = family_options(CF_TX_INDEX, None);
    let index = family(db, CF_TX_INDEX)?;
    let result = (|| -> Result<(), StoreError> {
        let mut writer = SstFileWriter::create(&options);
        writer.open(&path)?;
        let (values, sorted) = run.encoded_sorted()?;
        for (id, start, end) in sorted {
            let value = values.get(start..end).ok_or_else(|| {
                StoreError::Corrupt(format!("run value {start}..{end} out of bounds"))
            })?;
            writer.put(id.0, value)?;
        }
        writer.finish()?;
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        db.ingest_external_file_cf_opts(index, &ingest, vec![&path])?;
        Ok(())
    })();
    // Moved into the store on success; what is left of a failed attempt goes.
    let _ = std::fs::remove_file(&path);
    result?;
    put_watermark(db, height)
}

/// Moves the watermark (synced).
pub(super) fn put_watermark(db: &DB, height: Height) -> Result<(), StoreError> {
    db.put_cf_opt(
        family(db, CF_META)?,
        KEY_TX_INDEXED,
        height.0.to_be_bytes(),
        &synced(),
    )?;
    Ok(())
}

impl Store {
    /// Where the committed transaction `id` is, if it committed (its block's record is read for
    /// the block's hash and the receipt).
    pub fn tx(&self, id: &Digest) -> Result<Option<TxLocation>, StoreError> {
        self.load_tx_index()?;
        let Some(entry) = self.indexed(id)? else {
            return Ok(None);
        };
        let record = self.committed(entry.height)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "transaction {id} is indexed at height {}, which has no block",
                entry.height
            ))
        })?;
        let receipt = record.receipts.get(entry.index as usize).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "transaction {id} is indexed at position {} of block {}, which has {}",
                entry.index,
                entry.height,
                record.receipts.len()
            ))
        })?;
        Ok(Some(TxLocation {
            height: entry.height,
            block_hash: record.header.hash()?,
            index: entry.index,
            receipt: receipt.clone(),
        }))
    }

    /// Whether the transaction `id` committed (what a submission is checked against: no block
    /// is read).
    pub fn is_committed(&self, id: &Digest) -> Result<bool, StoreError> {
        Ok(self
            .committed_among(std::slice::from_ref(id))?
            .contains(&true))
    }

    /// [`Store::is_committed`] for each of `ids`, in one batched lookup: RocksDB probes each
    /// sorted run's filter for all of them at once, prefetching, where one lookup at a time
    /// waits on a cache miss per run (a load client's submissions, each checked alone, were
    /// 10% of a validator's CPU under opaque load at n=4).
    pub fn committed_among(&self, ids: &[Digest]) -> Result<Vec<bool>, StoreError> {
        self.load_tx_index()?;
        let mut committed: Vec<bool> = {
            let memory = self.tx_index.lock();
            ids.iter().map(|id| memory.get(id).is_some()).collect()
        };
        // An entry leaves memory only once it is on disk: one that left since is found there.
        let absent: Vec<usize> = committed
            .iter()
            .enumerate()
            .filter_map(|(i, &found)| (!found).then_some(i))
            .collect();
        if absent.is_empty() {
            return Ok(committed);
        }
        let keys = absent.iter().filter_map(|&i| ids.get(i)).map(|id| &id.0);
        let found = self
            .db
            .batched_multi_get_cf(self.cf(CF_TX_INDEX)?, keys, false);
        for (i, value) in absent.into_iter().zip(found) {
            if value?.is_some() {
                if let Some(slot) = committed.get_mut(i) {
                    *slot = true;
                }
            }
        }
        Ok(committed)
    }

    /// Reads the blocks above the watermark into memory, once: at opening a store to write, at
    /// its first lookup in a read-only one.
    pub(super) fn load_tx_index(&self) -> Result<(), StoreError> {
        let mut index = self.tx_index.lock();
        if !index.loaded {
            // Into a fresh copy: a replay that fails leaves nothing half done.
            let mut loaded = RecentTxIndex::empty();
            (loaded.run, loaded.run_blocks) = (index.run, index.run_blocks);
            self.replay_tx_index(&mut loaded)?;
            loaded.loaded = true;
            *index = loaded;
        }
        Ok(())
    }

    /// The entry for `id` in memory or on disk (the memory holds the newer ones). An entry that
    /// leaves memory is on disk first, so a lookup between the two finds it.
    fn indexed(&self, id: &Digest) -> Result<Option<IndexEntry>, StoreError> {
        if let Some(entry) = self.tx_index.lock().get(id) {
            return Ok(Some(entry));
        }
        match self.db.get_pinned_cf(self.cf(CF_TX_INDEX)?, id.0)? {
            Some(bytes) => Ok(Some(IndexEntry::decode(&bytes)?)),
            None => Ok(None),
        }
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
        transactions: &[Digest],
    ) -> Result<Vec<(Digest, IndexEntry)>, StoreError> {
        let index = self.tx_index.lock();
        self.tx_index_entries(&index, record, transactions)
    }

    /// Entries in memory (bounded: about two runs of [`TX_INDEX_RUN`] gathering while a third
    /// is written, and one block).
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

    /// The entries block `record` adds, in block order: a transaction
    /// executes at most once (it consumes its nonce then); a later copy, in another block or in
    /// this one (two validators batched it), fails without effect and must not hide where it
    /// executed. A later entry for one id replaces an earlier one.
    fn tx_index_entries(
        &self,
        memory: &RecentTxIndex,
        record: &CommittedBlock,
        transactions: &[Digest],
    ) -> Result<Vec<(Digest, IndexEntry)>, StoreError> {
        if transactions.len() != record.receipts.len() {
            return Err(StoreError::ReceiptCount {
                height: record.header.height.0,
                transactions: transactions.len(),
                receipts: record.receipts.len(),
            });
        }
        let mut entries = Vec::with_capacity(transactions.len());
        let mut here = DigestSet::with_capacity_and_hasher(transactions.len(), Default::default());
        for (index, (id, receipt)) in transactions.iter().zip(&record.receipts).enumerate() {
            let executed = receipt.as_ref().err().is_none_or(TxFailure::consumes_nonce);
            let first_here = here.insert(*id);
            if !executed && (!first_here || self.is_indexed(memory, id)?) {
                continue;
            }
            let entry = IndexEntry {
                height: record.header.height,
                index: index as u32,
            };
            entries.push((*id, entry));
        }
        Ok(entries)
    }

    /// Puts a committed block's entries (from [`Store::tx_index_entries`]) in memory, and hands
    /// a run to the writer when enough have gathered. `height` is that block's. A commit waits
    /// only if a whole run gathered while the last one was still being written.
    pub(super) fn add_tx_index_entries(
        &self,
        height: Height,
        entries: Vec<(Digest, IndexEntry)>,
    ) -> Result<(), StoreError> {
        let mut index = self.tx_index.lock();
        index.add(height, entries);
        if let Some(failure) = &index.failure {
            return Err(StoreError::TxIndexRun(failure.clone()));
        }
        if !index.run_due(height) {
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
        let oldest = index.oldest.take().unwrap_or(height);
        index.sealed = Some((entries.clone(), oldest));
        drop(index);
        let run = Run {
            entries,
            height,
            oldest,
        };
        let sent = writer
            .sender
            .as_ref()
            .is_some_and(|sender| sender.send(run).is_ok());
        if sent {
            return Ok(());
        }
        // The thread has stopped: the run goes back into memory.
        let why = "its thread has stopped".to_string();
        let mut index = self.tx_index.lock();
        // Unless the thread, stopping, put it back already.
        if let Some((run, oldest)) = index.sealed.take() {
            index.fail(&run, why.clone(), oldest);
        }
        index.failure.get_or_insert(why.clone());
        Err(StoreError::TxIndexRun(why))
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
            let entries = self.tx_index_entries(index, &record, &transactions)?;
            index.add(Height(height), entries);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fixture, gov, property, raw_put, Fixture};
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
        store.tx_index.set_run(run, TX_INDEX_RUN_BLOCKS);
        store
    }

    /// Commits the next block, carrying `txs` in one batch.
    fn commit(store: &Store, txs: &[SignedTransaction]) -> Result<(), StoreError> {
        commit_under(store, txs, &ChainRules::signed_only("c"))
    }

    /// [`commit`] on a chain with these rules.
    fn commit_under(
        store: &Store,
        txs: &[SignedTransaction],
        rules: &ChainRules,
    ) -> Result<(), StoreError> {
        let head = store.head().unwrap().unwrap();
        let batch = Batch {
            transactions: txs.to_vec(),
        };
        store
            .put_batch(&batch.digest(), &Arc::new(batch.clone()))
            .unwrap();
        let height = head.height.next();
        let execution = execute(
            rules,
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
        store.tx_index.set_run(4, TX_INDEX_RUN_BLOCKS);
        commit(&store, &txs[6..9]).unwrap();
        written_up_to(&store, 3);
        assert!(txs.iter().all(|tx| on_disk(&store, &tx.id())));
        assert_located(&store, &txs);
    }

    #[test]
    fn the_index_filters_are_held_in_the_shared_bounded_block_cache() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let (store, txs) = one_block_on_disk(dir.path(), &f);
        // Four runs of 50,000 entries: tables whose filters alone are ~100 KB each.
        let ids = |run: u64| {
            (0..50_000u64).map(move |i| {
                let seed = [run.to_le_bytes(), i.to_le_bytes()].concat();
                quorate_crypto::hash(quorate_crypto::Domain::Transaction, &seed)
            })
        };
        for run in 0..4u64 {
            let mut entries = Entries::default();
            for (i, id) in ids(run).enumerate() {
                let entry = IndexEntry {
                    height: Height(1),
                    index: i as u32,
                };
                entries.insert(id, entry);
            }
            write_run(&store.db, &entries, Height(1)).unwrap();
        }
        let index_property = |name: &str| property(&store, CF_TX_INDEX, name);
        // Outside any cache, a table reader would hold its index and its whole filter (16
        // bits per entry: 400 KB for these 200,000); here it holds neither.
        let readers = index_property("rocksdb.estimate-table-readers-mem");
        assert!(readers < 64 * 1024, "table readers hold {readers} bytes");
        assert_eq!(
            index_property("rocksdb.block-cache-capacity"),
            super::super::BLOCK_CACHE_BYTES as u64
        );
        // Every family reads through the one cache: each sees the blocks the index's lookups
        // put there.
        for id in ids(0).step_by(101) {
            assert!(on_disk(&store, &id));
        }
        let usage = index_property("rocksdb.block-cache-usage");
        assert!(usage > 0);
        for name in super::super::COLUMN_FAMILIES {
            let in_cache = |property_name: &str| property(&store, name, property_name);
            assert_eq!(
                in_cache("rocksdb.block-cache-capacity"),
                super::super::BLOCK_CACHE_BYTES as u64,
                "{name}"
            );
            assert_eq!(in_cache("rocksdb.block-cache-usage"), usage, "{name}");
        }
        // And the filters still answer: every entry is found, a missing id is not.
        for run in 0..4u64 {
            for id in ids(run).step_by(997) {
                assert!(on_disk(&store, &id));
            }
        }
        assert!(!on_disk(&store, &Digest([0xee; 32])));
        assert!(txs.iter().all(|tx| on_disk(&store, &tx.id())));
    }

    /// A store with one block of three transfers whose entries are on disk.
    fn one_block_on_disk(dir: &Path, f: &Fixture) -> (Store, Vec<SignedTransaction>) {
        let store = initialized(dir, f, 1);
        let txs = transfers(f, 0..3);
        commit(&store, &txs).unwrap();
        written_up_to(&store, 1);
        (store, txs)
    }

    #[test]
    fn a_store_made_before_the_runs_has_its_index_on_disk_and_gets_a_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let (store, txs) = one_block_on_disk(dir.path(), &f);
        // As a store made before the runs: every entry on disk, no watermark.
        store
            .db
            .delete_cf(store.cf(CF_META).unwrap(), KEY_TX_INDEXED)
            .unwrap();
        drop(store);
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
    fn an_index_compacted_in_levels_opens_under_universal_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let (store, txs) = one_block_on_disk(dir.path(), &f);
        drop(store);
        let extra = Digest([0xab; 32]);
        {
            // As a store made before the index was compacted universally: its entries in
            // the last level of a leveled tree.
            let families = super::super::COLUMN_FAMILIES.iter().map(|name| {
                let mut options = family_options(name, None);
                if *name == CF_TX_INDEX {
                    options.set_compaction_style(rocksdb::DBCompactionStyle::Level);
                }
                rocksdb::ColumnFamilyDescriptor::new(*name, options)
            });
            let mut options = rocksdb::Options::default();
            options.set_allow_concurrent_memtable_write(false);
            let db = DB::open_cf_descriptors(&options, dir.path(), families).unwrap();
            let index = db.cf_handle(CF_TX_INDEX).unwrap();
            db.compact_range_cf(index, None::<&[u8]>, None::<&[u8]>);
            // And a newer table above it, in level 0.
            let entry = IndexEntry {
                height: Height(1),
                index: 2,
            };
            db.put_cf(index, extra.0, codec::encode(&entry).unwrap())
                .unwrap();
            db.flush_cf(index).unwrap();
            for (level, files) in [(0, "1"), (6, "1")] {
                let property = format!("rocksdb.num-files-at-level{level}");
                let found = db.property_value_cf(index, &property).unwrap();
                assert_eq!(found.as_deref(), Some(files), "level {level}");
            }
        }
        let store = Store::open(dir.path()).unwrap();
        assert!(store.is_committed(&extra).unwrap());
        store.tx_index.set_run(1, TX_INDEX_RUN_BLOCKS);
        assert_located(&store, &txs);
        let more = transfers(&f, 3..6);
        commit(&store, &more).unwrap();
        written_up_to(&store, 2);
        let index = store.cf(CF_TX_INDEX).unwrap();
        store
            .db
            .compact_range_cf(index, None::<&[u8]>, None::<&[u8]>);
        let all: Vec<_> = txs.iter().chain(&more).cloned().collect();
        assert!(all.iter().all(|tx| on_disk(&store, &tx.id())));
        assert_located(&store, &all);
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
        // A block without entries, with nothing in memory, moves the watermark itself.
        assert_eq!(store.tx_indexed().unwrap(), Some(Height(2)));
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

    #[test]
    fn a_quiet_chain_writes_a_run_every_so_many_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let store = initialized(dir.path(), &f, 1_000);
        store.tx_index.set_run(1_000, 3);
        let txs = transfers(&f, 0..4);
        for (i, tx) in txs.iter().enumerate() {
            commit(&store, std::slice::from_ref(tx)).unwrap();
            if i < 3 {
                assert_eq!(store.recent_tx_index_entries(), i + 1);
            }
        }
        // Block 4 is three blocks past the oldest in memory: a run of four entries.
        written_up_to(&store, 4);
        assert!(txs.iter().all(|tx| on_disk(&store, &tx.id())));
    }

    fn location(height: u64) -> IndexEntry {
        IndexEntry {
            height: Height(height),
            index: height as u32 + 7,
        }
    }

    /// What a run of `entries` writes, decoded.
    fn decoded(entries: &Entries) -> Vec<(Digest, IndexEntry)> {
        let (values, sorted) = entries.encoded_sorted().unwrap();
        sorted
            .into_iter()
            .map(|(id, start, end)| {
                assert_eq!(end - start, ENTRY_BYTES);
                (id, IndexEntry::decode(&values[start..end]).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_run_holds_each_id_once_in_key_order_with_its_newest_entry() {
        let mut entries = Entries::default();
        // Equal first eight bytes, told apart by the rest; one id twice.
        let mut low = [7u8; 32];
        low[31] = 1;
        let (a, b, c) = (Digest([9; 32]), Digest([7; 32]), Digest(low));
        entries.insert(a, location(1));
        entries.insert(b, location(1));
        entries.insert(c, location(2));
        entries.insert(a, location(3));
        // One row per id: the second entry for `a` replaced the first.
        assert_eq!(entries.len(), 3);
        assert_eq!(entries.get(&a), Some(location(3)));
        let sorted: Vec<(Digest, u64)> = decoded(&entries)
            .into_iter()
            .map(|(id, location)| (id, location.height.0))
            .collect();
        assert_eq!(sorted, vec![(c, 2), (b, 1), (a, 3)]);
    }

    #[test]
    fn a_failed_run_goes_back_behind_what_came_in_meanwhile() {
        let mut index = RecentTxIndex::empty();
        let (a, b) = (Digest([1; 32]), Digest([2; 32]));
        let mut run = Entries::default();
        run.insert(a, location(1));
        run.insert(b, location(1));
        index.add(Height(2), vec![(a, location(2))]);
        index.fail(&run, "disk full".into(), Height(1));
        assert_eq!(index.active.get(&a), Some(location(2)));
        assert_eq!(index.active.get(&b), Some(location(1)));
        let heights: Vec<u64> = decoded(&index.active)
            .into_iter()
            .map(|(_, location)| location.height.0)
            .collect();
        assert_eq!(heights, vec![2, 1]);
        assert_eq!(
            (index.oldest, index.failure.as_deref()),
            (Some(Height(1)), Some("disk full"))
        );
    }

    /// What a faulty proposer can put in a block on a bench chain: one opaque payload again and
    /// again. Each copy executes (opaque payloads have no nonce to spend), and each is an entry:
    /// memory holds one per id, the last.
    #[test]
    fn a_block_repeating_one_payload_holds_one_entry_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let store = initialized(dir.path(), &f, 4);
        let rules = ChainRules {
            allow_opaque: true,
            ..ChainRules::signed_only("c")
        };
        let payload = SignedTransaction::opaque("c", f.alice.public(), 0, vec![7; 64]).unwrap();
        let copies = vec![payload.clone(); 1_000];
        commit_under(&store, &copies, &rules).unwrap();
        assert_eq!(store.recent_tx_index_entries(), 1);
        let location = store.tx(&payload.id()).unwrap().unwrap();
        assert_eq!((location.index, location.receipt), (999, Ok(())));
    }

    /// Entries written before held the whole location: they read as before, beside new ones.
    #[test]
    fn entries_that_hold_a_whole_location_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let (store, txs) = one_block_on_disk(dir.path(), &f);
        let family = store.cf(CF_TX_INDEX).unwrap();
        let legacy = store.tx(&txs[1].id()).unwrap().unwrap();
        assert_eq!(legacy.block_hash, store.head().unwrap().unwrap().hash);
        // Rewritten as an entry of before (the receipt and hash are read from the block all
        // the same).
        let old = codec::encode(&legacy).unwrap();
        raw_put(&store, CF_TX_INDEX, &txs[1].id().0, &old);
        let stored = store.db.get_cf(family, txs[1].id().0).unwrap().unwrap();
        assert!(stored.len() > ENTRY_BYTES);
        let current = store.db.get_cf(family, txs[0].id().0).unwrap().unwrap();
        assert_eq!(current.len(), ENTRY_BYTES);
        assert_located(&store, &txs);
        assert_eq!(store.tx(&txs[1].id()).unwrap().unwrap(), legacy);
        assert!(store.is_committed(&txs[1].id()).unwrap());
        assert!(store.is_committed(&txs[0].id()).unwrap());
        let later = transfers(&f, 3..4);
        assert!(!store.is_committed(&later[0].id()).unwrap());
    }

    /// An entry that names a block or a position that is not there is reported, not trusted.
    #[test]
    fn an_entry_pointing_past_its_block_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let (store, txs) = one_block_on_disk(dir.path(), &f);
        for (entry, what) in [
            (
                IndexEntry {
                    height: Height(1),
                    index: 3,
                },
                "position 3 of block 1",
            ),
            (
                IndexEntry {
                    height: Height(9),
                    index: 0,
                },
                "height 9",
            ),
        ] {
            raw_put(
                &store,
                CF_TX_INDEX,
                &txs[0].id().0,
                &codec::encode(&entry).unwrap(),
            );
            let error = store.tx(&txs[0].id()).unwrap_err();
            assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
            assert!(error.to_string().contains(what), "{error}");
        }
        raw_put(&store, CF_TX_INDEX, &txs[0].id().0, &[1u8; 5]);
        assert!(matches!(store.tx(&txs[0].id()), Err(StoreError::Codec(_))));
    }

    #[test]
    fn committed_among_finds_entries_in_memory_and_on_disk_in_one_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let (store, on_disk_txs) = one_block_on_disk(dir.path(), &f);
        store.tx_index.set_run(100, TX_INDEX_RUN_BLOCKS);
        let in_memory = transfers(&f, 3..5);
        commit(&store, &in_memory).unwrap();
        assert_eq!(store.recent_tx_index_entries(), 2);
        let absent = transfers(&f, 5..7);
        let ids: Vec<Digest> = [&absent[0], &on_disk_txs[2], &in_memory[1], &absent[1]]
            .iter()
            .chain([&on_disk_txs[0], &in_memory[0]].iter())
            .map(|tx| tx.id())
            .collect();
        assert_eq!(
            store.committed_among(&ids).unwrap(),
            vec![false, true, true, false, true, true]
        );
        assert_eq!(store.committed_among(&[]).unwrap(), Vec::<bool>::new());
        for (id, committed) in ids.iter().zip(store.committed_among(&ids).unwrap()) {
            assert_eq!(store.is_committed(id).unwrap(), committed);
        }
    }
}
