//! A small HTTP proxy on loopback between the operator's AWS clients and moto, which either
//! answers a share of requests with throttling and server errors in each service's own wire
//! format, or stops the world after a number of successful writes (a simulated crash).
//!
//! Each accepted connection carries one request: the proxy answers with `Connection: close`,
//! which the SDK's HTTP client handles like any server that closes idle connections.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to the traffic.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Forwards everything (with the moto fix described at [`moto_compat`]).
    Clean,
    /// Answers about `percent`% of requests with an error AWS sends when it is busy (S3 SlowDown
    /// 503, KMS ThrottlingException 400, IAM/STS Throttling 400, or a 500 in each format), at most
    /// `max_faults` in all, drawn from a generator seeded with `seed`.
    Flaky { percent: u32, max_faults: u64, seed: u64 },
    /// Forwards everything until `writes` writes have succeeded, then answers every request with
    /// a non-retryable `SimulatedCrash` error: AWS is left exactly as a process killed right after
    /// that write would leave it.
    CrashAfterWrites { writes: u64 },
    /// Answers every S3 HEAD request (HeadBucket, HeadObject) with 403 Forbidden, as S3 does for
    /// a caller without `s3:ListBucket` on the bucket; forwards everything else.
    DenyS3Heads,
}

/// The AWS service and operation of a request, as far as the proxy needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub service: &'static str,
    pub operation: String,
    pub write: bool,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    faults: AtomicU64,
    writes: AtomicU64,
    crashed: AtomicBool,
    /// Every S3 request line with its `x-amz-expected-bucket-owner` header.
    s3_requests: std::sync::Mutex<Vec<(String, Option<String>)>>,
}

pub struct FaultProxy {
    endpoint: String,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts the proxy on a free loopback port, forwarding to `upstream` (`http://127.0.0.1:N`).
    pub async fn start(upstream: &str, mode: Mode) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let counters = Arc::new(Counters::default());
        let seed = match &mode {
            Mode::Flaky { seed, .. } => *seed,
            Mode::CrashAfterWrites { .. } | Mode::Clean | Mode::DenyS3Heads => 0,
        };
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let shared = counters.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let (upstream, mode, counters, rng) = (upstream.clone(), mode.clone(), shared.clone(), rng.clone());
                tokio::spawn(async move {
                    // A broken connection is the client's business; the SDK retries it.
                    let _ = serve(client, &upstream, &mode, &counters, &rng).await;
                });
            }
        });
        FaultProxy { endpoint, counters, task }
    }

    /// `http://127.0.0.1:<port>`, for `AwsOptions::endpoint_url`.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint
    }

    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }

    pub fn faults(&self) -> u64 {
        self.counters.faults.load(Ordering::SeqCst)
    }

    /// Successful writes forwarded so far.
    pub fn writes(&self) -> u64 {
        self.counters.writes.load(Ordering::SeqCst)
    }

    /// Every S3 request seen (`METHOD /path?query`) with its `x-amz-expected-bucket-owner`.
    pub fn s3_requests(&self) -> Vec<(String, Option<String>)> {
        self.counters.s3_requests.lock().expect("s3 requests lock").clone()
    }

    pub fn crashed(&self) -> bool {
        self.counters.crashed.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn method(&self) -> &str {
        self.head.split_whitespace().next().unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn call(&self) -> Call {
        if let Some(target) = self.header("x-amz-target") {
            let operation = target.rsplit('.').next().unwrap_or_default().to_string();
            let write = is_write(&operation);
            return Call { service: "kms", operation, write };
        }
        // Query protocol (IAM, STS): the signing scope names the service, the body the action.
        let scope = self.header("authorization").and_then(|a| a.split("Credential=").nth(1)).unwrap_or_default();
        let service = match scope.split('/').nth(3) {
            Some("iam") => Some("iam"),
            Some("sts") => Some("sts"),
            _ => None,
        };
        if let Some(service) = service {
            let body = String::from_utf8_lossy(&self.body);
            let operation = body.split('&').find_map(|kv| kv.strip_prefix("Action=")).unwrap_or_default().to_string();
            let write = is_write(&operation);
            return Call { service, operation, write };
        }
        let method = self.method().to_string();
        let write = matches!(method.as_str(), "PUT" | "POST" | "DELETE");
        Call { service: "s3", operation: method, write }
    }
}

fn is_write(operation: &str) -> bool {
    !["Get", "Head", "List", "Describe"].iter().any(|p| operation.starts_with(p))
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    mode: &Mode,
    counters: &Counters,
    rng: &Mutex<StdRng>,
) -> std::io::Result<()> {
    let request = read_request(&mut client).await?;
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let call = request.call();
    if call.service == "s3" {
        let line = request.head.lines().next().unwrap_or_default();
        let line = line.rsplit_once(' ').map_or(line, |(l, _)| l).to_string();
        let owner = request.header("x-amz-expected-bucket-owner").map(str::to_string);
        counters.s3_requests.lock().expect("s3 requests lock").push((line, owner));
    }
    let head_only = request.method() == "HEAD";
    match mode {
        Mode::Flaky { percent, max_faults, .. } => {
            let draw = rng.lock().expect("rng lock").random_range(0..100u32);
            if draw < *percent && counters.faults.fetch_add(1, Ordering::SeqCst) < *max_faults {
                // Half throttling, half server errors.
                let throttle = draw % 2 == 0;
                return client.write_all(&fault(&call, throttle, head_only)).await;
            }
        }
        Mode::CrashAfterWrites { .. } if counters.crashed.load(Ordering::SeqCst) => {
            return client.write_all(&crashed(&call, head_only)).await;
        }
        Mode::DenyS3Heads if head_only && call.service == "s3" => {
            return client.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
        }
        Mode::CrashAfterWrites { .. } | Mode::Clean | Mode::DenyS3Heads => {}
    }
    let response = moto_compat(&request, forward(&request, upstream).await?);
    if call.write && status_of(&response).is_some_and(|s| (200..300).contains(&s)) {
        let writes = counters.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if let Mode::CrashAfterWrites { writes: limit } = mode
            && writes >= *limit
        {
            counters.crashed.store(true, Ordering::SeqCst);
        }
    }
    client.write_all(&response).await
}

async fn read_request(client: &mut TcpStream) -> std::io::Result<Request> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buffer, b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), client.read(&mut chunk)).await??;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut body = buffer[head_end..].to_vec();
    let request = Request { head, body: Vec::new() };
    let chunked = request.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    let length: usize = request.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    loop {
        let complete = if chunked { find(&body, b"0\r\n\r\n").is_some() } else { body.len() >= length };
        if complete {
            break;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), client.read(&mut chunk)).await??;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Request { head: request.head, body })
}

