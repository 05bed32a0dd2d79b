//! Writing an OCI image layout (`image-layout.md`): `oci-layout`, `blobs/sha256/<hex>`, and an
//! `index.json` naming each tag with `org.opencontainers.image.ref.name`. Blobs are written
//! first and `index.json` last, each atomically, so an interrupted write never leaves an index
//! that points at a missing blob. An existing layout keeps its other tags.

use std::path::{Path, PathBuf};

use crate::fsutil::{WriteError, write_atomic};
use crate::oci::BuiltImage;
use crate::oci::blob::digest_hex;
use crate::oci::spec::{ANNOTATION_REF_NAME, Descriptor, Index, MEDIA_INDEX};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "cannot write the OCI layout; hint: check that --oci-layout names a writable directory"
    )]
    Write(#[from] WriteError),
    #[error("{} is not an OCI image layout we can add to; hint: pick an empty or new directory", .path.display())]
    Foreign {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `image` into the layout at `dir` under each of `refs` (tags such as `v3`; an empty
/// list writes one untagged entry).
pub fn write_layout(dir: &Path, image: &BuiltImage, refs: &[String]) -> Result<(), LayoutError> {
    write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let manifest = (image.digest().to_string(), image.manifest_bytes().to_vec());
    for (digest, bytes) in image
        .blobs()
        .chain(std::iter::once((&manifest.0, &manifest.1)))
    {
        let hex = digest_hex(digest).expect("digests we computed are sha256");
        let path = dir.join("blobs/sha256").join(hex);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            continue;
        }
        write_atomic(&path, bytes)?;
    }
    let index_path = dir.join("index.json");
    let mut index = match std::fs::read(&index_path) {
        Ok(bytes) => {
            serde_json::from_slice::<Index>(&bytes).map_err(|source| LayoutError::Foreign {
                path: index_path.clone(),
                source,
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index {
            schema_version: 2,
            media_type: Some(MEDIA_INDEX.into()),
            manifests: Vec::new(),
        },
        Err(source) => {
            return Err(LayoutError::Read {
                path: index_path,
                source,
            });
        }
    };
    let ref_of = |d: &Descriptor| d.annotations.get(ANNOTATION_REF_NAME).cloned();
    let entry = |name: Option<&String>| {
        let mut d = image.manifest_descriptor();
        if let Some(name) = name {
            d.annotations
                .insert(ANNOTATION_REF_NAME.into(), name.clone());
        }
        d
    };
    if refs.is_empty() {
        index
            .manifests
            .retain(|d| d.digest != image.digest() || ref_of(d).is_some());
        index.manifests.push(entry(None));
    } else {
        index
            .manifests
            .retain(|d| ref_of(d).is_none_or(|r| !refs.contains(&r)));
        index.manifests.extend(refs.iter().map(|r| entry(Some(r))));
    }
    let json = serde_json::to_vec_pretty(&index).expect("an index always serializes");
    write_atomic(&index_path, &json)?;
    Ok(())
}
