//! The HTTP/JSON API on a Unix socket (docs/api.yaml). The caller is who the kernel says it is
//! (SO_PEERCRED); bodies are limited to [`MAX_BODY`]; every error is a JSON `{"error": "..."}`
//! with a 4xx/5xx status. The socket is open to every local user, so no one of them may hold
//! the daemon's descriptors: connections are counted per uid and in all ([`ApiLimits`]), and a
//! connection that sends no request head, or no body, in time is closed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::core::{
    refuse_attribute, Action, AdFilter, BulkSelection, Cmd, CoreError, Edit, Reply, Stream,
};
use crate::types::*;

/// An API error: HTTP status and a one-line message.
#[derive(Debug, Clone)]
pub struct ApiErr {
    pub code: u16,
    pub msg: String,
}

impl ApiErr {
    pub fn new(code: u16, msg: impl Into<String>) -> Self {
        ApiErr {
            code,
            msg: msg.into(),
        }
    }
}

/// The one place the core's refusals become HTTP statuses.
impl From<CoreError> for ApiErr {
    fn from(e: CoreError) -> ApiErr {
        let code = match &e {
            CoreError::BadRequest(_) => 400,
            CoreError::Forbidden(_) => 403,
            CoreError::NotFound(_) => 404,
            CoreError::Conflict(_) => 409,
            CoreError::ExceedsNode(_) => 422,
            CoreError::Full(_) => 507,
            CoreError::Internal(_) | CoreError::Store(_) | CoreError::Spawner(_) => 500,
        };
        ApiErr::new(code, e.to_string())
    }
}

pub const MAX_BODY: usize = 1 << 20;
/// A submit file's cluster comes in one request (all or nothing): a larger limit.
pub const MAX_CLUSTER_BODY: usize = 64 << 20;

/// The body limit of a request to `path`.
fn body_limit(path: &str) -> usize {
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    if matches!(p.as_slice(), ["v1", "clusters", _, "jobs"]) {
        MAX_CLUSTER_BODY
    } else {
        MAX_BODY
    }
}
/// The most of a job's output one request returns (the tail beyond this is cut).
pub const MAX_OUTPUT: u64 = 64 << 20;

/// How much of the daemon API clients may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiLimits {
    /// Open connections in all; the last [`ROOT_RESERVED_CONNECTIONS`] of them only for root.
    pub max_connections: usize,
    /// Open connections of one non-root uid.
    pub max_connections_per_uid: usize,
    /// A connection must send a whole request head within this of connecting or of its last
    /// answer (an idle keep-alive and a trickled head end alike).
    pub idle_timeout: Duration,
    /// A request's body must have arrived within this of its head, and a client that reads
    /// nothing of its answer for this long is dropped.
    pub body_timeout: Duration,
}

/// Connections only root may open: root's `jobcell q` works while users hold the rest.
pub const ROOT_RESERVED_CONNECTIONS: usize = 16;

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: 4096,
            max_connections_per_uid: 64,
            idle_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(60),
        }
    }
}

/// Open connections, in all and per uid.
#[derive(Default)]
struct Open {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// One admitted connection; gives its place back when dropped.
struct Admitted {
    open: Arc<Mutex<Open>>,
    uid: u32,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(|e| e.into_inner());
        o.total -= 1;
        if let Some(n) = o.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                o.by_uid.remove(&self.uid);
            }
        }
    }
}

/// Why a connection was not admitted: the status and one line for the client.
fn admit(open: &Arc<Mutex<Open>>, limits: &ApiLimits, uid: u32) -> Result<Admitted, (u16, String)> {
    let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
    let cap = if uid == 0 {
        limits.max_connections
    } else {
        limits
            .max_connections
            .saturating_sub(ROOT_RESERVED_CONNECTIONS)
    };
    if o.total >= cap {
        return Err((
            503,
            format!(
                "the daemon is at its connection limit ({} open); try again later",
                o.total
            ),
        ));
    }
    let mine = o.by_uid.get(&uid).copied().unwrap_or(0);
    if uid != 0 && mine >= limits.max_connections_per_uid {
        return Err((
            429,
            format!(
                "too many connections from uid {uid} (at most {} at once); close some and try again",
                limits.max_connections_per_uid
            ),
        ));
    }
    o.total += 1;
    *o.by_uid.entry(uid).or_insert(0) += 1;
    Ok(Admitted {
        open: open.clone(),
        uid,
    })
}

