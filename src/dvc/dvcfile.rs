//! `.dvc` files, `dvc.lock` and `.dir` manifests: reading them, and writing the first and the
//! last byte for byte as DVC 3.x does (DESIGN §8).
//!
//! A `.dvc` file is `outs:` with one entry per output, keys in the order `md5`, `size`,
//! `nfiles` (directories only), `hash: md5`, `path` (ruamel.yaml block style, two-space
//! indent under `- `). `dvc.lock` is `schema: '2.0'` with `stages.<name>.outs` shaped alike. A
//! `.dir` object is Python's `json.dumps(entries, sort_keys=True)` of `{"md5", "relpath"}` entries
//! sorted by `relpath` (`ensure_ascii`, so non-ASCII names become `\uXXXX`). This module parses
//! and prints; it never touches the file system, so `changes` uses it on texts from git.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One output as recorded: `path` is relative to the metafile's directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Out {
    pub path: String,
    #[serde(default)]
    pub md5: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub nfiles: Option<u64>,
    /// `md5` for DVC 3.x entries; absent for 2.x legacy ones.
    #[serde(default)]
    pub hash: Option<String>,
    /// `cache: false` outputs (metrics, plots) live in git, never in the cache or remote.
    #[serde(default)]
    pub cache: Option<bool>,
}

impl Out {
    /// Whether the output is a directory (its md5 names a `.dir` object).
    pub fn is_dir(&self) -> bool {
        self.md5.as_deref().is_some_and(|m| m.ends_with(".dir"))
    }

    /// Whether the entry is a DVC 2.x one (no `hash: md5`), stored in the legacy layout.
    pub fn is_legacy(&self) -> bool {
        self.hash.as_deref() != Some("md5")
    }
}

/// An output with the `dvc.lock` stage that produced it (`None` in `.dvc` files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedOut {
    pub stage: Option<String>,
    pub out: Out,
}

#[derive(Debug, Deserialize)]
struct RawOut {
    path: Option<String>,
    md5: Option<String>,
    size: Option<u64>,
    nfiles: Option<u64>,
    hash: Option<String>,
    cache: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct DvcFile {
    #[serde(default)]
    outs: Vec<RawOut>,
}

#[derive(Debug, Deserialize)]
struct LockFile {
    schema: Option<String>,
    #[serde(default)]
    stages: BTreeMap<String, LockStage>,
}

#[derive(Debug, Deserialize)]
struct LockStage {
    #[serde(default)]
    outs: Vec<RawOut>,
}

/// Whether `path` (a `/`-separated path or a bare name) is a `.dvc` file or a `dvc.lock`.
pub fn is_metafile(path: &str) -> bool {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    name == "dvc.lock" || (name.ends_with(".dvc") && name.len() > 4)
}

/// The `outs` of one metafile's text; `file` (its path or name) tells `dvc.lock` from `.dvc`.
/// The error is a sentence without the file name; callers add it.
pub fn parse_outs(file: &str, text: &str) -> Result<Vec<RecordedOut>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    check_flow_depth(text)?;
    let mut out = Vec::new();
    let mut add = |stage: Option<&str>, raw: RawOut| -> Result<(), String> {
        let Some(path) = raw.path else {
            return Err("an entry in `outs` has no `path`".into());
        };
        out.push(RecordedOut {
            stage: stage.map(str::to_string),
            out: Out {
                path,
                md5: raw.md5,
                size: raw.size,
                nfiles: raw.nfiles,
                hash: raw.hash,
                cache: raw.cache,
            },
        });
        Ok(())
    };
    if file.rsplit(['/', '\\']).next() == Some("dvc.lock") {
        let lock: LockFile =
            serde_yaml::from_str(text).map_err(|e| format!("not a dvc.lock: {e}"))?;
        if let Some(schema) = &lock.schema
            && !schema.starts_with('2')
        {
            return Err(format!(
                "unsupported dvc.lock schema {schema:?} (expected '2.0')"
            ));
        }
        for (name, stage) in lock.stages {
            for raw in stage.outs {
                add(Some(&name), raw)?;
            }
        }
    } else {
        let dvc: DvcFile =
            serde_yaml::from_str(text).map_err(|e| format!("not a .dvc file: {e}"))?;
        for raw in dvc.outs {
            add(None, raw)?;
        }
    }
    Ok(out)
}

/// Deeper than anything DVC writes (an output sits three levels down; `params` add a few):
/// serde_yaml needs time quadratic in the nesting of flow collections (`[[[…`) before it refuses
/// them, so a 200 KB hostile `.dvc` file would hold `data pull` or `detect-changes` for a minute.
const MAX_FLOW_DEPTH: usize = 64;

