//! Input layouts shared by several targets.

/// A byte stream and where to cut it into pushes.
///
/// Layout: byte 0's low 4 bits give the number of cuts `k` (0..=15); then `k` piece
/// lengths, each one byte (`1 + b`, 1..=256) or, when `wide`, two big-endian bytes
/// (`1 + u16`, 1..=65536); then the stream itself. The stream is cut into those pieces
/// (clipped to what is left) and one last piece with the rest. A seed that starts with a
/// zero byte is the plain stream pushed at once.
#[derive(Debug)]
pub struct Split<'a> {
    pub stream: &'a [u8],
    lens: Vec<usize>,
}

impl<'a> Split<'a> {
    pub fn parse(data: &'a [u8], wide: bool) -> Split<'a> {
        let Some((&first, mut rest)) = data.split_first() else {
            return Split {
                stream: &[],
                lens: Vec::new(),
            };
        };
        let width = if wide { 2 } else { 1 };
        let mut lens = Vec::new();
        for _ in 0..first & 0x0F {
            let Some(field) = rest.get(..width) else {
                break;
            };
            rest = &rest[width..];
            let n = field
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            lens.push(n + 1);
        }
        Split { stream: rest, lens }
    }

    /// The pieces, in order; empty pieces are skipped. Their concatenation is `stream`.
    pub fn pieces(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::with_capacity(self.lens.len() + 1);
        let mut rest = self.stream;
        for &n in &self.lens {
            let (piece, tail) = rest.split_at(n.min(rest.len()));
            if !piece.is_empty() {
                out.push(piece);
            }
            rest = tail;
        }
        if !rest.is_empty() {
            out.push(rest);
        }
        out
    }
}

/// Text fields separated by 0xFF (a byte that never occurs in UTF-8), each decoded
/// lossily; missing fields are empty.
pub fn fields<const N: usize>(data: &[u8]) -> [String; N] {
    let mut parts = data.split(|&b| b == 0xFF);
    std::array::from_fn(|_| {
        parts
            .next()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default()
    })
}

/// Builds a seed for [`fields`].
pub fn join_fields(fields: &[&[u8]]) -> Vec<u8> {
    fields.join(&0xFF)
}
