//! genesis.json: parsed, validated and hashed as a node does at start-up.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quorate_fuzz::json_fixed_point;
use quorate_genesis::Genesis;

fuzz_target!(|data: &[u8]| {
    if let Some(genesis) = json_fixed_point::<Genesis>(data) {
        if genesis.validate().is_ok() {
            let _ = genesis.hash();
            let _ = genesis.validator_set();
        }
    }
});