/// At most one log line per [`LOG_EVERY`] about one kind of trouble, saying how many were
/// not logged: a flood must not fill the journal.
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl RateLimitedLog {
    const fn new() -> Self {
        RateLimitedLog {
            last: None,
            suppressed: 0,
        }
    }

    fn warn(&mut self, line: impl FnOnce() -> String) {
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        let more = match std::mem::take(&mut self.suppressed) {
            0 => String::new(),
            n => format!(" ({n} more since the last such line)"),
        };
        let line = line();
        warn!("{line}{more}");
        self.last = Some(Instant::now());
    }
}

/// The whole answer to a connection that was not admitted, sent without reading its request
/// (a fresh socket's send buffer holds it, so the accept loop never waits on the client).
fn refuse(stream: UnixStream, code: u16, msg: String) {
    let body = serde_json::to_vec(&ApiError { error: msg }).unwrap_or_default();
    let reason = if code == 429 {
        "Too Many Requests"
    } else {
        "Service Unavailable"
    };
    let mut resp = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(&body);
    let _ = stream.try_write(&resp);
    // Read what already came: closing a Unix socket with unread data makes the client's read
    // fail with ECONNRESET once it has read the answer.
    let mut sink = [0u8; 4096];
    while matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {}
}

/// A connection whose answers must be read: a client that takes none of its answer for
/// `stall` (an answer holds up to [`MAX_OUTPUT`] of job output in the daemon's memory) gets
/// its connection closed.
struct ReadOrDrop<S> {
    inner: S,
    stall: Duration,
    since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> ReadOrDrop<S> {
    fn new(inner: S, stall: Duration) -> Self {
        ReadOrDrop {
            inner,
            stall,
            since: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadOrDrop<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadOrDrop<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.since = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = this.stall;
                let timer = this
                    .since
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.since = None;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client read nothing of its answer",
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub async fn serve(listener: UnixListener, tx: Sender<Cmd>, limits: ApiLimits) {
    let open = Arc::new(Mutex::new(Open::default()));
    let mut refusals = RateLimitedLog::new();
    let mut accept_errors = RateLimitedLog::new();
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => {
                backoff = Duration::ZERO;
                s
            }
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or memory: the pending connection stays
                // in the backlog; wait for some to close instead of retrying at once.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                accept_errors.warn(|| format!("accept: {e}; waiting {backoff:?}"));
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let uid = match stream.peer_cred() {
            Ok(c) => c.uid(),
            Err(e) => {
                warn!("peer credentials: {e}");
                continue;
            }
        };
        let admitted = match admit(&open, &limits, uid) {
            Ok(a) => a,
            Err((code, msg)) => {
                refusals.warn(|| format!("refused a connection of uid {uid}: {msg}"));
                refuse(stream, code, msg);
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            let body_timeout = limits.body_timeout;
            let svc =
                hyper::service::service_fn(move |req| handle(req, uid, tx.clone(), body_timeout));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .max_buf_size(MAX_BODY + 64 * 1024)
                .timer(TokioTimer::new())
                .header_read_timeout(limits.idle_timeout)
                .serve_connection(
                    TokioIo::new(ReadOrDrop::new(stream, limits.body_timeout)),
                    svc,
                )
                .await
            {
                debug!("connection: {e}");
            }
        });
    }
}

/// `GET /metrics` alone on a loopback TCP listener (`[node] metrics_listen`), for a
/// Prometheus that cannot reach a Unix socket. Nothing else is served there: TCP has no peer
/// credentials.
pub async fn serve_metrics(listener: tokio::net::TcpListener, tx: Sender<Cmd>, limits: ApiLimits) {
    // Any local user can reach a loopback port too: bounded like the API socket, with no
    // uid to count by (a scraper needs one connection).
    let open = Arc::new(Mutex::new(Open::default()));
    let metrics_limits = ApiLimits {
        max_connections: METRICS_MAX_CONNECTIONS,
        ..limits
    };
    let mut refusals = RateLimitedLog::new();
    let mut accept_errors = RateLimitedLog::new();
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => {
                backoff = Duration::ZERO;
                s
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                accept_errors.warn(|| format!("metrics accept: {e}; waiting {backoff:?}"));
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        // Counted as root's: only the total cap applies.
        let admitted = match admit(&open, &metrics_limits, 0) {
            Ok(a) => a,
            Err((_, msg)) => {
                refusals.warn(|| format!("refused a metrics connection: {msg}"));
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let tx = tx.clone();
                async move {
                    let r = match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => metrics(&tx).await,
                        (m, p) => Err(ApiErr::new(
                            404,
                            format!("no such endpoint: {m} {p} (only GET /metrics here)"),
                        )),
                    };
                    Ok::<_, Infallible>(r.unwrap_or_else(err))
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.idle_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!("metrics connection: {e}");
            }
        });
    }
}

/// Open connections on the metrics port.
const METRICS_MAX_CONNECTIONS: usize = 16;

async fn metrics(tx: &Sender<Cmd>) -> Result<Resp, ApiErr> {
    let text = ask(tx, |reply| Cmd::Metrics { reply }).await?;
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Either::Left(Full::new(Bytes::from(text))))
        .expect("valid response"))
}

