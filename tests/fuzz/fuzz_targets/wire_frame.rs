//! A frame as a peer sends it on `/quorate/1`: 4-byte big-endian length, then a request (or an
//! answer) in the canonical encoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quorate_consensus::wire::{NetRequest, NetResponse};
use quorate_fuzz::{canonical, MAX_FRAME_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some((length, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let length = u32::from_be_bytes(*length) as usize;
    if length > MAX_FRAME_BYTES || length != body.len() {
        return; // what the node's frame reader refuses
    }
    let _ = canonical::<NetRequest>(body);
    let _ = canonical::<NetResponse>(body);
});
