//! A small blocking HTTP/1.1 client for the daemon's Unix socket: the CLI starts fast and needs
//! no runtime.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("the jobcell daemon is not running (nothing is listening on {0}); start it with `jobcell daemon` or `systemctl start jobcell`")]
    NotRunning(PathBuf),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    /// The daemon refused the request; the message is its own.
    #[error("{msg}")]
    Api { status: u16, msg: String },
    #[error("unexpected answer from the daemon: {0}")]
    BadResponse(String),
}

pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
            timeout: Duration::from_secs(120),
        }
    }

    /// One request; returns status and body (any status).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let io_err = |source| ClientError::Io {
            path: self.socket.clone(),
            err: source,
        };
        let mut s = match UnixStream::connect(&self.socket) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ECONNREFUSED) | Some(libc::ENOTDIR)
                ) =>
            {
                return Err(ClientError::NotRunning(self.socket.clone()))
            }
            Err(e) => return Err(io_err(e)),
        };
        s.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io_err)?;
        let body = body.unwrap_or(b"");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: jobcell\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        let mut buf = req.into_bytes();
        buf.extend_from_slice(body);
        s.write_all(&buf).map_err(io_err)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).map_err(io_err)?;
        parse_response(&resp)
    }

    /// A request whose 2xx answer is JSON of type T; a 4xx/5xx becomes [`ClientError::Api`].
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let b = body.map(|v| serde_json::to_vec(v).unwrap_or_default());
        let (status, data) = self.raw(method, path, b.as_deref())?;
        check(status, &data)?;
        serde_json::from_slice(&data).map_err(|e| ClientError::BadResponse(e.to_string()))
    }

    /// A request whose answer is bytes (job output).
    pub fn bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let (status, data) = self.raw("GET", path, None)?;
        check(status, &data)?;
        Ok(data)
    }
}

fn check(status: u16, data: &[u8]) -> Result<(), ClientError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let msg = serde_json::from_slice::<crate::types::ApiError>(data)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(data).into_owned());
    Err(ClientError::Api { status, msg })
}

fn parse_response(r: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let end = r
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::BadResponse("no HTTP header (did the daemon crash?)".into()))?;
    let head = std::str::from_utf8(&r[..end])
        .map_err(|_| ClientError::BadResponse("header is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ClientError::BadResponse(format!("bad status line in '{head}'")))?;
    let mut len = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                len = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = r[end + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(n) = len {
        if body.len() < n {
            return Err(ClientError::BadResponse("truncated response".into()));
        }
        body.truncate(n);
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, ClientError> {
    let bad = || ClientError::BadResponse("bad chunked encoding".into());
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size = std::str::from_utf8(&b[..nl]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(bad());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
