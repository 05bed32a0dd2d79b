//! The one path-safety rule: how a path that comes from a repository or an archive (a DVC
//! `relpath` or `path:`, a `.mar` entry, a checkout, anything later) becomes a filesystem path.
//!
//! A path is accepted when it is relative, non-empty, has no `..` component and no NUL byte, and
//! every parent of it that already exists below the root is a real directory: a symbolic link
//! committed as a directory is refused instead of followed, so creating directories and renaming a
//! file into place cannot land outside the root. The final component may be a link; callers write
//! through a temp file and `rename`, which replaces a link instead of writing through it.
//!
//! What this module must not do: canonicalize the write target (that would follow the very links
//! it has to refuse), or accept a path because it "normalizes" to somewhere inside the root —
//! `a/../b` is refused, not simplified, since a repository has no reason to write it.

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::untrusted::text::for_log;

/// Why a path was refused. Each message names the path (escaped) and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("unsafe path {:?}: it is empty; hint: give a path relative to the workspace", for_log(.path))]
    Empty { path: String },
    #[error(
        "unsafe path {}: absolute paths are not allowed here; hint: paths from a repository or archive must be relative to the workspace",
        for_log(.path)
    )]
    Absolute { path: String },
    #[error(
        "unsafe path {}: a `..` component would leave the workspace; hint: write the path without `..`",
        for_log(.path)
    )]
    ParentDir { path: String },
    #[error("unsafe path {}: it contains a NUL byte", for_log(.path))]
    Nul { path: String },
    #[error(
        "unsafe path {}: {} is a symbolic link; hint: wms does not follow links out of the workspace, commit a real directory there instead",
        for_log(.path), .link.display()
    )]
    SymlinkParent { path: String, link: PathBuf },
    #[error(
        "cannot place {}: {} exists and is not a directory; hint: remove or rename it",
        for_log(.path), .blocker.display()
    )]
    NotDirectory { path: String, blocker: PathBuf },
    #[error(
        "{} resolves to {}, outside {}; hint: wms does not read through links that leave the repository, copy the file into it instead",
        .path.display(), .real.display(), .root.display()
    )]
    Outside {
        path: PathBuf,
        real: PathBuf,
        root: PathBuf,
    },
    #[error("cannot check {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Checks an untrusted relative path and returns it with `.` components and repeated or trailing
/// slashes dropped. `/` is the only separator (DVC and zip both use it).
pub fn check_relative(rel: &str) -> Result<PathBuf, PathError> {
    let path = || rel.to_string();
    if rel.contains('\0') {
        return Err(PathError::Nul { path: path() });
    }
    if rel.starts_with('/') {
        return Err(PathError::Absolute { path: path() });
    }
    let mut out = PathBuf::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::ParentDir { path: path() }),
            _ => out.push(part),
        }
    }
    // `Path::push` of a lone component cannot make it absolute on Unix; this guards the rule
    // against a platform where it could (a `C:` prefix).
    if out.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(PathError::Absolute { path: path() });
    }
    if out.as_os_str().is_empty() {
        return Err(PathError::Empty { path: path() });
    }
    Ok(out)
}

/// `root` joined with the untrusted `rel`, after [`check_relative`] and a check that every
/// existing parent below `root` is a real directory (not a link). Creates nothing.
pub fn join_inside(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    walk_parents(root, rel, false)
}

/// Like [`join_inside`], and creates the missing parent directories one at a time, each checked
/// before the next is made inside it. Returns the target path; its parent then exists and is a
/// real directory inside `root`.
pub fn create_parents_inside(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    walk_parents(root, rel, true)
}

