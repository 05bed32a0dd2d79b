//! Object ids and the local cache (`.dvc/cache`). DVC 3.x keeps objects at
//! `files/md5/<2 hex>/<30 hex>[.dir]`; 2.x legacy entries (no `hash: md5`) at `<2>/<30>` directly
//! under the cache or remote root (DESIGN §8). The same relative key serves both sides.
//!
//! Cache entries are written once, atomically (temp file in the entry's directory, then rename)
//! and read-only (0444), as DVC leaves them; a half-written or unverified object never appears
//! under its id.
//!
//! The repository can commit the cache too (entries, or `.dvc/cache` itself, as links), so every
//! entry is reached through [`crate::untrusted::path`]: written only below real directories of
//! the workspace, read only when it is a regular file there. An entry that is a link counts as
//! missing, and a download replaces the link instead of writing through it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::DvcError;
use crate::untrusted::path::{create_parents_inside, join_inside};

/// An object's identity: its md5, whether it is a `.dir` manifest, and its layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// 32 lowercase hex digits.
    pub md5: String,
    pub dir: bool,
    pub legacy: bool,
}

impl ObjectId {
    /// Parses a recorded `md5` value (`<32 hex>` or `<32 hex>.dir`).
    pub fn parse(value: &str, legacy: bool) -> Option<ObjectId> {
        let (md5, dir) = match value.strip_suffix(".dir") {
            Some(m) => (m, true),
            None => (value, false),
        };
        (md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit())).then(|| ObjectId {
            md5: md5.to_ascii_lowercase(),
            dir,
            legacy,
        })
    }

    /// The key below the cache or remote root: `files/md5/ab/cdef….dir`.
    pub fn rel_key(&self) -> String {
        let (head, tail) = self.md5.split_at(2);
        let suffix = if self.dir { ".dir" } else { "" };
        if self.legacy {
            format!("{head}/{tail}{suffix}")
        } else {
            format!("files/md5/{head}/{tail}{suffix}")
        }
    }

    /// Whether `bytes`' md5 matches this id. Legacy (2.x) ids of text files were computed after
    /// CRLF → LF, so for those the converted bytes may match instead.
    pub fn matches(&self, actual_md5: &str, bytes_for_legacy: Option<&[u8]>) -> bool {
        if actual_md5 == self.md5 {
            return true;
        }
        match (self.legacy, bytes_for_legacy) {
            (true, Some(b)) if !b.contains(&0) => {
                let unix: Vec<u8> = dos2unix(b);
                hex::encode(Md5::digest(&unix)) == self.md5
            }
            _ => false,
        }
    }
}

