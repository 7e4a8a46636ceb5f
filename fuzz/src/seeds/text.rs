//! Text seeds: the shipped key templates with names and stored keys, signed publish URLs.

use crate::targets::input::join_fields;

use super::Seed;

pub(super) fn template(seeds: &mut Vec<Seed>) {
    let cases: [(&str, [&str; 7]); 7] = [
        (
            "overwrite",
            [
                "{AppName}/{StreamName}.jpg",
                "default",
                "live",
                "cam1",
                "live/cam1.jpg",
                "1700000000",
                "1",
            ],
        ),
        (
            "sequence_time",
            [
                "{AppName}/{StreamName}/{UnixTimestamp}.jpg",
                "default",
                "live",
                "cam1",
                "live/cam1/1700000005.jpg",
                "1700000005",
                "1",
            ],
        ),
        (
            "every_variable",
            [
                "{Domain}/{AppName}/{StreamName}/{UnixTimestamp}-{Sequence}.jpg",
                "cams.example.com",
                "live/sub",
                "Cam-1_b.2",
                "cams.example.com/live/sub/Cam-1_b.2/1700000000-42.jpg",
                "1700000000",
                "42",
            ],
        ),
        (
            "adjacent_numbers",
            [
                "{Sequence}{UnixTimestamp}.jpg",
                "d",
                "a",
                "s",
                "12345.jpg",
                "345",
                "12",
            ],
        ),
        (
            "name_then_number",
            [
                "{AppName}/{StreamName}{Sequence}.jpg",
                "d",
                "live",
                "cam",
                "live/cam12.jpg",
                "0",
                "12",
            ],
        ),
        (
            "dots",
            [
                "snap.{StreamName}..jpg",
                "::1",
                "a.b",
                "c.d",
                "snap.c.d..jpg",
                "0",
                "0",
            ],
        ),
        (
            "hostile_names",
            [
                "{AppName}/{StreamName}/x.jpg",
                "..",
                "../etc",
                "..",
                "../etc/../x.jpg",
                "0",
                "0",
            ],
        ),
    ];
    for (name, f) in cases {
        let f: Vec<&[u8]> = f.iter().map(|s| s.as_bytes()).collect();
        seeds.push(("template", name.into(), join_fields(&f)));
    }
}

pub(super) fn auth_key(seeds: &mut Vec<Seed>) {
    let ts = "1700000000";
    let hash = livesnap::auth::sign("/live/cam1", ts, "0", "0", "secret");
    let value = format!("{ts}-0-0-{hash}");
    let query = format!("auth_key={value}");
    let tc_signed = format!("rtmp://127.0.0.1/live?{query}");
    let rand = "0123456789abcdef0123456789abcdef";
    let hash_r = livesnap::auth::sign("/live/cam1", ts, rand, "7", "secret").to_uppercase();
    let value_r = format!("{ts}-{rand}-7-{hash_r}");
    let query_r = format!("x=1&auth_key={value_r}");
    let cases: [(&str, [&str; 9]); 5] = [
        (
            "stream_query",
            [
                &value,
                "live",
                "cam1",
                &query,
                "rtmp://127.0.0.1/live",
                "secret",
                "1700000100",
                "127.0.0.1:1935",
                "",
            ],
        ),
        (
            "tc_url_query",
            [
                &value,
                "live",
                "cam1",
                "",
                &tc_signed,
                "secret",
                "1700000000",
                "example.com",
                "vhost=a.example.com",
            ],
        ),
        (
            "rand_uid_upper",
            [
                &value_r,
                "live",
                "cam1",
                &query_r,
                "",
                "secret",
                "1700001800",
                "h",
                "a=1&b",
            ],
        ),
        (
            "expired",
            [
                &value,
                "live",
                "cam1",
                &query,
                "",
                "secret",
                "1700001801",
                "h",
                "",
            ],
        ),
        (
            "malformed",
            [
                "1-0-0-6ecce",
                "live/sub",
                "cam1",
                "auth_key=1-0-0-6ecce",
                "",
                "",
                "0",
                "[::1]",
                "?",
            ],
        ),
    ];
    for (name, f) in cases {
        let f: Vec<&[u8]> = f.iter().map(|s| s.as_bytes()).collect();
        seeds.push(("auth_key", name.into(), join_fields(&f)));
    }
}

/// PROXY headers as balancers send them (v1 both families and UNKNOWN, v2 both families
/// and LOCAL), each followed by the start of an RTMP handshake.
pub(super) fn proxy_header(seeds: &mut Vec<Seed>) {
    use livesnap::rtmp::proxy::v2_header;
    let node: std::net::SocketAddr = "10.0.0.1:1935".parse().expect("addr");
    let mut add = |name: &str, mut header: Vec<u8>| {
        header.extend_from_slice(&[3, 0, 0, 0, 0]);
        seeds.push(("proxy_header", name.to_string(), header));
    };
    add(
        "v1_tcp4",
        b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 1935\r\n".to_vec(),
    );
    add(
        "v1_tcp6",
        b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 1935\r\n".to_vec(),
    );
    add("v1_unknown", b"PROXY UNKNOWN\r\n".to_vec());
    add(
        "v2_tcp4",
        v2_header("198.51.100.7:5555".parse().expect("addr"), node),
    );
    add(
        "v2_tcp6",
        v2_header("[2001:db8::7]:4000".parse().expect("addr"), node),
    );
    let mut local = v2_header("198.51.100.7:5555".parse().expect("addr"), node);
    local[12] = 0x20;
    add("v2_local", local);
}
