//! Reproducible layer tarballs: POSIX ustar entries sorted by path, every header normalised
//! (uid/gid 0, no user or group names, mtime = `SOURCE_DATE_EPOCH`, fixed modes), parent
//! directories added explicitly, two zero blocks at the end. The same entries give the same bytes
//! on any machine and from any directory (DESIGN §9; the OCI image-spec's layer format is a plain
//! tar of the changeset).
//!
//! What this must not do: read anything from the build machine's metadata (owners, times,
//! permissions beyond the executable bit the caller chose), or write names that escape the root
//! (every path goes through `untrusted::path::check_relative`).

use std::collections::BTreeMap;

use crate::untrusted::path::{PathError, check_relative};

const BLOCK: usize = 512;

/// One entry's kind; the bytes of a file live in the layer, not on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File { bytes: Vec<u8>, executable: bool },
    Symlink { target: String },
}

/// Entries of one layer, keyed by their normalised path (no leading `/`).
#[derive(Debug, Default, Clone)]
pub struct LayerBuilder {
    entries: BTreeMap<String, Entry>,
}

/// Why an entry could not be added or written.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("layer entry")]
    Path(#[from] PathError),
    #[error("layer entry {path}: a name longer than ustar allows (100 + 155 bytes split at a '/')")]
    NameTooLong { path: String },
    #[error("layer entry {path}: link target longer than 100 bytes")]
    LinkTooLong { path: String },
    #[error("layer entry {path}: already added as something else")]
    Conflict { path: String },
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A regular file at `path` (absolute or relative; the image root is `/`).
    pub fn file(&mut self, path: &str, bytes: Vec<u8>, executable: bool) -> Result<(), TarError> {
        self.insert(path, Entry::File { bytes, executable })
    }

    /// A symbolic link at `path` pointing to `target` (stored as given).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), TarError> {
        if target.len() > 100 {
            return Err(TarError::LinkTooLong { path: path.into() });
        }
        self.insert(
            path,
            Entry::Symlink {
                target: target.into(),
            },
        )
    }

    /// An (empty) directory; parents of files are added without asking.
    pub fn dir(&mut self, path: &str) -> Result<(), TarError> {
        self.insert(path, Entry::Dir)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, path: &str, entry: Entry) -> Result<(), TarError> {
        let rel = check_relative(path.trim_start_matches('/'))?;
        let rel = rel.to_string_lossy().into_owned();
        // Every parent as a directory entry, so extraction never invents modes or times.
        let mut parent = String::new();
        for part in rel
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |p| p.1)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(parent.clone(), Entry::Dir);
                }
                Some(Entry::Dir) => {}
                Some(_) => return Err(TarError::Conflict { path: parent }),
            }
        }
        match self.entries.get(&rel) {
            Some(existing)
                if *existing != entry
                    && !matches!((existing, &entry), (Entry::Dir, Entry::Dir)) =>
            {
                Err(TarError::Conflict { path: rel })
            }
            _ => {
                self.entries.insert(rel, entry);
                Ok(())
            }
        }
    }

    /// The tar bytes, entries in byte order of their paths, every timestamp `mtime`.
    pub fn finish(&self, mtime: u64) -> Result<Vec<u8>, TarError> {
        let size: usize = self
            .entries
            .values()
            .map(|e| match e {
                Entry::File { bytes, .. } => BLOCK + bytes.len().div_ceil(BLOCK) * BLOCK,
                _ => BLOCK,
            })
            .sum();
        let mut out = Vec::with_capacity(size + 2 * BLOCK);
        for (path, entry) in &self.entries {
            let (name, mode, typeflag, len, link) = match entry {
                Entry::Dir => (format!("{path}/"), 0o755, b'5', 0, ""),
                Entry::File { bytes, executable } => (
                    path.clone(),
                    if *executable { 0o755 } else { 0o644 },
                    b'0',
                    bytes.len(),
                    "",
                ),
                Entry::Symlink { target } => (path.clone(), 0o777, b'2', 0, target.as_str()),
            };
            out.extend_from_slice(&header(&name, mode, len as u64, mtime, typeflag, link)?);
            if let Entry::File { bytes, .. } = entry {
                out.extend_from_slice(bytes);
                out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
            }
        }
        out.resize(out.len() + 2 * BLOCK, 0);
        Ok(out)
    }
}

