//! The batch loader: a background thread assembles batches with rayon and keeps up to
//! `prefetch` of them ready in a bounded channel, so the training step does not wait for data.
//!
//! Photos are decoded and resized once into a [`SampleCache`] shared across epochs (the real data
//! set is ~1,250 photos of ~1333×1000; decoding them every epoch would dominate); each epoch only
//! augments and normalizes the cached network-size uint8 images. The time the consumer spent
//! blocked on the channel is exposed ([`Loader::stats`]) so the trainer can log the data share.
//!
//! Determinism: the epoch order comes from (seed, epoch) and each sample's augmentation from
//! (seed, epoch, sample index), never from which thread ran first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::{GrayImage, RgbImage};
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::DataError;
use super::augment::{AugmentConfig, augment_pair, sample_rng};
use super::dataset::Sample;
use super::preprocess::{
    binarize_mask, decode_image_file, normalize_resized_into, resize_bilinear_antialias, to_gray,
    to_rgb,
};
use crate::data::preprocess::PreprocessSpec;

/// One batch, NCHW f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[N, 3, H, W]`, preprocessed as [`super::preprocess::preprocess_image`] does.
    pub images: Vec<f32>,
    /// `[N, 1, H, W]`, 0.0 or 1.0.
    pub masks: Vec<f32>,
    pub n: usize,
    pub height: usize,
    pub width: usize,
    /// Sample stems in batch order.
    pub stems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Shuffle the order each epoch (from `seed` and `epoch`).
    pub shuffle: bool,
    /// Augment (training); `None` for evaluation.
    pub augment: Option<AugmentConfig>,
    pub seed: u64,
    pub epoch: u64,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Batches kept ready ahead of the consumer (at least 1).
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    /// Upstream batch size 4 (`configs/train.yaml`), evaluation order, no augmentation.
    fn default() -> Self {
        LoaderConfig {
            batch_size: 4,
            shuffle: false,
            augment: None,
            seed: 0,
            epoch: 0,
            drop_last: false,
            prefetch: 4,
        }
    }
}

/// A sample decoded and resized to the network size: uint8 RGB and a 0/1 mask.
#[derive(Debug)]
pub struct Resized {
    pub image: RgbImage,
    pub mask: GrayImage,
}

/// Decoded, resized samples, filled lazily (or all at once by [`SampleCache::warm`]) and shared
/// by every epoch's [`Loader`].
#[derive(Debug)]
pub struct SampleCache {
    samples: Vec<Sample>,
    spec: PreprocessSpec,
    slots: Vec<OnceLock<Arc<Resized>>>,
}

impl SampleCache {
    pub fn new(samples: Vec<Sample>, spec: PreprocessSpec) -> Self {
        let slots = (0..samples.len()).map(|_| OnceLock::new()).collect();
        SampleCache {
            samples,
            spec,
            slots,
        }
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The resized sample `index`, decoding it on first use. A failed decode is not cached, so
    /// the error repeats with the file's name.
    pub fn get(&self, index: usize) -> Result<Arc<Resized>, DataError> {
        if let Some(r) = self.slots[index].get() {
            return Ok(Arc::clone(r));
        }
        let loaded = Arc::new(load_resized(&self.samples[index], &self.spec)?);
        Ok(Arc::clone(self.slots[index].get_or_init(|| loaded)))
    }

    /// Decodes every sample now, in parallel, with a progress bar.
    pub fn warm(&self) -> Result<(), DataError> {
        let bar = crate::github::actions::Actions::from_env()
            .progress(self.len() as u64, "decoding photos");
        let started = Instant::now();
        (0..self.len()).into_par_iter().try_for_each(|i| {
            self.get(i)?;
            bar.inc(1);
            Ok::<_, DataError>(())
        })?;
        bar.finish_and_clear();
        tracing::info!(
            samples = self.len(),
            seconds = started.elapsed().as_secs_f64(),
            "photos decoded and resized"
        );
        Ok(())
    }
}

/// Decode, orient, resize to the network size, and binarize the mask. The mask must have the
/// photo's size (after EXIF orientation): a mismatch usually means a rotated export.
pub fn load_resized(sample: &Sample, spec: &PreprocessSpec) -> Result<Resized, DataError> {
    let image = to_rgb(decode_image_file(&sample.image)?);
    let mask = to_gray(decode_image_file(&sample.mask)?);
    if image.dimensions() != mask.dimensions() {
        return Err(DataError::SizeMismatch {
            image: sample.image.clone(),
            mask: sample.mask.clone(),
            image_w: image.width(),
            image_h: image.height(),
            mask_w: mask.width(),
            mask_h: mask.height(),
        });
    }
    Ok(Resized {
        image: resize_bilinear_antialias(&image, spec.input_width, spec.input_height),
        mask: binarize_mask(&mask, spec),
    })
}

/// Time accounting of one epoch's loader.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoaderStats {
    pub batches: usize,
    pub samples: usize,
    /// Time the consumer spent blocked waiting for the next batch.
    pub wait: Duration,
    /// Time since the loader was created.
    pub elapsed: Duration,
}

