//! Content-addressed blobs: sha256 digests and deterministic gzip. The gzip member is written by
//! hand around a raw DEFLATE stream from miniz_oxide (pure Rust, scalar, so the bytes do not
//! depend on the CPU): header with mtime 0, no name, OS 255 (unknown); trailer CRC-32 and size.
//! A gzip library's header would carry a timestamp or the build OS and break reproducibility.

use sha2::{Digest as _, Sha256};

/// Compression level of every layer; changing it changes every digest, so it is fixed here.
pub const GZIP_LEVEL: u8 = 6;

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:` digest, or `None` for anything else (untrusted digests from a
/// registry or an index are checked with this before they become file names).
pub fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// One gzip member of `data` (RFC 1952), the same bytes for the same input everywhere.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, GZIP_LEVEL);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    // ID1 ID2, CM=8 (deflate), FLG=0, MTIME=0, XFL=0, OS=255.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    // ISIZE is the input length modulo 2^32 (RFC 1952 §2.3.1).
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Compressed layers kept between builds, keyed by the digest of the uncompressed tar: the
/// runtime and server layers of a new model version are the same tars as last time, so they are
/// not compressed again (that was most of a model-only rebuild). A cached member is used only
/// after it inflates to exactly the tar it stands for, so a stale or tampered cache (a shared
/// self-hosted runner) costs a recompression, never a wrong layer.
#[derive(Debug, Clone, Default)]
pub struct GzipCache {
    dir: Option<std::path::PathBuf>,
}

impl GzipCache {
    /// A cache in `dir` (created when first written); `None` compresses every time.
    pub fn new(dir: Option<std::path::PathBuf>) -> Self {
        GzipCache { dir }
    }

    /// [`gzip`] of `tar`, from the cache when it holds a member that inflates back to `tar`.
    pub fn gzip(&self, tar: &[u8]) -> Vec<u8> {
        let Some(dir) = &self.dir else {
            return gzip(tar);
        };
        let diff_id = sha256_digest(tar);
        let path = dir.join(format!("{}.gz", &diff_id["sha256:".len()..]));
        if let Ok(cached) = std::fs::read(&path)
            && inflates_to(&cached, tar)
        {
            return cached;
        }
        let gz = gzip(tar);
        // Best effort: a cache that cannot be written only costs time next build.
        if let Err(e) = crate::fsutil::write_atomic(&path, &gz) {
            tracing::debug!(error = %e, "layer cache not written");
        }
        gz
    }
}

/// Whether `gz` is one gzip member in our fixed format whose content is exactly `data`.
fn inflates_to(gz: &[u8], data: &[u8]) -> bool {
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    if gz.len() < 18 || gz[..10] != HEADER {
        return false;
    }
    let (body, trailer) = gz[10..].split_at(gz.len() - 18);
    let Ok(inflated) = miniz_oxide::inflate::decompress_to_vec_with_limit(body, data.len()) else {
        return false;
    };
    inflated == data
        && trailer[..4] == crc32fast::hash(data).to_le_bytes()
        && trailer[4..] == (data.len() as u32).to_le_bytes()
}

/// Why a gzip blob could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    #[error("it is not gzip: bad header at byte {offset}")]
    Header { offset: usize },
    #[error("its DEFLATE data is corrupt")]
    Corrupt,
    #[error("it ends before its gzip member does")]
    Truncated,
    #[error("a gzip trailer's CRC-32 or length does not match the inflated data")]
    Trailer,
    #[error("it inflates to more than {limit} bytes")]
    TooLarge { limit: u64 },
}

/// The `sha256:` digest and length of what `gz` inflates to (RFC 1952, one or more members, any
/// header flags), streamed: the inflated bytes are hashed, never held. This is a layer's
/// `diff_id`. More than `limit` inflated bytes is an error, so a compression bomb costs at most
/// `limit` bytes of hashing.
pub fn gunzip_digest(gz: &[u8], limit: u64) -> Result<(String, u64), GunzipError> {
    use miniz_oxide::inflate::stream::{InflateState, inflate};
    use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 << 10];
    let mut rest = gz;
    loop {
        let offset = gz.len() - rest.len();
        rest = skip_gzip_header(rest).ok_or(GunzipError::Header { offset })?;
        let mut state = InflateState::new_boxed(DataFormat::Raw);
        let mut crc = crc32fast::Hasher::new();
        let mut member: u64 = 0;
        loop {
            let r = inflate(&mut state, rest, &mut buf, MZFlush::None);
            rest = &rest[r.bytes_consumed..];
            let out = &buf[..r.bytes_written];
            hasher.update(out);
            crc.update(out);
            member += out.len() as u64;
            total += out.len() as u64;
            if total > limit {
                return Err(GunzipError::TooLarge { limit });
            }
            match r.status {
                Ok(MZStatus::StreamEnd) => break,
                Ok(_) | Err(MZError::Buf) if r.bytes_consumed > 0 || r.bytes_written > 0 => {}
                Ok(_) | Err(MZError::Buf) => return Err(GunzipError::Truncated),
                Err(_) => return Err(GunzipError::Corrupt),
            }
        }
        let Some((trailer, after)) = rest.split_first_chunk::<8>() else {
            return Err(GunzipError::Truncated);
        };
        if trailer[..4] != crc.finalize().to_le_bytes()
            || trailer[4..] != (member as u32).to_le_bytes()
        {
            return Err(GunzipError::Trailer);
        }
        rest = after;
        if rest.is_empty() {
            return Ok((format!("sha256:{}", hex::encode(hasher.finalize())), total));
        }
    }
}

/// The bytes after a gzip member header (magic, CM 8, FLG with FEXTRA/FNAME/FCOMMENT/FHCRC),
/// or `None` when it is not one.
fn skip_gzip_header(gz: &[u8]) -> Option<&[u8]> {
    let (head, mut rest) = gz.split_first_chunk::<10>()?;
    let flags = head[3];
    if head[..3] != [0x1f, 0x8b, 8] || flags & 0xe0 != 0 {
        return None;
    }
    if flags & 4 != 0 {
        let (len, after) = rest.split_first_chunk::<2>()?;
        rest = after.get(usize::from(u16::from_le_bytes(*len))..)?;
    }
    for flag in [8, 16] {
        if flags & flag != 0 {
            let end = rest.iter().position(|&b| b == 0)?;
            rest = &rest[end + 1..];
        }
    }
    if flags & 2 != 0 {
        rest = rest.get(2..)?;
    }
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_ids_are_the_digest_of_the_inflated_stream_of_any_gzip() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        let want = (sha256_digest(&data), data.len() as u64);
        assert_eq!(gunzip_digest(&gzip(&data), u64::MAX).unwrap(), want);
        // Another encoder with a name, a comment and extra field; two members.
        let mut named = flate2::GzBuilder::new()
            .filename("layer.tar")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut named, &data[..1000]).unwrap();
        let mut two = named.finish().unwrap();
        two.extend_from_slice(&gzip(&data[1000..]));
        assert_eq!(gunzip_digest(&two, u64::MAX).unwrap(), want);

        let gz = gzip(&data);
        assert!(matches!(
            gunzip_digest(&gz[..gz.len() - 3], u64::MAX),
            Err(GunzipError::Truncated)
        ));
        let mut bad_crc = gz.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        assert!(matches!(
            gunzip_digest(&bad_crc, u64::MAX),
            Err(GunzipError::Trailer)
        ));
        assert!(matches!(
            gunzip_digest(b"PK\x03\x04 not gzip", u64::MAX),
            Err(GunzipError::Header { offset: 0 })
        ));
        let mut garbage_after = gz.clone();
        garbage_after.extend_from_slice(b"junk");
        assert!(matches!(
            gunzip_digest(&garbage_after, u64::MAX),
            Err(GunzipError::Header { .. })
        ));
        assert!(matches!(
            gunzip_digest(&gz, 1000),
            Err(GunzipError::TooLarge { limit: 1000 })
        ));
    }

    #[test]
    fn gzip_round_trips_through_an_independent_decoder() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let gz = gzip(&data);
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(gzip(&data), gz, "deterministic");
    }

    #[test]
    fn digests_are_checked_before_use_as_names() {
        let d = sha256_digest(b"");
        assert_eq!(
            d,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(digest_hex(&d).is_some());
        assert!(digest_hex("sha256:../../etc/passwd").is_none());
        assert!(digest_hex("sha512:ab").is_none());
    }

    #[test]
    fn the_layer_cache_is_used_only_when_it_inflates_to_the_same_tar() {
        let dir = tempfile::tempdir().unwrap();
        let cache = GzipCache::new(Some(dir.path().to_path_buf()));
        let tar: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 13).to_le_bytes())
            .collect();
        let first = cache.gzip(&tar);
        assert_eq!(first, gzip(&tar));
        let entry = dir.path().join(format!("{}.gz", &sha256_digest(&tar)[7..]));
        assert!(entry.is_file());
        assert_eq!(cache.gzip(&tar), first);
        // A tampered entry (another layer's bytes) is ignored and replaced.
        let other = gzip(b"something else entirely");
        fs_err::write(&entry, &other).unwrap();
        assert_eq!(cache.gzip(&tar), first);
        assert_eq!(fs_err::read(&entry).unwrap(), first);
        assert!(!inflates_to(&other, &tar));
    }
}
