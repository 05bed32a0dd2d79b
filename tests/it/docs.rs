//! The documentation set: every ```` ```mermaid ```` block in `docs/**/*.md` and `README.md`
//! goes through the real Mermaid renderer (mmdc from `tools/mermaid` on Debian's Chromium), and
//! every relative link in them points at a file or folder that exists. The module table of
//! `docs/architecture.md` names every module of `src/lib.rs`.
//! A failure names the file and the block (or link).

use std::path::{Path, PathBuf};

use crate::util::mmdc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `README.md` and every `*.md` under `docs/`, sorted.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs_err::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut files);
    files.sort();
    files
}

/// The Mermaid blocks of a Markdown text, in order (fences of three or more backticks).
fn mermaid_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None => {
                let fence: String = trimmed.chars().take_while(|c| *c == '`').collect();
                if fence.len() >= 3 && trimmed[fence.len()..].trim() == "mermaid" {
                    current = Some((fence, String::new()));
                }
            }
            Some((fence, body)) => {
                if trimmed.starts_with(fence.as_str()) && trimmed.trim_matches('`').is_empty() {
                    blocks.push(std::mem::take(body));
                    current = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    assert!(
        current.is_none(),
        "an unclosed ```mermaid block at the end of the file"
    );
    blocks
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn the_block_parser_finds_mermaid_blocks_only() {
    let text = "# t\n```rust\nfn a() {}\n```\n```mermaid\nflowchart LR\n  a --> b\n```\n\
                ````mermaid\nsequenceDiagram\n  A->>B: ```\n````\n";
    assert_eq!(
        mermaid_blocks(text),
        vec![
            "flowchart LR\n  a --> b\n".to_string(),
            "sequenceDiagram\n  A->>B: ```\n".to_string()
        ]
    );
}

#[test]
fn the_documentation_set_is_there() {
    for doc in [
        "docs/architecture.md",
        "docs/diagrams/diagrams.md",
        "docs/DEPLOYMENT.md",
        "docs/COMPARISON.md",
        "docs/PERFORMANCE.md",
    ] {
        assert!(root().join(doc).is_file(), "{doc} is missing");
        let readme = fs_err::read_to_string(root().join("README.md")).unwrap();
        assert!(
            readme.contains(&format!("]({doc})")),
            "README.md does not link {doc}"
        );
    }
    // The seed's five diagrams, each a kind Mermaid knows.
    let diagrams = fs_err::read_to_string(root().join("docs/diagrams/diagrams.md")).unwrap();
    let kinds: Vec<String> = mermaid_blocks(&diagrams)
        .iter()
        .map(|b| b.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "C4Context",
            "flowchart",
            "flowchart",
            "sequenceDiagram",
            "flowchart"
        ]
    );
}

/// Every top-level module of the library has a row in the architecture's module table.
#[test]
fn the_module_table_names_every_module_of_the_library() {
    let lib = fs_err::read_to_string(root().join("src/lib.rs")).unwrap();
    let arch = fs_err::read_to_string(root().join("docs/architecture.md")).unwrap();
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .collect();
    assert!(modules.len() > 20, "{modules:?}");
    let missing: Vec<&&str> = modules
        .iter()
        .filter(|m| {
            !arch
                .lines()
                .any(|l| l.starts_with(&format!("| `{m}`")) || l.starts_with(&format!("| `{m}::")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md has no module-table row for {missing:?}"
    );
}

/// Every alert the monitoring rules define has a row in the operations guide saying what to do,
/// and the guide names no alert the rules do not define.
#[test]
fn every_alert_has_a_row_in_the_operations_guide() {
    let rules =
        fs_err::read_to_string(root().join("infra/helm/monitoring/prometheus-rule.yaml")).unwrap();
    let guide = fs_err::read_to_string(root().join("docs/DEPLOYMENT.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for alert in &alerts {
        assert!(
            guide
                .lines()
                .any(|l| l.starts_with(&format!("| `{alert}` "))),
            "docs/DEPLOYMENT.md has no row for the alert {alert}"
        );
    }
    let section = guide
        .split("\n## Alerts and what to do\n")
        .nth(1)
        .expect("docs/DEPLOYMENT.md has no section `## Alerts and what to do`");
    let section = section.split("\n## ").next().unwrap();
    let rows: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` (").map(|(name, _)| name))
        .collect();
    assert_eq!(rows.len(), alerts.len(), "{rows:?}");
    for row in rows {
        assert!(
            alerts.contains(&row),
            "docs/DEPLOYMENT.md names the alert {row}, which infra/helm/monitoring does not define"
        );
    }
}

#[test]
fn relative_links_in_the_docs_point_at_files_that_exist() {
    let files = markdown_files();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = fs_err::read_to_string(file).unwrap();
        let mut in_code = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                continue;
            }
            // `](target)` outside inline code spans.
            let outside: String = line
                .split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(_, s)| s)
                .collect::<Vec<_>>()
                .join(" ");
            for part in outside.split("](").skip(1) {
                let Some(target) = part.split(')').next() else {
                    continue;
                };
                let target = target.split_whitespace().next().unwrap_or("");
                if target.is_empty()
                    || target.starts_with('#')
                    || target.contains("://")
                    || target.starts_with("mailto:")
                {
                    continue;
                }
                let path = target.split('#').next().unwrap();
                checked += 1;
                let resolved = file.parent().unwrap().join(path);
                if !resolved.exists() {
                    broken.push(format!("{}:{}: {target}", relative(file), n + 1));
                }
            }
        }
    }
    assert!(checked >= 5, "only {checked} relative links found");
    assert!(
        broken.is_empty(),
        "broken relative links:\n{}",
        broken.join("\n")
    );
}

#[test]
fn every_mermaid_block_in_the_docs_renders_in_the_real_renderer() {
    let Some((mmdc, puppeteer)) = mmdc() else {
        return;
    };
    // All blocks in one Markdown file: one Chromium start. mmdc writes all-N.svg in order and
    // stops at the first block that does not render, so the count of SVGs names that block.
    let mut index: Vec<(String, usize, String)> = Vec::new();
    for file in markdown_files() {
        let text = fs_err::read_to_string(&file).unwrap();
        for (i, block) in mermaid_blocks(&text).into_iter().enumerate() {
            index.push((relative(&file), i + 1, block));
        }
    }
    assert!(
        index.len() >= 6,
        "only {} Mermaid blocks found in README.md and docs/",
        index.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut all = String::new();
    for (_, _, block) in &index {
        all.push_str("```mermaid\n");
        all.push_str(block);
        all.push_str("```\n\n");
    }
    fs_err::write(dir.path().join("all.md"), &all).unwrap();
    let run = std::process::Command::new(&mmdc)
        .arg("-p")
        .arg(&puppeteer)
        .arg("-i")
        .arg(dir.path().join("all.md"))
        .arg("-o")
        .arg(dir.path().join("out.md"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let svg = |k: usize| dir.path().join(format!("out-{k}.svg"));
    let rendered = (1..=index.len()).take_while(|k| svg(*k).is_file()).count();
    if !run.status.success() || rendered < index.len() {
        let (file, n, block) = &index[rendered.min(index.len() - 1)];
        panic!(
            "{file}: Mermaid block {n} does not render:\n{block}\nmmdc (exit {:?}):\n{}",
            run.status.code(),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    for (k, (file, n, _)) in index.iter().enumerate() {
        let text = fs_err::read_to_string(svg(k + 1)).unwrap();
        // Mermaid draws a "Syntax error" picture instead of failing for some diagram kinds.
        assert!(
            text.starts_with("<svg") && !text.contains("Syntax error in text"),
            "{file}: Mermaid block {n} rendered as an error picture"
        );
        assert!(
            text.contains("<text") || text.contains("<foreignObject") || text.contains("<span"),
            "{file}: Mermaid block {n} rendered without any label"
        );
    }
}
