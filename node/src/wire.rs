//! What validators say to each other over libp2p, and its length-limited framing.
//!
//! Every message is a request on the `/quorate/1` request-response protocol, framed as a 4-byte
//! big-endian length and the canonical (bincode) encoding. A frame longer than
//! [`MAX_FRAME_BYTES`] is refused before anything is allocated for it.

use futures::prelude::*;
use quorate_consensus::Message;
use quorate_crypto::Digest;
use quorate_ledger::{codec, Batch, CommittedBlock};
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests this process sent to peers (for `/metrics` and `quorate bench`).
pub static SENT_MESSAGES: AtomicU64 = AtomicU64::new(0);
/// Bytes of frames (requests and answers, with their length prefix) this process sent to peers.
pub static SENT_BYTES: AtomicU64 = AtomicU64::new(0);

/// The largest frame read or written.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Batches asked for in one request at most.
pub const MAX_BATCHES_PER_REQUEST: usize = 64;
/// Committed blocks asked for in one sync request at most.
pub const MAX_BLOCKS_PER_REQUEST: u64 = 64;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum NetRequest {
    /// A consensus message (point to point or to all).
    Consensus(Message),
    /// A batch of transactions from the sender's mempool.
    Batch(Batch),
    /// The batch digests of a payload the sender proposes.
    Manifest {
        payload: Digest,
        batches: Vec<Digest>,
    },
    GetManifest(Digest),
    GetBatches(Vec<Digest>),
    /// Committed blocks from `from` on (sync).
    GetCommitted {
        from: u64,
        count: u64,
    },
    /// Never sent: what the codec hands up in place of a frame that was too long or did not
    /// decode, so the network can score the peer (the request-response behaviour does not report
    /// failures that happen while a request is read).
    #[serde(skip)]
    Undecodable(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum NetResponse {
    Ack,
    Manifest(Option<Vec<Digest>>),
    Batches(Vec<Batch>),
    Committed(Vec<CommittedBlock>),
}

#[derive(Clone, Default)]
pub struct WireCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    io.read_exact(&mut length).await?;
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {length} bytes exceeds {MAX_FRAME_BYTES}"),
        ));
    }
    let mut bytes = vec![0u8; length];
    io.read_exact(&mut bytes).await?;
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
        match read_frame(io).await.and_then(|bytes| decode(&bytes)) {
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
        decode(&read_frame(io).await?)
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
