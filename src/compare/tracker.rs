//! `wms compare record`: the terminal time tracker for manual runs. It shows the task's steps
//! from the instructions one at a time; a line read from stdin is a command (Enter = the step's
//! checkpoint is reached, `e TEXT` = an error, `q` = done, `f [TEXT]` = gave up, `?` = help), so a
//! pipe drives it exactly as a person at a terminal does.
//!
//! Ctrl-C (SIGINT), SIGTERM and SIGHUP (terminal closed) save the steps marked so far as an
//! `aborted` record before the process exits with 130; so does the end of input before `q`. A
//! record is written once: the lock around the session decides whether the signal or the normal
//! end writes it.
//!
//! It must not compute figures or read other records; it appends one record through
//! [`crate::timing::append`].

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::CompareError;
use super::instructions::{StepSpec, TaskSteps};
use crate::timing::{self, Method, Outcome, Recorder, Source, Timestamp, TimingRecord};
use crate::untrusted::text::for_log;

/// Exit status after an interrupt, as shells report a SIGINT death (128 + 2).
pub const INTERRUPTED_EXIT: i32 = 130;

/// What one input line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Enter: the current step's checkpoint is reached.
    Mark,
    /// `e TEXT`: note an error.
    Error(String),
    /// `q`: the task is done.
    Done,
    /// `f [TEXT]`: gave up (the record's outcome is `failure`).
    Fail(Option<String>),
    /// `?` or `h`.
    Help,
    Unknown(String),
}

pub fn parse_command(line: &str) -> Command {
    let line = line.trim();
    let (head, rest) = match line.split_once(char::is_whitespace) {
        Some((h, r)) => (h, r.trim()),
        None => (line, ""),
    };
    match head {
        "" => Command::Mark,
        "e" | "error" if !rest.is_empty() => Command::Error(rest.to_string()),
        "q" | "quit" | "done" if rest.is_empty() => Command::Done,
        "f" | "fail" => Command::Fail((!rest.is_empty()).then(|| rest.to_string())),
        "?" | "h" | "help" => Command::Help,
        _ => Command::Unknown(line.to_string()),
    }
}

pub const HELP: &str = "Enter = this step's checkpoint is reached · e TEXT = note an error · q = task done · f [TEXT] = gave up · ? = this help · Ctrl-C = stop, keeping the steps marked so far";

/// What happened after a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Marked {
        index: usize,
        of: usize,
        name: String,
        seconds: f64,
    },
    AllMarked,
    ErrorNoted {
        count: u32,
    },
    Finished(Outcome),
    Help,
    Unknown(String),
}

/// One manual run being timed.
#[derive(Debug, Clone)]
pub struct Session {
    recorder: Recorder,
    steps: Vec<StepSpec>,
    marked: usize,
}

impl Session {
    pub fn new(task: &TaskSteps, person: &str, at: Timestamp) -> Session {
        let mut recorder =
            Recorder::start_at(task.task, Method::Manual, Source::person(person), at);
        recorder.context("instructions", super::instructions::RELATIVE_PATH);
        Session {
            recorder,
            steps: task.steps.clone(),
            marked: 0,
        }
    }

    /// The step waiting for its checkpoint, with its 1-based number.
    pub fn current(&self) -> Option<(usize, &StepSpec)> {
        self.steps.get(self.marked).map(|s| (self.marked + 1, s))
    }

    pub fn total(&self) -> usize {
        self.steps.len()
    }