impl LoaderStats {
    /// Share of the elapsed time spent waiting for data, in [0, 1].
    pub fn data_share(&self) -> f64 {
        let e = self.elapsed.as_secs_f64();
        if e > 0.0 {
            (self.wait.as_secs_f64() / e).min(1.0)
        } else {
            0.0
        }
    }
}

/// One epoch of batches; an iterator of `Result<Batch, DataError>` that ends after the first
/// error. Call [`SampleCache::warm`] once before the first epoch so that decoding is not counted
/// as the first epoch's waiting time.
pub struct Loader {
    rx: Option<Receiver<Result<Batch, DataError>>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    num_batches: usize,
    stats: LoaderStats,
    started: Instant,
    done: bool,
}

impl Loader {
    /// A loader with its own cache (decodes lazily). For several epochs, build one
    /// [`SampleCache`] and use [`Loader::with_cache`] per epoch.
    pub fn new(
        samples: Vec<Sample>,
        spec: PreprocessSpec,
        cfg: LoaderConfig,
    ) -> Result<Self, DataError> {
        Self::with_cache(Arc::new(SampleCache::new(samples, spec)), cfg)
    }

    /// Starts producing one epoch of batches from `cache` in the background.
    pub fn with_cache(cache: Arc<SampleCache>, cfg: LoaderConfig) -> Result<Self, DataError> {
        if cfg.batch_size == 0 {
            return Err(DataError::Invalid {
                what: "batch size",
                message: "0; hint: use a batch size of at least 1".into(),
            });
        }
        let spec = cache.spec();
        if spec.input_width == 0 || spec.input_height == 0 {
            return Err(DataError::Invalid {
                what: "input size",
                message: format!(
                    "{}x{}; hint: use a positive size such as 512x512",
                    spec.input_width, spec.input_height
                ),
            });
        }
        let mut order: Vec<usize> = (0..cache.len()).collect();
        if cfg.shuffle {
            order.shuffle(&mut sample_rng("wms-shuffle", cfg.seed, cfg.epoch, 0));
        }
        let mut batches: Vec<Vec<usize>> = order
            .chunks(cfg.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        if cfg.drop_last && batches.last().is_some_and(|b| b.len() < cfg.batch_size) {
            batches.pop();
        }
        let num_batches = batches.len();
        let prefetch = cfg.prefetch.max(1);
        let (tx, rx) = sync_channel(prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_worker = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("wms-loader".into())
            .spawn(move || produce(&cache, &cfg, &batches, prefetch, &tx, &stop_worker))
            .map_err(|e| DataError::io("<loader thread>", e))?;
        Ok(Loader {
            rx: Some(rx),
            handle: Some(handle),
            stop,
            num_batches,
            stats: LoaderStats::default(),
            started: Instant::now(),
            done: false,
        })
    }

    /// Batches this epoch will yield.
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }

    /// Counts and waiting time so far.
    pub fn stats(&self) -> LoaderStats {
        LoaderStats {
            elapsed: self.started.elapsed(),
            ..self.stats
        }
    }
}

fn produce(
    cache: &SampleCache,
    cfg: &LoaderConfig,
    batches: &[Vec<usize>],
    group: usize,
    tx: &SyncSender<Result<Batch, DataError>>,
    stop: &AtomicBool,
) {
    // Build `group` batches at a time in parallel (more parallelism than one small batch gives),
    // then hand them over in order; the bounded channel keeps us at most one group ahead.
    for chunk in batches.chunks(group) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let built: Vec<Result<Batch, DataError>> = chunk
            .par_iter()
            .map(|b| build_batch(cache, b, cfg))
            .collect();
        for b in built {
            let failed = b.is_err();
            if let Err(e) = &b {
                tracing::error!("data loader: {e}");
            }
            if tx.send(b).is_err() || failed {
                return;
            }
        }
    }
}

