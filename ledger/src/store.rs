//! Durable storage in RocksDB, one column family per kind of record.
//!
//! Every committed block is written with ONE synced `WriteBatch` holding the block record, its
//! commit certificate and receipts, the account changes, the new state accumulator and the new
//! head: after a crash either all of it is there or none of it is. The transaction index is
//! derived from those records and written in sorted runs ([`tx_index`]). Consensus safety state
//! is written synced on its own, before anything that depends on it leaves the node.

mod tx_index;

use crate::codec::{self, CodecError};
use crate::governance::{EpochRecord, Governance, GovernanceState, ValidatorInfo};
use crate::recent_batches::{RecentBatches, RECENT_BATCH_BYTES};
use crate::records::{CommittedBlock, Head, PendingBlock};
use crate::state::{Account, Execution, StateAccumulator, StateReadError, StateView};
use crate::{Batch, BlockHeader, Epoch, Height};
use quorate_crypto::{Address, Digest};
use rocksdb::{Cache, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use thiserror::Error;
use tx_index::{put_watermark, RunWriter, SharedTxIndex, KEY_TX_INDEXED};

const CF_SAFETY: &str = "safety";
const CF_PENDING_BLOCKS: &str = "pending_blocks";
/// Batches by digest, as stores made before the batch log kept them: read, never written.
const CF_BATCHES: &str = "batches";
/// Batches in the order this node stored them, under an 8-byte big-endian sequence number.
const CF_BATCH_LOG: &str = "batch_log";
/// Batch digest to its sequence number in the log.
const CF_BATCH_INDEX: &str = "batch_index";
const CF_MANIFESTS: &str = "manifests";
const CF_BLOCKS: &str = "blocks";
const CF_BLOCK_INDEX: &str = "block_index";
const CF_ACCOUNTS: &str = "accounts";
const CF_TX_INDEX: &str = "tx_index";
const CF_META: &str = "meta";
const COLUMN_FAMILIES: [&str; 11] = [
    CF_SAFETY,
    CF_PENDING_BLOCKS,
    CF_BATCHES,
    CF_BATCH_LOG,
    CF_BATCH_INDEX,
    CF_MANIFESTS,
    CF_BLOCKS,
    CF_BLOCK_INDEX,
    CF_ACCOUNTS,
    CF_TX_INDEX,
    CF_META,
];
const KEY_SAFETY: &[u8] = b"safety";
/// Committed blocks whose manifests are kept (for peers that catch up through consensus).
pub const MANIFESTS_RETAINED: u64 = 1024;
const KEY_HEAD: &[u8] = b"head";
const KEY_ACCUMULATOR: &[u8] = b"accumulator";
const KEY_GOVERNANCE: &[u8] = b"governance";
/// Followed by the epoch (8 bytes, big-endian): that epoch's [`EpochRecord`].
const KEY_EPOCH_PREFIX: &[u8] = b"epoch/";

/// Where a stored batch is.
enum StoredBatch {
    /// In the log, under this sequence number.
    Log(u64),
    /// Under its digest (a store made before the log).
    ByDigest,
}

/// The sequence number a batch-log key (or index value) holds.
fn log_sequence(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("batch log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn epoch_key(epoch: Epoch) -> Vec<u8> {
    [KEY_EPOCH_PREFIX, &epoch.0.to_be_bytes()].concat()
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("commit of height {height} does not follow the head at {head}")]
    OutOfOrder { height: u64, head: u64 },
    #[error("writing the transaction index: {0}")]
    TxIndexRun(String),
    #[error("block {height} has {transactions} transactions but {receipts} receipts")]
    ReceiptCount {
        height: u64,
        transactions: usize,
        receipts: usize,
    },
    #[error("creating the store's directory {path}: {error}")]
    CreateDir { path: String, error: std::io::Error },
    #[error("probing whether {path} takes direct I/O: {error}")]
    DirectIoProbe { path: String, error: std::io::Error },
}

pub struct Store {
    db: Arc<DB>,
    /// Stored batches, kept decoded until their block has committed and the executor lets them
    /// go (see [`RecentBatches`]).
    recent: Mutex<RecentBatches>,
    /// The batch log's next sequence number, held from looking a batch up to writing it: two
    /// copies stored at once (pushed by two peers) must not both go into the log, one of them
    /// never to be deleted.
    batch_log: Mutex<u64>,
    /// The transaction index's entries not yet on disk (see [`tx_index`]).
    tx_index: Arc<SharedTxIndex>,
    /// Writes them in runs (none in a read-only store).
    tx_index_writer: Option<RunWriter>,
    /// Whether tables are written around the page cache (see [`direct_writes`]).
    direct_writes: bool,
}

/// Column family `name` of `db` (every one is created at open: a missing one is a damaged store).
fn family<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Corrupt(format!("missing column family {name}")))
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

/// The options of one column family. Accounts, the transaction index and the batch index are read
/// and written by whole key only, never iterated: bloom filters answer their misses (below). The
/// batch log is written in key order and never rewritten. `cache`: the block cache the store's
/// families share (`None` for a table writer, which reads nothing).
fn family_options(name: &str, cache: Option<&Cache>) -> Options {
    let mut options = Options::default();
    let mut table = table_options(cache);
    let key_len = match name {
        CF_BATCH_LOG => {
            // Written once under ever larger keys: each flushed table follows the last, so
            // compaction moves tables down without rewriting them (batches under random
            // digests were rewritten at every level: a fifth of a validator's CPU under
            // opaque load, most of it compressing signatures, keys and hashes that do not
            // compress). Not compressed: a table is written once and its bytes would not shrink.
            options.set_compression_type(rocksdb::DBCompressionType::None);
            options.set_block_based_table_factory(&table);
            return options;
        }
        CF_ACCOUNTS => 20,
        CF_TX_INDEX | CF_BATCH_INDEX => 32,
        _ => {
            options.set_block_based_table_factory(&table);
            return options;
        }
    };
    options.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(key_len));
    if name != CF_ACCOUNTS {
        // Random digests for keys. LZ4 made a run of the transaction index (65,536 entries)
        // 5.1 MB instead of 6.6 MB when each entry repeated its block's hash (entries have
        // been 12 bytes since), a few percent of what a node stores next to its batches, and
        // writing and compacting those runs made LZ4 2.3% of the CPU at saturation (HotStuff,
        // n=4, opaque, 75,000 offered).
        options.set_compression_type(rocksdb::DBCompressionType::None);
    }
    if name == CF_TX_INDEX {
        // The index arrives in sorted runs of random ids (see [`tx_index`]), each spanning
        // the whole key range: leveled compaction merged every four into the last level,
        // rewriting all of it each time (three compactions in a 12 s run at 75,000 offered,
        // 33, 59 and 70 MB out; compaction was 10% of the busy CPU). Universal compaction
        // merges runs of like size, so an entry is rewritten a few times over its life
        // instead of once per level. Merging once eight sorted runs have gathered rather than
        // four halves that again (a 12 s run at 75,000 offered: one compaction of 150 ms CPU
        // per node, against four of 310 ms); a lookup probes a filter per sorted run (eight,
        // and a few more while a merge runs), which submissions do in one batch (see
        // `Store::committed_among`). A store whose index was compacted in levels opens as it
        // is: each level is one sorted run, older than those above it.
        options.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
        options.set_level_zero_file_num_compaction_trigger(8);
    }
    if name == CF_ACCOUNTS {
        // Accounts are written again and again (each transfer writes two): a hash memtable
        // puts an account's versions in one bucket, newest first, where a write and a read
        // are one step. The batch index, written once per random key, stays in a skiplist: a
        // hash memtable must sort everything into one at each flush, which cost more than the
        // inserts it saved (measured on the transaction index under opaque load; that index now
        // comes in sorted runs that bypass the memtable, see [`tx_index`]).
        options.set_memtable_factory(rocksdb::MemtableFactory::HashLinkList {
            bucket_count: MEMTABLE_BUCKETS,
        });
    }
    // A quarter of the default: shallower skiplists, shorter bucket lists, less memory.
    options.set_write_buffer_size(MEMTABLE_BYTES);
    // Most reads here miss (a transaction submitted for the first time, an account that does
    // not exist yet): bloom filters (the prefix is the whole key) answer them without walking
    // the memtable or reading a table's blocks.
    options.set_memtable_prefix_bloom_ratio(0.02);
    // A false positive of the transaction index reads a block from disk (its compacted tables
    // are written around the page cache, see [`direct_writes`]), and every submission is
    // looked up there, in every sorted run: 16 bits per key make them ~0.05% of lookups,
    // against ~1% with 10, for 2 bytes per entry (held in the block cache, see
    // [`table_options`]).
    let bits = if name == CF_TX_INDEX { 16.0 } else { 10.0 };
    table.set_bloom_filter(bits, false);
    options.set_block_based_table_factory(&table);
    options
}

