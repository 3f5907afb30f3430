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
use quorate_ledger::{codec, Batch};
use serde::Serialize;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A request as the codec carries it. (Moved, not stored: the size of the largest variant, a
/// request by value as before, costs nothing a box would not.)
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum WireRequest {
    /// Outbound, encoded as it is written; inbound, decoded from its frame.
    Value(NetRequest),
    /// Outbound: a whole frame encoded once ([`Frame::encode`]) for every peer it goes to.
    Frame(Frame),
    /// Inbound: a batch a peer pushed, with the bytes it was decoded from (stored as they are,
    /// not encoded again).
    Batch(Arc<Batch>, EncodedBatch),
}

/// A frame as written: the length prefix and the request's canonical encoding, shared by the
/// copies that go to many peers.
#[derive(Clone, Debug)]
pub struct Frame {
    bytes: Arc<[u8]>,
    batch: bool,
}

impl Frame {
    /// Encodes `request` once, length prefix included.
    pub fn encode(request: &NetRequest) -> io::Result<Frame> {
        Ok(Frame {
            bytes: framed(request)?.into(),
            batch: matches!(request, NetRequest::Batch(_)),
        })
    }

    /// For the frame of a batch: the batch's own encoding (after the prefix and the variant
    /// tag), to store.
    pub fn batch_bytes(&self) -> Option<&[u8]> {
        self.bytes.get(4 + BATCH_TAG_BYTES..).filter(|_| self.batch)
    }
}

/// The encoding of a batch, inside the frame it arrived in.
#[derive(Clone, Debug)]
pub struct EncodedBatch(Vec<u8>);

impl EncodedBatch {
    pub fn bytes(&self) -> &[u8] {
        self.0.get(BATCH_TAG_BYTES..).unwrap_or_default()
    }
}

/// The bytes of `NetRequest::Batch`'s variant tag (a fixed-width `u32`, as every enum tag in
/// the canonical encoding): what precedes the batch's own encoding in its frame.
const BATCH_TAG_BYTES: usize = 4;

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

/// Writes a whole frame (length prefix included) in one write: one stream frame of the
/// connection, where a prefix written apart from its body took two.
async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, frame: &[u8]) -> io::Result<()> {
    io.write_all(frame).await?;
    SENT_BYTES.fetch_add(frame.len() as u64, Ordering::Relaxed);
    io.close().await
}

/// `value`'s canonical encoding after its 4-byte big-endian length, in one buffer of the exact
/// size.
fn framed<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let invalid = |error: codec::CodecError| io::Error::new(io::ErrorKind::InvalidInput, error);
    let length = codec::encoded_len(value).map_err(invalid)?;
    if length > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {length} bytes exceeds {MAX_FRAME_BYTES}"),
        ));
    }
    let mut frame = Vec::with_capacity(4 + length);
    frame.extend_from_slice(&(length as u32).to_be_bytes());
    codec::encode_append(value, &mut frame).map_err(invalid)?;
    Ok(frame)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    codec::decode(bytes).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// A request from its frame; a pushed batch keeps the frame, which holds its encoding.
fn decode_request(frame: Vec<u8>) -> io::Result<WireRequest> {
    Ok(match decode(&frame)? {
        NetRequest::Batch(batch) => {
            // Kept until the batch is stored: without the room it grew into as it was read
            // (up to twice its length).
            let mut frame = frame;
            if frame.capacity() > frame.len() + frame.len() / 8 {
                frame.shrink_to_fit();
            }
            WireRequest::Batch(batch, EncodedBatch(frame))
        }
        request => WireRequest::Value(request),
    })
}

