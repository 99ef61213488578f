//! `schema check` and `schema apply`.

use anyhow::Result;
use backfill_postgres::{connect, schema, SourceTable};

use crate::args::{Cli, SchemaCommand};
use crate::context;
use crate::Exit;

pub async fn run(cli: &Cli, action: &SchemaCommand) -> Result<Exit> {
    match action {
        SchemaCommand::Check { source_table } => {
            let (source, target) = context::pools(cli).await?;
            let table = SourceTable::parse(source_table);
            let mut missing = schema::check_source(&source, &table).await?.missing;
            missing.extend(schema::check_target(&target).await?.missing);
            if cli.json {
                out!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "missing": missing }))?
                )?;
            } else if missing.is_empty() {
                out!("schema ok: source table {table}, directories and target tables are present")?;
            } else {
                out!("missing:")?;
                for m in &missing {
                    out!("  {m}")?;
                }
            }
            // Missing tables are a configuration error, as in every command.
            Ok(if missing.is_empty() {
                Exit::Ok
            } else {
                Exit::Config
            })
        }
        SchemaCommand::Apply { source, target } => {
            let both = !source && !target;
            if *source || both {
                let pool = connect(&context::source_url(cli)?, 1).await?;
                schema::apply(&pool, true, false).await?;
            }
            if *target || both {
                let pool = connect(&context::target_url(cli)?, 1).await?;
                schema::apply(&pool, false, true).await?;
            }
            if !cli.quiet {
                out!("schema applied")?;
            }
            Ok(Exit::Ok)
        }
    }
}
