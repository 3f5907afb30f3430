//! A node's config.toml.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quorate_fuzz::toml_fixed_point;
use quorate_genesis::NodeConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = toml_fixed_point::<NodeConfig>(text);
    }
});
