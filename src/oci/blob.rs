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

#[cfg(test)]
mod tests {
    use super::*;

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