/// How every family's tables are read: through one block cache of [`BLOCK_CACHE_BYTES`],
/// indexes and filters included. Left to itself RocksDB keeps each open table's index and
/// filter in memory outside any cache, and keeps every table open: memory that grows with all
/// the store has ever taken, without bound (the transaction index's filters alone are 2 bytes
/// per transaction ever committed, the batch log's index ~0.5% of every batch's bytes). In
/// the cache they are bounded with the rest, at high priority. Filters and indexes are cut
/// in partitions of a few KiB (a table's filter as a whole could outgrow its shard of the
/// cache), found through a small top-level index pinned with the table (tens of bytes per
/// table). Nothing else is pinned: level 0's partitions pinned as well would stay pinned in
/// tables that compaction moves down without rewriting (the batch log's, whose keys only
/// grow), one index per table ever flushed.
fn table_options(cache: Option<&Cache>) -> rocksdb::BlockBasedOptions {
    let mut table = rocksdb::BlockBasedOptions::default();
    if let Some(cache) = cache {
        table.set_block_cache(cache);
    }
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_pin_top_level_index_and_filter(true);
    table
}

/// The block cache a store's families share (see [`table_options`]).
pub const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// In four shards of 16 MiB (RocksDB's default would make 64 of 1 MiB, where one whole
/// filter of a table written before filters were partitioned, or one block of the batch log,
/// which holds a batch, could fill a shard by itself).
const BLOCK_CACHE_SHARD_BITS: i32 = 2;

fn block_cache() -> Cache {
    let mut options = rocksdb::LruCacheOptions::default();
    options.set_capacity(BLOCK_CACHE_BYTES);
    options.set_num_shard_bits(BLOCK_CACHE_SHARD_BITS);
    Cache::new_lru_cache_opts(&options)
}

/// Buckets of a hash memtable (8 bytes each).
const MEMTABLE_BUCKETS: usize = 131_072;
/// The memtable size of the accounts and the batch index (the transaction index bypasses its
/// memtable: see [`tx_index`]).
const MEMTABLE_BYTES: usize = 16 << 20;

/// Whether files in `dir` can be written with direct I/O (`O_DIRECT`), which some file systems
/// refuse (tmpfs before Linux 6.6, some FUSE and network mounts): a probe file is opened so and
/// one aligned block written to it, as RocksDB would, then removed. Refused (`EINVAL`) is
/// `false`; any other error is the error (a store that cannot make a file in its directory
/// would fail anyway, less clearly).
///
/// Where they can, RocksDB writes its tables (flushes and compactions) around the page
/// cache. Under opaque load a validator writes its batches' bytes once more
/// when their memtable flushes, tens of megabytes a second that the node never reads back
/// from those pages (batches are read from memory until their block commits). Through the
/// page cache, each of those writes lands in a page the kernel has not handed out for a
/// while; on the virtual machines this was measured on, touching such a page is a fault
/// into the hypervisor: the copy into the cache took 15% of the busy CPU (PBFT, n=4, 75,000
/// offered), and went away with direct writes. The log (WAL) stays buffered: its pages are
/// written and freed over and over, and a commit syncs it.
fn direct_writes(dir: &Path) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let refused = |error: &std::io::Error| error.raw_os_error() == Some(libc::EINVAL);
        let probe = dir.join(DIRECT_IO_PROBE);
        // A probe a crash left behind.
        match std::fs::remove_file(&probe) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
            .open(&probe)
        {
            Ok(file) => file,
            Err(error) if refused(&error) => return Ok(false),
            Err(error) => return Err(error),
        };
        // One block at an aligned address, of an aligned length, at an aligned offset.
        let buffer = vec![0u8; 2 * DIRECT_IO_BLOCK];
        let start = buffer.as_ptr().align_offset(DIRECT_IO_BLOCK);
        let block = start
            .checked_add(DIRECT_IO_BLOCK)
            .and_then(|end| buffer.get(start..end));
        let written = match block {
            Some(block) => file.write_all(block).map(|()| true),
            None => Ok(false),
        };
        drop(file);
        let _ = std::fs::remove_file(&probe);
        match written {
            Err(error) if refused(&error) => Ok(false),
            written => written,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        Ok(false)
    }
}

