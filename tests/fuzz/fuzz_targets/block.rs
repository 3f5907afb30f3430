//! Blocks, headers and batches in the canonical encoding (what proposals, batch gossip and the
//! store carry). The first byte picks the type.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quorate_fuzz::canonical;
use quorate_ledger::{Batch, Block, BlockHeader};

fuzz_target!(|data: &[u8]| {
    let Some((kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            if let Some(block) = canonical::<Block>(bytes) {
                let _ = block.hash();
            }
        }
        1 => {
            if let Some(header) = canonical::<BlockHeader>(bytes) {
                let _ = header.hash();
            }
        }
        _ => {
            if let Some(batch) = canonical::<Batch>(bytes) {
                let _ = batch.digest();
            }
        }
    }
});