/// A whole answer, or a followed output's stream.
type Resp = Response<Either<Full<Bytes>, FollowBody>>;

fn json<T: serde::Serialize>(code: u16, v: &T) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Either::Left(Full::new(Bytes::from(body))))
        .expect("valid response")
}

fn err(e: ApiErr) -> Resp {
    json(e.code, &ApiError { error: e.msg })
}

async fn ask<T>(tx: &Sender<Cmd>, f: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, ApiErr> {
    let (rtx, rrx) = oneshot::channel();
    tx.send(f(rtx))
        .map_err(|_| ApiErr::new(503, "the daemon is shutting down"))?;
    rrx.await
        .map_err(|_| ApiErr::new(503, "the daemon is shutting down"))?
        .map_err(ApiErr::from)
}

async fn body_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<T, ApiErr> {
    decode_body(&body_bytes(req, timeout).await?)
}

async fn body_bytes(req: Request<Incoming>, timeout: Duration) -> Result<Bytes, ApiErr> {
    let limit = body_limit(req.uri().path());
    let collected = tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect())
        .await
        .map_err(|_| {
            ApiErr::new(
                408,
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs_f64()
                ),
            )
        })?;
    let body = collected
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiErr::new(413, format!("request body larger than {limit} bytes"))
            } else {
                ApiErr::new(400, format!("reading the request body: {e}"))
            }
        })?
        .to_bytes();
    Ok(body)
}

/// Decodes a request body as every endpoint does, with no I/O (fuzzed: `fuzz/api_decode`):
/// an empty body stands for `{}`; otherwise one JSON value of `T` (unknown fields refused where
/// `T` says so). Errors are 400 with one line.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiErr> {
    if body.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiErr::new(400, format!("empty request body: {e}")));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiErr::new(400, escape_controls(&format!("invalid JSON: {e}"))))
}

/// serde_json quotes the offending field name or string value in its message; a `\n` in it
/// would make the error (and the line the CLI prints) two lines (found by fuzzing).
fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .flat_map(|c| {
            let v: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            v
        })
        .collect()
}

/// The body of `POST /v1/jobs/ID/hold`: an optional reason, one line of at most 1024 bytes.
pub fn decode_hold(body: &[u8]) -> Result<Option<String>, ApiErr> {
    let h: HoldRequest = decode_body(body)?;
    if let Some(r) = &h.reason {
        check_hold_reason(r)?;
    }
    Ok(h.reason)
}

fn check_hold_reason(r: &str) -> Result<(), ApiErr> {
    if r.len() > 1024 || r.contains('\n') {
        return Err(ApiErr::new(
            400,
            "hold reason must be one line of at most 1024 bytes",
        ));
    }
    Ok(())
}

/// A job or cluster id in a path.
pub fn parse_id(s: &str) -> Result<u64, ApiErr> {
    s.parse()
        .map_err(|_| ApiErr::new(400, format!("'{s}' is not a job id (a positive integer)")))
}

fn query_u32(req: &Request<Incoming>, key: &str) -> Result<Option<u32>, ApiErr> {
    query_num(req, key)
}

