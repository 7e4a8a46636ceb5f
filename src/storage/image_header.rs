//! Picture dimensions from the first bytes of a stored image, so that the catalog can
//! describe a snapshot with one small ranged read instead of fetching it whole.

/// Width and height from a JPEG's start-of-frame header or a WebP's first chunk, if
/// `data` reaches it.
pub fn dimensions(data: &[u8]) -> Option<(u16, u16)> {
    if data.get(..4)? == b"RIFF" && data.get(8..12)? == b"WEBP" {
        return webp_dimensions(data);
    }
    if data.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    loop {
        // Markers may be preceded by fill bytes 0xFF.
        while *data.get(i)? == 0xFF && *data.get(i + 1)? == 0xFF {
            i += 1;
        }
        if *data.get(i)? != 0xFF {
            return None;
        }
        let marker = *data.get(i + 1)?;
        match marker {
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            0xD9 | 0xDA => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*data.get(i + 2)?, *data.get(i + 3)?]));
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let h = u16::from_be_bytes([*data.get(i + 5)?, *data.get(i + 6)?]);
            let w = u16::from_be_bytes([*data.get(i + 7)?, *data.get(i + 8)?]);
            return Some((w, h));
        }
        if len < 2 {
            return None;
        }
        i += 2 + len;
    }
}

/// A WebP's canvas size from its first chunk: `VP8 ` (lossy: the key frame header),
/// `VP8L` (lossless: 14-bit sizes after the signature) or `VP8X` (extended: 24-bit sizes).
fn webp_dimensions(data: &[u8]) -> Option<(u16, u16)> {
    let le16 = |i: usize| Some(u16::from_le_bytes([*data.get(i)?, *data.get(i + 1)?]));
    let le24 = |i: usize| {
        Some(u32::from_le_bytes([
            *data.get(i)?,
            *data.get(i + 1)?,
            *data.get(i + 2)?,
            0,
        ]))
    };
    let (w, h) = match data.get(12..16)? {
        b"VP8 " => {
            if data.get(23..26)? != [0x9D, 0x01, 0x2A] {
                return None;
            }
            (u32::from(le16(26)? & 0x3FFF), u32::from(le16(28)? & 0x3FFF))
        }
        b"VP8L" => {
            if *data.get(20)? != 0x2F {
                return None;
            }
            let bits = u32::from_le_bytes(data.get(21..25)?.try_into().ok()?);
            ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        }
        b"VP8X" => (le24(24)? + 1, le24(27)? + 1),
        _ => return None,
    };
    Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sof_is_found_after_app_and_tables() {
        let mut j = vec![0xFF, 0xD8];
        j.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB]); // APP0
        j.extend_from_slice(&[0xFF, 0xFF]); // a fill byte
        j.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x03, 0x00]); // DQT
        j.extend_from_slice(&[0xFF, 0xC2, 0x00, 0x11, 0x08, 0x02, 0xD0, 0x05, 0x00, 0x03]);
        assert_eq!(dimensions(&j), Some((1280, 720)));
        assert_eq!(dimensions(&j[..12]), None, "cut before the SOF");
        assert_eq!(dimensions(b"GIF89a"), None);
        // DHT (0xC4) is not a SOF.
        let dht = [
            0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x02, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x00, 0x10, 0x00,
            0x20,
        ];
        assert_eq!(dimensions(&dht), Some((32, 16)));
    }
}
