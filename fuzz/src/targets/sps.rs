//! `sps`: `media::sps::parse_sps` on an arbitrary NAL unit (header byte included,
//! emulation-prevention bytes in).
//!
//! Invariants: no panic; anything but NAL type 7 is refused; an `Ok` has a width and
//! height in 1..=8192, both even (4:2:0 crops in units of 2), and chroma format 1; the
//! result is the same when the emulation-prevention bytes are inserted again where the
//! RBSP needs them (they are transparent).

use livesnap::media::flv::MediaError;
use livesnap::media::sps::{self, MAX_DIMENSION};

pub fn run(data: &[u8]) {
    let result = sps::parse_sps(data);
    match data.first() {
        Some(&h) if h & 0x1f == 7 => {}
        other => {
            let t = other.map_or(0, |h| h & 0x1f);
            assert_eq!(result, Err(MediaError::NotSps(t)));
            return;
        }
    }
    let Ok(info) = result else {
        return;
    };
    for (what, v) in [("width", info.width), ("height", info.height)] {
        assert!(
            (1..=MAX_DIMENSION).contains(&u64::from(v)),
            "{what} {v} out of range"
        );
        assert!(v % 2 == 0, "odd {what} {v}");
    }
    assert_eq!(info.chroma_format_idc, 1);

    // Escaping the RBSP again gives a NAL unit that must parse the same.
    let rbsp = sps::unescape(&data[1..]);
    let mut escaped = vec![data[0]];
    let mut zeros = 0;
    for &b in &rbsp {
        if zeros >= 2 && b <= 3 {
            escaped.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        escaped.push(b);
    }
    assert_eq!(
        sps::parse_sps(&escaped),
        Ok(info),
        "escaping changed the result"
    );
}
