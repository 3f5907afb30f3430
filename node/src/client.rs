//! A small blocking HTTP/1.1 client for the CLI's RPC calls (`tx`, `query`, `localnet`).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest response body read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

pub struct RpcClient {
    host: String,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl RpcClient {
    /// `url` is `http://HOST:PORT` (a trailing slash is fine).
    pub fn new(url: &str) -> Result<Self> {
        let host = url
            .strip_prefix("http://")
            .with_context(|| format!("RPC URL {url:?} must start with http://"))?
            .trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            bail!("RPC URL {url:?} must be http://HOST:PORT");
        }
        Ok(RpcClient { host: host.into() })
    }

    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Reply> {
        let mut stream = TcpStream::connect(&self.host)
            .with_context(|| format!("connecting to the node's RPC at {}", self.host))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut response)
            .context("reading the RPC response")?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("malformed HTTP response")?;
        let head = String::from_utf8_lossy(&response[..split]);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("malformed HTTP status line")?;
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        let mut payload = response[split + 4..].to_vec();
        if chunked {
            payload = dechunk(&payload)?;
        }
        let body = if payload.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into()))
        };
        Ok(Reply { status, body })
    }

    pub fn get(&self, path: &str) -> Result<Reply> {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Result<Reply> {
        self.call("POST", path, Some(body))
    }

    /// GET that must succeed (2xx); an error reply becomes an error naming the node's reason.
    pub fn get_ok(&self, path: &str) -> Result<Value> {
        let reply = self.get(path)?;
        reply.ok()
    }
}

impl Reply {
    pub fn ok(self) -> Result<Value> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        let reason = self
            .body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| self.body.to_string());
        bail!("node answered {}: {reason}", self.status)
    }
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("malformed chunk")?;
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("malformed chunk size")?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}
