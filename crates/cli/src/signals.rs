//! SIGINT/SIGTERM: the first stops the run after the batch in flight; a
//! second aborts it at once. Both go through the run control, so the engine
//! records how the run ended and the command prints its summary: no
//! `process::exit` from a task.

use backfill_engine::RunControl;

/// Listens for signals for as long as the process runs.
pub fn install(control: &RunControl, quiet: bool) {
    let control = control.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        loop {
            #[cfg(unix)]
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            if control.is_stopping() {
                eprintln!("stopping now (the batch in flight is abandoned; the next replay reconciles it)…");
                control.abort();
                return;
            }
            control.stop();
            if !quiet {
                eprintln!("\nstopping after the batch in flight (signal again to stop now)…");
            }
        }
    });
}