fn header(
    name: &str,
    mode: u32,
    size: u64,
    mtime: u64,
    typeflag: u8,
    link: &str,
) -> Result<[u8; BLOCK], TarError> {
    let mut h = [0u8; BLOCK];
    let (prefix, short) = split_name(name).ok_or_else(|| TarError::NameTooLong {
        path: name.to_string(),
    })?;
    h[..short.len()].copy_from_slice(short.as_bytes());
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], 0); // devmajor
    octal(&mut h[337..345], 0); // devminor
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    // The checksum is computed with its own field as eight spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    Ok(h)
}

/// Zero-padded octal with a trailing NUL, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

/// ustar's name (≤ 100 bytes) and prefix (≤ 155 bytes), split at a '/'.
fn split_name(name: &str) -> Option<(&str, &str)> {
    if name.len() <= 100 {
        return Some(("", name));
    }
    // The split may not fall on the trailing '/' of a directory.
    let search_end = name.len().saturating_sub(1).min(156);
    name[..search_end]
        .rmatch_indices('/')
        .map(|(i, _)| (&name[..i], &name[i + 1..]))
        .find(|(prefix, rest)| prefix.len() <= 155 && rest.len() <= 100 && !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries_of(tar: &[u8]) -> Vec<(String, u8, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + BLOCK <= tar.len() && tar[at..at + BLOCK].iter().any(|&b| b != 0) {
            let h = &tar[at..at + BLOCK];
            let field = |r: std::ops::Range<usize>| {
                String::from_utf8(h[r].iter().take_while(|&&b| b != 0).copied().collect()).unwrap()
            };
            let size = u64::from_str_radix(&field(124..135), 8).unwrap();
            let prefix = field(345..500);
            let name = if prefix.is_empty() {
                field(0..100)
            } else {
                format!("{prefix}/{}", field(0..100))
            };
            let stored: u32 = u32::from_str_radix(field(148..154).trim(), 8).unwrap();
            let mut copy = h.to_vec();
            copy[148..156].copy_from_slice(b"        ");
            assert_eq!(
                stored,
                copy.iter().map(|&b| b as u32).sum::<u32>(),
                "checksum of {name}"
            );
            out.push((name, h[156], size));
            at += BLOCK + (size as usize).div_ceil(BLOCK) * BLOCK;
        }
        out
    }

    #[test]
    fn entries_are_sorted_with_their_parents_and_the_same_input_gives_the_same_bytes() {
        let build = |order: &[(&str, &[u8])]| {
            let mut l = LayerBuilder::new();
            for (p, b) in order {
                l.file(p, b.to_vec(), false).unwrap();
            }
            l.symlink("/lib64/ld.so", "/lib/ld.so").unwrap();
            l.finish(1_700_000_000).unwrap()
        };
        let a = build(&[
            ("/opt/wms/model.onnx", b"m"),
            ("/etc/config.properties", b"c=1\n"),
        ]);
        let b = build(&[
            ("etc/config.properties", b"c=1\n"),
            ("opt/wms/model.onnx", b"m"),
        ]);
        assert_eq!(a, b);
        let names: Vec<_> = entries_of(&a).into_iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(
            names,
            [
                ("etc/".into(), b'5'),
                ("etc/config.properties".into(), b'0'),
                ("lib64/".into(), b'5'),
                ("lib64/ld.so".into(), b'2'),
                ("opt/".into(), b'5'),
                ("opt/wms/".into(), b'5'),
                ("opt/wms/model.onnx".into(), b'0'),
            ]
        );
        assert_eq!(a.len() % BLOCK, 0);
    }

    #[test]
    fn long_names_use_the_prefix_field() {
        let long = format!("usr/{}/{}", "d".repeat(90), "f".repeat(90));
        let mut l = LayerBuilder::new();
        l.file(&long, vec![1, 2, 3], true).unwrap();
        let tar = l.finish(0).unwrap();
        assert!(entries_of(&tar).iter().any(|e| e.0 == long && e.2 == 3));
        let mut l = LayerBuilder::new();
        l.file(&"x".repeat(300), vec![], false).unwrap();
        assert!(matches!(l.finish(0), Err(TarError::NameTooLong { .. })));
    }

    #[test]
    fn unsafe_or_conflicting_paths_are_refused() {
        let mut l = LayerBuilder::new();
        assert!(matches!(
            l.file("../x", vec![], false),
            Err(TarError::Path(_))
        ));
        l.file("a/b", vec![], false).unwrap();
        assert!(matches!(
            l.file("a/b/c", vec![], false),
            Err(TarError::Conflict { .. })
        ));
    }
}