/// The file [`direct_writes`] creates and removes.
const DIRECT_IO_PROBE: &str = "quorate-direct-io.probe";
/// The block [`direct_writes`] writes (a page: every device's logical block size divides it).
const DIRECT_IO_BLOCK: usize = 4096;

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Hash memtables (below) take writes from one thread at a time, which is how the node
        // writes anyway (the executor commits; the rest are single puts).
        options.set_allow_concurrent_memtable_write(false);
        std::fs::create_dir_all(path).map_err(|error| StoreError::CreateDir {
            path: path.display().to_string(),
            error,
        })?;
        let direct = direct_writes(path).map_err(|error| StoreError::DirectIoProbe {
            path: path.display().to_string(),
            error,
        })?;
        options.set_use_direct_io_for_flush_and_compaction(direct);
        let cache = block_cache();
        let families = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, family_options(name, Some(&cache))));
        let db = DB::open_cf_descriptors(&options, path, families)?;
        Store::with_db(db, true, direct)
    }

    /// Whether this store writes its tables around the page cache (direct I/O): false where
    /// the file system refuses it, and for a read-only store.
    pub fn direct_writes(&self) -> bool {
        self.direct_writes
    }

    /// Opens an existing store read-only (beside a running node, for audits and queries). A
    /// store made before the batch log has no `batch_log` or `batch_index`: its batches are
    /// read from the family it kept them in.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let mut options = Options::default();
        // As at `open`: the accounts' hash memtable (the log is replayed into it) takes one
        // writer at a time.
        options.set_allow_concurrent_memtable_write(false);
        let existing = DB::list_cf(&options, path)?;
        let cache = block_cache();
        let families = COLUMN_FAMILIES
            .iter()
            .filter(|name| existing.iter().any(|e| e == *name))
            .map(|name| ColumnFamilyDescriptor::new(*name, family_options(name, Some(&cache))));
        let db = DB::open_cf_descriptors_read_only(&options, path, families, false)?;
        Store::with_db(db, false, false)
    }

    fn with_db(db: DB, writable: bool, direct_writes: bool) -> Result<Store, StoreError> {
        // The log's next number follows its last key (a read-only store writes none).
        let next_batch = match db.cf_handle(CF_BATCH_LOG).filter(|_| writable) {
            Some(log) => {
                let mut last = db.raw_iterator_cf(log);
                last.seek_to_last();
                last.status()?;
                match last.key() {
                    Some(key) => log_sequence(key)?
                        .checked_add(1)
                        .ok_or_else(|| StoreError::Corrupt("the batch log is full".into()))?,
                    None => 0,
                }
            }
            None => 0,
        };
        let db = Arc::new(db);
        let tx_index = SharedTxIndex::new();
        let mut store = Store {
            db: db.clone(),
            recent: Mutex::new(RecentBatches::new(RECENT_BATCH_BYTES)),
            batch_log: Mutex::new(next_batch),
            tx_index: tx_index.clone(),
            tx_index_writer: None,
            direct_writes,
        };
        if writable {
            // A store made before the runs has its whole index on disk: say so before any
            // entry is kept only in memory.
            let watermark = db.get_cf(store.cf(CF_META)?, KEY_TX_INDEXED)?;
            if let (None, Some(head)) = (watermark, store.head()?) {
                put_watermark(&db, head.height)?;
            }
            store.load_tx_index()?;
            store.tx_index_writer = Some(RunWriter::start(db, tx_index)?);
        }
        Ok(store)
    }

    fn recent(&self) -> MutexGuard<'_, RecentBatches> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        family(&self.db, name)
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        cf: &str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.db.get_cf(self.cf(cf)?, key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The consensus engine's safety state.
    pub fn safety(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_SAFETY)?, KEY_SAFETY)?)
    }

    /// Writes the safety state and syncs it to disk before returning.
    pub fn put_safety(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.db
            .put_cf_opt(self.cf(CF_SAFETY)?, KEY_SAFETY, bytes, &synced())?;
        Ok(())
    }

    /// Keeps an uncommitted block the engine may need after a restart (not synced: a lost
    /// block is fetched again).
    pub fn put_pending_block(&self, hash: &Digest, block: &PendingBlock) -> Result<(), StoreError> {
        self.db
            .put_cf(self.cf(CF_PENDING_BLOCKS)?, hash.0, codec::encode(block)?)?;
        Ok(())
    }

    /// The header of a stored uncommitted block; `None` if there is none, or only a record of
    /// an older layout (which, like a lost block, is fetched again).
    pub fn pending_header(&self, hash: &Digest) -> Result<Option<BlockHeader>, StoreError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_PENDING_BLOCKS)?, hash.0)?
            .and_then(|bytes| codec::decode::<PendingBlock>(&bytes).ok())
            .map(|block| block.header))
    }

    /// Every stored uncommitted block by hash, for the engine's recovery and for pruning;
    /// `None` for a record of an older layout.
    pub fn pending_blocks(&self) -> Result<Vec<(Digest, Option<PendingBlock>)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PENDING_BLOCKS)?, rocksdb::IteratorMode::Start)
        {
            let (key, value) = item?;
            let Ok(hash) = <[u8; 32]>::try_from(&key[..]) else {
                continue;
            };
            out.push((Digest(hash), codec::decode::<PendingBlock>(&value).ok()));
        }
        Ok(out)
    }

    /// Drops uncommitted blocks that can no longer matter.
    pub fn delete_pending_blocks(&self, hashes: &[Digest]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_PENDING_BLOCKS)?;
        for hash in hashes {
            batch.delete_cf(cf, hash.0);
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Stores a batch whose signatures were verified (not synced: until a block that refers to
    /// it commits, a lost batch is fetched again) and keeps it decoded in memory until
    /// [`Store::forget_recent_batches`] (or the memory bound) lets it go. A batch already
    /// stored is left as it is (and not brought back into memory): returns whether this call
    /// stored it.
    pub fn put_batch(&self, digest: &Digest, batch: &Arc<Batch>) -> Result<bool, StoreError> {
        self.put_batch_encoded(digest, batch, &codec::encode(batch.as_ref())?)
    }

    /// [`Store::put_batch`] with the batch's encoding at hand (the bytes it was decoded from,
    /// or encoded once for the network too): stored as they are, not checked (decoding them
    /// again would cost what this saves; the caller's bytes are the batch's by construction).
    pub fn put_batch_encoded(
        &self,
        digest: &Digest,
        batch: &Arc<Batch>,
        bytes: &[u8],
    ) -> Result<bool, StoreError> {
        let size = bytes.len();
        let mut next = self.batch_log.lock().unwrap_or_else(|p| p.into_inner());
        if self.stored_batch_at(digest)?.is_some() {
            return Ok(false);
        }
        let key = next.to_be_bytes();
        let following = next
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("the batch log is full".into()))?;
        let mut write = WriteBatch::default();
        write.put_cf(self.cf(CF_BATCH_LOG)?, key, bytes);
        write.put_cf(self.cf(CF_BATCH_INDEX)?, digest.0, key);
        self.db.write(write)?;
        *next = following;
        self.recent().insert(*digest, batch.clone(), size);
        Ok(true)
    }

    /// Where a batch is on disk: its key in the log, or in the family of older stores.
    fn stored_batch_at(&self, digest: &Digest) -> Result<Option<StoredBatch>, StoreError> {
        if let Some(index) = self.db.cf_handle(CF_BATCH_INDEX) {
            if let Some(key) = self.db.get_pinned_cf(index, digest.0)? {
                return Ok(Some(StoredBatch::Log(log_sequence(&key)?)));
            }
        }
        if let Some(old) = self.db.cf_handle(CF_BATCHES) {
            if self.db.get_pinned_cf(old, digest.0)?.is_some() {
                return Ok(Some(StoredBatch::ByDigest));
            }
        }
        Ok(None)
    }

    /// Deletes batches that no committed block names (the caller makes sure of it).
    pub fn delete_batches(&self, digests: &[Digest]) -> Result<(), StoreError> {
        let _writing = self.batch_log.lock().unwrap_or_else(|p| p.into_inner());
        let mut write = WriteBatch::default();
        for digest in digests {
            match self.stored_batch_at(digest)? {
                Some(StoredBatch::Log(seq)) => {
                    write.delete_cf(self.cf(CF_BATCH_LOG)?, seq.to_be_bytes());
                    write.delete_cf(self.cf(CF_BATCH_INDEX)?, digest.0);
                }
                Some(StoredBatch::ByDigest) => write.delete_cf(self.cf(CF_BATCHES)?, digest.0),
                None => {}
            }
        }
        self.db.write(write)?;
        self.forget_recent_batches(digests);
        Ok(())
    }

    /// Lets go of the in-memory copies of batches (a block that carries them committed a while
    /// ago); they stay on disk.
    pub fn forget_recent_batches(&self, digests: &[Digest]) {
        let mut recent = self.recent();
        for digest in digests {
            recent.remove(digest);
        }
    }

    /// Bytes of batches kept decoded in memory (bounded by [`RECENT_BATCH_BYTES`]).
    pub fn recent_batch_bytes(&self) -> usize {
        self.recent().bytes()
    }

    /// A stored batch: the in-memory copy if there is one, else read from disk.
    pub fn batch(&self, digest: &Digest) -> Result<Option<Arc<Batch>>, StoreError> {
        if let Some(batch) = self.recent().get(digest) {
            return Ok(Some(batch));
        }
        let found = match self.stored_batch_at(digest)? {
            Some(StoredBatch::Log(seq)) => {
                // Around the block cache: a block of the log holds a whole batch, read once
                // (for a peer that asks, or a block committed long after its batches came),
                // and would push out the indexes and filters that every lookup uses.
                let mut read = rocksdb::ReadOptions::default();
                read.fill_cache(false);
                match self
                    .db
                    .get_cf_opt(self.cf(CF_BATCH_LOG)?, seq.to_be_bytes(), &read)?
                {
                    Some(bytes) => Some(codec::decode::<Batch>(&bytes)?),
                    None => None,
                }
            }
            Some(StoredBatch::ByDigest) => self.get::<Batch>(CF_BATCHES, &digest.0)?,
            None => return Ok(None),
        };
        match found {
            Some(batch) => Ok(Some(Arc::new(batch))),
            // Deleted between the two reads.
            None if self.stored_batch_at(digest)?.is_none() => Ok(None),
            None => Err(StoreError::Corrupt(format!(
                "batch {digest} is indexed but not stored"
            ))),
        }
    }

    pub fn has_batch(&self, digest: &Digest) -> Result<bool, StoreError> {
        if self.recent().contains(digest) {
            return Ok(true);
        }
        Ok(self.stored_batch_at(digest)?.is_some())
    }

    /// The batch digests of a payload, keyed by the payload digest.
    pub fn put_manifest(&self, payload: &Digest, batches: &[Digest]) -> Result<(), StoreError> {
        self.db.put_cf(
            self.cf(CF_MANIFESTS)?,
            payload.0,
            codec::encode(&batches.to_vec())?,
        )?;
        Ok(())
    }

    pub fn manifest(&self, payload: &Digest) -> Result<Option<Vec<Digest>>, StoreError> {
        self.get(CF_MANIFESTS, &payload.0)
    }

    /// Forgets a manifest no block needs any more.
    pub fn delete_manifest(&self, payload: &Digest) -> Result<(), StoreError> {
        self.db.delete_cf(self.cf(CF_MANIFESTS)?, payload.0)?;
        Ok(())
    }

    pub fn head(&self) -> Result<Option<Head>, StoreError> {
        self.get(CF_META, KEY_HEAD)
    }

    pub fn accumulator(&self) -> Result<StateAccumulator, StoreError> {
        let bytes = self
            .db
            .get_cf(self.cf(CF_META)?, KEY_ACCUMULATOR)?
            .ok_or_else(|| StoreError::Corrupt("no state accumulator".into()))?;
        StateAccumulator::from_bytes(&bytes)
            .ok_or_else(|| StoreError::Corrupt("state accumulator of the wrong size".into()))
    }

    pub fn account(&self, address: &Address) -> Result<Account, StoreError> {
        Ok(self.get(CF_ACCOUNTS, &address.0)?.unwrap_or_default())
    }

    /// The committed governance state: the current epoch, its validators, open proposals.
    pub fn governance(&self) -> Result<GovernanceState, StoreError> {
        let governance: Governance = self
            .get(CF_META, KEY_GOVERNANCE)?
            .ok_or_else(|| StoreError::Corrupt("no governance state".into()))?;
        Ok(GovernanceState::new(governance)?)
    }

    /// The validator set of `epoch`, if the committed chain reached it.
    pub fn epoch_validators(&self, epoch: Epoch) -> Result<Option<Vec<ValidatorInfo>>, StoreError> {
        Ok(self.epoch_record(epoch)?.map(|record| record.validators))
    }

    /// The set and root of `epoch`, if the committed chain reached it.
    pub fn epoch_record(&self, epoch: Epoch) -> Result<Option<EpochRecord>, StoreError> {
        self.get(CF_META, &epoch_key(epoch))
    }

    /// Writes the governance state and, if `entered` names the block an epoch begins at (its
    /// root), that epoch's record.
    fn put_governance(
        &self,
        batch: &mut WriteBatch,
        governance: &Governance,
        entered: Option<(Height, Digest)>,
    ) -> Result<(), StoreError> {
        let meta = self.cf(CF_META)?;
        batch.put_cf(meta, KEY_GOVERNANCE, codec::encode(governance)?);
        if let Some((root_height, root)) = entered {
            let record = EpochRecord {
                validators: governance.validators.clone(),
                root_height,
                root,
            };
            batch.put_cf(meta, epoch_key(governance.epoch), codec::encode(&record)?);
        }
        Ok(())
    }

    pub fn committed(&self, height: Height) -> Result<Option<CommittedBlock>, StoreError> {
        self.get(CF_BLOCKS, &height.0.to_be_bytes())
    }

    pub fn height_of(&self, hash: &Digest) -> Result<Option<Height>, StoreError> {
        self.get(CF_BLOCK_INDEX, &hash.0)
    }

    /// Writes the initial state and the root block (height 0) in one synced batch. Refuses a
    /// store that already has a head.
    pub fn initialize(
        &self,
        root: &BlockHeader,
        accounts: &[(Address, Account)],
        accumulator: &StateAccumulator,
        governance: &Governance,
    ) -> Result<(), StoreError> {
        if self.head()?.is_some() {
            return Err(StoreError::Corrupt("store already initialised".into()));
        }
        let hash = root.hash()?;
        let mut batch = WriteBatch::default();
        for (address, account) in accounts {
            batch.put_cf(self.cf(CF_ACCOUNTS)?, address.0, codec::encode(account)?);
        }
        let record = CommittedBlock {
            header: root.clone(),
            proof: Vec::new(),
            batches: Vec::new(),
            receipts: Vec::new(),
        };
        self.put_governance(&mut batch, governance, Some((root.height, hash)))?;
        self.put_committed(&mut batch, &hash, &record, accumulator)?;
        batch.put_cf(
            self.cf(CF_META)?,
            KEY_TX_INDEXED,
            root.height.0.to_be_bytes(),
        );
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    fn put_committed(
        &self,
        batch: &mut WriteBatch,
        hash: &Digest,
        record: &CommittedBlock,
        accumulator: &StateAccumulator,
    ) -> Result<(), StoreError> {
        let height = record.header.height;
        batch.put_cf(
            self.cf(CF_BLOCKS)?,
            height.0.to_be_bytes(),
            codec::encode(record)?,
        );
        batch.put_cf(self.cf(CF_BLOCK_INDEX)?, hash.0, codec::encode(&height)?);
        batch.put_cf(self.cf(CF_META)?, KEY_ACCUMULATOR, accumulator.to_bytes());
        let head = Head {
            height,
            hash: *hash,
            header: record.header.clone(),
        };
        batch.put_cf(self.cf(CF_META)?, KEY_HEAD, codec::encode(&head)?);
        Ok(())
    }

    /// Commits the next block: record, certificate, receipts, state changes, accumulator and
    /// head, in ONE synced write; then its transaction index entries (`transactions` are the ids
    /// in block order, matching `execution.receipts`), which a restart derives again from the
    /// record. A transaction id already committed successfully keeps its entry.
    pub fn commit(
        &self,
        record: &CommittedBlock,
        execution: &Execution,
        transactions: &[Digest],
    ) -> Result<(), StoreError> {
        let head = self
            .head()?
            .ok_or_else(|| StoreError::Corrupt("commit before initialisation".into()))?;
        if record.header.height != head.height.next() || record.header.parent != head.hash {
            return Err(StoreError::OutOfOrder {
                height: record.header.height.0,
                head: head.height.0,
            });
        }
        let hash = record.header.hash()?;
        let mut batch = WriteBatch::default();
        let accounts = self.cf(CF_ACCOUNTS)?;
        for (address, account) in &execution.changes {
            if account.is_empty() {
                batch.delete_cf(accounts, address.0);
            } else {
                batch.put_cf(accounts, address.0, codec::encode(account)?);
            }
        }
        let entries = self.new_tx_index_entries(record, transactions)?;
        batch.delete_cf(self.cf(CF_PENDING_BLOCKS)?, hash.0);
        // A committed block's record keeps its batch list, but peers catching up through
        // consensus still ask for the manifests of recent blocks: those of the last
        // MANIFESTS_RETAINED committed blocks stay, older ones go.
        if let Some(old) = record.header.height.0.checked_sub(MANIFESTS_RETAINED) {
            if let Some(old) = self.committed(Height(old))? {
                batch.delete_cf(self.cf(CF_MANIFESTS)?, old.header.payload_digest.0);
            }
        }
        if execution.governance_changed {
            // A block that ends an epoch is the next epoch's root.
            let entered = (self.governance()?.epoch() != execution.governance.epoch())
                .then_some((record.header.height, hash));
            self.put_governance(&mut batch, execution.governance.get(), entered)?;
        }
        self.put_committed(&mut batch, &hash, record, &execution.accumulator)?;
        if entries.is_empty() && self.tx_index.idle() {
            // Nothing in memory: the index on disk is whole up to this block.
            batch.put_cf(
                self.cf(CF_META)?,
                KEY_TX_INDEXED,
                record.header.height.0.to_be_bytes(),
            );
        }
        self.db.write_opt(batch, &synced())?;
        self.add_tx_index_entries(record.header.height, entries)
    }
}

impl Store {
    /// Replaces the commit proof of the committed block `header` (a stronger one arrived: a
    /// PBFT checkpoint became stable). Synced; refused if that block is not the one committed
    /// at its height.
    pub fn set_commit_proof(&self, header: &BlockHeader, proof: &[u8]) -> Result<(), StoreError> {
        let height = header.height;
        let mut record = self.committed(height)?.ok_or(StoreError::OutOfOrder {
            height: height.0,
            head: self.head()?.map_or(0, |head| head.height.0),
        })?;
        if record.header != *header {
            return Err(StoreError::Corrupt(format!(
                "a proof for height {height} names another block than the one committed"
            )));
        }
        record.proof = proof.to_vec();
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_BLOCKS)?,
            height.0.to_be_bytes(),
            codec::encode(&record)?,
        );
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }
}