fn build_batch(
    cache: &SampleCache,
    indices: &[usize],
    cfg: &LoaderConfig,
) -> Result<Batch, DataError> {
    let spec = cache.spec();
    let (w, h) = (spec.input_width as usize, spec.input_height as usize);
    let plane = w * h;
    let n = indices.len();
    let mut images = vec![0f32; n * 3 * plane];
    let mut masks = vec![0f32; n * plane];
    images
        .par_chunks_mut(3 * plane)
        .zip(masks.par_chunks_mut(plane))
        .zip(indices.par_iter())
        .try_for_each(|((img_out, mask_out), &i)| {
            let r = cache.get(i)?;
            let write_mask = |m: &GrayImage, out: &mut [f32]| {
                for (o, &v) in out.iter_mut().zip(m.as_raw()) {
                    *o = f32::from(v);
                }
            };
            match &cfg.augment {
                Some(aug) => {
                    let (mut img, mut mask) = (r.image.clone(), r.mask.clone());
                    let mut rng = sample_rng("wms-augment", cfg.seed, cfg.epoch, i as u64);
                    augment_pair(&mut img, &mut mask, aug, &mut rng);
                    normalize_resized_into(&img, spec, img_out);
                    write_mask(&mask, mask_out);
                }
                None => {
                    normalize_resized_into(&r.image, spec, img_out);
                    write_mask(&r.mask, mask_out);
                }
            }
            Ok::<_, DataError>(())
        })?;
    Ok(Batch {
        images,
        masks,
        n,
        height: h,
        width: w,
        stems: indices
            .iter()
            .map(|&i| cache.samples()[i].stem.clone())
            .collect(),
    })
}

