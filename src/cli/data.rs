//! `wms data synth` and `wms data qa`: flags → settings → [`crate::data::synth`] /
//! [`crate::data::qa`] → a summary on stdout, reports as files, a job summary in Actions.

use std::path::PathBuf;

use anyhow::Context;

use crate::data::{DataError, qa, synth};
use crate::exit::UsageError;
use crate::github::actions::Actions;

/// Synthesize and check data sets (images/ + masks/ with the same stems).
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Render realistic synthetic water-meter photos and counter-window masks.
    Synth(SynthArgs),
    /// Check a data set: pairs, decoding, sizes, binary and non-empty masks, duplicates.
    Qa(QaArgs),
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Output folder; images/NNNN.jpg and masks/NNNN.png are written inside.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of samples.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Image size as WIDTHxHEIGHT.
    #[arg(long, default_value = "512x512")]
    pub size: String,
    /// Random seed: the same seed writes identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct QaArgs {
    /// The data set folder (with images/ and masks/).
    pub dir: PathBuf,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the report as Markdown here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

/// Parses `WIDTHxHEIGHT` (also `X` or `×`).
pub fn parse_size(s: &str) -> Result<(u32, u32), UsageError> {
    let bad = || {
        UsageError::new(format!(
            "invalid --size `{s}`; hint: use WIDTHxHEIGHT, e.g. 512x512"
        ))
    };
    let (w, h) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok((w, h))
}

impl SynthArgs {
    fn resolve(self) -> Result<synth::SynthConfig, UsageError> {
        let SynthArgs {
            out,
            count,
            size,
            seed,
        } = self;
        let (width, height) = parse_size(&size)?;
        Ok(synth::SynthConfig {
            out,
            count,
            width,
            height,
            seed,
        })
    }
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Synth(a) => run_synth(a),
        DataCommand::Qa(a) => run_qa(a),
    }
}

fn run_synth(args: SynthArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    let s = synth::synthesize(&cfg)?;
    println!(
        "synthesized {} images ({}x{}) into {} in {:.2} s ({:.1} images/s); window coverage min {:.1} %, mean {:.1} %, max {:.1} %",
        s.count,
        s.width,
        s.height,
        cfg.out.display(),
        s.seconds,
        s.images_per_second,
        s.coverage_min * 100.0,
        s.coverage_mean * 100.0,
        s.coverage_max * 100.0,
    );
    Ok(())
}

fn run_qa(args: QaArgs) -> anyhow::Result<()> {
    let QaArgs {
        dir,
        json,
        markdown,
    } = args;
    let report = qa::run_qa(&dir)?;
    if let Some(p) = &json {
        crate::fsutil::write_atomic(p, report.to_json().as_bytes())
            .context("writing the JSON report")?;
    }
    let md = report.to_markdown();
    if let Some(p) = &markdown {
        crate::fsutil::write_atomic(p, md.as_bytes()).context("writing the Markdown report")?;
    }
    let gh = Actions::from_env();
    if gh.in_actions() {
        gh.append_summary(&md)?;
    }
    println!(
        "data QA of {}: {} images, {} masks, {} valid pairs, {} error(s)",
        dir.display(),
        report.images,
        report.masks,
        report.valid_pairs,
        report.errors.len()
    );
    if report.ok {
        return Ok(());
    }
    for line in report.first_lines() {
        eprintln!("  {line}");
    }
    let first = report
        .errors
        .first()
        .map(|e| format!("{} ({})", e.files.join(", "), e.kind.as_str()))
        .unwrap_or_default();
    Err(DataError::QaFailed {
        root: dir,
        count: report.errors.len(),
        first,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512x384").unwrap(), (512, 384));
        assert_eq!(parse_size("64X64").unwrap(), (64, 64));
        assert!(parse_size("512").is_err());
        assert!(parse_size("0x5").is_err());
    }
}