/// Writes that bypass every check, for tests that show the auditor catches a tampered database.
/// Nothing in a node calls them.
#[doc(hidden)]
impl Store {
    /// Replaces the stored batch `digest` (where it is, or in the log if it is nowhere) with
    /// `batch`, whatever its digest, and drops the in-memory copy.
    pub fn overwrite_batch_unchecked(
        &self,
        digest: &Digest,
        batch: &Batch,
    ) -> Result<(), StoreError> {
        let bytes = codec::encode(batch)?;
        match self.stored_batch_at(digest)? {
            Some(StoredBatch::Log(seq)) => {
                self.db
                    .put_cf(self.cf(CF_BATCH_LOG)?, seq.to_be_bytes(), bytes)?
            }
            Some(StoredBatch::ByDigest) => self.db.put_cf(self.cf(CF_BATCHES)?, digest.0, bytes)?,
            None => {
                self.put_batch(digest, &Arc::new(batch.clone()))?;
            }
        }
        self.forget_recent_batches(&[*digest]);
        Ok(())
    }

    pub fn overwrite_committed_unchecked(&self, record: &CommittedBlock) -> Result<(), StoreError> {
        self.db.put_cf(
            self.cf(CF_BLOCKS)?,
            record.header.height.0.to_be_bytes(),
            codec::encode(record)?,
        )?;
        Ok(())
    }

