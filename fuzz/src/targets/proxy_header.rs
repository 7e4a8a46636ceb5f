//! `proxy_header`: the PROXY protocol header reader (`rtmp::proxy`), as a load balancer's
//! bytes reach it.
//!
//! Layout: the bytes the balancer sends, header first (whatever follows is the client's).
//!
//! Invariants: no panic. Driven by `next_step` as `read_header` drives it, the reader
//! never asks for a byte past the end of the header it returns, nor more than 107 bytes
//! (v1) or 16 + 1024 (v2). A header it accepts is accepted by `parse_v1` / `parse_v2` on
//! exactly the bytes it read, with the same outcome; a client address it returns, written
//! back as a v2 header, reads back the same.

use livesnap::rtmp::proxy::{self, Source, Step};

pub fn run(data: &[u8]) {
    let mut read = 0usize;
    let outcome = loop {
        match proxy::next_step(&data[..read]) {
            Ok(Step::Read(n)) => {
                assert!(n > 0, "asked for nothing");
                if read + n > data.len() {
                    return; // the balancer stopped sending: the deadline ends it
                }
                read += n;
                assert!(
                    read <= proxy::V1_MAX.max(16 + proxy::V2_MAX_BODY),
                    "read {read} bytes without an end"
                );
            }
            Ok(Step::Done(source)) => break source,
            Err(_) => return,
        }
    };
    let header = &data[..read];
    if header.starts_with(b"PROXY") {
        assert!(read <= proxy::V1_MAX);
        assert_eq!(proxy::parse_v1(header).ok(), Some(outcome));
    } else {
        let head: [u8; 16] = header[..16].try_into().expect("a v2 header has 16 bytes");
        assert_eq!(proxy::v2_body_len(&head).ok(), Some(read - 16));
        assert_eq!(proxy::parse_v2(&head, &header[16..]).ok(), Some(outcome));
    }
    if let Source::Client(client) = outcome {
        let back = proxy::v2_header(client, "10.0.0.1:1935".parse().expect("addr"));
        let head: [u8; 16] = back[..16].try_into().expect("16 bytes");
        let parsed = proxy::parse_v2(&head, &back[16..]);
        // An IPv4 client written as IPv6 (mixed families) reads back IPv4-mapped.
        let expected = match client {
            std::net::SocketAddr::V4(_) => client,
            v6 => v6,
        };
        assert_eq!(parsed.ok(), Some(Source::Client(expected)));
    }
}