fn query_num<T: std::str::FromStr>(
    req: &Request<Incoming>,
    key: &str,
) -> Result<Option<T>, ApiErr> {
    let Some(q) = req.uri().query() else {
        return Ok(None);
    };
    for kv in q.split('&') {
        if let Some(v) = kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
            return v
                .parse()
                .map(Some)
                .map_err(|_| ApiErr::new(400, format!("query {key}={v} is not a number")));
        }
    }
    Ok(None)
}

/// A 0/1 query flag.
fn query_flag(req: &Request<Incoming>, key: &str) -> Result<bool, ApiErr> {
    match query_num::<u8>(req, key)? {
        None | Some(0) => Ok(false),
        Some(1) => Ok(true),
        Some(v) => Err(ApiErr::new(400, format!("query {key}={v} must be 0 or 1"))),
    }
}

/// Every value of query parameter `key`, percent-decoded.
fn query_values(req: &Request<Incoming>, key: &str) -> Result<Vec<String>, ApiErr> {
    let Some(q) = req.uri().query() else {
        return Ok(Vec::new());
    };
    q.split('&')
        .filter_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(|v| {
            percent_decode(v).ok_or_else(|| {
                ApiErr::new(
                    400,
                    format!("query {key}={}: bad percent-encoding", escape_controls(v)),
                )
            })
        })
        .collect()
}

/// A constraint as the daemon evaluates it; a bad one is a 400 naming its column.
fn parse_constraint(text: &str) -> Result<jobcell_classad::Expr, ApiErr> {
    jobcell_classad::Expr::parse(text)
        .map_err(|e| ApiErr::new(400, format!("constraint '{}': {e}", escape_controls(text))))
}

