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

/// An HTTP/1.1 connection kept open across requests (the bench load client's; one per node).
pub struct KeepAlive {
    host: String,
    stream: Option<std::io::BufReader<TcpStream>>,
}

impl KeepAlive {
    pub fn new(host: &str) -> Self {
        KeepAlive {
            host: host.into(),
            stream: None,
        }
    }

    /// Sends one request and returns (status, body). Reconnects once if the kept connection
    /// turned out to be closed.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        self.request_typed(method, path, "application/json", body)
    }

    /// [`KeepAlive::request`] with a body of `content_type`.
    pub fn request_typed(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let reused = self.stream.is_some();
        match self.try_request(&head, body) {
            Ok(reply) => Ok(reply),
            Err(_) if reused => {
                self.stream = None;
                self.try_request(&head, body)
            }
            Err(error) => Err(error),
        }
    }

    /// Sends `head` (the request line and headers) and `body`; reads the answer.
    fn try_request(&mut self, head: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        use std::io::BufRead;
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.host)
                .with_context(|| format!("connecting to {}", self.host))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
            self.stream = Some(std::io::BufReader::new(stream));
        }
        let reader = self.stream.as_mut().expect("connected above");
        let result = (|| {
            let stream = reader.get_mut();
            stream.write_all(head.as_bytes())?;
            stream.write_all(body)?;
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("malformed HTTP status line")?;
            let mut length = None;
            let mut chunked = false;
            let mut close = false;
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    bail!("connection closed in the response head");
                }
                let header = line.trim_end().to_ascii_lowercase();
                if header.is_empty() {
                    break;
                }
                if let Some(value) = header.strip_prefix("content-length:") {
                    length = Some(value.trim().parse::<u64>().context("content-length")?);
                } else if header.starts_with("transfer-encoding:") && header.contains("chunked") {
                    chunked = true;
                } else if header.starts_with("connection:") && header.contains("close") {
                    close = true;
                }
            }
            let mut payload = Vec::new();
            if chunked {
                loop {
                    line.clear();
                    reader.read_line(&mut line)?;
                    let size =
                        usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                            .context("malformed chunk size")?;
                    let mut chunk = vec![0u8; size + 2];
                    reader.read_exact(&mut chunk)?;
                    if size == 0 {
                        break;
                    }
                    payload.extend_from_slice(&chunk[..size]);
                    if payload.len() as u64 > MAX_RESPONSE_BYTES {
                        bail!("response too large");
                    }
                }
            } else {
                let length = length.context("response has neither length nor chunks")?;
                if length > MAX_RESPONSE_BYTES {
                    bail!("response too large");
                }
                payload.resize(length as usize, 0);
                reader.read_exact(&mut payload)?;
            }
            Ok((status, payload, close))
        })();
        match result {
            Ok((status, payload, close)) => {
                if close {
                    self.stream = None;
                }
                Ok((status, payload))
            }
            Err(error) => {
                self.stream = None;
                Err(error)
            }
        }
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
