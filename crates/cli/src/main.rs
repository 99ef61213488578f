//! The `backfill` binary: parse, resolve settings once, call the libraries,
//! print, map the outcome to an exit code (`exit.rs`).

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
mod exit;
mod output;
mod settings;
mod signals;

use std::process::ExitCode;

use backfill_journal::ErrorKind;
use clap::Parser;

pub use exit::Exit;

// Events are trees of small strings built on one thread and freed on
// another; mimalloc does that about twice as fast as glibc (docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Prints an error, its causes, and the flag that addresses it.
pub fn print_error(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if let Some(hint) = exit::hint(err) {
        eprintln!("hint: {hint}");
    }
}

/// `backfill` with this journal's `--journal`, when it is not the default:
/// the commands printed as next steps work as printed.
pub fn backfill_command(cli: &args::Cli) -> String {
    if cli.journal == std::path::Path::new(args::DEFAULT_JOURNAL) {
        "backfill".to_owned()
    } else {
        format!("backfill --journal {}", cli.journal.display())
    }
}

/// The command that resumes work on this journal.
pub fn resume_command(cli: &args::Cli, dry_run: bool) -> String {
    let mut command = "backfill".to_owned();
    if cli.journal != std::path::Path::new(args::DEFAULT_JOURNAL) {
        command.push_str(&format!(" --journal {}", cli.journal.display()));
    }
    command.push_str(" replay");
    if dry_run {
        command.push_str(" --dry-run");
    }
    command
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    // Few blocking threads, kept: the journal's and the planner's work runs
    // on them batch after batch, and every thread that exits leaves its
    // allocator pages behind (peak RSS, docs/performance.md).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(600))
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::dispatch(&cli)) {
        Ok(exit) => ExitCode::from(exit.code()),
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
            print_error(&err);
            // Before any work was recorded (errors after work come back as
            // reports, `context::conclude`): running again is the remedy.
            if exit::kind_of(&err) == ErrorKind::Resumable {
                eprintln!("nothing was recorded; run the command again once the database answers");
            }
            ExitCode::from(exit::exit_code(Some(exit::kind_of(&err)), None, false).code())
        }
    }
}