fn walk_parents(root: &Path, rel: &str, create: bool) -> Result<PathBuf, PathError> {
    let relative = check_relative(rel)?;
    let parts: Vec<_> = relative.components().collect();
    let mut current = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) => check_parent(rel, &current, &meta)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match std::fs::create_dir(&current) {
                    Ok(()) => {}
                    // Made by someone else meanwhile: check what it is, as above.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let meta = std::fs::symlink_metadata(&current).map_err(|source| {
                            PathError::Io {
                                path: current.clone(),
                                source,
                            }
                        })?;
                        check_parent(rel, &current, &meta)?;
                    }
                    Err(source) => {
                        return Err(PathError::Io {
                            path: current,
                            source,
                        });
                    }
                }
            }
            // Nothing below a missing directory exists, so no link can be followed there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(source) => {
                return Err(PathError::Io {
                    path: current,
                    source,
                });
            }
        }
    }
    Ok(root.join(relative))
}

fn check_parent(rel: &str, dir: &Path, meta: &std::fs::Metadata) -> Result<(), PathError> {
    if meta.file_type().is_symlink() {
        return Err(PathError::SymlinkParent {
            path: rel.to_string(),
            link: dir.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(PathError::NotDirectory {
            path: rel.to_string(),
            blocker: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// For reading: the real location of `path` (links resolved), refused when it is outside the
/// real location of `root`. `path` may be relative to the current directory.
pub fn existing_inside(root: &Path, path: &Path) -> Result<PathBuf, PathError> {
    let canonical = |p: &Path| {
        std::fs::canonicalize(p).map_err(|source| PathError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let real_root = canonical(root)?;
    let real = canonical(path)?;
    if !real.starts_with(&real_root) {
        return Err(PathError::Outside {
            path: path.to_path_buf(),
            real,
            root: real_root,
        });
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn relative_paths_are_normalised() {
        assert_eq!(check_relative("a/b.png").unwrap(), Path::new("a/b.png"));
        assert_eq!(check_relative("./a//b/").unwrap(), Path::new("a/b"));
        assert_eq!(check_relative("a\nb").unwrap(), Path::new("a\nb"));
    }

    #[test]
    fn escaping_paths_are_refused() {
        for bad in ["", ".", "/etc/passwd", "../x", "a/../../x", "a/..", "a\0b"] {
            let err = check_relative(bad).unwrap_err();
            assert!(err.to_string().starts_with("unsafe path"), "{bad:?}: {err}");
        }
        assert!(matches!(
            check_relative("a/../b"),
            Err(PathError::ParentDir { .. })
        ));
    }

    #[test]
    fn a_symlinked_parent_is_refused_and_nothing_is_created_through_it() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), root.path().join("data")).unwrap();
        let err = create_parents_inside(root.path(), "data/sub/x.png").unwrap_err();
        assert!(matches!(err, PathError::SymlinkParent { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs_err::read_dir(outside.path()).unwrap().count(), 0);
        assert!(join_inside(root.path(), "data/x.png").is_err());
    }

    #[test]
    fn missing_parents_are_created_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let target = create_parents_inside(root.path(), "a/b/c.png").unwrap();
        assert_eq!(target, root.path().join("a/b/c.png"));
        assert!(root.path().join("a/b").is_dir());
        // A file where a directory must go is named in the error.
        fs_err::write(root.path().join("f"), b"").unwrap();
        let err = create_parents_inside(root.path(), "f/x").unwrap_err();
        assert!(matches!(err, PathError::NotDirectory { .. }), "{err}");
    }

    #[test]
    fn reading_through_a_link_out_of_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs_err::write(outside.path().join("secret"), b"s").unwrap();
        fs_err::write(root.path().join("ok"), b"o").unwrap();
        symlink(outside.path().join("secret"), root.path().join("leak")).unwrap();
        symlink("ok", root.path().join("alias")).unwrap();
        let err = existing_inside(root.path(), &root.path().join("leak")).unwrap_err();
        assert!(matches!(err, PathError::Outside { .. }), "{err}");
        let ok = existing_inside(root.path(), &root.path().join("alias")).unwrap();
        assert!(ok.ends_with("ok"));
    }
}
