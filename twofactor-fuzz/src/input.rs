//! A reader that turns fuzz bytes into choices. Running out of bytes is not an error: every
//! read then yields zero or empty, so every input is a valid program.

/// Fuzz bytes, consumed front to back.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// Whether every byte was used.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte (0 when exhausted).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// A field: a little-endian u16 length, then that many bytes (fewer at the end).
    pub fn field(&mut self) -> &'a [u8] {
        let len = usize::from(u16::from_le_bytes([self.byte(), self.byte()]));
        let (field, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        field
    }

    /// A field as text (invalid UTF-8 replaced).
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.field()).into_owned()
    }

    /// A short string: one length byte, then the bytes.
    pub fn short_text(&mut self) -> String {
        let len = usize::from(self.byte());
        let (s, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        String::from_utf8_lossy(s).into_owned()
    }
}

/// Builds an input for [`Input::field`] reads: each part prefixed with its u16 length. Used to
/// write seeds.
pub fn fields(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        let len = u16::try_from(p.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(p.get(..usize::from(len)).unwrap_or(p));
    }
    out
}
