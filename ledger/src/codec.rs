//! The canonical binary encoding of everything that is hashed, signed, stored or sent.
//!
//! bincode 2 over serde with a fixed configuration: little-endian fixed-width integers (so every
//! value has exactly one encoding), a hard limit on how much one decode may claim (so a length
//! prefix from a peer can never make us allocate without bound), and trailing bytes rejected.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// The most bytes one decoded value may occupy (and so the most a decode can allocate).
pub const MAX_DECODE_BYTES: usize = 32 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_DECODE_BYTES>()
}

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("{trailing} trailing bytes after the value")]
    TrailingBytes { trailing: usize },
}

/// Encodes `value` canonically.
///
/// Encoding only fails for values larger than [`MAX_DECODE_BYTES`] or types serde cannot express
/// in this format (a bug in this crate, caught by the round-trip tests).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    // Most values (votes, headers, certificates, messages) fit a small stack buffer: encoded
    // there, they cost one allocation of the exact size instead of a vector grown field by
    // field (the simulator's profile had a tenth of its time in those reallocations).
    let mut buffer = [0u8; STACK_BYTES];
    if let Ok(written) = bincode::serde::encode_into_slice(value, &mut buffer, config()) {
        if let Some(encoded) = buffer.get(..written) {
            return Ok(encoded.to_vec());
        }
    }
    // Larger ones (batches, blocks): measured first, then written into a buffer of that size,
    // not one grown (and copied) by doubling.
    let mut sink = VecSink(Vec::with_capacity(encoded_len(value)?));
    bincode::serde::encode_into_writer(value, &mut sink, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(sink.0)
}

/// Appends `value`'s canonical encoding to `out`.
pub fn encode_append<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let mut sink = VecSink(std::mem::take(out));
    let written = bincode::serde::encode_into_writer(value, &mut sink, config())
        .map_err(|e| CodecError::Encode(e.to_string()));
    *out = sink.0;
    written
}

struct VecSink(Vec<u8>);

impl bincode::enc::write::Writer for VecSink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// The length of `value`'s canonical encoding, found without encoding it anywhere.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, CodecError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(size.bytes_written)
}

/// Values up to this size are encoded on the stack first.
const STACK_BYTES: usize = 1024;

/// The domain-separated hash of `value`'s canonical encoding. Small values (block headers,
/// votes) are encoded on the stack: hashing them allocates nothing.
pub fn hash_encoded<T: Serialize>(
    domain: quorate_crypto::Domain,
    value: &T,
) -> Result<quorate_crypto::Digest, CodecError> {
    let mut buffer = [0u8; STACK_BYTES];
    if let Ok(written) = bincode::serde::encode_into_slice(value, &mut buffer, config()) {
        if let Some(encoded) = buffer.get(..written) {
            return Ok(quorate_crypto::hash(domain, encoded));
        }
    }
    Ok(quorate_crypto::hash(domain, &encode(value)?))
}

/// Decodes exactly one `T` occupying all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_DECODE_BYTES {
        return Err(CodecError::Decode(format!(
            "input of {} bytes exceeds the {} byte limit",
            bytes.len(),
            MAX_DECODE_BYTES
        )));
    }
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes {
            trailing: bytes.len().saturating_sub(read),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoded_length_is_the_length_of_the_encoding() {
        let values: Vec<(String, Vec<u8>, u64)> = vec![
            (String::new(), Vec::new(), 0),
            ("chain".into(), vec![1; 3], 7),
            ("x".repeat(300), vec![9; STACK_BYTES * 3], u64::MAX),
        ];
        for value in &values {
            assert_eq!(encoded_len(value).unwrap(), encode(value).unwrap().len());
        }
    }
}
