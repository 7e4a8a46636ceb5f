//! The PROXY protocol header (v1 text, v2 binary) that a TCP load balancer (haproxy,
//! AWS NLB, nginx `stream`) sends first on each connection, naming the client it
//! carries. Only connections from `server.proxy_protocol_from` must start with one; the
//! address it names replaces the balancer's for every later decision (per-address cap,
//! `[access]`, the `on_publish` hook, logs, the API).
//!
//! Parsing ([`parse_v1`], [`v2_body_len`], [`parse_v2`]) does no I/O and is fuzzed;
//! [`read_header`] reads exactly the header (never a byte of what follows), bounded in
//! size and time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest v1 header, CRLF included (the protocol's own bound).
pub const V1_MAX: usize = 107;
/// The v2 header's first 12 bytes.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The most of a v2 header's address block (with its TLVs) accepted; the protocol allows
/// 65,535, balancers send a few dozen.
pub const V2_MAX_BODY: usize = 1024;

/// Who the connection is from, by the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A proxied TCP client.
    Client(SocketAddr),
    /// `UNKNOWN` (v1), `LOCAL` or a non-TCP family (v2): the balancer's own connection,
    /// such as a health check; its own address stands.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol header from a server.proxy_protocol_from address")]
    Missing,
    #[error("bad PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("bad PROXY v2 header: {0}")]
    V2(&'static str),
    #[error("PROXY header not received within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses a v1 header line, CRLF included: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or
/// `PROXY UNKNOWN…\r\n`.
pub fn parse_v1(line: &[u8]) -> Result<Source, ProxyError> {
    if line.len() > V1_MAX {
        return Err(ProxyError::V1("longer than 107 bytes"));
    }
    let text = line
        .strip_suffix(b"\r\n")
        .ok_or(ProxyError::V1("does not end with CRLF"))?;
    let text = std::str::from_utf8(text).map_err(|_| ProxyError::V1("not ASCII"))?;
    let mut fields = text.split(' ');
    if fields.next() != Some("PROXY") {
        return Err(ProxyError::V1("does not start with \"PROXY \""));
    }
    let family = fields.next().ok_or(ProxyError::V1("no protocol"))?;
    if family == "UNKNOWN" {
        return Ok(Source::Unknown);
    }
    if family != "TCP4" && family != "TCP6" {
        return Err(ProxyError::V1("protocol is not TCP4, TCP6 or UNKNOWN"));
    }
    let parts: Vec<&str> = fields.collect();
    let [src, _dst, sport, _dport] = parts[..] else {
        return Err(ProxyError::V1("not 4 fields after the protocol"));
    };
    let ip: IpAddr = match family {
        "TCP4" => src
            .parse::<Ipv4Addr>()
            .map_err(|_| ProxyError::V1("bad IPv4 source"))?
            .into(),
        _ => src
            .parse::<Ipv6Addr>()
            .map_err(|_| ProxyError::V1("bad IPv6 source"))?
            .into(),
    };
    let port: u16 = sport
        .parse()
        .map_err(|_| ProxyError::V1("bad source port"))?;
    Ok(Source::Client(SocketAddr::new(ip, port)))
}

/// Checks a v2 header's fixed 16 bytes and returns the length of the block after them.
pub fn v2_body_len(head: &[u8; 16]) -> Result<usize, ProxyError> {
    if head[..12] != V2_SIGNATURE {
        return Err(ProxyError::V2("wrong signature"));
    }
    if head[12] >> 4 != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    if head[12] & 0x0f > 1 {
        return Err(ProxyError::V2("command is neither LOCAL nor PROXY"));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > V2_MAX_BODY {
        return Err(ProxyError::V2("address block longer than 1024 bytes"));
    }
    Ok(len)
}

/// Parses a v2 header: its fixed 16 bytes and the block of [`v2_body_len`] bytes.
pub fn parse_v2(head: &[u8; 16], body: &[u8]) -> Result<Source, ProxyError> {
    if v2_body_len(head)? != body.len() {
        return Err(ProxyError::V2(
            "address block of another length than declared",
        ));
    }
    if head[12] & 0x0f == 0 {
        return Ok(Source::Unknown); // LOCAL
    }
    match head[13] {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let b = body
                .get(..12)
                .ok_or(ProxyError::V2("IPv4 address block shorter than 12 bytes"))?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = u16::from_be_bytes([b[8], b[9]]);
            Ok(Source::Client(SocketAddr::new(ip.into(), port)))
        }
        // TCP over IPv6.
        0x21 => {
            let b = body
                .get(..36)
                .ok_or(ProxyError::V2("IPv6 address block shorter than 36 bytes"))?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[32], b[33]]);
            Ok(Source::Client(SocketAddr::new(
                Ipv6Addr::from(src).into(),
                port,
            )))
        }
        // UNSPEC, UDP, UNIX: nothing a TCP client's address can be taken from.
        _ => Ok(Source::Unknown),
    }
}

