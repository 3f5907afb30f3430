use quorate_crypto::CryptoError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GenesisError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: invalid TOML: {reason}")]
    Toml { path: PathBuf, reason: String },
    #[error("invalid genesis: {0}")]
    Invalid(String),
    #[error("validator {index} ({name}): {source}")]
    Validator {
        index: usize,
        name: String,
        source: CryptoError,
    },
    #[error("invalid key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("{path} already exists; refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Codec(#[from] quorate_ledger::CodecError),
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> GenesisError + '_ {
    move |source| GenesisError::Io {
        path: path.to_path_buf(),
        source,
    }
}
