//! The raw block record `GET /v1/block/{h}/raw` serves and `quorate audit --rpc` decodes:
//! hex text of the canonical encoding of (committed block, its batches).
#![no_main]
use libfuzzer_sys::fuzz_target;
use quorate_fuzz::canonical;
use quorate_ledger::{Batch, CommittedBlock};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(bytes) = hex::decode(text.trim()) else {
        return;
    };
    if let Some((record, batches)) = canonical::<(CommittedBlock, Vec<Batch>)>(&bytes) {
        let _ = record.header.hash();
        for batch in &batches {
            let _ = batch.digest();
        }
    }
});