    /// Replaces the stored record of `address` with raw `bytes` (a corrupt disk, for tests
    /// that show a node stops rather than guesses).
    pub fn overwrite_account_raw_unchecked(
        &self,
        address: &Address,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.db.put_cf(self.cf(CF_ACCOUNTS)?, address.0, bytes)?;
        Ok(())
    }

    pub fn delete_committed_unchecked(&self, height: Height) -> Result<(), StoreError> {
        self.db
            .delete_cf(self.cf(CF_BLOCKS)?, height.0.to_be_bytes())?;
        Ok(())
    }
}

impl crate::audit::ChainSource for Store {
    fn head_height(&self) -> Result<u64, String> {
        Ok(self
            .head()
            .map_err(|e| e.to_string())?
            .map_or(0, |h| h.height.0))
    }

    fn block(&self, height: u64) -> Result<Option<(CommittedBlock, Vec<Batch>)>, String> {
        let Some(record) = self.committed(Height(height)).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let mut batches = Vec::with_capacity(record.batches.len());
        for digest in &record.batches {
            match self.batch(digest).map_err(|e| e.to_string())? {
                // An auditor's store keeps nothing in memory: the batch is its own copy.
                Some(batch) => batches.push(Arc::unwrap_or_clone(batch)),
                None => return Err(format!("batch {digest} of block {height} is not stored")),
            }
        }
        Ok(Some((record, batches)))
    }
}