impl Iterator for Loader {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rx = self.rx.as_ref()?;
        let t = Instant::now();
        let got = rx.recv();
        self.stats.wait += t.elapsed();
        match got {
            Ok(Ok(batch)) => {
                self.stats.batches += 1;
                self.stats.samples += batch.n;
                Some(Ok(batch))
            }
            Ok(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            Err(_) => {
                self.done = true;
                // Disconnected early: the producer died (a panic); say so once.
                (self.stats.batches < self.num_batches).then_some(Err(DataError::LoaderGone))
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver unblocks a producer waiting in `send`.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_dataset(dir: &std::path::Path, n: usize) -> Vec<Sample> {
        fs_err::create_dir_all(dir.join("images")).unwrap();
        fs_err::create_dir_all(dir.join("masks")).unwrap();
        (0..n)
            .map(|i| {
                let img = RgbImage::from_fn(40, 30, |x, y| {
                    image::Rgb([(x * 6 + i as u32) as u8, (y * 8) as u8, 50])
                });
                let mask =
                    GrayImage::from_fn(40, 30, |x, _| image::Luma([if x > 20 { 255 } else { 0 }]));
                let s = Sample {
                    stem: format!("{i:02}"),
                    image: dir.join(format!("images/{i:02}.png")),
                    mask: dir.join(format!("masks/{i:02}.png")),
                };
                img.save(&s.image).unwrap();
                mask.save(&s.mask).unwrap();
                s
            })
            .collect()
    }

    fn spec() -> PreprocessSpec {
        PreprocessSpec {
            input_width: 16,
            input_height: 16,
            ..PreprocessSpec::default()
        }
    }

    #[test]
    fn batches_cover_the_epoch_and_are_deterministic() {
        let d = tempfile::tempdir().unwrap();
        let samples = tiny_dataset(d.path(), 7);
        let cache = Arc::new(SampleCache::new(samples, spec()));
        let cfg = LoaderConfig {
            batch_size: 3,
            shuffle: true,
            augment: Some(AugmentConfig::default()),
            seed: 5,
            epoch: 1,
            prefetch: 2,
            ..LoaderConfig::default()
        };
        let run = |cfg: LoaderConfig| {
            Loader::with_cache(Arc::clone(&cache), cfg)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        };
        let a = run(cfg.clone());
        assert_eq!(a.iter().map(|b| b.n).collect::<Vec<_>>(), [3, 3, 1]);
        assert_eq!(a[0].images.len(), 3 * 3 * 16 * 16);
        assert_eq!(a[0].masks.len(), 3 * 16 * 16);
        let mut stems: Vec<_> = a.iter().flat_map(|b| b.stems.clone()).collect();
        stems.sort();
        assert_eq!(stems.len(), 7);
        stems.dedup();
        assert_eq!(stems.len(), 7);
        assert_eq!(run(cfg.clone()), a, "same seed and epoch, same batches");
        let other = run(LoaderConfig {
            epoch: 2,
            ..cfg.clone()
        });
        assert_ne!(other, a);
        let dropped = run(LoaderConfig {
            drop_last: true,
            ..cfg
        });
        assert_eq!(dropped.len(), 2);
    }

    #[test]
    fn evaluation_batches_equal_preprocess_image() {
        let d = tempfile::tempdir().unwrap();
        let samples = tiny_dataset(d.path(), 2);
        let img = to_rgb(decode_image_file(&samples[1].image).unwrap());
        let want = super::super::preprocess::preprocess_image(&img, &spec());
        let mut loader = Loader::new(samples, spec(), LoaderConfig::default()).unwrap();
        let b = loader.next().unwrap().unwrap();
        assert_eq!(&b.images[3 * 256..], &want[..]);
        assert!(loader.next().is_none());
        assert_eq!(loader.stats().batches, 1);
    }

    /// `cargo test --release --lib bench_per_sample -- --ignored --nocapture`: per-sample costs
    /// at the real data set's photo size.
    #[test]
    #[ignore]
    fn bench_per_sample_costs() {
        let img = RgbImage::from_fn(1333, 1000, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
        });
        let spec = PreprocessSpec::default();
        let time = |n: u32, f: &mut dyn FnMut()| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() * 1000.0 / n as f64
        };
        let full = time(10, &mut || {
            std::hint::black_box(super::super::preprocess::preprocess_image(&img, &spec));
        });
        let resized = resize_bilinear_antialias(&img, 512, 512);
        let resize = time(10, &mut || {
            std::hint::black_box(resize_bilinear_antialias(&img, 512, 512));
        });
        let mask = GrayImage::new(512, 512);
        let mut out = vec![0f32; 3 * 512 * 512];
        let always = AugmentConfig {
            rotation_p: 1.0,
            brightness_p: 1.0,
            ..AugmentConfig::default()
        };
        let mut i = 0;
        let augmented = time(20, &mut || {
            let (mut a, mut m) = (resized.clone(), mask.clone());
            i += 1;
            augment_pair(&mut a, &mut m, &always, &mut sample_rng("b", 0, 0, i));
            normalize_resized_into(&a, &spec, &mut out);
        });
        let normalize = time(20, &mut || {
            normalize_resized_into(&resized, &spec, &mut out)
        });
        eprintln!(
            "1333x1000 -> 512x512: preprocess_image {full:.2} ms (resize {resize:.2} ms); \
             normalize {normalize:.2} ms; augment (rotation+brightness) + normalize {augmented:.2} ms"
        );
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let samples = tiny_dataset(d.path(), 3);
        fs_err::write(&samples[1].image, b"not an image").unwrap();
        let results: Vec<_> = Loader::new(
            samples,
            spec(),
            LoaderConfig {
                batch_size: 1,
                ..LoaderConfig::default()
            },
        )
        .unwrap()
        .collect();
        assert_eq!(results.len(), 2);
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("01.png"), "{err}");
    }
}
