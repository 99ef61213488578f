//! One module per subcommand.

mod demo;
mod inspect;
mod plan;
mod refresh;
mod replay;
mod rollback;
mod run;
mod schema;
mod seed;
mod status;
mod verify;

use anyhow::Result;

use crate::args::{Cli, Command, JournalCommand};
use crate::Exit;

/// Runs the command.
pub async fn dispatch(cli: Cli) -> Result<Exit> {
    match &cli.command {
        Command::Schema { action } => schema::run(&cli, action).await,
        Command::Demo(args) => demo::run(&cli, args).await,
        Command::Seed(args) => seed::run(&cli, args).await,
        Command::Plan(args) => plan::run(&cli, args).await,
        Command::Replay(args) => replay::run(&cli, args).await,
        Command::Run(args) => run::run(&cli, args).await,
        Command::Status => status::run(&cli),
        Command::Refresh => refresh::run(&cli).await,
        Command::Journal {
            action: JournalCommand::Inspect(args),
        } => inspect::run(&cli, args),
        Command::Journal {
            action: JournalCommand::Verify(args),
        } => verify::run(&cli, args).await,
        Command::Rollback(args) => rollback::run(&cli, args).await,
    }
}

/// The exit code after a command: 3 if interrupted; 1 if any key of the
/// journal is rejected or failed (they stay so until their source is fixed,
/// so a re-run says so again); 0 otherwise.
pub fn exit_for(summary: &backfill_postgres::Summary, journal: &backfill_journal::Journal) -> Exit {
    use backfill_journal::State;
    if summary.interrupted {
        Exit::Interrupted
    } else if summary.has_problems()
        || journal.count(State::Rejected) + journal.count(State::Failed) > 0
    {
        Exit::Problems
    } else {
        Exit::Ok
    }
}
