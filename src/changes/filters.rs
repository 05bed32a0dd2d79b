//! Named path filters (the dorny/paths-filter format): parsing the YAML, the embedded defaults
//! for a model repository, and deciding which changed files each filter matches. Knows nothing
//! about git or events; it gets a list of [`FileChange`]s.
//!
//! Format: a mapping of filter name → list of rules. A rule is a glob string (`'src/**'`,
//! `'!**/*.md'`) or a one-entry mapping restricting it to change types
//! (`added|modified: 'data/**'`, value a glob or a list of globs). Nested lists (from YAML
//! anchors, `- *shared`) are flattened.
//!
//! Negation is ordered, like `.gitignore`: rules are applied top to bottom, a matching plain
//! rule includes the file, a matching `!` rule excludes it again, the last match wins. A filter
//! whose first rule is a negation starts from "every file" (so `['!**/*.md']` alone means
//! "anything but Markdown", as paths-filter users expect). A rename matches when either its new
//! or its old path matches (moving a file out of `configs/` changes `configs/`).
//!
//! Where this differs from dorny/paths-filter: paths-filter compiles `!p` into a picomatch
//! matcher of "every path not matching p" and, with its default `predicate-quantifier: some`, a
//! file matches a filter when it matches ANY rule, so `['pkg/**', '!**/*.md']` there matches
//! `pkg/notes.md` (by the first rule) and `other/a.go` (by the second): the negation excludes
//! nothing. Its `predicate-quantifier: every` (v3) makes every rule required instead. Ours is
//! the ordered reading above, which agrees with `every` for "includes, then exclusions" lists
//! and with `some` for a filter of one `!` rule; the test
//! `negation_differs_from_paths_filter_some_as_documented` pins each case.

use serde_yaml::Value;

use super::error::ChangesError;
use super::glob::Glob;
use super::{ChangeKind, FileChange};

/// The filters used when the repository has no filters file.
pub const DEFAULT_FILTERS: &str = "\
# Embedded defaults of `wms detect-changes` for a model repository. Override them with
# .github/wms-filters.yaml (same format) or --filters FILE.
train:
  - 'configs/**'
  - '!configs/serve*'
  - 'params.yaml'
  - '**/params.yaml'
  - 'dvc.yaml'
  - 'dvc.lock'
  - '**/*.dvc'
  - '!**/*.md'
deploy:
  - 'torchserve/**'
  - 'infra/helm/**'
  - 'configs/serve*'
  - '!**/*.md'
docs:
  - 'docs/**'
  - '**/*.md'
";

/// Output names wms sets itself; a filter may not shadow them.
const RESERVED: &[&str] = &[
    "changes",
    "should_train",
    "should_deploy",
    "data_changed",
    "base",
    "head",
    "reasons",
];

#[derive(Debug, Clone)]
pub struct Filters {
    /// Where they came from (a path or "embedded defaults"), for messages.
    pub origin: String,
    pub filters: Vec<Filter>,
}

#[derive(Debug, Clone)]
pub struct Filter {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub negated: bool,
    pub glob: Glob,
    /// `None`: any change type.
    pub kinds: Option<Vec<ChangeKind>>,
}

impl Filters {
    pub fn defaults() -> Filters {
        Filters::parse("embedded defaults", DEFAULT_FILTERS)
            .expect("the embedded default filters parse")
    }

    pub fn parse(origin: &str, yaml: &str) -> Result<Filters, ChangesError> {
        let err = |message: String, hint: &str| ChangesError::Filters {
            origin: origin.to_string(),
            message,
            hint: hint.to_string(),
        };
        let doc: Value = serde_yaml::from_str(yaml).map_err(|e| {
            err(
                format!("not valid YAML: {e}"),
                "quote patterns that start with `*` or `!` ('**/*.dvc')",
            )
        })?;
        let Value::Mapping(map) = doc else {
            return Err(err(
                "the top level must be a mapping of filter name to a list of globs".into(),
                "see .github/wms-filters.yaml in the wms docs for the format",
            ));
        };
        let mut filters = Vec::with_capacity(map.len());
        for (key, value) in &map {
            let Some(name) = key.as_str() else {
                return Err(err(
                    format!("filter name {key:?} is not a string"),
                    "name filters with letters, digits, `_` or `-`",
                ));
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(err(
                    format!("filter name {name:?} is not a valid output name"),
                    "name filters with letters, digits, `_` or `-`",
                ));
            }
            if RESERVED.contains(&name) {
                return Err(err(
                    format!("filter name {name:?} clashes with an output wms sets itself"),
                    "rename the filter",
                ));
            }
            let mut rules = Vec::new();
            collect_rules(origin, name, value, None, &mut rules)?;
            filters.push(Filter {
                name: name.to_string(),
                rules,
            });
        }
        Ok(Filters {
            origin: origin.to_string(),
            filters,
        })
    }