impl libp2p::request_response::Codec for WireCodec {
    type Protocol = libp2p::StreamProtocol;
    type Request = WireRequest;
    type Response = NetResponse;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<WireRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, &self.budget).await.and_then(decode_request) {
            Ok(request) => Ok(request),
            Err(error) if error.kind() == io::ErrorKind::InvalidData => Ok(WireRequest::Value(
                NetRequest::Undecodable(error.to_string()),
            )),
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
        request: WireRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match request {
            WireRequest::Value(request) => write_frame(io, &framed(&request)?).await?,
            WireRequest::Frame(frame) => write_frame(io, &frame.bytes).await?,
            // Only ever read: written as the request it is.
            WireRequest::Batch(batch, _) => {
                write_frame(io, &framed(&NetRequest::Batch(batch))?).await?
            }
        }
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
        write_frame(io, &framed(&response)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    fn batch() -> Arc<Batch> {
        let sender = quorate_crypto::SigningKey::from_seed_insecure(7).public();
        let transactions = (0..3)
            .map(|nonce| {
                quorate_ledger::SignedTransaction::opaque("chain", sender, nonce, vec![9; 40])
                    .unwrap()
            })
            .collect();
        Arc::new(Batch { transactions })
    }

    /// What the codec writes for `request`, read back as a peer reads it.
    fn written_and_read(request: WireRequest) -> (Vec<u8>, WireRequest) {
        futures::executor::block_on(async {
            let protocol = libp2p::StreamProtocol::new("/test");
            let mut codec = WireCodec::default();
            let mut written = Cursor::new(Vec::new());
            libp2p::request_response::Codec::write_request(
                &mut codec,
                &protocol,
                &mut written,
                request,
            )
            .await
            .unwrap();
            let written = written.into_inner();
            let read = libp2p::request_response::Codec::read_request(
                &mut codec,
                &protocol,
                &mut Cursor::new(written.clone()),
            )
            .await
            .unwrap();
            (written, read)
        })
    }

    #[test]
    fn a_batch_encoded_once_is_the_frame_written_and_its_stored_bytes_are_the_batchs() {
        let batch = batch();
        let encoding = codec::encode(batch.as_ref()).unwrap();
        let frame = Frame::encode(&NetRequest::Batch(batch.clone())).unwrap();
        assert_eq!(frame.batch_bytes(), Some(encoding.as_slice()));
        // The shared frame and the request encoded as it is written are the same bytes: the
        // length prefix, then the request.
        let (shared, read) = written_and_read(WireRequest::Frame(frame.clone()));
        let (single, _) = written_and_read(WireRequest::Value(NetRequest::Batch(batch.clone())));
        assert_eq!(shared, single);
        assert_eq!(&shared[..4], &(shared.len() as u32 - 4).to_be_bytes());
        assert_eq!(
            &shared[4..],
            codec::encode(&NetRequest::Batch(batch.clone())).unwrap()
        );
        // Read back: the batch, and the bytes the store takes are its encoding.
        let WireRequest::Batch(received, encoded) = read else {
            panic!("a batch reads as a batch with its bytes");
        };
        assert_eq!(received, batch);
        assert_eq!(encoded.bytes(), encoding.as_slice());
        assert_eq!(codec::decode::<Batch>(encoded.bytes()).unwrap(), *batch);
    }

    #[test]
    fn other_requests_read_as_values_and_their_frames_hold_no_batch() {
        let request = NetRequest::GetBatches(vec![quorate_crypto::Digest([4; 32])]);
        let frame = Frame::encode(&request).unwrap();
        assert_eq!(frame.batch_bytes(), None);
        let (written, read) = written_and_read(WireRequest::Frame(frame));
        assert_eq!(&written[4..], codec::encode(&request).unwrap());
        let WireRequest::Value(NetRequest::GetBatches(digests)) = read else {
            panic!("read as the request it is");
        };
        assert_eq!(digests, vec![quorate_crypto::Digest([4; 32])]);
        // A frame that does not decode is handed up as such (the peer is scored), not an error.
        let mut garbage = 3u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xff; 3]);
        let read = futures::executor::block_on(libp2p::request_response::Codec::read_request(
            &mut WireCodec::default(),
            &libp2p::StreamProtocol::new("/test"),
            &mut Cursor::new(garbage),
        ))
        .unwrap();
        assert!(matches!(
            read,
            WireRequest::Value(NetRequest::Undecodable(_))
        ));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_it_is_written() {
        let huge = quorate_crypto::Digest([1; 32]);
        let request = NetRequest::GetBatches(vec![huge; MAX_FRAME_BYTES / 32 + 1]);
        let error = Frame::encode(&request).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

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