fn dos2unix(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The md5 of a file's bytes (streamed) and its size.
pub fn md5_file(path: &Path) -> Result<(String, u64), DvcError> {
    let io = |source| DvcError::Fs {
        what: "hash a file",
        source,
    };
    let mut f = fs_err::File::open(path).map_err(io)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// The md5 of bytes in memory, as hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// The cache's place below the workspace root.
pub const CACHE_DIR: &str = ".dvc/cache";

/// The local cache of the workspace at `root` (`<root>/.dvc/cache`).
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    /// `<root>/.dvc/cache`.
    pub fn dir(&self) -> PathBuf {
        self.root.join(CACHE_DIR)
    }

    fn rel(id: &ObjectId) -> String {
        format!("{CACHE_DIR}/{}", id.rel_key())
    }

    /// Where `id`'s entry is (for messages and metadata; read through [`Cache::entry`]).
    pub fn path_of(&self, id: &ObjectId) -> PathBuf {
        self.root.join(Self::rel(id))
    }

    /// Whether the cache holds `id` as a regular file (a link there does not count).
    pub fn contains(&self, id: &ObjectId) -> bool {
        fs_err::symlink_metadata(self.path_of(id)).is_ok_and(|m| m.is_file())
    }

    /// The entry of `id` for reading: a regular file below real directories of the workspace.
    /// `name` is the workspace path it belongs to, for the error when it is missing.
    pub fn entry(&self, id: &ObjectId, name: &str) -> Result<PathBuf, DvcError> {
        let path = join_inside(&self.root, &Self::rel(id))?;
        if !self.contains(id) {
            return Err(DvcError::NotInCache {
                name: name.to_string(),
                path,
            });
        }
        Ok(path)
    }

    /// A temp file in the directory of `id`'s entry, to fill and then [`Cache::commit`].
    pub fn temp_for(&self, id: &ObjectId) -> Result<tempfile::NamedTempFile, DvcError> {
        let path = create_parents_inside(&self.root, &Self::rel(id))?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tempfile::Builder::new()
            .prefix(".wms-tmp-")
            .tempfile_in(&dir)
            // tempfile's error names the directory.
            .map_err(|source| DvcError::Fs {
                what: "create a temp file in the cache",
                source,
            })
    }

    /// Makes a verified temp file the entry for `id` (read-only, as DVC's cache files are).
    pub fn commit(&self, id: &ObjectId, tmp: tempfile::NamedTempFile) -> Result<PathBuf, DvcError> {
        let path = self.path_of(id);
        let io = |source| DvcError::Io {
            what: "write the cache entry",
            path: path.clone(),
            source,
        };
        tmp.as_file().sync_all().map_err(io)?;
        set_mode(tmp.path(), 0o444).map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(path)
    }

    /// Stores `bytes` under `id` unless present.
    pub fn store_bytes(&self, id: &ObjectId, bytes: &[u8]) -> Result<(), DvcError> {
        if self.contains(id) {
            return Ok(());
        }
        let mut tmp = self.temp_for(id)?;
        tmp.write_all(bytes).map_err(|source| DvcError::Io {
            what: "write",
            path: tmp.path().to_path_buf(),
            source,
        })?;
        self.commit(id, tmp)?;
        Ok(())
    }

    /// Copies the workspace file `src` in as `id` unless present.
    pub fn store_file(&self, id: &ObjectId, src: &Path) -> Result<(), DvcError> {
        if self.contains(id) {
            return Ok(());
        }
        let tmp = self.temp_for(id)?;
        fs_err::copy(src, tmp.path()).map_err(|source| DvcError::Fs {
            what: "copy a file into the cache",
            source,
        })?;
        self.commit(id, tmp)?;
        Ok(())
    }
}

/// Sets unix permission bits (no-op elsewhere).
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_dvc3_and_legacy_layouts() {
        let id = ObjectId::parse("d23608bc013c1f42db5f0e4a34bbb6ea.dir", false).unwrap();
        assert_eq!(
            id.rel_key(),
            "files/md5/d2/3608bc013c1f42db5f0e4a34bbb6ea.dir"
        );
        let legacy = ObjectId::parse("b1946ac92492d2347c6235b4d2611184", true).unwrap();
        assert_eq!(legacy.rel_key(), "b1/946ac92492d2347c6235b4d2611184");
        assert!(ObjectId::parse("xyz", false).is_none());
        // md5("hello\n"); the legacy id of "hello\r\n" is the same.
        assert!(legacy.matches(&md5_hex(b"hello\r\n"), Some(b"hello\r\n")));
        let modern = ObjectId {
            legacy: false,
            ..legacy
        };
        assert!(!modern.matches(&md5_hex(b"hello\r\n"), Some(b"hello\r\n")));
    }

    #[test]
    fn stored_entries_are_read_only_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: dir.path().to_path_buf(),
        };
        let id = ObjectId::parse(&md5_hex(b"abc"), false).unwrap();
        cache.store_bytes(&id, b"abc").unwrap();
        let p = cache.path_of(&id);
        assert!(p.ends_with(".dvc/cache/files/md5/90/0150983cd24fb0d6963f7d28e17f72"));
        assert_eq!(cache.entry(&id, "abc.txt").unwrap(), p);
        assert_eq!(fs_err::read(&p).unwrap(), b"abc");
        assert!(fs_err::metadata(&p).unwrap().permissions().readonly());
        assert_eq!(md5_file(&p).unwrap(), (id.md5.clone(), 3));
    }

    #[test]
    fn issue11_a_cache_committed_as_links_is_neither_read_nor_written_through() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: root.path().to_path_buf(),
        };
        let id = ObjectId::parse(&md5_hex(b"abc"), false).unwrap();
        // An entry that is a link to a secret: not in the cache, not readable, and a download
        // replaces the link.
        let secret = outside.path().join("secret");
        fs_err::write(&secret, b"token").unwrap();
        let entry = cache.path_of(&id);
        fs_err::create_dir_all(entry.parent().unwrap()).unwrap();
        symlink(&secret, &entry).unwrap();
        assert!(!cache.contains(&id));
        assert!(matches!(
            cache.entry(&id, "x"),
            Err(DvcError::NotInCache { .. })
        ));
        cache.store_bytes(&id, b"abc").unwrap();
        assert_eq!(fs_err::read(&secret).unwrap(), b"token");
        assert!(cache.contains(&id));
        // `.dvc/cache` itself a link out of the workspace: nothing is created through it.
        let other = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(other.path().join(".dvc")).unwrap();
        symlink(outside.path(), other.path().join(CACHE_DIR)).unwrap();
        let linked = Cache {
            root: other.path().to_path_buf(),
        };
        let err = linked.store_bytes(&id, b"abc").unwrap_err();
        assert!(matches!(err, DvcError::Path(_)), "{err}");
        assert!(linked.entry(&id, "x").is_err());
        assert_eq!(fs_err::read_dir(outside.path()).unwrap().count(), 1);
    }
}
