//! `x509`: the reader of a certificate's validity period (`x509::validity`), which the
//! RTMPS listener runs on the certificate file it is given, on arbitrary DER and on
//! certificates laid out from the input by an encoder of this module's own.
//!
//! Layout: byte 0 chooses the mode.
//! - Even: the rest is DER as a certificate file would hold it.
//! - Odd: a certificate is built from the rest ([`Layout`]): byte 1 holds flags (bit 0: a
//!   `[0]` version field; bit 1: long-form lengths; bits 2 and 3: notBefore / notAfter as
//!   UTCTime when the year allows it, 1970–2049, else GeneralizedTime); then notBefore and
//!   notAfter, 5 big-endian bytes each (Unix seconds, modulo the end of year 9999); then a
//!   length byte and that many bytes each for the serial number (1–20 bytes), the issuer's
//!   content and what follows the validity (subject, key, extensions: never read).
//!
//! Invariants: no panic. A built certificate reads back exactly its two times; every
//! strict prefix of it reads as `None` (a cut file is never half-read). For built and
//! arbitrary input alike, once a certificate reads, bytes after its outer SEQUENCE change
//! nothing, and any time read is at most 9999-12-31T23:59:59Z.

use livesnap::clock::rfc3339;
use livesnap::x509::{validity, Validity};

/// 9999-12-31T23:59:59Z + 1 s: the first second no certificate time can name.
pub const END_OF_9999: u64 = 253_402_300_800;

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_any(rest);
        return;
    }
    let layout = Layout::parse(rest);
    let der = layout.certificate();
    let want = Validity {
        not_before: layout.not_before,
        not_after: layout.not_after,
    };
    assert_eq!(validity(&der), Some(want), "{layout:?}");
    for n in 0..der.len() {
        assert_eq!(validity(&der[..n]), None, "read a certificate cut at {n}");
    }
    check_any(&der);
}

/// What holds for any input: times within range, and once a certificate reads, nothing
/// after it is read. (An input that does not read may read once bytes are added: its
/// lengths may have named more than there was.)
fn check_any(der: &[u8]) {
    let Some(v) = validity(der) else {
        return;
    };
    assert!(
        v.not_before < END_OF_9999 && v.not_after < END_OF_9999,
        "{v:?}"
    );
    let mut longer = der.to_vec();
    longer.extend_from_slice(&[0x30, 0x03, 0x02, 0x01, 0x00, 0xff]);
    assert_eq!(
        validity(&longer),
        Some(v),
        "bytes after the certificate were read"
    );
}

/// A certificate as the odd mode lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub version: bool,
    pub long_lengths: bool,
    pub utc_before: bool,
    pub utc_after: bool,
    pub not_before: u64,
    pub not_after: u64,
    pub serial: Vec<u8>,
    pub issuer: Vec<u8>,
    pub tail: Vec<u8>,
}

impl Layout {
    pub fn parse(data: &[u8]) -> Layout {
        let mut rest = data;
        let mut take = |n: usize| -> Vec<u8> {
            let (a, b) = rest.split_at(n.min(rest.len()));
            rest = b;
            a.to_vec()
        };
        let flags = take(1).first().copied().unwrap_or(0);
        let mut time = || {
            let b = take(5);
            b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)) % END_OF_9999
        };
        let (not_before, not_after) = (time(), time());
        let mut field = |max: usize| {
            let n = usize::from(take(1).first().copied().unwrap_or(0));
            take(n.min(max))
        };
        let mut serial = field(20);
        if serial.is_empty() {
            serial.push(1);
        }
        let (issuer, tail) = (field(255), field(255));
        Layout {
            version: flags & 1 != 0,
            long_lengths: flags & 2 != 0,
            utc_before: flags & 4 != 0,
            utc_after: flags & 8 != 0,
            not_before,
            not_after,
            serial,
            issuer,
            tail,
        }
    }

    /// The input the odd mode reads this layout from (mode byte included).
    pub fn input(&self) -> Vec<u8> {
        let flags = u8::from(self.version)
            | u8::from(self.long_lengths) << 1
            | u8::from(self.utc_before) << 2
            | u8::from(self.utc_after) << 3;
        let mut out = vec![1, flags];
        for t in [self.not_before, self.not_after] {
            out.extend_from_slice(&t.to_be_bytes()[3..]);
        }
        for f in [&self.serial, &self.issuer, &self.tail] {
            out.push(f.len() as u8);
            out.extend_from_slice(f);
        }
        out
    }

    /// The certificate's DER.
    pub fn certificate(&self) -> Vec<u8> {
        let el = |tag: u8, content: &[u8]| element(tag, content, self.long_lengths);
        let mut tbs = Vec::new();
        if self.version {
            tbs.extend(el(0xa0, &el(0x02, &[2])));
        }
        tbs.extend(el(0x02, &self.serial));
        // sha256WithRSAEncryption, NULL parameters.
        let algorithm = [
            el(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
            ),
            el(0x05, &[]),
        ]
        .concat();
        tbs.extend(el(0x30, &algorithm));
        tbs.extend(el(0x30, &self.issuer));
        let validity = [
            time(self.not_before, self.utc_before, self.long_lengths),
            time(self.not_after, self.utc_after, self.long_lengths),
        ]
        .concat();
        tbs.extend(el(0x30, &validity));
        tbs.extend_from_slice(&self.tail);
        let cert = [
            el(0x30, &tbs),
            el(0x30, &algorithm),
            el(0x03, &[0, 0xde, 0xad]),
        ]
        .concat();
        el(0x30, &cert)
    }
}

/// One element: tag, length (short form unless `long` or 128 bytes or more), content.
fn element(tag: u8, content: &[u8], long: bool) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 && !long {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A time as UTCTime (when asked for and the year is 1970–2049) or GeneralizedTime,
/// written from the node's own RFC 3339 form (`clock::rfc3339`, days to date; the reader
/// under test goes the other way, date to days).
fn time(unix: u64, utc: bool, long: bool) -> Vec<u8> {
    let text: String = rfc3339(unix)
        .chars()
        .filter(|c| !"-T:".contains(*c))
        .collect();
    let year: u64 = text[..4].parse().expect("a four-digit year");
    if utc && (1970..2050).contains(&year) {
        element(0x17, &text.as_bytes()[2..], long)
    } else {
        element(0x18, text.as_bytes(), long)
    }
}
