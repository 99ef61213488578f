//! `schema check` and `schema apply`.

use anyhow::Result;
use backfill_postgres::schema::{self, SchemaParts};
use backfill_postgres::SourceTable;

use crate::args::{Cli, SchemaCommand};
use crate::settings::Databases;
use crate::Exit;

pub async fn run(cli: &Cli, action: &SchemaCommand) -> Result<Exit> {
    match action {
        SchemaCommand::Check { source_table } => {
            let databases = Databases::resolve(cli)?.named("schema check", None);
            let (source, target) = databases.pools().await?;
            let table = SourceTable::parse(source_table);
            let mut missing = schema::check_source(&source, &table).await?.missing;
            missing.extend(schema::check_target(&target).await?.missing);
            missing.extend(schema::check_constraints(&target).await?);
            let references = if databases.same() {
                Vec::new()
            } else {
                schema::check_references(&source, &target).await?
            };
            if cli.json {
                out!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "missing": missing, "references": references })
                    )?
                )?;
            } else if missing.is_empty() && references.is_empty() {
                out!("schema ok: source table {table}, directories and target tables are present")?;
            } else {
                if !missing.is_empty() {
                    out!("missing:")?;
                    for m in &missing {
                        out!("  {m}")?;
                    }
                }
                for problem in &references {
                    out!("{problem}")?;
                }
            }
            // Missing tables are a configuration error, as in every command.
            Ok(if missing.is_empty() && references.is_empty() {
                Exit::Ok
            } else {
                Exit::Config
            })
        }
        SchemaCommand::Apply { source, target } => {
            let both = !source && !target;
            let databases = Databases::resolve(cli)?.named("schema apply", None);
            if *source || both {
                let pool = databases.source.connect(1).await?;
                let parts = SchemaParts {
                    source: true,
                    target: false,
                };
                schema::apply(&pool, parts).await?;
            }
            if *target || both {
                // Two: a restore holds one and works on the other.
                let pool = databases.target.connect(2).await?;
                crate::context::restore_deferred(&pool).await?;
                let parts = SchemaParts {
                    source: false,
                    target: true,
                };
                schema::apply(&pool, parts).await?;
            }
            if cli.json {
                out!(
                    "{}",
                    serde_json::json!({
                        "command": "schema apply",
                        "source": *source || both,
                        "target": *target || both,
                    })
                )?;
            } else if !cli.quiet {
                out!("schema applied")?;
            }
            Ok(Exit::Ok)
        }
    }
}
