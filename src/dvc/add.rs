//! `add`: what `dvc add PATH` does with the default settings — hash the file or every file of
//! the directory, copy them into the cache (DVC 3 layout), store the `.dir` manifest, write
//! `PATH.dvc` next to the path and, in a git repository, ignore the path in the parent's
//! `.gitignore` (`/name`, appended once). The bytes of every file written here match dvc 3.x's.
//!
//! Links are followed, as DVC does, but only while they stay inside the repository: every file
//! is read from its real location after [`existing_inside`] has checked it, so a committed link
//! to `/proc/self/environ` or `~/.aws/credentials` is refused instead of hashed into the cache
//! (and pushed). What `add` writes (`PATH.dvc`, `.gitignore`) goes below real directories only.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::cache::{ObjectId, md5_file, md5_hex, set_mode};
use super::dvcfile::{DirEntry, Out, render_dir_manifest, render_dvc_file};
use super::{DvcError, Repo, user_path};
use crate::untrusted::path::{existing_inside, join_inside};

/// What `add` recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddSummary {
    pub metafile: PathBuf,
    pub out: Out,
    pub files: usize,
}

/// Tracks `target` (a file or directory inside `repo`).
pub fn add(repo: &Repo, target: &Path) -> Result<AddSummary, DvcError> {
    // The path the user typed names the output; links in it are resolved (and checked) below.
    let abs = user_path(target)?;
    let rel = repo.relative(&abs)?;
    let name = match abs.file_name() {
        Some(n) if !rel.is_empty() => n.to_string_lossy().into_owned(),
        _ => {
            return Err(DvcError::OutsideRepo {
                path: abs,
                root: repo.root.clone(),
            });
        }
    };
    if rel.split('/').any(|c| c == ".dvc" || c == ".git") {
        return Err(DvcError::OutsideRepo {
            path: abs,
            root: repo.root.clone(),
        });
    }
    if fs_err::symlink_metadata(&abs).is_err() {
        // Missing: say so plainly rather than as a failed link check.
        fs_err::metadata(&abs).map_err(|source| DvcError::Fs {
            what: "read the path to add",
            source,
        })?;
    }
    let inside = Inside::new(&repo.root)?;
    let real = inside.real(&abs)?;
    let meta = fs_err::metadata(&real).map_err(|source| DvcError::Fs {
        what: "read the path to add",
        source,
    })?;
    let cache = repo.cache();
    let (out, files) = if meta.is_dir() {
        let listed = list_files(&inside, &abs, &real)?;
        let hashed: Vec<Result<(DirEntry, u64), DvcError>> = listed
            .par_iter()
            .map(|(r, path)| {
                let (md5, size) = md5_file(path)?;
                let id = ObjectId {
                    md5: md5.clone(),
                    dir: false,
                    legacy: false,
                };
                cache.store_file(&id, path)?;
                Ok((
                    DirEntry {
                        md5,
                        relpath: r.clone(),
                    },
                    size,
                ))
            })
            .collect();
        let mut entries = Vec::with_capacity(hashed.len());
        let mut total = 0u64;
        for h in hashed {
            let (e, size) = h?;
            total += size;
            entries.push(e);
        }
        let manifest = render_dir_manifest(&entries);
        let id = ObjectId {
            md5: md5_hex(&manifest),
            dir: true,
            legacy: false,
        };
        cache.store_bytes(&id, &manifest)?;
        let out = Out {
            path: name.clone(),
            md5: Some(format!("{}.dir", id.md5)),
            size: Some(total),
            nfiles: Some(entries.len() as u64),
            hash: Some("md5".into()),
            cache: None,
        };
        (out, entries.len())
    } else {
        let (md5, size) = md5_file(&real)?;
        let id = ObjectId {
            md5: md5.clone(),
            dir: false,
            legacy: false,
        };
        cache.store_file(&id, &real)?;
        let out = Out {
            path: name.clone(),
            md5: Some(md5),
            size: Some(size),
            nfiles: None,
            hash: Some("md5".into()),
            cache: None,
        };
        (out, 1)
    };
    // Next to the output, as the user named it: below real directories of the repository.
    let parent_rel = match rel.rsplit_once('/') {
        Some((parent, _)) => format!("{parent}/"),
        None => String::new(),
    };
    let metafile = join_inside(&repo.root, &format!("{rel}.dvc"))?;
    write_public(&metafile, render_dvc_file(&out).as_bytes())?;
    if repo.root.join(".git").exists() {
        let gitignore = join_inside(&repo.root, &format!("{parent_rel}.gitignore"))?;
        ignore_in_git(&inside, &gitignore, &format!("/{name}"))?;
    }
    Ok(AddSummary {
        metafile,
        out,
        files,
    })
}

/// A directory being listed: the path people know it by, its real location, and the real
/// locations of the directories above it in this walk (a link back to one of them is a loop).
struct Walk {
    path: PathBuf,
    real: PathBuf,
    rel: String,
    above: Vec<PathBuf>,
}