    pub fn apply(&mut self, command: Command, at: Timestamp) -> Event {
        match command {
            Command::Mark => {
                let Some(step) = self.steps.get(self.marked) else {
                    return Event::AllMarked;
                };
                let name = step.name.clone();
                self.recorder.mark_at(name.clone(), at);
                self.marked += 1;
                let seconds = self.recorder.steps().last().map_or(0.0, |s| s.seconds());
                Event::Marked {
                    index: self.marked,
                    of: self.steps.len(),
                    name,
                    seconds,
                }
            }
            Command::Error(text) => {
                let at_step = self
                    .current()
                    .map(|(i, s)| format!("step {i} ({}): ", s.name))
                    .unwrap_or_default();
                self.recorder.error(format!("{at_step}{text}"));
                Event::ErrorNoted {
                    count: self.snapshot(Outcome::Aborted).errors.count,
                }
            }
            Command::Done => Event::Finished(Outcome::Success),
            Command::Fail(text) => {
                if let Some(text) = text {
                    self.recorder.error(text);
                }
                Event::Finished(Outcome::Failure)
            }
            Command::Help => Event::Help,
            Command::Unknown(s) => Event::Unknown(s),
        }
    }

    /// The record if the run ended now with `outcome`.
    pub fn snapshot(&self, outcome: Outcome) -> TimingRecord {
        self.recorder.snapshot(outcome)
    }

    pub fn finish(&self, outcome: Outcome, at: Timestamp) -> TimingRecord {
        self.recorder.clone().finish_at(outcome, at)
    }
}

/// What the tracker needs.
#[derive(Debug, Clone)]
pub struct TrackerSettings {
    pub steps: TaskSteps,
    pub person: String,
    /// The records directory.
    pub dir: PathBuf,
}

/// The session and whether its record is already written (by the normal end or a signal).
struct Shared {
    session: Session,
    written: Option<PathBuf>,
}

/// Runs the tracker: commands from `input`, prompts to `ui`. Returns the written record and its
/// file. On SIGINT/SIGTERM/SIGHUP the process exits (130) after writing an `aborted` record.
pub fn run(
    settings: &TrackerSettings,
    input: impl BufRead,
    ui: &mut dyn Write,
) -> Result<(TimingRecord, PathBuf), CompareError> {
    let shared = Arc::new(Mutex::new(Shared {
        session: Session::new(&settings.steps, &settings.person, Timestamp::now()),
        written: None,
    }));
    watch_signals(shared.clone(), settings.dir.clone())?;
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());

    let steps = &settings.steps;
    let _ = writeln!(
        ui,
        "task {}: {} ({} steps); timing started.\n{HELP}",
        steps.task,
        for_log(&steps.title),
        steps.steps.len()
    );
    prompt(ui, &lock().session);
    let mut outcome = Outcome::Aborted;
    for line in input.lines() {
        let line = line.map_err(|source| CompareError::Read {
            path: PathBuf::from("<stdin>"),
            source,
        })?;
        let event = lock().session.apply(parse_command(&line), Timestamp::now());
        match event {
            Event::Marked {
                index,
                of,
                name,
                seconds,
            } => {
                let _ = writeln!(
                    ui,
                    "marked {index}/{of} {} ({seconds:.1} s)",
                    for_log(&name)
                );
                prompt(ui, &lock().session);
            }
            Event::AllMarked => {
                let _ = writeln!(ui, "all steps are marked; type q when the task is done");
            }
            Event::ErrorNoted { count } => {
                let _ = writeln!(ui, "error noted ({count} so far)");
            }
            Event::Help => {
                let _ = writeln!(ui, "{HELP}");
            }
            Event::Unknown(s) => {
                let _ = writeln!(ui, "unknown command {:?}; {HELP}", for_log(&s));
            }
            Event::Finished(o) => {
                outcome = o;
                break;
            }
        }
    }
    if outcome == Outcome::Aborted {
        let _ = writeln!(
            ui,
            "input ended before q: saving the steps marked so far as aborted"
        );
    }
    let mut guard = lock();
    let record = guard.session.finish(outcome, Timestamp::now());
    let path = timing::append(&settings.dir, &record)?;
    guard.written = Some(path.clone());
    Ok((record, path))
}

