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
}
