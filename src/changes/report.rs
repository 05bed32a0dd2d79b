//! Renders a [`Detection`]: step outputs (the paths-filter names plus ours), the job-summary
//! table, and the text or JSON a person or script reads on stdout. Decides nothing.
//!
//! Names come from the repository, so each is escaped for where it goes ([`crate::untrusted`]):
//! `for_log` on stdout, `md_code`/`md_text` in the summary, JSON (which escapes them itself) in
//! the list outputs and `--format json`. The sentences in `reasons` arrive already made safe.

use crate::github::actions::{Actions, ActionsError};
use crate::untrusted::text::{for_log, md_code, md_text};

use super::Detection;

/// Writes every step output: per filter `<name>`, `<name>_count`, `<name>_files` (JSON), then
/// `changes` (JSON), `should_train`, `should_deploy`, `data_changed`, `base`, `head`, `reasons`
/// (one sentence per line).
pub fn write_outputs(gh: &Actions, d: &Detection) -> Result<(), ActionsError> {
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    for f in &d.filters {
        gh.set_output(&f.name, bool_str(f.matched))?;
        gh.set_output(&format!("{}_count", f.name), &f.count.to_string())?;
        gh.set_output(&format!("{}_files", f.name), &json(&f.files))?;
    }
    gh.set_output("changes", &json(&d.changes))?;
    gh.set_output("should_train", bool_str(d.should_train))?;
    gh.set_output("should_deploy", bool_str(d.should_deploy))?;
    gh.set_output("data_changed", bool_str(d.data_changed))?;
    gh.set_output("base", &d.base)?;
    gh.set_output("head", &d.head)?;
    gh.set_output("reasons", &d.reasons.join("\n"))?;
    Ok(())
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

/// The job summary: decisions first, then filters, then data deltas.
pub fn summary_markdown(d: &Detection) -> String {
    let mut md = String::new();
    md.push_str("### wms detect-changes\n\n");
    md.push_str(&format!(
        "`{}` → `{}` ({}): {} changed file(s).\n\n",
        short(&d.base),
        short(&d.head),
        md_text(&d.event),
        d.files.len()
    ));
    md.push_str("| decision | value |\n|---|---|\n");
    for (name, v) in [
        ("should_train", d.should_train),
        ("should_deploy", d.should_deploy),
        ("data_changed", d.data_changed),
    ] {
        md.push_str(&format!("| `{name}` | {} |\n", bool_str(v)));
    }
    md.push_str("\n| filter | matched | files | examples |\n|---|---|---|---|\n");
    for f in &d.filters {
        let examples: Vec<String> = f.files.iter().take(3).map(|p| md_code(p)).collect();
        let more = if f.files.len() > 3 { " …" } else { "" };
        md.push_str(&format!(
            "| {} | {} | {} | {}{more} |\n",
            md_code(&f.name),
            bool_str(f.matched),
            f.count,
            examples.join(", ")
        ));
    }
    if !d.data.is_empty() {
        md.push_str("\n**Data changes (DVC)**\n\n");
        for delta in &d.data {
            md.push_str(&format!("- {}\n", md_text(&delta.description)));
        }
    }
    md.push_str("\n**Why**\n\n");
    for r in &d.reasons {
        md.push_str(&format!("- {}\n", md_text(r)));
    }
    md
}

/// The human report on stdout.
pub fn text(d: &Detection) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "base {}  head {}  ({}, {} changed file(s))\n",
        short(&d.base),
        short(&d.head),
        for_log(&d.event),
        d.files.len()
    ));
    for f in &d.filters {
        out.push_str(&format!(
            "  {:<16} {:<5} {}\n",
            for_log(&f.name),
            bool_str(f.matched),
            f.count
        ));
    }
    out.push_str(&format!(
        "should_train={} should_deploy={} data_changed={}\n",
        d.should_train, d.should_deploy, d.data_changed
    ));
    for delta in &d.data {
        out.push_str(&format!("  data: {}\n", for_log(&delta.description)));
    }
    // Already safe to print (see `changes::decide`).
    for r in &d.reasons {
        out.push_str(&format!("- {r}\n"));
    }
    out
}

/// The JSON document `--format json` prints.
pub fn json(d: &Detection) -> String {
    serde_json::to_string_pretty(d).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
