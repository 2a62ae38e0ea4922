//! One sequential pass over a file that hashes every byte (SHA-256), reports
//! progress, and hands chosen regions to the caller as they go by. Regions are
//! visited in increasing file order, so each byte is read exactly once and
//! nothing larger than one chunk is buffered besides the tensors themselves.

use std::fs::File;
use std::io::{BufReader, Cursor, ErrorKind, Read, Seek};
use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Bytes read per call; a multiple of every element size.
const CHUNK: usize = 1 << 20;

/// Where a checkpoint's bytes come from: a file, or memory (the fuzz targets, tests).
#[derive(Clone, Copy)]
pub(crate) enum Input<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

pub(crate) trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

impl<'a> Input<'a> {
    /// A new reader at the start (buffered for a file).
    pub(crate) fn open(self) -> Result<Box<dyn ReadSeek + 'a>> {
        Ok(match self {
            Input::File(path) => Box::new(BufReader::new(File::open(path).context("cannot open")?)),
            Input::Bytes(b) => Box::new(Cursor::new(b)),
        })
    }

    /// Up to the first `n` bytes.
    pub(crate) fn head(self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut head = Vec::with_capacity(n);
        match self {
            Input::File(path) => File::open(path)?.take(n as u64).read_to_end(&mut head)?,
            Input::Bytes(b) => b.take(n as u64).read_to_end(&mut head)?,
        };
        Ok(head)
    }

    pub(crate) fn len(self) -> Result<u64> {
        Ok(match self {
            Input::File(path) => std::fs::metadata(path).context("cannot stat")?.len(),
            Input::Bytes(b) => b.len() as u64,
        })
    }
}

pub(crate) struct HashedFile<'p> {
    file: Box<dyn Read + 'p>,
    len: u64,
    pos: u64,
    hasher: Sha256,
    buf: Vec<u8>,
    progress: &'p mut dyn FnMut(u64, u64),
}

impl<'p> HashedFile<'p> {
    pub(crate) fn open(input: Input<'p>, progress: &'p mut dyn FnMut(u64, u64)) -> Result<Self> {
        let file: Box<dyn Read + 'p> = match input {
            // Read in CHUNK-sized calls already: no buffer in between.
            Input::File(path) => Box::new(File::open(path).context("cannot open")?),
            Input::Bytes(b) => Box::new(b),
        };
        let len = input.len()?;
        progress(0, len);
        Ok(HashedFile {
            file,
            len,
            pos: 0,
            hasher: Sha256::new(),
            // A chunk, or the whole input when that is smaller.
            buf: vec![0; CHUNK.min(usize::try_from(len).unwrap_or(CHUNK))],
            progress,
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Reads and hashes the next `n <= CHUNK` bytes.
    fn next_chunk(&mut self, n: usize) -> Result<&[u8]> {
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        let buf = &mut self.buf[..n];
        if let Err(e) = self.file.read_exact(buf) {
            if e.kind() == ErrorKind::UnexpectedEof {
                bail!(
                    "the file ended before byte {} although it was {} bytes long when opened",
                    self.pos + n as u64,
                    self.len
                );
            }
            return Err(e).with_context(|| format!("read error at byte {}", self.pos));
        }
        self.hasher.update(&*buf);
        self.pos += n as u64;
        (self.progress)(self.pos, self.len);
        Ok(&self.buf[..n])
    }

    /// Hashes and discards bytes up to `offset`.
    pub(crate) fn skip_to(&mut self, offset: u64) -> Result<()> {
        if offset < self.pos {
            bail!(
                "data regions overlap (byte {offset} was requested after byte {})",
                self.pos
            );
        }
        let mut left = offset - self.pos;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            self.next_chunk(n)?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Reads `len` bytes from the current position into `sink`, in pieces whose
    /// lengths are multiples of 8 bytes (except the last).
    pub(crate) fn read(&mut self, len: u64, sink: &mut dyn FnMut(&[u8])) -> Result<()> {
        if len > self.len.saturating_sub(self.pos) {
            bail!(
                "{len} bytes at byte {} run past the end of the file ({} bytes)",
                self.pos,
                self.len
            );
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            sink(self.next_chunk(n)?);
            left -= n as u64;
        }
        Ok(())
    }

    /// Reads `len` bytes from the current position into a new buffer.
    pub(crate) fn read_vec(&mut self, len: u64) -> Result<Vec<u8>> {
        let cap = usize::try_from(len).context("region too large")?;
        let mut out = Vec::new();
        out.try_reserve_exact(cap)
            .map_err(|_| anyhow::anyhow!("cannot allocate {len} bytes"))?;
        self.read(len, &mut |c| out.extend_from_slice(c))?;
        Ok(out)
    }

    /// Hashes the rest of the file; returns the lowercase hex SHA-256.
    pub(crate) fn finish(mut self) -> Result<String> {
        self.skip_to(self.len)?;
        let digest = self.hasher.finalize();
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}