/// The `constraint` and `owner` query parameters of the list endpoints.
fn ad_filter(req: &Request<Incoming>) -> Result<AdFilter, ApiErr> {
    let mut constraints = query_values(req, "constraint")?;
    if constraints.len() > 1 {
        return Err(ApiErr::new(400, "give one constraint (join them with &&)"));
    }
    Ok(AdFilter {
        constraint: constraints
            .pop()
            .as_deref()
            .map(parse_constraint)
            .transpose()?,
        owners: query_values(req, "owner")?,
        clusters: query_values(req, "cluster")?
            .iter()
            .map(|c| {
                c.parse().map_err(|_| {
                    ApiErr::new(
                        400,
                        format!("query cluster={}: not a cluster id", escape_controls(c)),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    })
}

/// The body of `POST /v1/actions` as the core takes it.
fn bulk_selection(r: BulkActionRequest) -> Result<BulkSelection, ApiErr> {
    if r.ids.is_empty() && r.procs.is_empty() && r.constraint.is_none() {
        return Err(ApiErr::new(
            400,
            "select the jobs: ids, procs or a constraint",
        ));
    }
    if r.action != BulkAction::Edit && (r.attribute.is_some() || r.value.is_some()) {
        return Err(ApiErr::new(400, "attribute and value are only for edit"));
    }
    let action = match (r.action, r.reason) {
        (BulkAction::Edit, None) => {
            let (Some(attribute), Some(value)) = (r.attribute, r.value) else {
                return Err(ApiErr::new(400, "edit needs an attribute and a value"));
            };
            // HTCondor's spellings of a job's own custom attribute.
            let attribute = attribute
                .strip_prefix('+')
                .or_else(|| attribute.strip_prefix("MY."))
                .unwrap_or(&attribute)
                .to_string();
            if let Some(why) = refuse_attribute(&attribute) {
                return Err(ApiErr::new(400, why));
            }
            if value.len() > 64 << 10 {
                return Err(ApiErr::new(400, "the value is longer than 64 KiB"));
            }
            jobcell_classad::Expr::parse(&value)
                .map_err(|e| ApiErr::new(400, format!("value '{value}': {e}")))?;
            Action::Edit(Box::new(Edit { attribute, value }))
        }
        (BulkAction::Hold, reason) => {
            if let Some(r) = &reason {
                check_hold_reason(r)?;
            }
            Action::Hold(reason)
        }
        (_, Some(_)) => return Err(ApiErr::new(400, "a reason is only for hold")),
        (BulkAction::Remove, None) => Action::Remove,
        (BulkAction::Release, None) => Action::Release,
        (BulkAction::Suspend, None) => Action::Suspend,
        (BulkAction::Continue, None) => Action::Continue,
    };
    Ok(BulkSelection {
        action,
        ids: r.ids,
        procs: r.procs,
        constraint: r.constraint.as_deref().map(parse_constraint).transpose()?,
    })
}

async fn handle(
    req: Request<Incoming>,
    uid: u32,
    tx: Sender<Cmd>,
    body_timeout: Duration,
) -> Result<Resp, Infallible> {
    if let Some(len) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        let limit = body_limit(req.uri().path());
        if len > limit as u64 {
            return Ok(err(ApiErr::new(
                413,
                format!("request body of {len} bytes is larger than {limit}"),
            )));
        }
    }
    Ok(match route(req, uid, &tx, body_timeout).await {
        Ok(r) => r,
        Err(e) => err(e),
    })
}

async fn route(
    req: Request<Incoming>,
    uid: u32,
    tx: &Sender<Cmd>,
    body_timeout: Duration,
) -> Result<Resp, ApiErr> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, parts.as_slice()) {
        (&Method::GET, ["v1", "status"]) => {
            Ok(json(200, &ask(tx, |reply| Cmd::Status { reply }).await?))
        }
        (&Method::GET, ["v1", "top"]) => Ok(json(200, &ask(tx, |reply| Cmd::Top { reply }).await?)),
        (&Method::GET, ["v1", "jobs"]) => {
            let filter = ad_filter(&req)?;
            Ok(json(
                200,
                &ask(tx, |reply| Cmd::List {
                    caller: uid,
                    filter,
                    reply,
                })
                .await?,
            ))
        }
        (&Method::POST, ["v1", "actions"]) => {
            let r: BulkActionRequest = body_json(req, body_timeout).await?;
            let sel = bulk_selection(r)?;
            Ok(json(
                200,
                &ask(tx, |reply| Cmd::ActMany {
                    caller: uid,
                    sel: Box::new(sel),
                    reply,
                })
                .await?,
            ))
        }
        (&Method::POST, ["v1", "jobs"]) => {
            let r: SubmitRequest = body_json(req, body_timeout).await?;
            let resp = ask(tx, |reply| Cmd::Submit {
                caller: uid,
                req: Box::new(r),
                reply,
            })
            .await?;
            Ok(json(201, &resp))
        }
        (&Method::GET, ["metrics"] | ["v1", "metrics"]) => metrics(tx).await,
        (&Method::POST, ["v1", "clusters"]) => {
            let r = ask(tx, |reply| Cmd::NewCluster { caller: uid, reply }).await?;
            Ok(json(201, &r))
        }
        (&Method::POST, ["v1", "clusters", c, "jobs"]) => {
            let cluster = c.parse().map_err(|_| {
                ApiErr::new(
                    400,
                    format!("'{c}' is not a cluster id (a positive integer)"),
                )
            })?;
            let r: ClusterSubmitRequest = body_json(req, body_timeout).await?;
            let resp = ask(tx, |reply| Cmd::SubmitCluster {
                caller: uid,
                cluster,
                req: Box::new(r),
                reply,
            })
            .await?;
            Ok(json(201, &resp))
        }
        (&Method::GET, ["v1", "jobs", id, "ad"]) => {
            let id = parse_id(id)?;
            Ok(json(
                200,
                &ask(tx, |reply| Cmd::Ad {
                    caller: uid,
                    id,
                    reply,
                })
                .await?,
            ))
        }
        (&Method::GET, ["v1", "history"]) => {
            let limit = query_u32(&req, "limit")?.unwrap_or(1000).min(100_000);
            let filter = ad_filter(&req)?;
            Ok(json(
                200,
                &ask(tx, |reply| Cmd::History {
                    caller: uid,
                    limit,
                    filter,
                    reply,
                })
                .await?,
            ))
        }
        (&Method::GET, ["v1", "jobs", id]) => {
            let id = parse_id(id)?;
            Ok(json(200, &ask(tx, |reply| Cmd::Get { id, reply }).await?))
        }
        (&Method::DELETE, ["v1", "jobs", id]) => {
            let id = parse_id(id)?;
            act(tx, uid, id, Action::Remove).await
        }
        (&Method::POST, ["v1", "jobs", id, verb]) => {
            let id = parse_id(id)?;
            let action = match *verb {
                "hold" => Action::Hold(decode_hold(&body_bytes(req, body_timeout).await?)?),
                "release" => Action::Release,
                "suspend" => Action::Suspend,
                "continue" => Action::Continue,
                "remove" => Action::Remove,
                v => {
                    return Err(ApiErr::new(
                        404,
                        format!("no action '{v}' (hold, release, suspend, continue, remove)"),
                    ))
                }
            };
            act(tx, uid, id, action).await
        }
        (&Method::GET, ["v1", "jobs", id, "events"]) => {
            let id = parse_id(id)?;
            Ok(json(
                200,
                &ask(tx, |reply| Cmd::Events {
                    caller: uid,
                    id,
                    reply,
                })
                .await?,
            ))
        }
        (&Method::GET, ["v1", "jobs", id, "usage"]) => {
            let id = parse_id(id)?;
            let p = ask(tx, |reply| Cmd::Usage {
                caller: uid,
                id,
                reply,
            })
            .await?;
            let series = tokio::task::spawn_blocking(move || crate::usage::read(&p))
                .await
                .map_err(|e| ApiErr::new(500, e.to_string()))?
                .map_err(|e| ApiErr::new(500, e.to_string()))?;
            Ok(json(200, &series.unwrap_or_default()))
        }
        (&Method::GET, ["v1", "jobs", id, "wait"]) => {
            let id = parse_id(id)?;
            let secs = query_num::<f64>(&req, "timeout")?.unwrap_or(WAIT_DEFAULT_SECS);
            let within = Duration::try_from_secs_f64(secs.min(WAIT_MAX_SECS)).map_err(|_| {
                ApiErr::new(
                    400,
                    format!("query timeout={secs} is not a number of seconds"),
                )
            })?;
            let held_ends = query_flag(&req, "held_ends")?;
            Ok(json(200, &wait_end(tx, id, held_ends, within).await?))
        }
        (&Method::GET, ["v1", "jobs", id, which @ ("stdout" | "stderr")]) => {
            let id = parse_id(id)?;
            let which = if *which == "stdout" {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            if query_flag(&req, "follow")? {
                let offset = query_num::<u64>(&req, "offset")?.unwrap_or(0);
                return follow(tx, uid, id, which, offset).await;
            }
            let p = ask(tx, |reply| Cmd::Output {
                caller: uid,
                id,
                which,
                reply,
            })
            .await?;
            let data = tokio::task::spawn_blocking(move || read_output(&p))
                .await
                .map_err(|e| ApiErr::new(500, e.to_string()))??;
            Ok(Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .body(Either::Left(Full::new(Bytes::from(data))))
                .expect("valid response"))
        }
        (_, ["v1", ..]) => Err(ApiErr::new(
            if matches!(method, Method::GET | Method::POST | Method::DELETE) {
                404
            } else {
                405
            },
            format!("no such endpoint: {method} {path}"),
        )),
        _ => Err(ApiErr::new(
            404,
            format!("no such endpoint: {method} {path} (the API is under /v1)"),
        )),
    }
}

async fn act(tx: &Sender<Cmd>, uid: u32, id: u64, action: Action) -> Result<Resp, ApiErr> {
    let info = ask(tx, |reply| Cmd::Act {
        caller: uid,
        id,
        action,
        reply,
    })
    .await?;
    Ok(json(200, &info))
}

/// How long `GET /v1/jobs/{id}/wait` waits by default, and at most: the client asks again.
pub const WAIT_DEFAULT_SECS: f64 = 30.0;
pub const WAIT_MAX_SECS: f64 = 300.0;

/// The job once it has ended, or as it is when `within` has passed.
async fn wait_end(
    tx: &Sender<Cmd>,
    id: u64,
    held_ends: bool,
    within: Duration,
) -> Result<JobInfo, ApiErr> {
    let (rtx, rrx) = oneshot::channel();
    tx.send(Cmd::WaitEnd {
        id,
        held_ends,
        reply: rtx,
    })
    .map_err(|_| ApiErr::new(503, "the daemon is shutting down"))?;
    match tokio::time::timeout(within, rrx).await {
        Ok(r) => r
            .map_err(|_| ApiErr::new(503, "the daemon is shutting down"))?
            .map_err(ApiErr::from),
        // Dropping the receiver lets the core forget the waiter.
        Err(_) => ask(tx, |reply| Cmd::Get { id, reply }).await,
    }
}

/// How often a follower looks for more output (one fstat of the open file); the job's end
/// comes from the core at once.
pub const FOLLOW_CHECK: Duration = Duration::from_millis(200);
/// The most one chunk of a followed stream carries.
const FOLLOW_CHUNK: usize = 256 << 10;

/// A followed output: chunks as the job writes them; the stream ends after the job does.
pub struct FollowBody(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl hyper::body::Body for FollowBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(hyper::body::Frame::data)))
    }
}

