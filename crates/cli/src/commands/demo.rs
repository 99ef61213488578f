//! `demo`: a scratch database (`backfill_demo`, dropped and recreated), the
//! contract schema, synthetic data, the backfill with its progress display,
//! the summary and the status.

use anyhow::{Context, Result};
use backfill_engine::{EngineSettings, Limits, Mode, RunControl};
use backfill_journal::SourceFingerprint;
use backfill_postgres::{demo, schema, PostgresSink, SourceReader, SourceTable};
use sqlx::postgres::PgPoolOptions;

use crate::args::{Cli, DemoArgs};
use crate::settings::Endpoint;
use crate::{context, output, Exit};

pub const DEMO_DATABASE: &str = "backfill_demo";

pub async fn run(cli: &Cli, args: &DemoArgs) -> Result<Exit> {
    let url = cli
        .database_url
        .clone()
        .context("the demo needs a server: pass --database-url or set DATABASE_URL")?;
    let server = Endpoint::parse(&url, "--database-url (DATABASE_URL)")?.named("demo", None);
    let admin = server.connect(1).await?;
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
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(server.options().clone().database(DEMO_DATABASE))
        .await?;
    schema::apply(&pool, schema::SchemaParts::ALL).await?;
    out!(
        "seeding {} collector results into database {DEMO_DATABASE}…",
        args.results
    )?;
    demo::seed(&pool, args.results).await?;
    // Only a journal is replaced: any other directory is refused by
    // `open_journal` below, naming what it holds.
    if cli.journal.join(backfill_journal::MARKER).is_file() {
        std::fs::remove_dir_all(&cli.journal)
            .with_context(|| format!("removing the old demo journal {}", cli.journal.display()))?;
    }
    let journal = context::open_journal(&cli.journal)?;
    let table = SourceTable::default();
    journal.bind_source(&SourceFingerprint {
        database: format!("{DEMO_DATABASE} on {}", server.display()),
        table: table.to_string(),
    })?;
    schema::ensure_ledger(&pool).await?;
    let engine = backfill_engine::Engine::new(
        SourceReader::new(pool.clone(), table),
        journal.clone(),
        EngineSettings {
            command: "demo".into(),
            options: vec![("results".into(), args.results.to_string())],
            ..EngineSettings::default()
        },
        RunControl::new(Limits {
            batch_size: usize::try_from(args.batch_size).unwrap_or(1000),
            ..Limits::default()
        }),
    );
    output::observe(engine.control(), cli, false);
    crate::signals::install(engine.control(), cli.quiet);
    let mut sink = PostgresSink::new(pool.clone(), journal.id());
    let report = engine
        .execute(Mode::Backfill { rescan: false }, &mut sink)
        .await;
    let finished = report.error.is_none() && !report.summary.interrupted;
    let refreshed = if finished {
        schema::refresh_view(&pool).await.err().map(Into::into)
    } else {
        None
    };
    output::summary(
        "demo",
        &report.summary,
        &journal,
        cli.json,
        &format!(
            "inspect with: backfill --journal {} status",
            cli.journal.display()
        ),
    );
    let exit = context::conclude(
        report,
        refreshed,
        &journal,
        &crate::resume_command(cli, false),
    );
    // Rejections are expected in the demo data; it succeeded if it finished.
    Ok(if exit == Exit::Problems {
        Exit::Ok
    } else {
        exit
    })
}
