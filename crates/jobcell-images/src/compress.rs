//! Compression detection by magic bytes (never by file name).

use std::io::{self, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    pub fn format_name(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "tar+gzip",
            Compression::Bzip2 => "tar+bzip2",
            Compression::Xz => "tar+xz",
            Compression::Zstd => "tar+zstd",
        }
    }

    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Peek at the first bytes of `r`, detect the compression, and return a reader of the
/// decompressed tar stream.
pub fn open<'a, R: Read + 'a>(mut r: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let c = Compression::detect(&head[..n]);
    let joined = io::Cursor::new(head[..n].to_vec()).chain(r);
    const BUF: usize = 1 << 20;
    let out: Box<dyn Read + 'a> = match c {
        Compression::None => Box::new(joined),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(BUF, joined),
        )),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(
            io::BufReader::with_capacity(BUF, joined),
        )),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(
            io::BufReader::with_capacity(BUF, joined),
        )),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(
            io::BufReader::with_capacity(BUF, joined),
        )?),
    };
    Ok((c, out))
}
