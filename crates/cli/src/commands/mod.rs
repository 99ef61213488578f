//! One module per subcommand.

mod demo;
mod plan;
mod refresh;
mod replay;
mod run;
mod schema;
mod status;

use anyhow::Result;

use crate::args::{Cli, Command};
use crate::Exit;

/// Runs the command.
pub async fn dispatch(cli: Cli) -> Result<Exit> {
    match &cli.command {
        Command::Schema { action } => schema::run(&cli, action).await,
        Command::Demo(args) => demo::run(&cli, args).await,
        Command::Plan(args) => plan::run(&cli, args).await,
        Command::Replay(args) => replay::run(&cli, args).await,
        Command::Run(args) => run::run(&cli, args).await,
        Command::Status => status::run(&cli),
        Command::Refresh => refresh::run(&cli).await,
    }
}

/// The exit code a summary calls for.
pub fn exit_for(summary: &backfill_postgres::Summary) -> Exit {
    if summary.interrupted {
        Exit::Interrupted
    } else if summary.has_problems() {
        Exit::Problems
    } else {
        Exit::Ok
    }
}