/// Sends the request to moto on a fresh connection and returns its whole answer, re-framed
/// with `Connection: close`.
async fn forward(request: &Request, upstream: &str) -> std::io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream).await?;
    let mut head: Vec<&str> =
        request.head.trim_end().lines().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
    head.push("Connection: close");
    let mut raw = head.join("\r\n").into_bytes();
    raw.extend_from_slice(b"\r\n\r\n");
    raw.extend_from_slice(&request.body);
    server.write_all(&raw).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), server.read_to_end(&mut response)).await??;
    Ok(close_framed(response))
}

/// The response with its `Connection` header replaced by `Connection: close`.
fn close_framed(response: Vec<u8>) -> Vec<u8> {
    let Some(end) = find(&response, b"\r\n\r\n") else { return response };
    let head = String::from_utf8_lossy(&response[..end]).to_string();
    let mut lines: Vec<&str> = head.lines().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
    lines.push("Connection: close");
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(&response[end..]);
    out
}

/// moto 5.2 answers S3 GetBucketVersioning with the root element `GetBucketVersioningResponse`
/// where S3 sends `VersioningConfiguration`; botocore does not look at the root, the Rust SDK
/// does and rejects the answer. This renames that one root element and nothing else.
fn moto_compat(request: &Request, response: Vec<u8>) -> Vec<u8> {
    let target = request.head.split_whitespace().nth(1).unwrap_or_default();
    let versioning = request.method() == "GET"
        && request.header("x-amz-target").is_none()
        && target.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p == "versioning" || p == "versioning="));
    let Some(end) = find(&response, b"\r\n\r\n").filter(|_| versioning) else { return response };
    let body =
        String::from_utf8_lossy(&response[end + 4..]).replace("GetBucketVersioningResponse", "VersioningConfiguration");
    let head = String::from_utf8_lossy(&response[..end]);
    let mut lines: Vec<String> = head
        .lines()
        .filter(|l| {
            !l.to_ascii_lowercase().starts_with("content-length:")
                && !l.to_ascii_lowercase().starts_with("transfer-encoding:")
        })
        .map(str::to_string)
        .collect();
    lines.push(format!("Content-Length: {}", body.len()));
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

fn status_of(response: &[u8]) -> Option<u16> {
    let line_end = find(response, b"\r\n")?;
    String::from_utf8_lossy(&response[..line_end]).split_whitespace().nth(1)?.parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn fault(call: &Call, throttle: bool, head_only: bool) -> Vec<u8> {
    match (call.service, throttle) {
        ("s3", true) => s3_error(503, "Slow Down", "SlowDown", "Please reduce your request rate.", head_only),
        ("s3", false) => s3_error(
            500,
            "Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
            head_only,
        ),
        ("kms", true) => json_error(400, "Bad Request", "ThrottlingException", "Rate exceeded"),
        ("kms", false) => {
            json_error(500, "Internal Server Error", "KMSInternalException", "An internal error occurred.")
        }
        (_, true) => query_error(400, "Bad Request", "Sender", "Throttling", "Rate exceeded"),
        (_, false) => {
            query_error(500, "Internal Server Error", "Receiver", "ServiceFailure", "An internal error occurred.")
        }
    }
}

fn crashed(call: &Call, head_only: bool) -> Vec<u8> {
    const MESSAGE: &str = "the operator was stopped here (simulated crash)";
    match call.service {
        "s3" => s3_error(400, "Bad Request", "SimulatedCrash", MESSAGE, head_only),
        "kms" => json_error(400, "Bad Request", "SimulatedCrash", MESSAGE),
        _ => query_error(400, "Bad Request", "Sender", "SimulatedCrash", MESSAGE),
    }
}

fn response(status: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nx-amz-request-id: FAULTPROXY\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn s3_error(status: u16, reason: &str, code: &str, message: &str, head_only: bool) -> Vec<u8> {
    if head_only {
        // Answers to HEAD carry no body: the status code says it all.
        return format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes();
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>FAULTPROXY</RequestId></Error>"
    );
    response(status, reason, "application/xml", &body)
}

fn json_error(status: u16, reason: &str, type_: &str, message: &str) -> Vec<u8> {
    let body = format!("{{\"__type\":\"{type_}\",\"message\":\"{message}\"}}");
    response(status, reason, "application/x-amz-json-1.1", &body)
}

fn query_error(status: u16, reason: &str, kind: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>FAULTPROXY</RequestId></ErrorResponse>"
    );
    response(status, reason, "text/xml", &body)
}
