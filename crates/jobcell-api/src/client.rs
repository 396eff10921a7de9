//! A small blocking HTTP/1.1 client for the daemon's Unix socket: the CLI starts fast and needs
//! no runtime. Every wait is bounded: the connect (a stopped daemon's full backlog) and the
//! whole exchange (a daemon that accepted but does not answer).

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::types::{
    ApiError, BulkAction, BulkActionRequest, BulkActionResponse, ClusterResponse,
    ClusterSubmitRequest, Event, HoldRequest, JobFilter, JobInfo, NodeStatus, OutputStream,
    SubmitRequest, SubmitResponse, TopFrame, UsageSeries,
};

/// How long the CLI waits for the daemon to accept its connection, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long it waits for an answer once connected, by default.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// What the client was waiting for when its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    Connecting,
    Answer,
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Waiting::Connecting => "connecting",
            Waiting::Answer => "waiting for its answer",
        })
    }
}

/// `10 s`, `2.5 s`.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s", self.0.as_secs_f64())
    }
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("the jobcell daemon is not running (nothing is listening on {0}); start it with `jobcell daemon` or `systemctl start jobcell`")]
    NotRunning(PathBuf),
    #[error("no answer from the daemon on {} within {} ({waiting})", .path.display(), Secs(*.after))]
    Timeout {
        path: PathBuf,
        after: Duration,
        waiting: Waiting,
    },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    /// The daemon refused the request; the message is its own.
    #[error("{msg}")]
    Api { status: u16, msg: String },
    #[error("unexpected answer from the daemon: {0}")]
    BadResponse(String),
    #[error("cannot encode the request for the daemon: {0}")]
    Encode(String),
    /// A request that may have been carried out: sent, then the daemon went away.
    #[error("{0} (the daemon went away before answering: the request may have been carried out; look with `jobcell q`)")]
    Unconfirmed(Box<ClientError>),
}

impl ClientError {
    /// The connection broke or the daemon is (re)starting: a request may or may not have been
    /// carried out, so only an idempotent one may be sent again.
    pub fn is_lost_connection(&self) -> bool {
        matches!(
            self,
            ClientError::Io { .. } | ClientError::BadResponse(_) | ClientError::NotRunning(_)
        )
    }
}