/// Reads one header (v1 or v2) from `io` within `limit`, and nothing after it.
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
    limit: Duration,
) -> Result<Source, ProxyError> {
    match tokio::time::timeout(limit, read(io)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::Timeout(limit)),
    }
}

/// What to do next while reading a header whose first bytes are `buf`: read exactly `n`
/// more bytes, or stop with the header's outcome. Never asks for a byte past the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Read(usize),
    Done(Source),
}

/// The header reader as a state machine over the bytes read so far (no I/O).
pub fn next_step(buf: &[u8]) -> Result<Step, ProxyError> {
    if buf.len() < 5 {
        return Ok(Step::Read(5 - buf.len()));
    }
    if buf.starts_with(b"PROXY") {
        // Byte by byte to the CRLF: what follows is the client's and must stay unread.
        if buf.ends_with(b"\r\n") {
            return parse_v1(buf).map(Step::Done);
        }
        if buf.len() >= V1_MAX {
            return Err(ProxyError::V1("no CRLF within 107 bytes"));
        }
        return Ok(Step::Read(1));
    }
    if buf[..5] != V2_SIGNATURE[..5] {
        return Err(ProxyError::Missing);
    }
    let Some(head) = buf.get(..16) else {
        return Ok(Step::Read(16 - buf.len()));
    };
    let head: &[u8; 16] = head.try_into().expect("16 bytes");
    let total = 16 + v2_body_len(head)?;
    match total.checked_sub(buf.len()) {
        Some(0) => parse_v2(head, &buf[16..]).map(Step::Done),
        Some(more) => Ok(Step::Read(more)),
        None => Err(ProxyError::V2("read past the header")),
    }
}

async fn read<S: AsyncRead + Unpin>(io: &mut S) -> Result<Source, ProxyError> {
    let mut buf = Vec::with_capacity(32);
    loop {
        match next_step(&buf)? {
            Step::Done(source) => return Ok(source),
            Step::Read(n) => {
                let at = buf.len();
                buf.resize(at + n, 0);
                io.read_exact(&mut buf[at..]).await?;
            }
        }
    }
}

