//! The steps of each standard task, read from `comparison/manual/instructions.md` (the file a
//! person follows is the file the tracker shows, so the two cannot drift apart). A task starts
//! at a line `## Task \`NAME\`: title`, a step at `### Step N: name`, and a step's checkpoint is
//! its line starting `Checkpoint:`. Everything else is prose for the person.
//!
//! The repository's copy is compiled in ([`EMBEDDED`]) for use outside a checkout; a file given
//! with `--instructions` (or the work tree's own copy) wins.

use std::path::Path;

use super::CompareError;
use crate::timing::Task;

/// `comparison/manual/instructions.md` as it was when wms was built.
pub const EMBEDDED: &str = include_str!("../../comparison/manual/instructions.md");
/// Where the instructions live in a repository.
pub const RELATIVE_PATH: &str = "comparison/manual/instructions.md";

/// One task's steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSteps {
    pub task: Task,
    pub title: String,
    pub steps: Vec<StepSpec>,
}

/// One step and what marks it done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    pub name: String,
    /// The `Checkpoint:` text (empty when the step has none).
    pub checkpoint: String,
}

/// Parses the instructions; `origin` names the file in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<TaskSteps>, CompareError> {
    let err = |line: usize, message: String| CompareError::Instructions {
        path: origin.to_string(),
        line,
        message,
    };
    let mut tasks: Vec<TaskSteps> = Vec::new();
    let mut in_fence = false;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim_end();
        if trimmed.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("## Task `") {
            let Some((name, title)) = rest.split_once('`') else {
                return Err(err(
                    n,
                    "a task heading needs the task name in backticks".into(),
                ));
            };
            let task: Task = name.parse().map_err(|e: String| err(n, e))?;
            if tasks.iter().any(|t| t.task == task) {
                return Err(err(n, format!("task `{task}` is described twice")));
            }
            let title = title.trim_start_matches(':').trim().to_string();
            tasks.push(TaskSteps {
                task,
                title,
                steps: Vec::new(),
            });
        } else if trimmed.starts_with("## ") {
            // A section that is not a task ends the previous task's steps.
            if let Some(last) = tasks.last()
                && last.steps.is_empty()
            {
                return Err(err(n, format!("task `{}` has no steps", last.task)));
            }
        } else if let Some(rest) = trimmed.strip_prefix("### Step ") {
            let Some(task) = tasks.last_mut() else {
                return Err(err(n, "a step before the first task heading".into()));
            };
            let name = rest
                .split_once(':')
                .map(|(_, name)| name.trim())
                .filter(|name| !name.is_empty())
                .ok_or_else(|| err(n, "a step heading is \"### Step N: name\"".into()))?;
            task.steps.push(StepSpec {
                name: name.to_string(),
                checkpoint: String::new(),
            });
        } else if let Some(rest) = trimmed.trim_start().strip_prefix("Checkpoint:") {
            let Some(step) = tasks.last_mut().and_then(|t| t.steps.last_mut()) else {
                return Err(err(n, "a checkpoint outside a step".into()));
            };
            if !step.checkpoint.is_empty() {
                return Err(err(n, format!("step {:?} has two checkpoints", step.name)));
            }
            step.checkpoint = rest.trim().to_string();
        }
    }
    if let Some(t) = tasks.iter().find(|t| t.steps.is_empty()) {
        return Err(err(
            text.lines().count(),
            format!("task `{}` has no steps", t.task),
        ));
    }
    Ok(tasks)
}

/// The steps of `task` from `path` (or [`EMBEDDED`] when `None`).
pub fn load(path: Option<&Path>, task: Task) -> Result<TaskSteps, CompareError> {
    let (text, origin) = match path {
        Some(p) => (
            fs_err::read_to_string(p).map_err(|source| CompareError::Read {
                path: p.to_path_buf(),
                source: std::io::Error::new(source.kind(), source.kind().to_string()),
            })?,
            p.display().to_string(),
        ),
        None => (EMBEDDED.to_string(), format!("{RELATIVE_PATH} (built in)")),
    };
    parse(&text, &origin)?
        .into_iter()
        .find(|t| t.task == task)
        .ok_or(CompareError::NoSuchTask {
            path: origin,
            task: task.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_instructions_describe_the_five_standard_tasks() {
        let tasks = parse(EMBEDDED, RELATIVE_PATH).unwrap();
        let names: Vec<Task> = tasks.iter().map(|t| t.task).collect();
        assert_eq!(names, Task::STANDARD);
        for t in &tasks {
            assert!(t.steps.len() >= 3, "{:?}", t.task);
            for s in &t.steps {
                assert!(!s.checkpoint.is_empty(), "{:?} / {}", t.task, s.name);
            }
        }
    }

    #[test]
    fn headings_inside_code_blocks_are_not_steps_and_errors_name_the_line() {
        let text =
            "## Task `scale`: x\n### Step 1: a\n```\n### Step 2: not a step\n```\nCheckpoint: ok\n";
        let t = parse(text, "f.md").unwrap();
        assert_eq!(t[0].steps.len(), 1);
        assert_eq!(t[0].steps[0].checkpoint, "ok");
        let e = parse("### Step 1: a\n", "f.md").unwrap_err().to_string();
        assert!(e.starts_with("f.md:1: a step before"), "{e}");
        let e = parse("x\n## Task `deploy-ish`: y\n", "f.md")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.md:2: unknown task"), "{e}");
        let e = parse("## Task `debug`: y\n", "f.md")
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no steps"), "{e}");
    }
}
