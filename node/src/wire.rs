//! What validators say to each other over libp2p, and its length-limited framing.
//!
//! Every message is a request on the `/quorate/1` request-response protocol, framed as a 4-byte
//! big-endian length and the canonical (bincode) encoding. A frame longer than
//! [`MAX_FRAME_BYTES`] is refused before anything is allocated for it; a frame is read as its
//! bytes arrive (memory follows what a peer really sent, not what its prefix claims), and frames
//! over [`LARGE_FRAME_BYTES`] draw on one budget shared by every stream of every peer while they
//! are read ([`LARGE_FRAMES_BUDGET`]): many streams at once cannot exhaust memory.

use futures::prelude::*;
pub use quorate_consensus::wire::{
    NetRequest, NetResponse, MAX_BATCHES_PER_REQUEST, MAX_BLOCKS_PER_REQUEST,
};
use quorate_ledger::codec;
use serde::Serialize;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Requests this process sent to peers (for `/metrics` and `quorate bench`).
pub static SENT_MESSAGES: AtomicU64 = AtomicU64::new(0);
/// Bytes of frames (requests and answers, with their length prefix) this process sent to peers.
pub static SENT_BYTES: AtomicU64 = AtomicU64::new(0);

/// The largest frame read or written.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Frames above this size are read against the shared budget.
pub const LARGE_FRAME_BYTES: usize = 1024 * 1024;
/// Bytes of large frames read at once, over all peers and streams.
pub const LARGE_FRAMES_BUDGET: usize = 256 * 1024 * 1024;
/// Large frames refused since start because the budget was spent (not scored: an honest peer's
/// big answer can meet a flood; the requester asks again).
pub static LARGE_FRAMES_REFUSED: AtomicU64 = AtomicU64::new(0);

/// The codec, with the large-frame budget its clones (one per connection and stream) share.
#[derive(Clone)]
pub struct WireCodec {
    budget: Arc<FrameBudget>,
}

impl WireCodec {
    pub fn new(budget_bytes: usize) -> Self {
        WireCodec {
            budget: Arc::new(FrameBudget {
                available: AtomicUsize::new(budget_bytes),
            }),
        }
    }
}

impl Default for WireCodec {
    fn default() -> Self {
        WireCodec::new(LARGE_FRAMES_BUDGET)
    }
}

struct FrameBudget {
    available: AtomicUsize,
}

/// Bytes taken from the budget, given back when dropped (also when the read fails midway).
struct Reservation<'a> {
    budget: &'a FrameBudget,
    bytes: usize,
}

impl FrameBudget {
    fn reserve(&self, bytes: usize) -> Option<Reservation<'_>> {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| {
                available.checked_sub(bytes)
            })
            .ok()?;
        Some(Reservation {
            budget: self,
            bytes,
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget
            .available
            .fetch_add(self.bytes, Ordering::AcqRel);
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: &FrameBudget,
) -> io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    io.read_exact(&mut length).await?;
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {length} bytes exceeds {MAX_FRAME_BYTES}"),
        ));
    }
    let _reservation = if length > LARGE_FRAME_BYTES {
        match budget.reserve(length) {
            Some(reservation) => Some(reservation),
            None => {
                LARGE_FRAMES_REFUSED.fetch_add(1, Ordering::Relaxed);
                return Err(io::Error::other(format!(
                    "frame of {length} bytes refused: large frames in flight exhaust the budget"
                )));
            }
        }
    } else {
        None
    };
    // Grows as bytes arrive: a prefix that lies about the length costs nothing.
    let mut bytes = Vec::with_capacity(length.min(64 * 1024));
    (&mut *io)
        .take(length as u64)
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() != length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame ended after {} of {length} bytes", bytes.len()),
        ));
    }
    Ok(bytes)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {MAX_FRAME_BYTES}", bytes.len()),
        ));
    }
    io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    io.write_all(bytes).await?;
    SENT_BYTES.fetch_add(4 + bytes.len() as u64, Ordering::Relaxed);
    io.close().await
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    codec::decode(bytes).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    codec::encode(value).map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))
}

impl libp2p::request_response::Codec for WireCodec {
    type Protocol = libp2p::StreamProtocol;
    type Request = NetRequest;
    type Response = NetResponse;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<NetRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, &self.budget)
            .await
            .and_then(|bytes| decode(&bytes))
        {
            Ok(request) => Ok(request),
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                Ok(NetRequest::Undecodable(error.to_string()))
            }
            Err(error) => Err(error),
        }
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<NetResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode(&read_frame(io, &self.budget).await?)
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        request: NetRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&request)?).await?;
        SENT_MESSAGES.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        response: NetResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&response)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    fn frame(length: u32, body: &[u8]) -> Vec<u8> {
        let mut bytes = length.to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn a_length_prefix_that_lies_costs_nothing_and_ends_in_an_error() {
        futures::executor::block_on(async {
            let budget = FrameBudget {
                available: AtomicUsize::new(LARGE_FRAMES_BUDGET),
            };
            // Claims 16 MiB, sends 10 bytes.
            let mut io = Cursor::new(frame(MAX_FRAME_BYTES as u32, &[7; 10]));
            let error = read_frame(&mut io, &budget).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
            // Its reservation was given back.
            assert_eq!(
                budget.available.load(Ordering::Acquire),
                LARGE_FRAMES_BUDGET
            );
            let mut io = Cursor::new(frame(MAX_FRAME_BYTES as u32 + 1, &[]));
            let error = read_frame(&mut io, &budget).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            let mut io = Cursor::new(frame(3, &[1, 2, 3]));
            assert_eq!(read_frame(&mut io, &budget).await.unwrap(), vec![1, 2, 3]);
        });
    }

    #[test]
    fn large_frames_in_flight_are_refused_past_the_shared_budget() {
        let budget = FrameBudget {
            available: AtomicUsize::new(3 * LARGE_FRAME_BYTES),
        };
        let big = LARGE_FRAME_BYTES + 1;
        let first = budget.reserve(big).expect("room for one");
        let second = budget.reserve(big).expect("room for two");
        assert!(
            budget.reserve(big).is_none(),
            "the third exceeds the budget"
        );
        let refused_before = LARGE_FRAMES_REFUSED.load(Ordering::Relaxed);
        futures::executor::block_on(async {
            let mut io = Cursor::new(frame(big as u32, &vec![0; big]));
            let error = read_frame(&mut io, &budget).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::Other);
        });
        assert!(LARGE_FRAMES_REFUSED.load(Ordering::Relaxed) > refused_before);
        drop(first);
        drop(second);
        // Small frames never touch the budget; with room again a large one reads.
        futures::executor::block_on(async {
            let mut io = Cursor::new(frame(big as u32, &vec![9; big]));
            assert_eq!(read_frame(&mut io, &budget).await.unwrap().len(), big);
        });
        assert_eq!(
            budget.available.load(Ordering::Acquire),
            3 * LARGE_FRAME_BYTES
        );
    }
}
