//! `add`: what `dvc add PATH` does with the default settings — hash the file or every file of
//! the directory, copy them into the cache (DVC 3 layout), store the `.dir` manifest, write
//! `PATH.dvc` next to the path and, in a git repository, ignore the path in the parent's
//! `.gitignore` (`/name`, appended once). The bytes of every file written here match dvc 3.x's.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::cache::{ObjectId, md5_file, md5_hex, set_mode};
use super::dvcfile::{DirEntry, Out, render_dir_manifest, render_dvc_file};
use super::{DvcError, Repo};

/// What `add` recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddSummary {
    pub metafile: PathBuf,
    pub out: Out,
    pub files: usize,
}

/// Tracks `target` (a file or directory inside `repo`).
pub fn add(repo: &Repo, target: &Path) -> Result<AddSummary, DvcError> {
    let abs = std::path::absolute(target).map_err(|source| DvcError::Io {
        path: target.to_path_buf(),
        source,
    })?;
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
    let meta = fs_err::metadata(&abs).map_err(|source| DvcError::Io {
        path: abs.clone(),
        source,
    })?;
    let cache = repo.cache();
    let (out, files) = if meta.is_dir() {
        let rels = list_files(&abs)?;
        let hashed: Vec<Result<(DirEntry, u64), DvcError>> = rels
            .par_iter()
            .map(|r| {
                let path = abs.join(r);
                let (md5, size) = md5_file(&path)?;
                let id = ObjectId {
                    md5: md5.clone(),
                    dir: false,
                    legacy: false,
                };
                cache.store_file(&id, &path)?;
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
        let (md5, size) = md5_file(&abs)?;
        let id = ObjectId {
            md5: md5.clone(),
            dir: false,
            legacy: false,
        };
        cache.store_file(&id, &abs)?;
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
    let parent = abs.parent().unwrap_or(&repo.root).to_path_buf();
    let metafile = parent.join(format!("{name}.dvc"));
    write_public(&metafile, render_dvc_file(&out).as_bytes())?;
    if repo.root.join(".git").exists() {
        ignore_in_git(&parent.join(".gitignore"), &format!("/{name}"))?;
    }
    Ok(AddSummary {
        metafile,
        out,
        files,
    })
}

/// Every file below `dir`, as sorted `/`-separated relative paths (symlinks followed, as DVC
/// does; `.git` and `.dvc` folders skipped).
fn list_files(dir: &Path) -> Result<Vec<String>, DvcError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let io = |source| DvcError::Io {
            path: d.clone(),
            source,
        };
        for entry in fs_err::read_dir(&d).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            let meta = fs_err::metadata(&path).map_err(|source| DvcError::Io {
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                if name != ".git" && name != ".dvc" {
                    stack.push((path, rel));
                }
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes a file people commit (mode 0644, atomically).
fn write_public(path: &Path, bytes: &[u8]) -> Result<(), DvcError> {
    crate::fsutil::write_atomic(path, bytes)?;
    set_mode(path, 0o644).map_err(|source| DvcError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Appends `entry` to a `.gitignore` unless a line already says it (as scmrepo does: a newline
/// first when the file does not end with one).
fn ignore_in_git(gitignore: &Path, entry: &str) -> Result<(), DvcError> {
    let existing = match fs_err::read_to_string(gitignore) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(DvcError::Io {
                path: gitignore.to_path_buf(),
                source,
            });
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