/// `GET /v1/jobs/{id}/stdout?follow=1`: what the job's output holds from `offset`, then what
/// it writes, until the job has ended (or is held) and the rest is sent. Owner or root only,
/// like the whole output.
async fn follow(
    tx: &Sender<Cmd>,
    uid: u32,
    id: u64,
    which: Stream,
    offset: u64,
) -> Result<Resp, ApiErr> {
    let path = ask(tx, |reply| Cmd::Output {
        caller: uid,
        id,
        which,
        reply,
    })
    .await?;
    let (etx, ended) = oneshot::channel();
    tx.send(Cmd::WaitEnd {
        id,
        held_ends: true,
        reply: etx,
    })
    .map_err(|_| ApiErr::new(503, "the daemon is shutting down"))?;
    let (out, rx) = tokio::sync::mpsc::channel(4);
    let tail = Tail {
        path,
        file: None,
        offset,
    };
    tokio::spawn(pump(tail, ended, out));
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .body(Either::Right(FollowBody(rx)))
        .expect("valid response"))
}

/// A followed output file and how far it has been sent.
struct Tail {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    offset: u64,
}

impl Tail {
    /// The next chunk past the offset; None when there is nothing new (or no file yet). A
    /// file that shrank (the job truncated it) is sent again from its start, as `tail -f`
    /// does.
    fn next_chunk(&mut self) -> Result<Option<Bytes>, ApiErr> {
        use std::os::unix::fs::FileExt;
        if self.file.is_none() {
            let Some(f) = open_output(&self.path)? else {
                return Ok(None);
            };
            let len = f
                .metadata()
                .map_err(|e| ApiErr::new(500, e.to_string()))?
                .len();
            // The start, like a whole read: at most the last MAX_OUTPUT bytes.
            self.offset = self.offset.max(len.saturating_sub(MAX_OUTPUT));
            self.file = Some(f);
        }
        let f = self.file.as_ref().expect("opened");
        let len = f
            .metadata()
            .map_err(|e| ApiErr::new(500, e.to_string()))?
            .len();
        if len < self.offset {
            self.offset = 0;
        }
        if len == self.offset {
            return Ok(None);
        }
        let mut buf = vec![0u8; ((len - self.offset) as usize).min(FOLLOW_CHUNK)];
        let n = f
            .read_at(&mut buf, self.offset)
            .map_err(|e| ApiErr::new(500, format!("{}: {e}", self.path.display())))?;
        buf.truncate(n);
        self.offset += n as u64;
        Ok((n > 0).then(|| Bytes::from(buf)))
    }
}