/// A v2 header for `source` (tests, the load tool, fuzz seeds).
pub fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21); // version 2, PROXY
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        _ => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(source).octets());
            out.extend_from_slice(&v6(destination).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_headers_name_the_client() {
        let ok = |line: &str| parse_v1(line.as_bytes()).unwrap();
        assert_eq!(
            ok("PROXY TCP4 198.51.100.7 10.0.0.1 5555 1935\r\n"),
            Source::Client(addr("198.51.100.7:5555"))
        );
        assert_eq!(
            ok("PROXY TCP6 2001:db8::7 2001:db8::1 65535 1935\r\n"),
            Source::Client(addr("[2001:db8::7]:65535"))
        );
        assert_eq!(ok("PROXY UNKNOWN\r\n"), Source::Unknown);
        assert_eq!(ok("PROXY UNKNOWN ffff:: ffff:: 1 2\r\n"), Source::Unknown);
        for (bad, why) in [
            ("PROXY TCP4 198.51.100.7 10.0.0.1 5555 1935\n", "CRLF"),
            ("PROXY TCP4 2001:db8::7 10.0.0.1 5555 1935\r\n", "IPv4"),
            ("PROXY TCP6 198.51.100.7 10.0.0.1 5555 1935\r\n", "IPv6"),
            ("PROXY TCP4 198.51.100.7 10.0.0.1 65536 1935\r\n", "port"),
            ("PROXY TCP4 198.51.100.7 10.0.0.1 5555\r\n", "4 fields"),
            ("PROXY UDP4 198.51.100.7 10.0.0.1 5555 1935\r\n", "protocol"),
            (
                "PROXY  TCP4 198.51.100.7 10.0.0.1 5555 1935\r\n",
                "protocol",
            ),
            ("proxy TCP4 198.51.100.7 10.0.0.1 5555 1935\r\n", "PROXY"),
        ] {
            let e = parse_v1(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn v2_headers_round_trip_and_bad_ones_are_refused() {
        for (src, dst) in [
            ("198.51.100.7:5555", "10.0.0.1:1935"),
            ("[2001:db8::7]:4000", "[2001:db8::1]:1935"),
        ] {
            let h = v2_header(addr(src), addr(dst));
            let head: [u8; 16] = h[..16].try_into().unwrap();
            assert_eq!(v2_body_len(&head).unwrap(), h.len() - 16);
            assert_eq!(
                parse_v2(&head, &h[16..]).unwrap(),
                Source::Client(addr(src))
            );
        }
        let h = v2_header(addr("198.51.100.7:5555"), addr("10.0.0.1:1935"));
        let head = |f: &dyn Fn(&mut [u8; 16])| {
            let mut x: [u8; 16] = h[..16].try_into().unwrap();
            f(&mut x);
            x
        };
        // LOCAL: the balancer's own connection.
        assert_eq!(
            parse_v2(&head(&|x| x[12] = 0x20), &h[16..]).unwrap(),
            Source::Unknown
        );
        // UNSPEC family with an empty block.
        let unspec = head(&|x| {
            x[13] = 0;
            x[14] = 0;
            x[15] = 0;
        });
        assert_eq!(parse_v2(&unspec, &[]).unwrap(), Source::Unknown);
        for (bad, why) in [
            (head(&|x| x[0] = b'x'), "signature"),
            (head(&|x| x[12] = 0x11), "version"),
            (head(&|x| x[12] = 0x22), "command"),
            (head(&|x| x[14] = 0xff), "1024"),
        ] {
            let e = v2_body_len(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let short = head(&|x| x[15] = 8);
        let e = parse_v2(&short, &h[16..24]).unwrap_err().to_string();
        assert!(e.contains("shorter than 12"), "{e}");
        let e = parse_v2(&head(&|_| {}), &h[16..20])
            .unwrap_err()
            .to_string();
        assert!(e.contains("another length"), "{e}");
    }

    #[tokio::test]
    async fn the_reader_takes_the_header_and_leaves_the_rest() {
        let mut v1: &[u8] = b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 1935\r\n\x03rest";
        let s = read_header(&mut v1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(s, Source::Client(addr("198.51.100.7:5555")));
        assert_eq!(v1, b"\x03rest");
        let mut bytes = v2_header(addr("198.51.100.8:6666"), addr("10.0.0.1:1935"));
        bytes.extend_from_slice(b"\x03rest");
        let mut v2: &[u8] = &bytes;
        let s = read_header(&mut v2, Duration::from_secs(1)).await.unwrap();
        assert_eq!(s, Source::Client(addr("198.51.100.8:6666")));
        assert_eq!(v2, b"\x03rest");
        // An RTMP handshake where a header was due.
        let mut rtmp: &[u8] = &[3u8; 1537];
        assert!(matches!(
            read_header(&mut rtmp, Duration::from_secs(1)).await,
            Err(ProxyError::Missing)
        ));
        // A line that never ends, and a peer that sends half a header and waits.
        let mut long = b"PROXY ".to_vec();
        long.extend_from_slice(&[b'1'; 200]);
        let e = read_header(&mut long.as_slice(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("107"), "{e}");
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 1.2")
            .await
            .unwrap();
        let e = read_header(&mut server, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, ProxyError::Timeout(_)), "{e}");
    }
}
