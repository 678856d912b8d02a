//! A small HTTP/1.1 client on `std::net`.
//!
//! Written by hand rather than taken from a crate because the tests need to
//! do things a polite client refuses to: send bodies that are not UTF-8, keep
//! one TCP connection open across requests, and write raw bytes.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// How long a test waits for any single response before it fails; well
/// above every deadline the tests configure.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A response as it came off the wire.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!("response body is not JSON ({e}): {self:?}"),
        }
    }

    /// Panics, showing the whole response, unless the status is `status`.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        if self.status != status {
            panic!("expected HTTP {status}, got {self:?}");
        }
        self
    }

    /// The `x-request-id` header, which every response must carry.
    #[track_caller]
    pub fn request_id(&self) -> String {
        match self.header("x-request-id") {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => panic!("response has no x-request-id: {self:?}"),
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "HTTP {}", self.status)?;
        for (n, v) in &self.headers {
            writeln!(f, "{n}: {v}")?;
        }
        let text = self.text();
        if text.len() > 2000 {
            let mut end = 2000;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            write!(f, "\n{}... ({} bytes)", &text[..end], self.body.len())
        } else {
            write!(f, "\n{text}")
        }
    }
}

/// One client connection; requests sent on it reuse the TCP connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        Conn::over(stream, addr)
    }

    /// A connection from the local address `local`: the server sees it as
    /// the client's address. Loopback is all of 127.0.0.0/8, so 127.0.0.2,
    /// 127.0.0.3, ... are distinct clients of a server on 127.0.0.1.
    pub fn open_from(addr: SocketAddr, local: IpAddr) -> io::Result<Conn> {
        Conn::over(connect_from(addr, local)?, addr)
    }

    fn over(stream: TcpStream, addr: SocketAddr) -> io::Result<Conn> {
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream),
            host: addr.to_string(),
        })
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.write_request(method, path, headers, body)?;
        self.read_response(method == "HEAD")
    }

    pub fn write_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.host);
        let sends_body = !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE");
        if sends_body
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()
    }

    /// The socket, for tests that watch how the server closes it.
    pub fn into_stream(self) -> TcpStream {
        self.reader.into_inner()
    }

    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    pub fn read_response(&mut self, head_request: bool) -> io::Result<Response> {
        loop {
            let status_line = self.read_line()?;
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or_default();
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
            if !version.starts_with("HTTP/1.") {
                return Err(bad(format!("bad status line {status_line:?}")));
            }
            let mut headers = Vec::new();
            loop {
                let line = self.read_line()?;
                if line.is_empty() {
                    break;
                }
                let (n, v) = line
                    .split_once(':')
                    .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            if (100..200).contains(&status) {
                continue;
            }
            let mut response = Response {
                status,
                headers,
                body: Vec::new(),
            };
            if head_request || status == 204 || status == 304 {
                return Ok(response);
            }
            let chunked = response
                .header("transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
            if chunked {
                response.body = self.read_chunked()?;
            } else if let Some(len) = response.header("content-length") {
                let len: usize = len
                    .parse()
                    .map_err(|_| bad(format!("bad content-length {len:?}")))?;
                let mut body = vec![0; len];
                self.reader.read_exact(&mut body)?;
                response.body = body;
            } else {
                self.reader.read_to_end(&mut response.body)?;
            }
            return Ok(response);
        }
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                // Trailers, then the blank line that ends the message.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.reader.read_exact(&mut body[start..])?;
            if !self.read_line()?.is_empty() {
                return Err(bad("chunk not followed by CRLF".into()));
            }
        }
    }

    /// One CRLF-terminated line without its terminator.
    fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|_| bad("header line is not UTF-8".into()))
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Sends one request on a fresh connection, asking the server to close it.
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    send_on(Conn::open(addr)?, method, path, headers, body)
}

/// [`send`] from the local address `local` (see [`Conn::open_from`]).
pub fn send_from(
    local: IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    send_on(Conn::open_from(addr, local)?, method, path, headers, body)
}

fn send_on(
    mut conn: Conn,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("connection", "close"));
    conn.send(method, path, &all, body)
}

/// A TCP connection to `addr` bound to `source` first (another loopback
/// address, 127.0.0.2 say), so that one test can be several clients.
/// (`std` cannot bind before connecting.)
pub fn connect_from(addr: SocketAddr, source: IpAddr) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(10))?;
    Ok(socket.into())
}
