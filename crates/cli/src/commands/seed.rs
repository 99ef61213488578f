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
    demo::seed(&pool, args.results).await?;
    if cli.json {
        out!(
            "{}",
            serde_json::json!({ "command": "seed", "collector_results": args.results })
        )?;
    } else if !cli.quiet {
        out!("seeded {} collector results", args.results)?;
    }
    Ok(Exit::Ok)
}