fn prompt(ui: &mut dyn Write, session: &Session) {
    match session.current() {
        Some((i, step)) => {
            let _ = writeln!(
                ui,
                "step {i}/{}: {}\n  checkpoint: {}",
                session.total(),
                for_log(&step.name),
                for_log(&step.checkpoint)
            );
        }
        None => {
            let _ = writeln!(ui, "all steps marked; q = done, e TEXT = note an error");
        }
    }
    let _ = ui.flush();
}

/// A thread that waits for SIGINT, SIGTERM or SIGHUP, writes the aborted record (unless the
/// normal end already wrote one) and exits. Returns once the handlers are installed, so a signal
/// that arrives after the first prompt is never the default "die without saving".
fn watch_signals(shared: Arc<Mutex<Shared>>, dir: PathBuf) -> Result<(), CompareError> {
    use tokio::signal::unix::{SignalKind, signal};
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("wms-compare-signals".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let kinds = [
                    SignalKind::interrupt(),
                    SignalKind::terminate(),
                    SignalKind::hangup(),
                ];
                let mut streams = Vec::new();
                for kind in kinds {
                    match signal(kind) {
                        Ok(s) => streams.push(s),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let [a, b, c] = &mut streams[..] else {
                    return;
                };
                tokio::select! {
                    _ = a.recv() => {}
                    _ = b.recv() => {}
                    _ = c.recv() => {}
                }
                save_on_signal(&shared, &dir);
            });
        })
        .map_err(|e| CompareError::Signals {
            message: e.to_string(),
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(CompareError::Signals { message }),
        Err(e) => Err(CompareError::Signals {
            message: e.to_string(),
        }),
    }
}

fn save_on_signal(shared: &Mutex<Shared>, dir: &Path) -> ! {
    let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
    if guard.written.is_none() {
        let record = guard.session.finish(Outcome::Aborted, Timestamp::now());
        match timing::append(dir, &record) {
            Ok(path) => {
                eprintln!(
                    "\ninterrupted: {} marked step(s) saved as an aborted record in {}",
                    record.steps.len(),
                    path.display()
                );
                println!("{}", path.display());
                guard.written = Some(path);
            }
            Err(e) => eprintln!("\ninterrupted, and the record could not be saved: {e:#}"),
        }
    }
    let _ = std::io::stdout().flush();
    std::process::exit(INTERRUPTED_EXIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse_command(""), Command::Mark);
        assert_eq!(parse_command("  \r"), Command::Mark);
        assert_eq!(
            parse_command("e  helm: timeout "),
            Command::Error("helm: timeout".into())
        );
        assert_eq!(parse_command("q"), Command::Done);
        assert_eq!(parse_command("f"), Command::Fail(None));
        assert_eq!(parse_command("e"), Command::Unknown("e".into()));
        assert_eq!(
            parse_command("quit now"),
            Command::Unknown("quit now".into())
        );
    }

    #[test]
    fn a_session_marks_steps_in_order_and_stops_at_the_last() {
        let steps = TaskSteps {
            task: crate::timing::Task::Scale,
            title: "t".into(),
            steps: vec![
                StepSpec {
                    name: "a".into(),
                    checkpoint: String::new(),
                },
                StepSpec {
                    name: "b".into(),
                    checkpoint: String::new(),
                },
            ],
        };
        let t = |s: i64| Timestamp::from_unix_millis(1_700_000_000_000 + s * 1000);
        let mut s = Session::new(&steps, "ann", t(0));
        s.apply(Command::Mark, t(3));
        s.apply(Command::Error("oops".into()), t(4));
        s.apply(Command::Mark, t(10));
        assert_eq!(s.apply(Command::Mark, t(11)), Event::AllMarked);
        let r = s.finish(Outcome::Success, t(12));
        let names: Vec<_> = r
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.seconds()))
            .collect();
        assert_eq!(names, [("a", 3.0), ("b", 7.0)]);
        assert_eq!(r.errors.messages, ["step 2 (b): oops"]);
        assert_eq!(r.seconds(), 12.0);
    }
}
