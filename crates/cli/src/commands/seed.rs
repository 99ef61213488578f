//! `seed`: synthetic source data (the demo's) in the source database.

use anyhow::Result;
use backfill_postgres::demo;

use crate::args::{Cli, SeedArgs};
use crate::settings::Databases;
use crate::Exit;

pub async fn run(cli: &Cli, args: &SeedArgs) -> Result<Exit> {
    let pool = Databases::resolve(cli)?
        .named("seed", None)
        .source
        .connect(1)
        .await?;
    let (first, last) = demo::seed(&pool, args.results).await?;
    if cli.json {
        out!(
            "{}",
            serde_json::json!({ "command": "seed", "collector_results": args.results, "first_key": first, "last_key": last })
        )?;
    } else if !cli.quiet {
        out!(
            "seeded {} collector results (keys {first} to {last})",
            args.results
        )?;
    }
    Ok(Exit::Ok)
}