impl StateView for Store {
    /// Committed state. A read error is a broken disk: the caller stops the node.
    fn account(&self, address: &Address) -> Result<Account, StateReadError> {
        Store::account(self, address).map_err(|error| StateReadError(error.to_string()))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::state::{execute, initial_accumulator};
    use crate::{Epoch, SignedTransaction, StateAccumulator, Transaction, TransactionKind, View};
    use quorate_crypto::SigningKey;

    pub(super) fn gov() -> Governance {
        crate::governance::tests::four()
    }

    fn root(state_root: Digest) -> BlockHeader {
        BlockHeader {
            chain_id: "c".into(),
            genesis_hash: Digest::ZERO,
            epoch: Epoch(0),
            height: Height(0),
            view: View(0),
            parent: Digest::ZERO,
            payload_digest: crate::Block::payload_digest_of(&[]),
            state_root,
            proposer: 0,
            timestamp_ms: 0,
        }
    }

    /// Alice holds 50 at genesis; `tx` sends 20 of it to Bob.
    pub(super) struct Fixture {
        pub(super) alice: SigningKey,
        pub(super) bob: Address,
        pub(super) accounts: Vec<(Address, Account)>,
        pub(super) accumulator: StateAccumulator,
        pub(super) genesis: BlockHeader,
        pub(super) tx: SignedTransaction,
    }

    pub(super) fn fixture() -> Fixture {
        let alice = SigningKey::from_seed_insecure(7);
        let bob = SigningKey::from_seed_insecure(8).public().address();
        let accounts = vec![(
            alice.public().address(),
            Account {
                balance: 50,
                nonce: 0,
            },
        )];
        let accumulator = initial_accumulator(accounts.iter().map(|(a, b)| (a, b)));
        let genesis = root(crate::state::state_root(
            accumulator.root(),
            gov().digest().unwrap(),
        ));
        let tx = Transaction {
            chain_id: "c".into(),
            sender: alice.public(),
            nonce: 0,
            kind: TransactionKind::Transfer {
                to: bob,
                amount: 20,
            },
        }
        .sign(&alice)
        .unwrap();
        Fixture {
            alice,
            bob,
            accounts,
            accumulator,
            genesis,
            tx,
        }
    }

    #[test]
    fn a_store_written_with_skiplist_memtables_reopens_with_hash_memtables() {
        // Stores made before the hash memtables: their write-ahead log replays into the new
        // memtables, and every key reads back its newest value, before and after a flush.
        let dir = tempfile::tempdir().unwrap();
        let address = Address([9; 20]);
        let id = Digest([4; 32]);
        {
            let mut options = Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let db = DB::open_cf(&options, dir.path(), COLUMN_FAMILIES).unwrap();
            for balance in 1..=50u64 {
                let account = Account {
                    balance,
                    nonce: balance,
                };
                db.put_cf(
                    db.cf_handle(CF_ACCOUNTS).unwrap(),
                    address.0,
                    codec::encode(&account).unwrap(),
                )
                .unwrap();
            }
            db.put_cf(db.cf_handle(CF_TX_INDEX).unwrap(), id.0, b"x")
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.account(&address).unwrap().balance, 50);
        for balance in 51..=120u64 {
            let account = Account {
                balance,
                nonce: balance,
            };
            store
                .overwrite_account_raw_unchecked(&address, &codec::encode(&account).unwrap())
                .unwrap();
            assert_eq!(store.account(&address).unwrap().balance, balance);
        }
        assert_eq!(
            store.account(&Address([8; 20])).unwrap(),
            Account::default()
        );
        store.db.flush_cf(store.cf(CF_ACCOUNTS).unwrap()).unwrap();
        assert_eq!(store.account(&address).unwrap().balance, 120);
        assert_eq!(
            store
                .db
                .get_cf(store.cf(CF_TX_INDEX).unwrap(), id.0)
                .unwrap()
                .as_deref(),
            Some(&b"x"[..])
        );
        // Flushed with the bloom filters: a present key still reads, an absent one misses.
        store.db.flush_cf(store.cf(CF_TX_INDEX).unwrap()).unwrap();
        let index = store.cf(CF_TX_INDEX).unwrap();
        assert!(store.db.get_cf(index, id.0).unwrap().is_some());
        assert!(store.db.get_cf(index, [5; 32]).unwrap().is_none());
        drop(store);
        let store = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(store.account(&address).unwrap().balance, 120);
        assert!(store.tx(&Digest([5; 32])).unwrap().is_none());
    }

    #[test]
    fn a_stored_batch_is_read_from_memory_until_forgotten_then_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let batch = Arc::new(Batch {
            transactions: vec![fixture().tx],
        });
        let digest = batch.digest();
        store.put_batch(&digest, &batch).unwrap();
        assert!(store.recent_batch_bytes() > 0);
        // The same allocation, not a decoded copy.
        assert!(Arc::ptr_eq(&store.batch(&digest).unwrap().unwrap(), &batch));
        store.forget_recent_batches(&[digest]);
        assert_eq!(store.recent_batch_bytes(), 0);
        let read = store.batch(&digest).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&read, &batch));
        assert_eq!(read, batch);
        assert!(store.has_batch(&digest).unwrap());
        // Deleting drops both copies.
        store.put_batch(&digest, &batch).unwrap();
        store.delete_batches(&[digest]).unwrap();
        assert!(!store.has_batch(&digest).unwrap());
        assert_eq!(store.batch(&digest).unwrap(), None);
        assert_eq!(store.recent_batch_bytes(), 0);
    }

    fn log_keys(store: &Store) -> Vec<u64> {
        let mut keys = Vec::new();
        let mut it = store.db.raw_iterator_cf(store.cf(CF_BATCH_LOG).unwrap());
        it.seek_to_first();
        while let Some(key) = it.key() {
            keys.push(log_sequence(key).unwrap());
            it.next();
        }
        keys
    }

    fn batch_of(nonce: u64) -> Arc<Batch> {
        let key = SigningKey::from_seed_insecure(3);
        let tx = SignedTransaction::opaque("c", key.public(), nonce, vec![7; 40]).unwrap();
        Arc::new(Batch {
            transactions: vec![tx],
        })
    }

    #[test]
    fn tables_flushed_and_compacted_with_direct_writes_read_back_after_a_reopen() {
        // A directory that does not exist yet: the probe needs it, so the store makes it.
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("a").join("store");
        let batches: Vec<Arc<Batch>> = (0..64).map(batch_of).collect();
        {
            let store = Store::open(&dir).unwrap();
            // Whatever the file system here allows, the store follows the probe.
            assert_eq!(store.direct_writes(), direct_writes(&dir).unwrap());
            for batch in &batches {
                store.put_batch(&batch.digest(), batch).unwrap();
            }
            store.forget_recent_batches(&batches.iter().map(|b| b.digest()).collect::<Vec<_>>());
            for name in [CF_BATCH_LOG, CF_BATCH_INDEX] {
                let cf = store.cf(name).unwrap();
                store.db.flush_cf(cf).unwrap();
                store.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
            }
            for batch in &batches {
                assert_eq!(store.batch(&batch.digest()).unwrap().as_ref(), Some(batch));
            }
        }
        assert!(!dir.join(DIRECT_IO_PROBE).exists(), "the probe is removed");
        let store = Store::open(&dir).unwrap();
        for batch in &batches {
            assert_eq!(store.batch(&batch.digest()).unwrap().as_ref(), Some(batch));
        }
        let read_only = Store::open_read_only(&dir);
        drop(store);
        let read_only = read_only.unwrap();
        assert!(!read_only.direct_writes());
        assert_eq!(
            read_only.batch(&batches[7].digest()).unwrap().as_ref(),
            Some(&batches[7])
        );
    }

    #[test]
    fn the_direct_io_probe_clears_a_leftover_and_reports_what_is_not_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        // A probe a crash left behind (a plain file): removed, and the store opens.
        std::fs::write(dir.path().join(DIRECT_IO_PROBE), b"left").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!dir.path().join(DIRECT_IO_PROBE).exists());
        drop(store);
        // Something under the probe's name that is not a file: an error, not "refused".
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(other.path().join(DIRECT_IO_PROBE)).unwrap();
        std::fs::write(other.path().join(DIRECT_IO_PROBE).join("x"), b"x").unwrap();
        let error = Store::open(other.path()).err().unwrap();
        assert!(matches!(error, StoreError::DirectIoProbe { .. }), "{error}");
        assert!(error.to_string().contains("takes direct I/O"), "{error}");
    }

    #[test]
    fn a_store_directory_that_cannot_be_made_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"not a directory").unwrap();
        let error = Store::open(&file.join("store")).err().unwrap();
        assert!(matches!(error, StoreError::CreateDir { .. }), "{error}");
        assert!(error.to_string().contains("creating the store's directory"));
    }

    #[test]
    fn batches_read_from_disk_stay_out_of_the_block_cache_and_their_tables_pin_almost_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = SigningKey::from_seed_insecure(3);
        let log = store.cf(CF_BATCH_LOG).unwrap();
        let log_property = |name: &str| property(&store, CF_BATCH_LOG, name);
        let mut digests = Vec::new();
        let mut pinned = Vec::new();
        // Twelve tables of the log, each one batch of 200 KiB.
        for table in 0..12u64 {
            let transactions = (0..50)
                .map(|i| {
                    SignedTransaction::opaque("c", key.public(), table * 100 + i, vec![7; 4096])
                        .unwrap()
                })
                .collect();
            let batch = Arc::new(Batch { transactions });
            store.put_batch(&batch.digest(), &batch).unwrap();
            store.db.flush_cf(log).unwrap();
            digests.push(batch.digest());
            store.forget_recent_batches(&digests);
            for digest in &digests {
                assert!(store.batch(digest).unwrap().is_some());
            }
            pinned.push(log_property("rocksdb.block-cache-pinned-usage"));
        }
        // Every batch was read from disk, none stayed in the cache.
        let usage = log_property("rocksdb.block-cache-usage");
        assert!(usage < 64 * 1024, "{usage} bytes in the cache");
        // What stays pinned per table is its top-level index: a few dozen bytes.
        let last = *pinned.last().unwrap();
        assert!(
            last < 12 * 256,
            "{last} bytes pinned for 12 tables: {pinned:?}"
        );
    }

    #[test]
    fn a_batch_stored_from_its_encoding_reads_back_from_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let batch = batch_of(5);
        let bytes = codec::encode(batch.as_ref()).unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store
                .put_batch_encoded(&batch.digest(), &batch, &bytes)
                .unwrap());
            assert!(!store.put_batch(&batch.digest(), &batch).unwrap());
            assert_eq!(store.batch(&batch.digest()).unwrap(), Some(batch.clone()));
            assert_eq!(store.recent_batch_bytes(), bytes.len());
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.recent_batch_bytes(), 0);
        assert_eq!(store.batch(&batch.digest()).unwrap(), Some(batch));
    }

    #[test]
    fn batches_go_into_the_log_in_arrival_order_and_the_numbering_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let batches: Vec<Arc<Batch>> = (0..4).map(batch_of).collect();
        {
            let store = Store::open(dir.path()).unwrap();
            for batch in &batches[..3] {
                store.put_batch(&batch.digest(), batch).unwrap();
            }
            // Stored again: nothing new in the log.
            assert!(!store.put_batch(&batches[1].digest(), &batches[1]).unwrap());
            assert_eq!(log_keys(&store), vec![0, 1, 2]);
            // Deleting the last leaves a gap the numbering does not reuse.
            store.delete_batches(&[batches[2].digest()]).unwrap();
            assert_eq!(log_keys(&store), vec![0, 1]);
            store.put_batch(&batches[2].digest(), &batches[2]).unwrap();
            assert_eq!(log_keys(&store), vec![0, 1, 3]);
        }
        let store = Store::open(dir.path()).unwrap();
        store.put_batch(&batches[3].digest(), &batches[3]).unwrap();
        assert_eq!(log_keys(&store), vec![0, 1, 3, 4]);
        for batch in &batches {
            assert_eq!(store.batch(&batch.digest()).unwrap().as_ref(), Some(batch));
        }
        assert_eq!(store.batch(&Digest([1; 32])).unwrap(), None);
    }

    #[test]
    fn one_batch_stored_from_several_threads_at_once_goes_into_the_log_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let batch = batch_of(5);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, batch) = (store.clone(), batch.clone());
                std::thread::spawn(move || store.put_batch(&batch.digest(), &batch).unwrap())
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(log_keys(&store).len(), 1);
        store.delete_batches(&[batch.digest()]).unwrap();
        assert!(log_keys(&store).is_empty());
    }

    #[test]
    fn batches_stored_by_digest_before_the_log_still_read_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let old = batch_of(1);
        {
            // A store of the layout before the batch log.
            let mut options = Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let families = COLUMN_FAMILIES
                .iter()
                .filter(|name| ![CF_BATCH_LOG, CF_BATCH_INDEX].contains(name));
            let db = DB::open_cf(&options, dir.path(), families).unwrap();
            db.put_cf(
                db.cf_handle(CF_BATCHES).unwrap(),
                old.digest().0,
                codec::encode(old.as_ref()).unwrap(),
            )
            .unwrap();
        }
        // Read-only, as audit opens it, without the new families.
        let store = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(store.batch(&old.digest()).unwrap().as_ref(), Some(&old));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.has_batch(&old.digest()).unwrap());
        assert_eq!(store.batch(&old.digest()).unwrap().as_ref(), Some(&old));
        // Stored again: it stays where it is.
        store.put_batch(&old.digest(), &old).unwrap();
        assert!(log_keys(&store).is_empty());
        store.delete_batches(&[old.digest()]).unwrap();
        assert!(!store.has_batch(&old.digest()).unwrap());
    }

    /// RocksDB's integer property `name` of `family` (block cache use, table readers' memory).
    pub(super) fn property(store: &Store, family: &str, name: &str) -> u64 {
        let family = store.cf(family).unwrap();
        store
            .db
            .property_int_value_cf(family, name)
            .unwrap()
            .unwrap()
    }

    /// Writes `value` under `key` in `family`, past every check (a corrupt disk).
    pub(super) fn raw_put(store: &Store, family: &str, key: &[u8], value: &[u8]) {
        store
            .db
            .put_cf(store.cf(family).unwrap(), key, value)
            .unwrap();
    }

    #[test]
    fn an_index_entry_that_is_not_a_log_key_is_reported_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = Digest([2; 32]);
        raw_put(&store, CF_BATCH_INDEX, &digest.0, b"short");
        assert!(matches!(store.batch(&digest), Err(StoreError::Corrupt(_))));
        // Indexed, but the log lost it.
        raw_put(&store, CF_BATCH_INDEX, &digest.0, &9u64.to_be_bytes());
        assert!(matches!(store.batch(&digest), Err(StoreError::Corrupt(_))));
        // A last log key that leaves no next number: refused at open, never wrapped to 0.
        raw_put(&store, CF_BATCH_LOG, &u64::MAX.to_be_bytes(), b"x");
        drop(store);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Corrupt(_))
        ));
        // Read-only (audit) still opens: it writes no batch.
        assert!(Store::open_read_only(dir.path()).is_ok());
    }

    #[test]
    fn a_committed_block_survives_reopening_whole() {
        let dir = tempfile::tempdir().unwrap();
        let Fixture {
            alice,
            bob,
            accounts,
            accumulator,
            genesis,
            tx,
        } = fixture();
        let batch = Batch {
            transactions: vec![tx.clone()],
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .initialize(&genesis, &accounts, &accumulator, &gov())
                .unwrap();
            assert!(store
                .initialize(&genesis, &accounts, &accumulator, &gov())
                .is_err());
            store
                .put_batch(&batch.digest(), &Arc::new(batch.clone()))
                .unwrap();
            let execution = execute(
                &crate::ChainRules::signed_only("c"),
                &store,
                &store.accumulator().unwrap(),
                &store.governance().unwrap(),
                Height(1),
                [&tx],
            )
            .unwrap();
            let mut header = genesis.clone();
            header.height = Height(1);
            header.parent = genesis.hash().unwrap();
            header.state_root = execution.state_root();
            let record = CommittedBlock {
                header: header.clone(),
                proof: vec![1, 2, 3],
                batches: vec![batch.digest()],
                receipts: execution.receipts.clone(),
            };
            // Out of order (wrong height) is refused.
            let mut skip = record.clone();
            skip.header.height = Height(2);
            assert!(matches!(
                store.commit(&skip, &execution, &[tx.id()]),
                Err(StoreError::OutOfOrder { .. })
            ));
            store.commit(&record, &execution, &[tx.id()]).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let head = store.head().unwrap().unwrap();
        assert_eq!(head.height, Height(1));
        assert_eq!(Store::account(&store, &bob).unwrap().balance, 20);
        assert_eq!(
            Store::account(&store, &alice.public().address()).unwrap(),
            Account {
                balance: 30,
                nonce: 1
            }
        );
        assert_eq!(
            crate::state::state_root(
                store.accumulator().unwrap().root(),
                store.governance().unwrap().digest()
            ),
            head.header.state_root
        );
        assert_eq!(store.governance().unwrap().get(), &gov());
        assert_eq!(
            store.epoch_validators(Epoch(0)).unwrap(),
            Some(gov().validators)
        );
        assert_eq!(store.epoch_validators(Epoch(1)).unwrap(), None);
        let location = store.tx(&tx.id()).unwrap().unwrap();
        assert_eq!(location.height, Height(1));
        assert_eq!(location.receipt, Ok(()));
        assert_eq!(
            store.committed(Height(1)).unwrap().unwrap().proof,
            vec![1, 2, 3]
        );
        assert_eq!(store.height_of(&head.hash).unwrap(), Some(Height(1)));
        assert_eq!(
            store.batch(&batch.digest()).unwrap().as_deref(),
            Some(&batch)
        );
    }

    /// Found by `scripts/chaos.sh`: a transfer sent to two validators landed in two batches of
    /// one block; the first copy executed, the second failed on its nonce, and the index
    /// answered "failed" for a transfer that had been carried out.
    #[test]
    fn a_second_copy_in_the_same_block_keeps_the_first_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let (genesis, tx) = (f.genesis, f.tx);
        let store = Store::open(dir.path()).unwrap();
        store
            .initialize(&genesis, &f.accounts, &f.accumulator, &gov())
            .unwrap();
        let execution = execute(
            &crate::ChainRules::signed_only("c"),
            &store,
            &store.accumulator().unwrap(),
            &store.governance().unwrap(),
            Height(1),
            [&tx, &tx],
        )
        .unwrap();
        assert_eq!(execution.receipts[0], Ok(()));
        assert!(execution.receipts[1].is_err());
        let mut header = genesis.clone();
        header.height = Height(1);
        header.parent = genesis.hash().unwrap();
        header.state_root = execution.state_root();
        let one = Batch {
            transactions: vec![tx.clone()],
        };
        let record = CommittedBlock {
            header,
            proof: Vec::new(),
            batches: vec![one.digest(), one.digest()],
            receipts: execution.receipts.clone(),
        };
        store
            .commit(&record, &execution, &[tx.id(), tx.id()])
            .unwrap();
        let location = store.tx(&tx.id()).unwrap().unwrap();
        assert_eq!((location.index, location.receipt), (0, Ok(())));
        assert_eq!(Store::account(&store, &f.bob).unwrap().balance, 20);
    }

    /// A block that ends an epoch is written with the next epoch's record (its set and its root,
    /// that block) in the same batch; the epoch-0 record names the genesis block.
    #[test]
    fn the_block_that_ends_an_epoch_is_the_next_epochs_root() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let mut governance = gov();
        governance.scheduled = Some(crate::governance::ScheduledChange {
            height: Height(1),
            validators: governance.validators[..3].to_vec(),
        });
        let accumulator = f.accumulator.clone();
        let mut genesis = f.genesis.clone();
        genesis.state_root =
            crate::state::state_root(accumulator.root(), governance.digest().unwrap());
        let store = Store::open(dir.path()).unwrap();
        store
            .initialize(&genesis, &f.accounts, &accumulator, &governance)
            .unwrap();
        let zero = store.epoch_record(Epoch(0)).unwrap().unwrap();
        assert_eq!(
            (zero.root_height, zero.root),
            (Height(0), genesis.hash().unwrap())
        );
        let execution = execute(
            &crate::ChainRules::signed_only("c"),
            &store,
            &accumulator,
            &store.governance().unwrap(),
            Height(1),
            [],
        )
        .unwrap();
        assert_eq!(execution.governance.epoch(), Epoch(1));
        let mut header = genesis.clone();
        header.height = Height(1);
        header.parent = genesis.hash().unwrap();
        header.state_root = execution.state_root();
        let record = CommittedBlock {
            header: header.clone(),
            proof: Vec::new(),
            batches: Vec::new(),
            receipts: Vec::new(),
        };
        store.commit(&record, &execution, &[]).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let one = store.epoch_record(Epoch(1)).unwrap().unwrap();
        assert_eq!(
            (one.root_height, one.root, one.validators.len()),
            (Height(1), header.hash().unwrap(), 3)
        );
        assert_eq!(store.governance().unwrap().epoch(), Epoch(1));
        assert_eq!(store.epoch_validators(Epoch(0)).unwrap().unwrap().len(), 4);
        assert_eq!(store.epoch_record(Epoch(2)).unwrap(), None);
    }
}
