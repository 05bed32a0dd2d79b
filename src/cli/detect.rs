//! `wms detect-changes`: flags and action inputs → [`DetectSettings`] → [`changes::detect`] →
//! step outputs, job summary, and a report on stdout.

use std::path::PathBuf;

use crate::changes::{self, DetectRequest, FilterSource, ManualMode, RangeRequest, event::Event};
use crate::env_vars;
use crate::exit::UsageError;
use crate::github::actions::{Actions, Location};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// Decide from the event's commits whether to train and/or deploy (paths filters + DVC deltas).
#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Filters: a YAML file, or the YAML itself. Default: `.github/wms-filters.yaml` in the
    /// repository, else embedded defaults (`train`, `deploy`, `docs`). Input: `filters`.
    #[arg(long)]
    pub filters: Option<String>,
    /// Base commit/ref; overrides the event. Without it, --head is compared with its first
    /// parent. Input: `base`.
    #[arg(long)]
    pub base: Option<String>,
    /// Head commit/ref; overrides the event (default HEAD). Input: `head`.
    #[arg(long)]
    pub head: Option<String>,
    /// What workflow_dispatch and schedule runs compare: `always` (every filter true) or a ref
    /// to compare HEAD with. Input: `manual-base`.
    #[arg(long)]
    pub manual_base: Option<String>,
    /// A directory inside the repository.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

/// The values the command runs with, after flags, `INPUT_*` and the event environment.
#[derive(Debug)]
pub struct DetectSettings {
    pub request: DetectRequest,
    pub format: OutputFormat,
}

impl DetectSettings {
    /// Flags win over action inputs; `GITHUB_EVENT_NAME`/`GITHUB_EVENT_PATH` are read only when
    /// neither --base nor --head is given.
    pub fn resolve(args: DetectArgs, gh: &Actions) -> anyhow::Result<DetectSettings> {
        let DetectArgs {
            filters,
            base,
            head,
            manual_base,
            repo,
            format,
        } = args;
        let filters = filters.or_else(|| gh.input("filters"));
        let base = base.or_else(|| gh.input("base"));
        let head = head.or_else(|| gh.input("head"));
        let manual = ManualMode::parse(
            &manual_base
                .or_else(|| gh.input("manual-base"))
                .unwrap_or_default(),
        );
        let filters = match filters {
            None => FilterSource::Default,
            Some(f) if f.contains('\n') || (f.contains(':') && !PathBuf::from(&f).exists()) => {
                FilterSource::Inline(f)
            }
            Some(f) => {
                let path = PathBuf::from(&f);
                // A relative path is relative to the repository, like paths-filter's.
                let path = if path.is_relative() && !path.exists() {
                    repo.join(path)
                } else {
                    path
                };
                FilterSource::File(path)
            }
        };
        let env = |var| std::env::var(var).ok().filter(|v: &String| !v.is_empty());
        let event = match (&base, &head, env(env_vars::GITHUB_EVENT_NAME)) {
            (None, None, Some(name)) => {
                let path = env(env_vars::GITHUB_EVENT_PATH).map(PathBuf::from);
                Some(Event::load(&name, path.as_deref())?)
            }
            _ => None,
        };
        if let (Some(b), Some(h)) = (&base, &head)
            && (b.trim().is_empty() || h.trim().is_empty())
        {
            return Err(UsageError::new("--base and --head must not be empty").into());
        }
        Ok(DetectSettings {
            request: DetectRequest {
                repo,
                filters,
                range: RangeRequest {
                    base,
                    head,
                    event,
                    manual,
                    github_sha: env(env_vars::GITHUB_SHA),
                },
            },
            format,
        })
    }
}

pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    // libgit2's pack reading (delta bases, parsed trees, a zlib state per object) grows the
    // heap by tens of MiB in a large diff; 2 MiB pages save most of its page faults.
    crate::memory::prefer_huge_pages_for_heap(64 << 20);
    let gh = Actions::from_env();
    let settings = DetectSettings::resolve(args, &gh)?;
    let mut git = changes::git::Git::open(&settings.request.repo)?;
    // A token in the remote's URL is used by a shallow clone's fetch; mask it before anything
    // (a log line, an error) could show it.
    for secret in git.remote_secrets() {
        gh.add_mask(&secret);
    }
    let detection = changes::detect_in(&mut git, &settings.request)?;
    // The process ends right after; freeing libgit2's pack caches would only cost time (a
    // tenth of a run on a large repository).
    std::mem::forget(git);
    for w in &detection.warnings {
        gh.warning(w, &Location::default());
    }
    changes::report::write_outputs(&gh, &detection)?;
    gh.append_summary(&changes::report::summary_markdown(&detection))?;
    match settings.format {
        OutputFormat::Text => print!("{}", changes::report::text(&detection)),
        OutputFormat::Json => println!("{}", changes::report::json(&detection)),
    }
    Ok(())
}