/// Sends a followed output until the job's end has been seen and all it wrote is sent, or the
/// client is gone. A failure aborts the stream (the client sees it cut short, not ended).
async fn pump(
    mut tail: Tail,
    mut ended: oneshot::Receiver<Result<JobInfo, CoreError>>,
    out: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut tick = tokio::time::interval(FOLLOW_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut over = false;
    let path = tail.path.clone();
    loop {
        loop {
            let r = tokio::task::spawn_blocking(move || {
                let r = tail.next_chunk();
                (tail, r)
            })
            .await;
            let chunk = match r {
                Ok((t, r)) => {
                    tail = t;
                    r
                }
                Err(e) => {
                    let _ = out.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            match chunk {
                Ok(Some(b)) => {
                    if out.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    debug!("following {}: {}", path.display(), e.msg);
                    let _ = out.send(Err(std::io::Error::other(e.msg))).await;
                    return;
                }
            }
        }
        if over {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {}
            // Ended, or the daemon is going away: one last read, then the end.
            _ = &mut ended => over = true,
            _ = out.closed() => return,
        }
    }
}

/// A job's output file opened for reading, never through a symlink; None if not there yet.
fn open_output(p: &std::path::Path) -> Result<Option<std::fs::File>, ApiErr> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ApiErr::new(500, format!("{}: {e}", p.display()))),
    };
    let meta = f.metadata().map_err(|e| ApiErr::new(500, e.to_string()))?;
    if !meta.is_file() {
        return Err(ApiErr::new(
            409,
            format!("{} is not a regular file", p.display()),
        ));
    }
    Ok(Some(f))
}

