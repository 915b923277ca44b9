//! IDX files (MNIST, Fashion-MNIST, KMNIST), raw or gzip-compressed.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

/// An unsigned-byte IDX array.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Row-major bytes.
    pub data: Vec<u8>,
}

/// The most bytes a gzip file may inflate to (MNIST's largest file is
/// 47 MB): a damaged or hostile stream must not exhaust memory.
pub const MAX_INFLATED_BYTES: u64 = 1 << 30;

/// Reads the whole file, gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_maybe_gz(path, raw)
}

/// [`read_maybe_gz`] of bytes read already (`path` names them in errors).
pub fn decode_maybe_gz(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        let mut rest = &raw[..];
        let mut decoder = flate2::bufread::GzDecoder::new(&mut rest);
        (&mut decoder)
            .take(MAX_INFLATED_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| {
                DataError::corrupt(
                    path,
                    format!("corrupt gzip stream ({e}): re-download the file"),
                )
            })?;
        if out.len() as u64 > MAX_INFLATED_BYTES {
            return Err(DataError::corrupt(
                path,
                format!(
                    "inflates to more than {MAX_INFLATED_BYTES} bytes: not a data file of this kind"
                ),
            ));
        }
        drop(decoder);
        // The decoder stops at the end of its stream; anything after it
        // would be silently ignored.
        if !rest.is_empty() {
            return Err(DataError::corrupt(
                path,
                format!(
                    "{} bytes follow the gzip stream: the file is damaged or two files were joined; re-download it",
                    rest.len()
                ),
            ));
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX bytes: magic `00 00 08 ndim`, `ndim` big-endian u32 sizes,
/// then exactly `prod(sizes)` bytes.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    let bad = |reason: String| DataError::corrupt(path, reason);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 || bytes.len() < 4 + 4 * ndim {
        return Err(bad(format!(
            "IDX header with {ndim} dimensions is truncated"
        )));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let body = &bytes[4 + 4 * ndim..];
    match expected {
        Some(n) if n == body.len() => Ok(IdxArray {
            dims,
            data: body.to_vec(),
        }),
        Some(n) if n > body.len() => Err(bad(format!(
            "truncated: header {dims:?} needs {n} bytes of data, the file has {}",
            body.len()
        ))),
        Some(n) => Err(bad(format!(
            "the IDX header describes an array of {dims:?} ({n} bytes) but {} trailing bytes follow: the file is damaged, or it is not the file expected under this name",
            body.len() - n
        ))),
        None => Err(bad(format!("impossible dimensions {dims:?}"))),
    }
}

/// Reads and parses an IDX file.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_maybe_gz(path)?;
    parse_idx(path, &bytes)
}

#[cfg(test)]
pub(crate) fn encode_idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend(data);
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn raw_and_gzip_files_parse() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode_idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let raw = dir.path().join("a-idx2-ubyte");
        std::fs::write(&raw, &bytes).unwrap();
        let packed = dir.path().join("a-idx2-ubyte.gz");
        std::fs::write(&packed, gz(&bytes)).unwrap();
        for p in [raw, packed] {
            let a = read_idx(&p).unwrap();
            assert_eq!(a.dims, vec![2, 3]);
            assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
        }
    }

    #[test]
    fn broken_files_are_clear_errors() {
        let p = Path::new("x");
        let ok = encode_idx(&[2, 3], &[0; 6]);
        let msg = |b: &[u8]| parse_idx(p, b).unwrap_err().to_string();
        assert!(msg(&ok[..ok.len() - 1]).contains("truncated"));
        assert!(msg(&[ok.clone(), vec![9]].concat()).contains("trailing"));
        assert!(msg(b"\x01\x02\x08\x01").contains("bad magic"));
        assert!(msg(b"\x00\x00\x0d\x01\x00\x00\x00\x01").contains("not unsigned byte"));
        assert!(msg(b"\x00\x00\x08\x03\x00").contains("header"));

        let dir = tempfile::tempdir().unwrap();
        let bad_gz = dir.path().join("bad.gz");
        let mut z = gz(&ok);
        let mid = z.len() / 2;
        z[mid] ^= 0xff;
        z.truncate(z.len() - 4);
        std::fs::write(&bad_gz, z).unwrap();
        assert!(
            read_idx(&bad_gz)
                .unwrap_err()
                .to_string()
                .contains("corrupt gzip")
        );
        // A whole stream with garbage after it is not silently cut short.
        let joined = dir.path().join("joined.gz");
        std::fs::write(&joined, [gz(&ok), b"garbage".to_vec()].concat()).unwrap();
        let err = read_idx(&joined).unwrap_err().to_string();
        assert!(err.contains("7 bytes follow the gzip stream"), "{err}");
    }
}
