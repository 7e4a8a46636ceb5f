//! The validity period of an X.509 certificate, read from its DER encoding: what the
//! RTMPS side needs to say when its certificate expires (a gauge and a warning), without
//! a certificate-parsing dependency. Reads only the fields in front of `validity`,
//! checking every tag and length against the bytes there are; no I/O.
//!
//! ```text
//! Certificate    ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
//! TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER,
//!                               signature SEQUENCE, issuer SEQUENCE,
//!                               validity SEQUENCE { notBefore Time, notAfter Time }, … }
//! Time           ::= UTCTime "YYMMDDHHMMSSZ" | GeneralizedTime "YYYYMMDDHHMMSSZ"
//! ```

/// A certificate's validity period, in Unix seconds (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element at the start of `input`: its tag, its content and what follows it.
/// `None` when the header or the content does not fit in `input`, or the length is not
/// in DER's definite form.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        // 0x80 is the indefinite form (not DER); more than 4 length bytes is more than
        // any certificate holds.
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The content of the element at the start of `input` if its tag is `tag`, and the rest.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = element(input)?;
    (t == tag).then_some((content, rest))
}

/// A UTCTime or GeneralizedTime in UTC (`Z`, whole seconds, as RFC 5280 requires of
/// certificates) as Unix seconds; `None` for anything else, for a date or time that does
/// not exist (Feb 29 of a common year, hour 24, second 60) and before 1970. The whole range
/// to 9999-12-31T23:59:59Z is read: RFC 5280's "no expiry" is 99991231235959Z.
fn time(tag: u8, text: &[u8]) -> Option<u64> {
    let digits = text.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |d: &[u8]| d.iter().fold(0u64, |n, &b| n * 10 + u64::from(b - b'0'));
    let (year, rest) = match (tag, digits.len()) {
        // RFC 5280: YY of 50 or more is 19YY, below 50 is 20YY.
        (UTC_TIME, 12) => {
            let yy = num(&digits[..2]);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (num(&digits[..4]), &digits[4..]),
        _ => return None,
    };
    let f = |i: usize| num(&rest[i..i + 2]);
    let (month, day, hour, minute, second) = (f(0), f(2), f(4), f(6), f(8));
    if year < 1970 || !(1..=12).contains(&month) || day == 0 || day > month_days(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_since_1970(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn month_days(year: u64, month: u64) -> u64 {
    match month {
        2 if leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of 1970 or later (proleptic Gregorian).
fn days_since_1970(year: u64, month: u64, day: u64) -> u64 {
    let before = |y: u64| y * 365 + y / 4 - y / 100 + y / 400; // days in years 1..=y
    let years = before(year - 1) - before(1969);
    let months: u64 = (1..month).map(|m| month_days(year, m)).sum();
    years + months + day - 1
}

/// The validity period of the DER certificate `der`; `None` when it is not a
/// certificate this reader understands.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let tbs = match element(tbs)? {
        (VERSION, _, rest) => rest,
        _ => tbs,
    };
    let (_, rest) = expect(tbs, INTEGER)?; // serial number
    let (_, rest) = expect(rest, SEQUENCE)?; // signature algorithm
    let (_, rest) = expect(rest, SEQUENCE)?; // issuer
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (t1, before, rest) = element(validity)?;
    let (t2, after, _) = element(rest)?;
    Some(Validity {
        not_before: time(t1, before)?,
        not_after: time(t2, after)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_rfc3339;

    fn cert_valid(from: (i32, u8, u8), to: (i32, u8, u8)) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let date = |(y, m, d): (i32, u8, u8)| rcgen::date_time_ymd(y, m, d);
        p.not_before = date(from);
        p.not_after = date(to);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_validity_of_generated_certificates() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050 on.
        let der = cert_valid((2026, 12, 3), (2027, 3, 3));
        assert_eq!(
            validity(&der),
            Some(Validity {
                not_before: parse_rfc3339("2026-12-03T00:00:00Z").unwrap(),
                not_after: parse_rfc3339("2027-03-03T00:00:00Z").unwrap(),
            })
        );
        let der = cert_valid((1975, 1, 1), (2051, 6, 30));
        let v = validity(&der).unwrap();
        assert_eq!(v.not_before, parse_rfc3339("1975-01-01T00:00:00Z").unwrap());
        assert_eq!(v.not_after, parse_rfc3339("2051-06-30T00:00:00Z").unwrap());
    }

    #[test]
    fn times_follow_rfc_5280() {
        assert_eq!(
            time(UTC_TIME, b"491231235959Z"),
            parse_rfc3339("2049-12-31T23:59:59Z")
        );
        assert_eq!(
            time(UTC_TIME, b"500101000000Z"),
            parse_rfc3339("1950-01-01T00:00:00Z")
        );
        assert_eq!(
            time(GENERALIZED_TIME, b"20991231235959Z"),
            parse_rfc3339("2099-12-31T23:59:59Z")
        );
        // RFC 5280's "no well-defined expiration date", and leap days.
        assert_eq!(
            time(GENERALIZED_TIME, b"99991231235959Z"),
            Some(253_402_300_799)
        );
        assert_eq!(
            time(GENERALIZED_TIME, b"20000229120000Z"),
            parse_rfc3339("2000-02-29T12:00:00Z")
        );
        assert_eq!(time(UTC_TIME, b"700101000000Z"), Some(0));
        for (tag, bad) in [
            (UTC_TIME, &b"490229000000Z"[..]),      // 2049 is a common year
            (GENERALIZED_TIME, b"21000229000000Z"), // so is 2100
            (UTC_TIME, b"490431000000Z"),           // April 31
            (UTC_TIME, b"491231240000Z"),           // hour 24
            (UTC_TIME, b"491231236000Z"),           // minute 60
            (UTC_TIME, b"491231235960Z"),           // second 60
            (UTC_TIME, b"491200235959Z"),           // day 0
            (GENERALIZED_TIME, b"19691231235959Z"),
        ] {
            assert_eq!(time(tag, bad), None, "{}", String::from_utf8_lossy(bad));
        }
        for (tag, bad) in [
            (UTC_TIME, &b"491231235959"[..]),     // no Z
            (UTC_TIME, b"4912312359Z"),           // no seconds
            (UTC_TIME, b"20991231235959Z"),       // GeneralizedTime length
            (GENERALIZED_TIME, b"491231235959Z"), // UTCTime length
            (UTC_TIME, b"49123123595aZ"),
            (UTC_TIME, b"491331235959Z"), // month 13
            (UTC_TIME, b"+91231235959Z"),
            (0x04, b"491231235959Z"),
        ] {
            assert_eq!(time(tag, bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn every_truncation_and_nonsense_is_refused_without_a_panic() {
        let der = cert_valid((2026, 1, 1), (2027, 1, 1));
        for n in 0..der.len() {
            // The outer length no longer fits: no answer, whatever is cut.
            assert_eq!(validity(&der[..n]), None, "cut at {n}");
        }
        assert_eq!(validity(b""), None);
        assert_eq!(validity(&[0x30, 0x80, 0, 0]), None); // indefinite length
        assert_eq!(validity(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(validity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(validity(b"-----BEGIN CERTIFICATE-----"), None);
        // A tag other than the one expected, where the serial number should be.
        let mut wrong = der.clone();
        let version = [0xa0, 0x03, 0x02, 0x01, 0x02];
        let at = wrong.windows(5).position(|w| w == version).unwrap() + version.len();
        assert_eq!(wrong[at], INTEGER);
        wrong[at] = 0x04;
        assert_eq!(validity(&wrong), None);
    }
}
