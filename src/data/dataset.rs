//! Data set discovery: `DIR/images/*.{jpg,jpeg,png}` paired by file stem with
//! `DIR/masks/<stem>.{png,jpg,jpeg}` (DESIGN §4), and a fingerprint of the content that training
//! records in its checkpoint. Strict: an image without a mask is an error here; `wms data qa`
//! reports every problem at once instead of the first.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::DataError;

/// Extensions accepted for photos (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];
/// Extensions accepted for masks, in order of preference when several exist.
pub const MASK_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];
pub const IMAGES_DIR: &str = "images";
pub const MASKS_DIR: &str = "masks";

/// One photo and its mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub stem: String,
    pub image: PathBuf,
    pub mask: PathBuf,
}

/// All samples of a data set folder, sorted by stem.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub samples: Vec<Sample>,
}

/// Second and later files whose stem was already taken: (stem, first file, this file).
pub(crate) type StemClashes = Vec<(String, PathBuf, PathBuf)>;

/// Files of one folder with an accepted extension, by stem. Two files with the same stem are an
/// error because the stem is the sample's identity (split, reports).
pub(crate) fn list_by_stem(
    dir: &Path,
    extensions: &[&str],
) -> Result<(BTreeMap<String, PathBuf>, StemClashes), DataError> {
    let mut by_stem = BTreeMap::new();
    let mut duplicates = Vec::new();
    let entries = fs_err::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        paths.push(entry.path());
    }
    paths.sort();
    for path in paths {
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        if !extensions.iter().any(|x| x.eq_ignore_ascii_case(ext)) || !path.is_file() {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if stem.starts_with('.') {
            continue; // temp files of atomic writes, editor droppings
        }
        let stem = stem.to_string();
        if let Some(first) = by_stem.get(&stem) {
            duplicates.push((stem, PathBuf::clone(first), path));
        } else {
            by_stem.insert(stem, path);
        }
    }
    Ok((by_stem, duplicates))
}

/// Picks the mask for a stem when several extensions exist, following [`MASK_EXTENSIONS`].
fn prefer_mask(paths: &[PathBuf]) -> Option<&PathBuf> {
    MASK_EXTENSIONS.iter().find_map(|want| {
        paths.iter().find(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case(want))
        })
    })
}

impl Dataset {
    /// Finds all samples under `dir`. Errors on a missing folder, an empty data set, an image
    /// without a mask, or two photos with the same stem. Masks without a photo are ignored here
    /// (QA reports them).
    pub fn discover(dir: &Path) -> Result<Dataset, DataError> {
        let images_dir = dir.join(IMAGES_DIR);
        let masks_dir = dir.join(MASKS_DIR);
        for d in [&images_dir, &masks_dir] {
            if !d.is_dir() {
                return Err(DataError::MissingDir { path: d.clone() });
            }
        }
        let (images, dup_images) = list_by_stem(&images_dir, IMAGE_EXTENSIONS)?;
        if let Some((stem, first, second)) = dup_images.into_iter().next() {
            return Err(DataError::DuplicateStem {
                stem,
                first,
                second,
            });
        }
        let (masks, dup_masks) = list_by_stem(&masks_dir, MASK_EXTENSIONS)?;
        let mut all_masks: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for (stem, p) in masks {
            all_masks.entry(stem).or_default().push(p);
        }
        for (stem, _, second) in dup_masks {
            all_masks.entry(stem).or_default().push(second);
        }
        if images.is_empty() {
            return Err(DataError::NoImages { path: images_dir });
        }
        let mut samples = Vec::with_capacity(images.len());
        for (stem, image) in images {
            let mask = all_masks
                .get(&stem)
                .and_then(|m| prefer_mask(m))
                .ok_or_else(|| DataError::MissingMask {
                    image: image.clone(),
                    expected: masks_dir.join(&stem),
                })?
                .clone();
            samples.push(Sample { stem, image, mask });
        }
        tracing::debug!(root = %dir.display(), samples = samples.len(), "data set discovered");
        Ok(Dataset {
            root: dir.to_path_buf(),
            samples,
        })
    }

    /// SHA-256 over every sample in stem order: the stem, then the image bytes, then the mask
    /// bytes (each length-prefixed so boundaries cannot shift). Any added, removed, renamed or
    /// edited file changes it; paths and timestamps do not.
    pub fn fingerprint(&self) -> Result<String, DataError> {
        let per_sample: Vec<[u8; 32]> = self
            .samples
            .par_iter()
            .map(|s| {
                let mut h = Sha256::new();
                h.update((s.stem.len() as u64).to_le_bytes());
                h.update(s.stem.as_bytes());
                for path in [&s.image, &s.mask] {
                    hash_file_into(&mut h, path)?;
                }
                Ok(h.finalize().into())
            })
            .collect::<Result<_, DataError>>()?;
        let mut all = Sha256::new();
        all.update(b"wms-dataset-v1");
        all.update((per_sample.len() as u64).to_le_bytes());
        for d in per_sample {
            all.update(d);
        }
        Ok(hex::encode(all.finalize()))
    }
}

fn hash_file_into(h: &mut Sha256, path: &Path) -> Result<(), DataError> {
    let mut f = fs_err::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = f.metadata().map_err(|e| DataError::io(path, e))?.len();
    h.update(len.to_le_bytes());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(())
}

/// SHA-256 of a file's bytes, hex (QA uses it to find duplicate photos).
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let bytes = fs_err::read(path).map_err(|e| DataError::io(path, e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path, bytes: &[u8]) {
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        fs_err::write(p, bytes).unwrap();
    }

    #[test]
    fn discovers_pairs_sorted_and_fingerprints_content() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("images/b.JPG"), b"b");
        touch(&r.join("images/a.png"), b"a");
        touch(&r.join("images/notes.txt"), b"x");
        touch(&r.join("masks/a.png"), b"ma");
        touch(&r.join("masks/b.jpg"), b"mb");
        touch(&r.join("masks/b.png"), b"mb2");
        let ds = Dataset::discover(r).unwrap();
        let stems: Vec<_> = ds.samples.iter().map(|s| s.stem.as_str()).collect();
        assert_eq!(stems, ["a", "b"]);
        assert!(ds.samples[1].mask.ends_with("masks/b.png"));
        let f1 = ds.fingerprint().unwrap();
        assert_eq!(f1.len(), 64);
        touch(&r.join("masks/b.png"), b"changed");
        assert_ne!(ds.fingerprint().unwrap(), f1);
    }

    #[test]
    fn missing_mask_and_duplicate_stem_are_named() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("images/a.png"), b"a");
        fs_err::create_dir_all(r.join("masks")).unwrap();
        let err = Dataset::discover(r).unwrap_err().to_string();
        assert!(
            err.contains("a.png has no mask") && err.contains("hint:"),
            "{err}"
        );
        touch(&r.join("images/a.jpg"), b"a");
        let err = Dataset::discover(r).unwrap_err().to_string();
        assert!(err.contains("share the stem `a`"), "{err}");
        let err = Dataset::discover(&r.join("nope")).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