/// Refuses text whose `[`/`{` nesting exceeds [`MAX_FLOW_DEPTH`] before the YAML parser sees it.
/// Brackets inside quoted strings count too: over-strict only for absurd values.
fn check_flow_depth(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(format!(
                        "brackets nested deeper than {MAX_FLOW_DEPTH} levels; not written by DVC"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The text `dvc add` writes for one output.
pub fn render_dvc_file(out: &Out) -> String {
    let mut s = String::from("outs:\n");
    let mut first = true;
    let mut line = |key: &str, value: String| {
        s.push_str(if first { "- " } else { "  " });
        first = false;
        s.push_str(key);
        s.push_str(": ");
        s.push_str(&value);
        s.push('\n');
    };
    if let Some(m) = &out.md5 {
        line("md5", yaml_scalar(m));
    }
    if let Some(n) = out.size {
        line("size", n.to_string());
    }
    if let Some(n) = out.nfiles {
        line("nfiles", n.to_string());
    }
    if let Some(h) = &out.hash {
        line("hash", yaml_scalar(h));
    }
    line("path", yaml_scalar(&out.path));
    if out.cache == Some(false) {
        line("cache", "false".into());
    }
    s
}

/// A string as ruamel.yaml prints it: plain when it reads back as the same string, else
/// single-quoted (`'` doubled).
fn yaml_scalar(s: &str) -> String {
    const INDICATORS: &str = "-?:,[]{}#&*!|>'\"%@`";
    let plain = !s.is_empty()
        && s.trim() == s
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && !s.chars().any(char::is_control)
        && !s.starts_with(|c| INDICATORS.contains(c))
        && matches!(
            serde_yaml::from_str::<serde_yaml::Value>(s),
            Ok(serde_yaml::Value::String(ref v)) if v == s
        );
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// One file of a `.dir` manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DirEntry {
    pub md5: String,
    pub relpath: String,
}

/// Parses a `.dir` object.
pub fn parse_dir_manifest(bytes: &[u8]) -> Result<Vec<DirEntry>, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a DVC .dir manifest: {e}"))
}

/// The bytes of a `.dir` object for `entries` (sorted here by `relpath`, as DVC does).
pub fn render_dir_manifest(entries: &[DirEntry]) -> Vec<u8> {
    let mut sorted: Vec<&DirEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.relpath.cmp(&b.relpath));
    let mut s = String::from("[");
    for (i, e) in sorted.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str("{\"md5\": ");
        push_json_string(&mut s, &e.md5);
        s.push_str(", \"relpath\": ");
        push_json_string(&mut s, &e.relpath);
        s.push('}');
    }
    s.push(']');
    s.into_bytes()
}

/// A JSON string as Python's `json.dumps` writes it with `ensure_ascii=True`.
fn push_json_string(s: &mut String, v: &str) {
    use std::fmt::Write as _;
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\u{8}' => s.push_str("\\b"),
            '\u{c}' => s.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(s, "\\u{unit:04x}");
                }
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dvc_file_matches_dvc_add_output() {
        // From `dvc add data/images` (dvc 3.67.1) on three small files.
        let out = Out {
            path: "images".into(),
            md5: Some("d23608bc013c1f42db5f0e4a34bbb6ea.dir".into()),
            size: Some(17),
            nfiles: Some(3),
            hash: Some("md5".into()),
            cache: None,
        };
        let text = render_dvc_file(&out);
        assert_eq!(
            text,
            "outs:\n- md5: d23608bc013c1f42db5f0e4a34bbb6ea.dir\n  size: 17\n  nfiles: 3\n  hash: md5\n  path: images\n"
        );
        let parsed = parse_outs("images.dvc", &text).unwrap();
        assert_eq!(parsed[0].out, out);
        assert!(out.is_dir() && !out.is_legacy());
        assert_eq!(yaml_scalar("we ird"), "we ird");
        assert_eq!(yaml_scalar("123"), "'123'");
        assert_eq!(yaml_scalar("it's: x"), "'it''s: x'");
    }

    #[test]
    fn issue11_deep_flow_nesting_is_refused_before_parsing() {
        let deep = format!("outs: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let start = std::time::Instant::now();
        let err = parse_outs("x.dvc", &deep).unwrap_err();
        assert!(err.contains("nested deeper"), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        // What DVC writes, flow style included, still parses.
        let lock = "schema: '2.0'\nstages:\n  s:\n    cmd: x\n    params:\n      p.yaml:\n        a: {b: [1, {c: 2}]}\n    outs:\n    - path: m.json\n      md5: 11112222333344445555666677778888\n";
        assert_eq!(parse_outs("dvc.lock", lock).unwrap().len(), 1);
    }

    #[test]
    fn dir_manifest_matches_python_json_dumps() {
        let entries = vec![
            DirEntry {
                md5: "7d793037a0760186574b0282f2f435e7".into(),
                relpath: "sub/b.bin".into(),
            },
            DirEntry {
                md5: "b1946ac92492d2347c6235b4d2611184".into(),
                relpath: "a.txt".into(),
            },
        ];
        let bytes = render_dir_manifest(&entries);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"[{"md5": "b1946ac92492d2347c6235b4d2611184", "relpath": "a.txt"}, {"md5": "7d793037a0760186574b0282f2f435e7", "relpath": "sub/b.bin"}]"#
        );
        assert_eq!(parse_dir_manifest(&bytes).unwrap().len(), 2);
        let mut s = String::new();
        push_json_string(&mut s, "é x😀");
        assert_eq!(s, r#""\u00e9 x\ud83d\ude00""#);
    }
}
