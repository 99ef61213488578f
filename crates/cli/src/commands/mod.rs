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
pub async fn dispatch(cli: &Cli) -> Result<Exit> {
    match &cli.command {
        Command::Schema { action } => schema::run(cli, action).await,
        Command::Demo(args) => demo::run(cli, args).await,
        Command::Seed(args) => seed::run(cli, args).await,
        Command::Plan(args) => plan::run(cli, args).await,
        Command::Replay(args) => replay::run(cli, args).await,
        Command::Run(args) => run::run(cli, args).await,
        Command::Status => status::run(cli),
        Command::Refresh => refresh::run(cli).await,
        Command::Journal {
            action: JournalCommand::Inspect(args),
        } => inspect::run(cli, args),
        Command::Journal {
            action: JournalCommand::Verify(args),
        } => verify::run(cli, args).await,
        Command::Rollback(args) => rollback::run(cli, args).await,
    }
}
