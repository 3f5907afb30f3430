//! Signer bitmaps: bit `i` set means committee member `i` signed.

use crate::CryptoError;
use serde::{Deserialize, Serialize};

/// Which members of a committee of `len` signed. Always well formed: `bits` has exactly
/// `ceil(len / 8)` bytes and no bit at or past `len` is set (checked when decoding, too).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawBitmap", into = "RawBitmap")]
pub struct SignerBitmap {
    len: u16,
    bits: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct RawBitmap {
    len: u16,
    bits: Vec<u8>,
}

impl TryFrom<RawBitmap> for SignerBitmap {
    type Error = CryptoError;
    fn try_from(raw: RawBitmap) -> Result<Self, CryptoError> {
        SignerBitmap::from_parts(raw.len, raw.bits)
    }
}

impl From<SignerBitmap> for RawBitmap {
    fn from(bitmap: SignerBitmap) -> Self {
        RawBitmap {
            len: bitmap.len,
            bits: bitmap.bits,
        }
    }
}

impl std::fmt::Debug for SignerBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignerBitmap[")?;
        for index in 0..self.len as usize {
            f.write_str(if self.contains(index) { "1" } else { "0" })?;
        }
        write!(f, "]")
    }
}

impl SignerBitmap {
    /// An empty bitmap for a committee of `len` members.
    pub fn new(len: usize) -> Self {
        let len = u16::try_from(len).unwrap_or(u16::MAX);
        SignerBitmap {
            len,
            bits: vec![0; (len as usize).div_ceil(8)],
        }
    }

    /// Checks the invariants of a bitmap received from elsewhere.
    pub fn from_parts(len: u16, bits: Vec<u8>) -> Result<Self, CryptoError> {
        if bits.len() != (len as usize).div_ceil(8) {
            return Err(CryptoError::BitmapMalformed {
                reason: "byte length does not match member count",
            });
        }
        let bitmap = SignerBitmap { len, bits };
        let trailing = (len as usize)..bitmap.bits.len() * 8;
        if trailing.into_iter().any(|i| bitmap.bit(i)) {
            return Err(CryptoError::BitmapMalformed {
                reason: "bit set past the last member",
            });
        }
        Ok(bitmap)
    }

    /// Number of members the bitmap covers.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn bit(&self, index: usize) -> bool {
        self.bits
            .get(index / 8)
            .is_some_and(|byte| byte & (1 << (index % 8)) != 0)
    }

    pub fn contains(&self, index: usize) -> bool {
        index < self.len() && self.bit(index)
    }

    /// Sets bit `index`; returns false if it was already set or is out of range.
    pub fn insert(&mut self, index: usize) -> bool {
        if index >= self.len() || self.bit(index) {
            return false;
        }
        match self.bits.get_mut(index / 8) {
            Some(byte) => {
                *byte |= 1 << (index % 8);
                true
            }
            None => false,
        }
    }

    /// Clears bit `index` (used by tests that forge certificates, and when dropping bad votes).
    pub fn remove(&mut self, index: usize) -> bool {
        if !self.contains(index) {
            return false;
        }
        match self.bits.get_mut(index / 8) {
            Some(byte) => {
                *byte &= !(1 << (index % 8));
                true
            }
            None => false,
        }
    }

    /// Indices of the signers, ascending.
    pub fn signers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|&i| self.bit(i))
    }

    pub fn count(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_and_bounds() {
        let mut bitmap = SignerBitmap::new(10);
        assert!(bitmap.insert(0));
        assert!(bitmap.insert(9));
        assert!(!bitmap.insert(9), "duplicate signer must be refused");
        assert!(!bitmap.insert(10), "out of range");
        assert_eq!(bitmap.signers().collect::<Vec<_>>(), vec![0, 9]);
        assert_eq!(bitmap.count(), 2);
        assert!(bitmap.remove(0));
        assert_eq!(bitmap.count(), 1);
    }

    #[test]
    fn malformed_bitmaps_are_rejected() {
        assert!(SignerBitmap::from_parts(10, vec![0]).is_err());
        assert!(SignerBitmap::from_parts(10, vec![0, 0b100]).is_err());
        assert!(SignerBitmap::from_parts(10, vec![0xff, 0b11]).is_ok());
        let json = r#"{"len":3,"bits":[8]}"#;
        assert!(serde_json::from_str::<SignerBitmap>(json).is_err());
    }
}
