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

/// Certificates as `targets::x509` lays them out (UTCTime and GeneralizedTime, with and
/// without a version field, short and long lengths, a validity past 2049), each also as
/// plain DER.
pub(super) fn x509(seeds: &mut Vec<Seed>) {
    use crate::targets::x509::Layout;
    let base = Layout {
        version: true,
        long_lengths: false,
        utc_before: true,
        utc_after: true,
        // 2026-01-01T00:00:00Z to 2027-01-01T12:30:05Z.
        not_before: 1_767_225_600,
        not_after: 1_798_806_605,
        serial: vec![0x01, 0x7f, 0x33],
        issuer: b"1\x0b0\t\x06\x03U\x04\x06\x13\x02XX".to_vec(),
        tail: vec![0x30, 0x00, 0x30, 0x03, 0x02, 0x01, 0x07],
    };
    let cases = [
        ("utc", base.clone()),
        (
            "generalized_past_2049",
            Layout {
                utc_after: false,
                not_after: 2_556_143_999, // 2050-12-31T23:59:59Z
                ..base.clone()
            },
        ),
        (
            "v1_long_lengths",
            Layout {
                version: false,
                long_lengths: true,
                utc_before: false,
                serial: vec![0x00; 20],
                issuer: vec![0x31; 200],
                ..base.clone()
            },
        ),
        (
            "epoch_to_9999",
            Layout {
                not_before: 0,
                not_after: crate::targets::x509::END_OF_9999 - 1,
                tail: Vec::new(),
                ..base
            },
        ),
    ];
    for (name, layout) in cases {
        let mut der = vec![0];
        der.extend(layout.certificate());
        seeds.push(("x509", format!("{name}_der"), der));
        seeds.push(("x509", name.to_string(), layout.input()));
    }
}