    /// For each filter, the changed files it matches (in the order of `changes`).
    pub fn evaluate<'a>(&'a self, changes: &[FileChange]) -> Vec<(&'a Filter, Vec<usize>)> {
        self.filters
            .iter()
            .map(|f| {
                let hits = changes
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| f.matches(c))
                    .map(|(i, _)| i)
                    .collect();
                (f, hits)
            })
            .collect()
    }
}

impl Filter {
    pub fn matches(&self, change: &FileChange) -> bool {
        let mut included = self.rules.first().is_some_and(|r| r.negated);
        for rule in &self.rules {
            if rule
                .kinds
                .as_ref()
                .is_some_and(|k| !k.contains(&change.kind))
            {
                continue;
            }
            let hit = rule.glob.is_match(&change.path)
                || change
                    .old_path
                    .as_deref()
                    .is_some_and(|old| rule.glob.is_match(old));
            if hit {
                included = !rule.negated;
            }
        }
        included
    }
}

fn collect_rules(
    origin: &str,
    filter: &str,
    value: &Value,
    kinds: Option<&[ChangeKind]>,
    out: &mut Vec<Rule>,
) -> Result<(), ChangesError> {
    let shape_err = |what: String| ChangesError::Filters {
        origin: origin.to_string(),
        message: format!("filter {filter:?}: {what}"),
        hint: "each rule is a quoted glob or `added|modified: 'glob'`".to_string(),
    };
    match value {
        Value::String(pattern) => {
            let (negated, body) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            let glob = Glob::new(body).map_err(|cause| ChangesError::Glob {
                origin: origin.to_string(),
                filter: filter.to_string(),
                cause,
            })?;
            out.push(Rule {
                negated,
                glob,
                kinds: kinds.map(<[ChangeKind]>::to_vec),
            });
        }
        Value::Sequence(items) => {
            for item in items {
                collect_rules(origin, filter, item, kinds, out)?;
            }
        }
        Value::Mapping(map) if kinds.is_none() => {
            for (types, patterns) in map {
                let Some(types) = types.as_str() else {
                    return Err(shape_err(format!(
                        "change types {types:?} are not a string"
                    )));
                };
                let parsed = types
                    .split('|')
                    .map(|t| {
                        ChangeKind::parse(t.trim()).ok_or_else(|| ChangesError::Filters {
                            origin: origin.to_string(),
                            message: format!("filter {filter:?}: unknown change type {t:?}"),
                            hint:
                                "use added, modified, deleted, renamed or copied, joined with `|`"
                                    .to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                collect_rules(origin, filter, patterns, Some(&parsed), out)?;
            }
        }
        Value::Tagged(tagged) => collect_rules(origin, filter, &tagged.value, kinds, out)?,
        other => {
            return Err(shape_err(format!(
                "{} is not a glob",
                serde_yaml::to_string(other).unwrap_or_default().trim_end()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, kind: ChangeKind) -> FileChange {
        FileChange {
            path: path.into(),
            old_path: None,
            kind,
        }
    }

    fn modified(path: &str) -> FileChange {
        change(path, ChangeKind::Modified)
    }

    fn all_modified(paths: &[&str]) -> Vec<FileChange> {
        paths.iter().map(|p| modified(p)).collect()
    }

    fn matched(yaml: &str, filter: &str, changes: &[FileChange]) -> Vec<String> {
        let filters = Filters::parse("test", yaml).unwrap();
        let f = filters.filters.iter().find(|f| f.name == filter).unwrap();
        changes
            .iter()
            .filter(|c| f.matches(c))
            .map(|c| c.path.clone())
            .collect()
    }

    #[test]
    fn negation_is_ordered_last_match_wins() {
        let yaml = "backend:\n  - 'pkg/**'\n  - '!**/*.md'\n  - 'pkg/keep.md'\n";
        let changes = all_modified(&["pkg/a.go", "pkg/notes.md", "pkg/keep.md", "other/a.go"]);
        assert_eq!(
            matched(yaml, "backend", &changes),
            ["pkg/a.go", "pkg/keep.md"]
        );
    }

    /// Issue 17: the documented difference from paths-filter, each side spelled out.
    #[test]
    fn negation_differs_from_paths_filter_some_as_documented() {
        let yaml = "backend:\n  - 'pkg/**'\n  - '!**/*.md'\n";
        let changes = all_modified(&["pkg/a.go", "pkg/notes.md", "other/a.go", "other/b.md"]);
        // paths-filter, `predicate-quantifier: some`: any rule, `!p` = "not p".
        let some: Vec<&str> = changes
            .iter()
            .filter(|c| {
                Glob::new("pkg/**").unwrap().is_match(&c.path)
                    || !Glob::new("**/*.md").unwrap().is_match(&c.path)
            })
            .map(|c| c.path.as_str())
            .collect();
        assert_eq!(some, ["pkg/a.go", "pkg/notes.md", "other/a.go"]);
        // paths-filter, `predicate-quantifier: every`, and ours: included, then excluded.
        assert_eq!(matched(yaml, "backend", &changes), ["pkg/a.go"]);
        // A lone negation: paths-filter's `some` and ours agree.
        let lone = "docs:\n  - '!**/*.md'\n";
        assert_eq!(matched(lone, "docs", &changes), ["pkg/a.go", "other/a.go"]);
    }

    #[test]
    fn a_filter_starting_with_negation_starts_from_everything() {
        let yaml = "code:\n  - '!**/*.md'\n";
        let changes = [modified("README.md"), modified("src/x.rs")];
        assert_eq!(matched(yaml, "code", &changes), ["src/x.rs"]);
    }

    #[test]
    fn change_types_anchors_and_renames() {
        let yaml = "shared: &shared\n  - 'common/**'\nsrc:\n  - *shared\n  - 'src/**'\nnew:\n  - added|renamed: ['**/*.dvc']\n";
        let renamed = FileChange {
            path: "archive/a.dvc".into(),
            old_path: Some("common/a.dvc".into()),
            kind: ChangeKind::Renamed,
        };
        let changes = [
            modified("common/x"),
            change("data/b.dvc", ChangeKind::Added),
            modified("data/c.dvc"),
            renamed,
        ];
        assert_eq!(
            matched(yaml, "src", &changes),
            ["common/x", "archive/a.dvc"]
        );
        assert_eq!(
            matched(yaml, "new", &changes),
            ["data/b.dvc", "archive/a.dvc"]
        );
    }

    #[test]
    fn defaults_decide_for_a_model_repository() {
        let f = Filters::defaults();
        let names: Vec<_> = f.filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["train", "deploy", "docs"]);
        let changes = [
            modified("configs/train.yaml"),
            modified("configs/serve.yaml"),
            modified("data/training/images.dvc"),
            modified("dvc.lock"),
            modified("configs/README.md"),
            modified("torchserve/config.properties"),
        ];
        let by_name: Vec<(String, Vec<usize>)> = f
            .evaluate(&changes)
            .into_iter()
            .map(|(f, hits)| (f.name.clone(), hits))
            .collect();
        assert_eq!(by_name[0].1, [0, 2, 3], "train");
        assert_eq!(by_name[1].1, [1, 5], "deploy");
        assert_eq!(by_name[2].1, [4], "docs");
    }

    #[test]
    fn bad_files_say_what_to_fix() {
        for (yaml, needle) in [
            ("- a\n- b\n", "top level must be a mapping"),
            ("changes: ['**']\n", "clashes"),
            ("x:\n  - 3\n", "is not a glob"),
            ("x:\n  - removed: '**'\n", "unknown change type"),
            ("x: ['a\\']\n", "invalid glob"),
            ("x: [*.md]\n", "not valid YAML"),
            ("bad name: ['**']\n", "not a valid output name"),
        ] {
            let e = Filters::parse("f.yaml", yaml).unwrap_err().to_string();
            assert!(e.contains(needle), "{yaml:?}: {e}");
            assert!(e.contains("hint:"), "{e}");
        }
    }
}
