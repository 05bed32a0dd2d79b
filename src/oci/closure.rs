//! The shared-library closure of an ELF file exactly as the dynamic loader resolves it on this
//! machine: the loader named in the file's `PT_INTERP` is run with `--list` (what `ldd` does), and
//! every resolved path plus the loader itself is returned. A `scratch` image carries these files
//! at the same paths, so the loader inside the image finds them where this machine's found them.
//!
//! What this must not do: guess library locations, or accept a library the loader reports as
//! `not found` (the image would fail at start, far from the build).

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a 64-bit little-endian ELF file; hint: pass a Linux x86-64 build", .path.display())]
    NotElf { path: PathBuf },
    #[error("{} has no program interpreter (statically linked?); hint: a static binary needs no runtime layer", .path.display())]
    NoInterpreter { path: PathBuf },
    #[error("cannot run the dynamic loader {} on {}", .loader.display(), .path.display())]
    Loader {
        loader: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the dynamic loader cannot resolve {library} for {}: {message}; hint: install it on the build machine or build on a machine that has it", .path.display())]
    Unresolved {
        path: PathBuf,
        library: String,
        message: String,
    },
}

/// The loader and every library `path` needs, in the loader's order, without duplicates.
/// `loader` is the program interpreter of the executable that will load `path` ([`interpreter`]);
/// a shared library has none of its own.
pub fn shared_library_closure(loader: &Path, path: &Path) -> Result<Vec<PathBuf>, ClosureError> {
    let loader = loader.to_path_buf();
    let out = Command::new(&loader)
        .arg("--list")
        .arg(path)
        .output()
        .map_err(|source| ClosureError::Loader {
            loader: loader.clone(),
            path: path.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(ClosureError::Unresolved {
            path: path.to_path_buf(),
            library: "its libraries".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut found = vec![loader];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // `libc.so.6 => /lib/…/libc.so.6 (0x…)`, `/lib64/ld-linux-x86-64.so.2 (0x…)`,
        // `linux-vdso.so.1 (0x…)` (in the kernel, no file) or `libx.so => not found`.
        let (name, resolved) = match line.split_once(" => ") {
            Some((name, rest)) => (name, rest),
            None => (line, line),
        };
        let resolved = resolved.split(" (0x").next().unwrap_or(resolved).trim();
        if resolved == "not found" {
            return Err(ClosureError::Unresolved {
                path: path.to_path_buf(),
                library: name.to_string(),
                message: "not found".into(),
            });
        }
        if !resolved.starts_with('/') {
            continue; // the vDSO
        }
        let p = PathBuf::from(resolved);
        if !found.contains(&p) {
            found.push(p);
        }
    }
    Ok(found)
}

/// `PT_INTERP` of a 64-bit little-endian ELF executable: its dynamic loader.
pub fn interpreter(path: &Path) -> Result<PathBuf, ClosureError> {
    let bytes = std::fs::read(path).map_err(|source| ClosureError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let not_elf = || ClosureError::NotElf {
        path: path.to_path_buf(),
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err(not_elf());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| -> Option<usize> {
        let b: [u8; 8] = bytes.get(o..o + 8)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(b)).ok()
    };
    let phoff = u64_at(32).ok_or_else(not_elf)?;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or_else(not_elf)?;
        let Some(header) = bytes.get(at..at + 56) else {
            return Err(not_elf());
        };
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) != PT_INTERP {
            continue;
        }
        let offset = u64_at(at + 8).ok_or_else(not_elf)?;
        let size = u64_at(at + 32).ok_or_else(not_elf)?;
        let raw = bytes
            .get(offset..offset.checked_add(size).ok_or_else(not_elf)?)
            .ok_or_else(not_elf)?;
        let name = raw.split(|&b| b == 0).next().unwrap_or_default();
        return Ok(PathBuf::from(String::from_utf8_lossy(name).into_owned()));
    }
    Err(ClosureError::NoInterpreter {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closure_of_a_system_binary_has_the_loader_and_libc() {
        let sh = Path::new("/bin/sh");
        let closure = shared_library_closure(&interpreter(sh).unwrap(), sh).unwrap();
        assert!(
            closure[0].to_string_lossy().contains("ld-linux"),
            "{closure:?}"
        );
        assert!(
            closure
                .iter()
                .any(|p| p.to_string_lossy().contains("libc.so")),
            "{closure:?}"
        );
    }

    #[test]
    fn a_non_elf_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        fs_err::write(&p, b"#!/bin/sh\n").unwrap();
        let err = interpreter(&p).unwrap_err();
        assert!(err.to_string().contains("not a 64-bit"), "{err}");
    }
}