/// Every file below `dir` (real location `real`), as sorted `/`-separated relative paths with
/// the real location to read each from. Links are followed as DVC does, but only to places inside
/// `root`; `.git` and `.dvc` folders are skipped.
fn list_files(
    inside: &Inside,
    dir: &Path,
    real: &Path,
) -> Result<Vec<(String, PathBuf)>, DvcError> {
    let mut out = Vec::new();
    let mut stack = vec![Walk {
        path: dir.to_path_buf(),
        real: real.to_path_buf(),
        rel: String::new(),
        above: Vec::new(),
    }];
    while let Some(walk) = stack.pop() {
        let io = |source| DvcError::Fs {
            what: "list a directory to add",
            source,
        };
        for entry in fs_err::read_dir(&walk.real).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if walk.rel.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", walk.rel)
            };
            let path = walk.path.join(&name);
            // Below a real directory inside the root, only a link can lead elsewhere.
            let real = if entry.file_type().map_err(io)?.is_symlink() {
                inside.real(&path)?
            } else {
                walk.real.join(&name)
            };
            let meta = fs_err::metadata(&real).map_err(|source| DvcError::Fs {
                what: "read a file to add",
                source,
            })?;
            if meta.is_dir() {
                if name == ".git" || name == ".dvc" {
                    continue;
                }
                if real == walk.real || walk.above.contains(&real) {
                    return Err(DvcError::LinkLoop { path });
                }
                let mut above = walk.above.clone();
                above.push(walk.real.clone());
                stack.push(Walk {
                    path,
                    real,
                    rel,
                    above,
                });
            } else {
                out.push((rel, real));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The repository as a place to read from: [`existing_inside`] its root, and never inside its
/// `.git` or `.dvc` (`.git/config` can hold the checkout's token).
struct Inside {
    root: PathBuf,
    real_root: PathBuf,
}

impl Inside {
    fn new(root: &Path) -> Result<Inside, DvcError> {
        let real_root = fs_err::canonicalize(root).map_err(|source| DvcError::Fs {
            what: "resolve the repository root",
            source,
        })?;
        Ok(Inside {
            root: root.to_path_buf(),
            real_root,
        })
    }

    /// The real location of `path`, refused when it is outside the repository or in its
    /// metadata.
    fn real(&self, path: &Path) -> Result<PathBuf, DvcError> {
        let real = existing_inside(&self.root, path)?;
        let metadata = real.strip_prefix(&self.real_root).is_ok_and(|rel| {
            rel.components()
                .any(|c| c.as_os_str() == ".git" || c.as_os_str() == ".dvc")
        });
        if metadata {
            return Err(DvcError::InRepoMetadata {
                path: path.to_path_buf(),
                real,
            });
        }
        Ok(real)
    }
}

/// Writes a file people commit (mode 0644, atomically).
fn write_public(path: &Path, bytes: &[u8]) -> Result<(), DvcError> {
    crate::fsutil::write_atomic(path, bytes)?;
    set_mode(path, 0o644).map_err(|source| DvcError::Io {
        what: "set the permissions of",
        path: path.to_path_buf(),
        source,
    })
}

/// Appends `entry` to a `.gitignore` unless a line already says it (as scmrepo does: a newline
/// first when the file does not end with one). A `.gitignore` that is a link is read only when it
/// points inside `root` (its text is copied into the file written), and replaced, not followed.
fn ignore_in_git(inside: &Inside, gitignore: &Path, entry: &str) -> Result<(), DvcError> {
    let existing = match fs_err::symlink_metadata(gitignore) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        _ => {
            let real = inside.real(gitignore)?;
            fs_err::read_to_string(real).map_err(|source| DvcError::Fs {
                what: "read the .gitignore",
                source,
            })?
        }
    };
    if existing.lines().any(|l| l == entry) {
        return Ok(());
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(entry);
    text.push('\n');
    write_public(gitignore, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_a_directory_like_dvc_add() {
        // The same three files as the `dvc add data/images` run in dvcfile's tests.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir_all(root.join(".dvc")).unwrap();
        fs_err::create_dir_all(root.join(".git")).unwrap();
        fs_err::create_dir_all(root.join("data/images/sub")).unwrap();
        fs_err::write(root.join("data/images/a.txt"), "hello\n").unwrap();
        fs_err::write(root.join("data/images/sub/b.bin"), "world").unwrap();
        fs_err::write(root.join("data/images/c.txt"), "x\r\ny\r\n").unwrap();
        let repo = Repo {
            root: root.to_path_buf(),
        };
        let s = add(&repo, &root.join("data/images")).unwrap();
        assert_eq!(s.files, 3);
        assert_eq!(
            fs_err::read_to_string(root.join("data/images.dvc")).unwrap(),
            "outs:\n- md5: d23608bc013c1f42db5f0e4a34bbb6ea.dir\n  size: 17\n  nfiles: 3\n  hash: md5\n  path: images\n"
        );
        assert!(
            root.join(".dvc/cache/files/md5/d2/3608bc013c1f42db5f0e4a34bbb6ea.dir")
                .is_file()
        );
        assert!(
            root.join(".dvc/cache/files/md5/e2/0942bc0763636e19c18b95bb194501")
                .is_file()
        );
        add(&repo, &root.join("data/images")).unwrap();
        assert_eq!(
            fs_err::read_to_string(root.join("data/.gitignore")).unwrap(),
            "/images\n"
        );
        assert!(add(&repo, &root.join(".dvc")).is_err());
    }
}
