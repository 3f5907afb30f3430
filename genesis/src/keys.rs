//! Key files: JSON, mode 0600, never overwritten.

use crate::error::io;
use crate::GenesisError;
use quorate_crypto::{
    Address, BlsKeyPair, BlsPublicKey, BlsSecretKey, ProofOfPossession, PublicKey, SecretKey,
    SigningKey,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Writes `value` as pretty JSON to a new file readable only by its owner. Refuses to replace an
/// existing file: a key overwritten by mistake is lost for good.
pub fn write_secret_file<T: Serialize>(path: &Path, value: &T) -> Result<(), GenesisError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| GenesisError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    text.push('\n');
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            GenesisError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            GenesisError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    file.write_all(text.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, GenesisError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|source| GenesisError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn key_error(path: &Path, reason: impl std::fmt::Display) -> GenesisError {
    GenesisError::KeyFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// An account key file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountKeyFile {
    pub address: Address,
    pub public_key: PublicKey,
    pub secret_key: String,
}

impl AccountKeyFile {
    pub fn new(key: &SigningKey) -> Self {
        AccountKeyFile {
            address: key.public().address(),
            public_key: key.public(),
            secret_key: key.secret().to_hex(),
        }
    }

    /// Loads the file and checks the secret matches the public key and address in it.
    pub fn load(path: &Path) -> Result<SigningKey, GenesisError> {
        let file: AccountKeyFile = read_json(path)?;
        let secret = SecretKey::from_hex(&file.secret_key).map_err(|e| key_error(path, e))?;
        let key = SigningKey::from_secret(&secret);
        if key.public() != file.public_key || key.public().address() != file.address {
            return Err(key_error(
                path,
                "secret key does not match public key or address",
            ));
        }
        Ok(key)
    }
}

/// A validator's keys, loaded.
#[derive(Debug)]
pub struct ValidatorKeys {
    pub name: String,
    pub identity: SigningKey,
    pub bls: BlsKeyPair,
}

impl ValidatorKeys {
    pub fn generate(name: &str) -> Self {
        ValidatorKeys {
            name: name.to_string(),
            identity: SigningKey::generate(),
            bls: BlsKeyPair::generate(),
        }
    }
}

/// A validator key file: identity (ed25519) and voting (BLS) keys.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorKeyFile {
    pub name: String,
    pub identity_public_key: PublicKey,
    pub identity_secret_key: String,
    pub bls_public_key: BlsPublicKey,
    pub bls_pop: ProofOfPossession,
    pub bls_secret_key: String,
}

impl ValidatorKeyFile {
    pub fn new(keys: &ValidatorKeys) -> Self {
        ValidatorKeyFile {
            name: keys.name.clone(),
            identity_public_key: keys.identity.public(),
            identity_secret_key: keys.identity.secret().to_hex(),
            bls_public_key: keys.bls.public(),
            bls_pop: keys.bls.proof_of_possession(),
            bls_secret_key: keys.bls.secret().to_hex(),
        }
    }

    /// Loads the file and checks both secrets match their public keys and the PoP verifies.
    pub fn load(path: &Path) -> Result<ValidatorKeys, GenesisError> {
        let file: ValidatorKeyFile = read_json(path)?;
        let secret =
            SecretKey::from_hex(&file.identity_secret_key).map_err(|e| key_error(path, e))?;
        let identity = SigningKey::from_secret(&secret);
        if identity.public() != file.identity_public_key {
            return Err(key_error(
                path,
                "identity secret key does not match its public key",
            ));
        }
        let bls_secret =
            BlsSecretKey::from_hex(&file.bls_secret_key).map_err(|e| key_error(path, e))?;
        let bls = BlsKeyPair::from_secret(bls_secret);
        if bls.public() != file.bls_public_key {
            return Err(key_error(
                path,
                "BLS secret key does not match its public key",
            ));
        }
        file.bls_public_key
            .verify_pop(&file.bls_pop)
            .map_err(|e| key_error(path, e))?;
        Ok(ValidatorKeys {
            name: file.name,
            identity,
            bls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_with_private_mode_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("account.json");
        let key = SigningKey::generate();
        write_secret_file(&path, &AccountKeyFile::new(&key)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(AccountKeyFile::load(&path).unwrap().public(), key.public());
        assert!(matches!(
            write_secret_file(&path, &AccountKeyFile::new(&SigningKey::generate())),
            Err(GenesisError::Exists { .. })
        ));

        let vpath = dir.path().join("validator.json");
        let keys = ValidatorKeys::generate("v0");
        write_secret_file(&vpath, &ValidatorKeyFile::new(&keys)).unwrap();
        let loaded = ValidatorKeyFile::load(&vpath).unwrap();
        assert_eq!(loaded.identity.public(), keys.identity.public());
        assert_eq!(loaded.bls.public(), keys.bls.public());
    }

    #[test]
    fn mismatched_key_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("account.json");
        let mut file = AccountKeyFile::new(&SigningKey::generate());
        file.public_key = SigningKey::generate().public();
        write_secret_file(&path, &file).unwrap();
        assert!(matches!(
            AccountKeyFile::load(&path),
            Err(GenesisError::KeyFile { .. })
        ));
    }
}
