//! The `backfill` binary: parse, call the libraries, print, exit code.
//!
//! Exit codes: 0 every key applied or skipped; 1 some keys rejected or failed;
//! 2 usage, configuration or connection error (nothing written); 3
//! interrupted (resumable with `backfill replay`).

/// `println!` for command output, except that a closed stdout (`backfill …
/// | head`) is an `io::Error` to return rather than a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod args;
mod commands;
mod context;
mod output;

use std::process::ExitCode;

use clap::Parser;

// Events are trees of small strings built on one thread and freed on
// another; mimalloc does that about twice as fast as glibc (docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the process returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0.
    Ok,
    /// 1: some keys rejected or failed.
    Problems,
    /// 2: configuration error already reported.
    Config,
    /// 3: interrupted, resumable.
    Interrupted,
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::Problems) => ExitCode::from(1),
        Ok(Exit::Config) => ExitCode::from(2),
        Ok(Exit::Interrupted) => ExitCode::from(3),
        // The reader of our output went away (`| head`): nothing is wrong
        // with the work, and there is no one left to tell.
        Err(err)
            if err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            let interrupted = err.chain().any(|c| {
                matches!(
                    c.downcast_ref::<backfill_postgres::Error>(),
                    Some(
                        backfill_postgres::Error::Interrupted
                            | backfill_postgres::Error::ConnectionLost { .. }
                    )
                )
            });
            if interrupted {
                eprintln!("resume with: backfill replay");
                ExitCode::from(3)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
