//! The data pipeline, without libtorch: data set discovery and fingerprint ([`dataset`]), the
//! stable hash split ([`split`]), THE preprocessing shared by training, evaluation and serving
//! ([`preprocess`]), training augmentation ([`augment`]), the parallel prefetching batch loader
//! ([`loader`]), synthetic water-meter photos ([`synth`]) and data-set checks ([`qa`]).
//!
//! It must not know about models or tensors of any framework: batches are flat `Vec<f32>` in
//! NCHW order that the trainer wraps, and serving calls [`preprocess::preprocess_image`] directly.

use std::path::PathBuf;

pub mod augment;
pub mod dataset;
pub mod loader;
pub mod preprocess;
pub mod qa;
pub mod split;
pub mod synth;

pub use augment::AugmentConfig;
pub use dataset::{Dataset, Sample};
pub use loader::{Batch, Loader, LoaderConfig, LoaderStats, SampleCache};
pub use preprocess::{decode_image, preprocess_image, preprocess_mask, resize_bilinear_antialias};
pub use split::{Split, SplitRatios, split_of};

/// Everything that can go wrong with data. Each message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    // `source` comes from `fs_err`, whose message already names the path and the operation.
    #[error("data file access failed; hint: check that the path exists and is readable")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot decode image {path}: {message}; hint: the file is corrupt or truncated — re-export it or remove it (`wms data qa DIR` lists all such files)"
    )]
    Decode { path: PathBuf, message: String },
    #[error("cannot decode image: {message}; hint: send a complete JPEG or PNG file")]
    DecodeBytes { message: String },
    #[error(
        "{path} not found; hint: a data set is a folder with images/ and masks/ (create one with `wms data synth --out DIR`)"
    )]
    MissingDir { path: PathBuf },
    #[error(
        "{path} holds no images (.jpg, .jpeg, .png); hint: put photos in images/ and their masks in masks/ with the same file stem"
    )]
    NoImages { path: PathBuf },
    #[error(
        "{image} has no mask (looked for {expected}.png/.jpg/.jpeg); hint: add the mask or remove the photo (`wms data qa DIR` lists all such files)"
    )]
    MissingMask { image: PathBuf, expected: PathBuf },
    #[error(
        "two files share the stem `{stem}`: {first} and {second}; hint: rename or remove one, stems identify samples"
    )]
    DuplicateStem {
        stem: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(
        "mask {mask} is {mask_w}x{mask_h} but its image {image} is {image_w}x{image_h}; hint: re-export the mask at the photo's size"
    )]
    SizeMismatch {
        image: PathBuf,
        mask: PathBuf,
        image_w: u32,
        image_h: u32,
        mask_w: u32,
        mask_h: u32,
    },
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },
    #[error("cannot encode {path}: {message}; hint: this is a bug, please report it")]
    Encode { path: PathBuf, message: String },
    #[error(
        "data QA found {count} error(s) in {root}; first: {first}; hint: fix or remove the listed files and run `wms data qa` again"
    )]
    QaFailed {
        root: PathBuf,
        count: usize,
        first: String,
    },
    #[error("the data loader stopped unexpectedly; hint: see the error logged before this one")]
    LoaderGone,
    #[error(transparent)]
    Write(#[from] crate::fsutil::WriteError),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