pub struct Client {
    socket: PathBuf,
    connect_timeout: Duration,
    answer_timeout: Duration,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            answer_timeout: DEFAULT_ANSWER_TIMEOUT,
        }
    }

    /// Waits at most `connect` for the daemon to accept, then at most `answer` for the whole
    /// exchange.
    pub fn with_timeouts(mut self, connect: Duration, answer: Duration) -> Self {
        self.connect_timeout = connect;
        self.answer_timeout = answer;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn answer_timeout(&self) -> Duration {
        self.answer_timeout
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    fn io_err(&self, err: io::Error) -> ClientError {
        ClientError::Io {
            path: self.socket.clone(),
            err,
        }
    }

    fn timed_out(&self, waiting: Waiting) -> ClientError {
        ClientError::Timeout {
            path: self.socket.clone(),
            after: match waiting {
                Waiting::Connecting => self.connect_timeout,
                Waiting::Answer => self.answer_timeout,
            },
            waiting,
        }
    }

    /// A connection, waiting at most the connect timeout. A blocking connect to a Unix socket
    /// whose backlog is full (a stopped or saturated daemon) waits for room for as long as
    /// the socket's send timeout, and then fails with EAGAIN.
    fn connect(&self) -> Result<UnixStream, ClientError> {
        // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let path = self.socket.as_os_str().as_bytes();
        if path.len() >= addr.sun_path.len() {
            return Err(self.io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket path too long",
            )));
        }
        for (d, s) in addr.sun_path.iter_mut().zip(path) {
            *d = *s as libc::c_char;
        }
        // SAFETY: a new descriptor, owned at once.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(self.io_err(io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor no one else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let stream = UnixStream::from(fd);
        stream
            .set_write_timeout(Some(self.connect_timeout.max(Duration::from_millis(1))))
            .map_err(|e| self.io_err(e))?;
        // SAFETY: a valid address of the stated length on a socket we own.
        let r = unsafe {
            libc::connect(
                std::os::fd::AsRawFd::as_raw_fd(&stream),
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ECONNREFUSED) | Some(libc::ENOTDIR) => {
                    ClientError::NotRunning(self.socket.clone())
                }
                Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => self.timed_out(Waiting::Connecting),
                _ => self.io_err(e),
            });
        }
        Ok(stream)
    }

    /// One request; returns status and body (any status).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut s = self.connect()?;
        let deadline = Instant::now() + self.answer_timeout;
        let left = || {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
        };
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
        let mut sent = 0;
        while sent < buf.len() {
            let t = left().ok_or_else(|| self.timed_out(Waiting::Answer))?;
            s.set_write_timeout(Some(t)).map_err(|e| self.io_err(e))?;
            match s.write(&buf[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(self.timed_out(Waiting::Answer)),
                // The daemon answered and closed without reading (a refusal): read it.
                Err(e) if is_closed(&e) => break,
                Err(e) => return Err(self.io_err(e)),
            }
        }
        let mut resp = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let t = left().ok_or_else(|| self.timed_out(Waiting::Answer))?;
            s.set_read_timeout(Some(t)).map_err(|e| self.io_err(e))?;
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => resp.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(self.timed_out(Waiting::Answer)),
                // A Unix socket closed with our unread request in it reports ECONNRESET after
                // the last of its data: what came is the answer.
                Err(e) if is_closed(&e) && !resp.is_empty() => break,
                Err(e) => return Err(self.io_err(e)),
            }
        }
        parse_response(&resp)
    }

    /// A request whose 2xx answer is JSON of type T; a 4xx/5xx becomes [`ClientError::Api`].
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        self.exchange(method, path, body)
    }

    /// Like [`Client::call`] for a request the daemon carries out once however often it is
    /// sent (a submission with a `submit_key`): sent again, quietly, while the connection
    /// breaks or the daemon restarts, for as long as the connect timeout. A daemon not running
    /// at the first try is an error at once.
    pub fn call_idempotent<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        self.exchange_idempotent(method, path, body)
    }

    /// One request with a body of any serializable type; the 2xx answer's JSON as T.
    fn exchange<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let b = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Encode(e.to_string()))?;
        let (status, data) = self.raw(method, path, b.as_deref())?;
        check(status, &data)?;
        serde_json::from_slice(&data).map_err(|e| ClientError::BadResponse(e.to_string()))
    }

    fn exchange_idempotent<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        let mut sent_once = false;
        loop {
            match self.exchange(method, path, Some(body)) {
                Err(ClientError::NotRunning(p)) if !sent_once => {
                    return Err(ClientError::NotRunning(p))
                }
                Err(e) if e.is_lost_connection() => {
                    if started.elapsed() >= self.connect_timeout {
                        return Err(ClientError::Unconfirmed(Box::new(e)));
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                r => return r,
            }
            sent_once = true;
        }
    }

    /// A request whose answer is bytes (job output).
    pub fn bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let (status, data) = self.raw("GET", path, None)?;
        check(status, &data)?;
        Ok(data)
    }

    // One method per endpoint (docs/api.yaml), in the order the daemon routes them.

    /// `GET /v1/status`: the node's cores, memory and jobs by state.
    pub fn status(&self) -> Result<NodeStatus, ClientError> {
        self.exchange::<(), _>("GET", "/v1/status", None)
    }

    /// `GET /v1/top`: the node's resources and its running jobs' cgroup figures, read now.
    pub fn top(&self) -> Result<TopFrame, ClientError> {
        self.exchange::<(), _>("GET", "/v1/top", None)
    }

    /// `GET /v1/jobs`: every unfinished job (everyone's).
    pub fn queue(&self) -> Result<Vec<JobInfo>, ClientError> {
        self.exchange::<(), _>("GET", "/v1/jobs", None)
    }

    /// `GET /v1/jobs?constraint=...&owner=...`: the unfinished jobs the filter selects,
    /// chosen by the daemon.
    pub fn queue_matching(&self, filter: &JobFilter) -> Result<Vec<JobInfo>, ClientError> {
        let q = filter.query();
        let path = if q.is_empty() {
            "/v1/jobs".to_string()
        } else {
            format!("/v1/jobs?{q}")
        };
        self.exchange::<(), _>("GET", &path, None)
    }

    /// `POST /v1/jobs`. With a `submit_key` it is sent again while the connection breaks
    /// (see [`Client::call_idempotent`]); without, once.
    pub fn submit(&self, req: &SubmitRequest) -> Result<SubmitResponse, ClientError> {
        match req.submit_key {
            Some(_) => self.exchange_idempotent("POST", "/v1/jobs", req),
            None => self.exchange("POST", "/v1/jobs", Some(req)),
        }
    }

    /// `GET /metrics`: the Prometheus text.
    pub fn metrics(&self) -> Result<String, ClientError> {
        let data = self.bytes("/metrics")?;
        String::from_utf8(data).map_err(|e| ClientError::BadResponse(e.to_string()))
    }

    /// `POST /v1/clusters`: a new, empty cluster of the caller's.
    pub fn new_cluster(&self) -> Result<ClusterResponse, ClientError> {
        self.exchange::<(), _>("POST", "/v1/clusters", None)
    }

    /// `POST /v1/clusters/{cluster}/jobs`: every job of a submit file, all or nothing; resent
    /// like [`Client::submit`] when it has a `submit_key`.
    pub fn submit_cluster(
        &self,
        cluster: u64,
        req: &ClusterSubmitRequest,
    ) -> Result<SubmitResponse, ClientError> {
        let path = format!("/v1/clusters/{cluster}/jobs");
        match req.submit_key {
            Some(_) => self.exchange_idempotent("POST", &path, req),
            None => self.exchange("POST", &path, Some(req)),
        }
    }

    /// `GET /v1/jobs/{id}/ad`: the job's attributes in ClassAd form, like `condor_q -l`.
    pub fn ad(&self, id: u64) -> Result<Vec<(String, String)>, ClientError> {
        self.exchange::<(), _>("GET", &format!("/v1/jobs/{id}/ad"), None)
    }

    /// `GET /v1/history?limit=N`: the last `limit` finished jobs.
    pub fn history(&self, limit: u32) -> Result<Vec<JobInfo>, ClientError> {
        self.exchange::<(), _>("GET", &format!("/v1/history?limit={limit}"), None)
    }

    /// `GET /v1/history?limit=N&constraint=...&owner=...`: the last `limit` finished jobs the
    /// filter selects.
    pub fn history_matching(
        &self,
        limit: u32,
        filter: &JobFilter,
    ) -> Result<Vec<JobInfo>, ClientError> {
        let q = filter.query();
        let sep = if q.is_empty() { "" } else { "&" };
        self.exchange::<(), _>("GET", &format!("/v1/history?limit={limit}{sep}{q}"), None)
    }

    /// `POST /v1/actions`: one action on many jobs, in one request.
    pub fn act_on_many(&self, req: &BulkActionRequest) -> Result<BulkActionResponse, ClientError> {
        self.exchange("POST", "/v1/actions", Some(req))
    }

    /// `POST /v1/actions` with action `edit` (condor_qedit): set `attribute` to the ClassAd
    /// expression `value` on the queued or held jobs `req`'s selectors choose.
    pub fn edit(
        &self,
        mut req: BulkActionRequest,
        attribute: &str,
        value: &str,
    ) -> Result<BulkActionResponse, ClientError> {
        req.action = BulkAction::Edit;
        req.attribute = Some(attribute.to_string());
        req.value = Some(value.to_string());
        self.act_on_many(&req)
    }

    /// `GET /v1/jobs/{id}`: one job, finished or not.
    pub fn job(&self, id: u64) -> Result<JobInfo, ClientError> {
        self.exchange::<(), _>("GET", &format!("/v1/jobs/{id}"), None)
    }

    /// `DELETE /v1/jobs/{id}`: remove the job, stopping it if it runs.
    pub fn remove(&self, id: u64) -> Result<JobInfo, ClientError> {
        self.exchange::<(), _>("DELETE", &format!("/v1/jobs/{id}"), None)
    }

    /// `POST /v1/jobs/{id}/hold`: it will not start (a running job is stopped and held).
    pub fn hold(&self, id: u64, reason: Option<&str>) -> Result<JobInfo, ClientError> {
        let body = HoldRequest {
            reason: reason.map(str::to_string),
        };
        self.exchange("POST", &format!("/v1/jobs/{id}/hold"), Some(&body))
    }

    /// `POST /v1/jobs/{id}/release`: a held job back to the queue.
    pub fn release(&self, id: u64) -> Result<JobInfo, ClientError> {
        self.exchange::<(), _>("POST", &format!("/v1/jobs/{id}/release"), None)
    }

    /// `POST /v1/jobs/{id}/suspend`: freeze a running job.
    pub fn suspend(&self, id: u64) -> Result<JobInfo, ClientError> {
        self.exchange::<(), _>("POST", &format!("/v1/jobs/{id}/suspend"), None)
    }

    /// `POST /v1/jobs/{id}/continue`: thaw a suspended job.
    pub fn continue_job(&self, id: u64) -> Result<JobInfo, ClientError> {
        self.exchange::<(), _>("POST", &format!("/v1/jobs/{id}/continue"), None)
    }

    /// `GET /v1/jobs/{id}/events`: the job's event log.
    pub fn events(&self, id: u64) -> Result<Vec<Event>, ClientError> {
        self.exchange::<(), _>("GET", &format!("/v1/jobs/{id}/events"), None)
    }

    /// `GET /v1/jobs/{id}/usage`: the job's CPU, memory, IO and processes over its latest run.
    pub fn usage(&self, id: u64) -> Result<UsageSeries, ClientError> {
        self.exchange::<(), _>("GET", &format!("/v1/jobs/{id}/usage"), None)
    }

    /// `GET /v1/jobs/{id}/stdout` or `.../stderr`: what the job wrote there so far.
    pub fn output(&self, id: u64, which: OutputStream) -> Result<Vec<u8>, ClientError> {
        self.bytes(&format!("/v1/jobs/{id}/{}", which.as_str()))
    }

    /// `GET /v1/jobs/{id}/wait?timeout=S`: the job once it has ended (completed, failed,
    /// removed; held too with `held_ends`), or as it is after `within` (the caller asks again).
    pub fn wait_end(
        &self,
        id: u64,
        held_ends: bool,
        within: Duration,
    ) -> Result<JobInfo, ClientError> {
        let long = Client {
            socket: self.socket.clone(),
            connect_timeout: self.connect_timeout,
            answer_timeout: within + self.answer_timeout,
        };
        let path = format!(
            "/v1/jobs/{id}/wait?timeout={}&held_ends={}",
            within.as_secs_f64(),
            u8::from(held_ends)
        );
        long.exchange::<(), _>("GET", &path, None)
    }

    /// `GET /v1/jobs/{id}/stdout?follow=1&offset=N` (or stderr): writes to `sink`, as it
    /// comes, what the output holds from `offset` and what the job writes after, until the
    /// daemon ends the stream (the job has ended). Returns the bytes written. Only the answer's
    /// head is bounded in time: the stream lasts as long as the job.
    pub fn follow(
        &self,
        id: u64,
        which: OutputStream,
        offset: u64,
        sink: &mut dyn Write,
    ) -> Result<u64, ClientError> {
        let mut s = self.connect()?;
        let path = format!("/v1/jobs/{id}/{}?follow=1&offset={offset}", which.as_str());
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: jobcell\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        s.set_write_timeout(Some(self.answer_timeout))
            .map_err(|e| self.io_err(e))?;
        s.write_all(req.as_bytes()).map_err(|e| self.io_err(e))?;
        s.set_read_timeout(Some(self.answer_timeout))
            .map_err(|e| self.io_err(e))?;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut read_more = |s: &mut UnixStream, buf: &mut Vec<u8>| -> Result<bool, ClientError> {
            loop {
                match s.read(&mut chunk) {
                    Ok(0) => return Ok(false),
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        return Ok(true);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if is_timeout(&e) => return Err(self.timed_out(Waiting::Answer)),
                    Err(e) if is_closed(&e) => return Ok(false),
                    Err(e) => return Err(self.io_err(e)),
                }
            }
        };
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if !read_more(&mut s, &mut buf)? {
                return Err(ClientError::BadResponse(
                    "no HTTP header (did the daemon crash?)".into(),
                ));
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            // A refusal: a whole answer with its length.
            while read_more(&mut s, &mut buf)? {}
            let (status, data) = parse_response(&buf)?;
            check(status, &data)?;
            return Err(ClientError::BadResponse(format!(
                "status {status} to a follow"
            )));
        }
        if !head.contains("transfer-encoding: chunked") {
            return Err(ClientError::BadResponse(
                "a followed output must come chunked".into(),
            ));
        }
        s.set_read_timeout(None).map_err(|e| self.io_err(e))?;
        let cut = || {
            ClientError::BadResponse(
                "the daemon ended the output's stream early (restarted?); follow again to go on"
                    .into(),
            )
        };
        let bad = || ClientError::BadResponse("bad chunked encoding".into());
        let mut rest = buf.split_off(head_end);
        let mut written = 0u64;
        loop {
            let nl = loop {
                if let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                if !read_more(&mut s, &mut rest)? {
                    return Err(cut());
                }
            };
            let line = std::str::from_utf8(&rest[..nl]).map_err(|_| bad())?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad())?;
            if size == 0 {
                return Ok(written);
            }
            while rest.len() < nl + 2 + size + 2 {
                if !read_more(&mut s, &mut rest)? {
                    return Err(cut());
                }
            }
            sink.write_all(&rest[nl + 2..nl + 2 + size])
                .and_then(|()| sink.flush())
                .map_err(|err| ClientError::Io {
                    path: PathBuf::from("standard output"),
                    err,
                })?;
            written += size as u64;
            rest.drain(..nl + 2 + size + 2);
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// A fresh key for an idempotent submission: 128 random bits in hex.
pub fn new_submit_key() -> String {
    let mut b = [0u8; 16];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: getrandom into the unfilled rest of a local buffer.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if n > 0 {
            got += n as usize;
        } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // No entropy source at all: unique enough for one user's keys.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            return format!("{:x}-{t:x}", std::process::id());
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check(status: u16, data: &[u8]) -> Result<(), ClientError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let msg = serde_json::from_slice::<ApiError>(data)
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