fn read_output(p: &std::path::Path) -> Result<Vec<u8>, ApiErr> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ApiErr::new(500, format!("{}: {e}", p.display()))),
    };
    let meta = f.metadata().map_err(|e| ApiErr::new(500, e.to_string()))?;
    if !meta.is_file() {
        return Err(ApiErr::new(
            409,
            format!("{} is not a regular file", p.display()),
        ));
    }
    if meta.len() > MAX_OUTPUT {
        let _ = f.seek(SeekFrom::End(-(MAX_OUTPUT as i64)));
    }
    let mut v = Vec::new();
    f.take(MAX_OUTPUT)
        .read_to_end(&mut v)
        .map_err(|e| ApiErr::new(500, e.to_string()))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_admitted_per_uid_and_in_all_with_room_for_root() {
        let limits = ApiLimits {
            max_connections: ROOT_RESERVED_CONNECTIONS + 3,
            max_connections_per_uid: 2,
            ..ApiLimits::default()
        };
        let open = Arc::new(Mutex::new(Open::default()));
        let a1 = admit(&open, &limits, 1000).unwrap();
        let _a2 = admit(&open, &limits, 1000).unwrap();
        let (code, msg) = admit(&open, &limits, 1000).err().unwrap();
        assert_eq!(code, 429);
        assert!(
            msg.contains("uid 1000") && msg.contains("at most 2"),
            "{msg}"
        );
        let _b = admit(&open, &limits, 1001).unwrap();
        // Three non-root connections fill what is not root's.
        let (code, _) = admit(&open, &limits, 1002).err().unwrap();
        assert_eq!(code, 503);
        let roots: Vec<Admitted> = (0..ROOT_RESERVED_CONNECTIONS)
            .map(|_| admit(&open, &limits, 0).unwrap())
            .collect();
        assert_eq!(admit(&open, &limits, 0).err().unwrap().0, 503);
        // A closed connection gives its place back.
        drop(a1);
        drop(roots);
        let _a3 = admit(&open, &limits, 1000).unwrap();
        let o = open.lock().unwrap();
        assert_eq!(o.total, 3);
        assert_eq!(o.by_uid.get(&0), None);
    }

    #[test]
    fn a_burst_of_refusals_is_one_line_then_a_count() {
        let mut log = RateLimitedLog::new();
        let mut lines = 0;
        for _ in 0..1000 {
            log.warn(|| {
                lines += 1;
                String::new()
            });
        }
        assert_eq!((lines, log.suppressed), (1, 999));
        log.last = Some(Instant::now() - LOG_EVERY);
        log.warn(String::new);
        assert_eq!(log.suppressed, 0);
    }

    /// Fuzzing regression (`fuzz/api_decode`): an unknown field or a string value with a
    /// newline made a two-line error.
    #[test]
    fn decode_errors_are_one_line() {
        for body in [
            &b"{\"spe\\nc\": 1}"[..],
            b"{\"x\\ny\": 2}",
            b"{\"jobs\": \"a\\nb\"}",
        ] {
            let e = decode_body::<ClusterSubmitRequest>(body).unwrap_err();
            assert_eq!(e.code, 400);
            assert!(!e.msg.contains('\n'), "{:?}", e.msg);
            assert!(e.msg.contains("\\n"), "{:?}", e.msg);
        }
        let e = decode_hold(b"{\"reason\": \"a\\nb\"}").unwrap_err();
        assert!(
            !e.msg.contains('\n') && e.msg.contains("one line"),
            "{:?}",
            e.msg
        );
        assert_eq!(decode_hold(b"").unwrap(), None);
        assert_eq!(parse_id("12").unwrap(), 12);
        assert!(parse_id("-1").is_err());
    }
}
