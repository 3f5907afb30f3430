//! What every fuzz target asserts of a decoder fed bytes from outside: it never panics, its
//! memory stays bounded (libFuzzer's `-rss_limit_mb` and `-malloc_limit_mb`, set by
//! `scripts/fuzz.sh`), and what it accepts has one encoding: a decoded value re-encodes to
//! the very bytes it came from (binary), or to a fixed point (JSON, TOML: whitespace and key
//! order are free there).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The node's frame limit (`node/src/wire.rs`, `MAX_FRAME_BYTES`): longer frames are refused
/// before they are read.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Decodes `bytes` with the canonical codec; if it decodes, asserts that it re-encodes to
/// exactly `bytes`.
pub fn canonical<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: T = quorate_ledger::codec::decode(bytes).ok()?;
    let again = quorate_ledger::codec::encode(&value).expect("a decoded value encodes");
    assert!(
        again == bytes,
        "accepted bytes are not canonical: {} bytes re-encode as {} other bytes",
        bytes.len(),
        again.len()
    );
    Some(value)
}

/// Parses JSON; if it parses, asserts that printing and parsing again is a fixed point.
pub fn json_fixed_point<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(bytes).ok()?;
    let once = serde_json::to_vec(&value).expect("a parsed value prints");
    let back: T = serde_json::from_slice(&once).expect("printed JSON parses again");
    let twice = serde_json::to_vec(&back).expect("prints again");
    assert!(once == twice, "JSON printing is not a fixed point");
    Some(value)
}

/// The same for TOML.
pub fn toml_fixed_point<T: Serialize + DeserializeOwned>(text: &str) -> Option<T> {
    let value: T = toml::from_str(text).ok()?;
    let once = toml::to_string(&value).expect("a parsed value prints");
    let back: T = toml::from_str(&once).expect("printed TOML parses again");
    let twice = toml::to_string(&back).expect("prints again");
    assert!(once == twice, "TOML printing is not a fixed point");
    Some(value)
}
