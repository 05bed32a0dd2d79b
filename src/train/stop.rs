//! Stopping a run on SIGINT / SIGTERM between two training steps, so an MLflow run can end as
//! KILLED. A watcher thread turns the signal into a flag; the training loop checks it before each
//! batch and returns [`super::TrainError::Stopped`]; `wms-train` then exits with 128 + signal, as
//! the default handlers would. A second signal exits at once.
//!
//! The watcher is only installed by callers that need it (a tracked run): without it, signals
//! keep their default behaviour. Exiting from the watcher thread itself is not an option for the
//! first signal: `exit` runs libtorch's static destructors under the feet of the training thread.

use std::sync::atomic::{AtomicI32, Ordering};

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

static REQUESTED: AtomicI32 = AtomicI32::new(0);

/// The signal number that asked the run to stop, if any.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `SIGINT` / `SIGTERM` / `signal N`.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Installs the watcher (SIGINT, SIGTERM); the handlers are registered when this returns.
#[cfg(unix)]
pub fn watch_signals() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut int, mut term) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("signal-watch".into())
        .spawn(move || {
            loop {
                let sig = rt.block_on(async {
                    tokio::select! {
                        _ = int.recv() => SIGINT,
                        _ = term.recv() => SIGTERM,
                    }
                });
                if REQUESTED
                    .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    eprintln!("{}: stopping now", signal_name(sig));
                    std::process::exit(128 + sig);
                }
                eprintln!(
                    "{}: stopping after the current training step (again to stop now)",
                    signal_name(sig)
                );
            }
        })?;
    Ok(())
}

#[cfg(not(unix))]
pub fn watch_signals() -> std::io::Result<()> {
    Ok(())
}
