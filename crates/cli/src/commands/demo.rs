//! `demo`: a scratch database (`backfill_demo`, dropped and recreated), the
//! contract schema, synthetic data, the backfill with its progress display,
//! the summary and the status.

use std::str::FromStr;

use anyhow::{Context, Result};
use backfill_postgres::{demo, schema, PostgresSink, SourceReader, SourceTable};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::args::{Cli, DemoArgs};
use crate::{context, output, Exit};

pub const DEMO_DATABASE: &str = "backfill_demo";

pub async fn run(cli: &Cli, args: &DemoArgs) -> Result<Exit> {
    let url = cli
        .database_url
        .clone()
        .context("the demo needs a server: pass --database-url or set DATABASE_URL")?;
    let admin = backfill_postgres::connect(&url, 1).await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {DEMO_DATABASE} WITH (FORCE)"
    ))
    .execute(&admin)
    .await
    .context("dropping the demo database")?;
    sqlx::query(&format!("CREATE DATABASE {DEMO_DATABASE}"))
        .execute(&admin)
        .await
        .context("creating the demo database")?;
    admin.close().await;
    let options = PgConnectOptions::from_str(&url)?.database(DEMO_DATABASE);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    schema::apply(&pool, true, true).await?;
    out!(
        "seeding {} collector results into database {DEMO_DATABASE}…",
        args.results
    )?;
    demo::seed(&pool, args.results).await?;
    if cli.journal.exists() {
        std::fs::remove_dir_all(&cli.journal)
            .with_context(|| format!("removing the old demo journal {}", cli.journal.display()))?;
    }
    let journal = context::open_journal(&cli.journal)?;
    let table = SourceTable::default();
    journal.bind_source(&backfill_journal::SourceFingerprint {
        database: format!("{DEMO_DATABASE} on {}", backfill_postgres::redact_url(&url)),
        table: table.to_string(),
    })?;
    schema::ensure_ledger(&pool).await?;
    let engine = backfill_postgres::Engine::new(
        SourceReader::new(pool.clone(), table),
        journal.clone(),
        backfill_postgres::EngineOptions {
            batch_size: usize::try_from(args.batch_size).unwrap_or(1000),
            ..Default::default()
        },
    )
    .with_progress(output::progress(cli.quiet));
    context::on_signals(&engine, cli.quiet);
    let run = journal.start_run("demo", vec![("results".into(), args.results.to_string())])?;
    let mut sink = PostgresSink::new(
        pool.clone(),
        journal.id(),
        backfill_postgres::OnConflict::Skip,
    );
    let summary = engine.run(&mut sink, run).await?;
    journal.end_run(run, output::pass_counts(&journal, &summary))?;
    schema::refresh_view(&pool).await?;
    output::summary(
        "demo",
        &summary,
        &journal,
        cli.json,
        &format!(
            "inspect with: backfill --journal {} status",
            cli.journal.display()
        ),
    );
    // Rejections are expected in the demo data; it succeeded if it finished.
    Ok(if summary.interrupted {
        Exit::Interrupted
    } else {
        Exit::Ok
    })
}
