//! A minimal HTTP/1.1 server on tokio: enough for JSON APIs on loopback and Prometheus scrapes.
//!
//! Why not hyper/axum: partner-sync serves a handful of small request/response endpoints (the
//! in-process Schema Registry used by tests and the demo, later `/metrics` and health). A hundred
//! lines of HTTP/1.1 with keep-alive and Content-Length bodies cover that without a framework in the
//! dependency tree. It does not do chunked request bodies, TLS or pipelining beyond sequential
//! keep-alive; nothing that talks to it needs them.
//!
//! The server takes a bound listener and a shutdown future, so tests bind port 0.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query string, percent-decoded.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response to send.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: content_type.to_string(),
            body: body.into(),
        }
    }
}

/// Handles one request.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> Response;
}

impl<F: Fn(Request) -> Response + Send + Sync + 'static> Handler for F {
    fn handle(&self, request: Request) -> Response {
        self(request)
    }
}

/// Serves `handler` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let handler = handler.clone();
                    tokio::spawn(async move { let _ = connection(stream, handler).await; });
                }
            }
        }
    }
}

const MAX_BODY: usize = 8 * 1024 * 1024;

async fn connection(stream: TcpStream, handler: Arc<dyn Handler>) -> std::io::Result<()> {
    // Responses are written whole; nothing is gained by letting the kernel wait for more.
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return respond(
                &mut write,
                &Response::new(400, "text/plain", "bad request line"),
                true,
            )
            .await;
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        if length > MAX_BODY {
            return respond(
                &mut write,
                &Response::new(413, "text/plain", "body too large"),
                true,
            )
            .await;
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let close = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let request = Request {
            method,
            path: percent_decode(path),
            query: query.to_string(),
            headers,
            body,
        };
        let response = handler.handle(request);
        respond(&mut write, &response, close).await?;
        if close {
            return Ok(());
        }
    }
}

async fn respond(
    write: &mut (impl AsyncWriteExt + Unpin),
    r: &Response,
    close: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    // One write: with the head and body written apart, Nagle's algorithm held the body until the
    // client's delayed ACK of the head, and every keep-alive request took ~44 ms on loopback.
    let mut out = Vec::with_capacity(head.len() + r.body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&r.body);
    write.write_all(&out).await?;
    write.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Decodes `%XX` escapes (subjects may contain escaped slashes).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_escapes_decode_and_broken_ones_stay() {
        assert_eq!(
            percent_decode("/subjects/a%2Fb/versions"),
            "/subjects/a/b/versions"
        );
        assert_eq!(percent_decode("/x%2"), "/x%2");
        assert_eq!(percent_decode("/x%zz"), "/x%zz");
    }
}
