//! Settings resolved once, from flags and the environment, into types that
//! build the engine: no command re-derives a setting, none is silently
//! defaulted twice.
//!
//! Why typed connect options: a URL string travels into messages, journals
//! and fingerprints, and with it its password. Parsed once into
//! `PgConnectOptions`, the URL is only ever shown as `user@host:port/db`.

use std::num::NonZeroU64;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use backfill_engine::{Engine, EngineSettings, Limits, OnConflict, RunControl};
use backfill_journal::{Journal, SourceFingerprint};
use backfill_postgres::{redact_url, SourceReader, SourceTable};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::args::{Cli, Common, OnConflictArg};

/// A database to connect to.
#[derive(Clone, Debug)]
pub struct Endpoint {
    options: PgConnectOptions,
    display: String,
}

impl Endpoint {
    /// Parses a URL; `flag` names where it came from, for the error.
    pub fn parse(url: &str, flag: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("{flag} is not a valid Postgres URL: {}", redact_url(url)))?;
        let display = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        Ok(Self { options, display })
    }

    /// `user@host:port/database`: never a password.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The connect options.
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// A pool of at most `max` connections.
    pub async fn connect(&self, max: u32) -> Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(self.options.clone())
            .await
            .map_err(|source| backfill_postgres::Error::Connect {
                url: self.display.clone(),
                source,
            })
            .map_err(Into::into)
    }
}

/// Source and target databases.
#[derive(Clone, Debug)]
pub struct Databases {
    /// Where `extracted_positions` is read.
    pub source: Endpoint,
    /// Where the star schema is written.
    pub target: Endpoint,
}

impl Databases {
    /// `--source-url`/`--target-url`, each defaulting to `--database-url`
    /// (or `DATABASE_URL`).
    pub fn resolve(cli: &Cli) -> Result<Self> {
        let url = |specific: &Option<String>, name: &str| -> Result<Endpoint> {
            match (specific, &cli.database_url) {
                (Some(url), _) => Endpoint::parse(url, &format!("--{name}-url")),
                (None, Some(url)) => Endpoint::parse(url, "--database-url (DATABASE_URL)"),
                (None, None) => bail!(
                    "no {name} database: pass --database-url (or --{name}-url) or set DATABASE_URL"
                ),
            }
        };
        Ok(Self {
            source: url(&cli.source_url, "source")?,
            target: url(&cli.target_url, "target")?,
        })
    }

    /// True when source and target are the same database.
    pub fn same(&self) -> bool {
        self.source.display == self.target.display
    }

    /// Pools on source and target (one pool when they are the same).
    pub async fn pools(&self) -> Result<(PgPool, PgPool)> {
        let source = self.source.connect(4).await?;
        let target = if self.same() {
            source.clone()
        } else {
            self.target.connect(4).await?
        };
        Ok((source, target))
    }

    /// What the journal is bound to.
    pub fn fingerprint(&self, table: &SourceTable) -> SourceFingerprint {
        SourceFingerprint {
            database: self.source.display.clone(),
            table: table.to_string(),
        }
    }
}

/// The options that shape a run over the source.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// The source table.
    pub table: SourceTable,
    /// Batch size and rate, changeable while running.
    pub limits: Limits,
    /// Facts this journal did not write.
    pub on_conflict: OnConflict,
    /// Accept an empty source.
    pub allow_empty: bool,
}

impl RunSettings {
    /// Checks and resolves the shared options.
    pub fn resolve(common: &Common) -> Result<Self> {
        if common.source_table.trim().is_empty() {
            bail!("--source-table is empty");
        }
        let max_rows_per_sec = match common.max_rows_per_sec {
            Some(0) => bail!("--max-rows-per-sec must be at least 1 (omit it for no limit)"),
            rate => rate.and_then(NonZeroU64::new),
        };
        Ok(Self {
            table: SourceTable::parse(&common.source_table),
            limits: Limits {
                batch_size: usize::try_from(common.batch_size).unwrap_or(1000),
                max_rows_per_sec,
                paused: false,
            },
            on_conflict: match common.on_conflict {
                OnConflictArg::Skip => OnConflict::Skip,
                OnConflictArg::Replace => OnConflict::Replace,
            },
            allow_empty: common.allow_empty,
        })
    }

    /// The options recorded with the run in the journal.
    pub fn recorded(&self, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut options = vec![
            ("batch-size".to_owned(), self.limits.batch_size.to_string()),
            ("source-table".to_owned(), self.table.to_string()),
            (
                "on-conflict".to_owned(),
                self.on_conflict.as_str().to_owned(),
            ),
        ];
        if let Some(rate) = self.limits.max_rows_per_sec {
            options.push(("max-rows-per-sec".to_owned(), rate.to_string()));
        }
        options.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        options
    }

    /// The engine for a command over `source`.
    pub fn engine(
        &self,
        source: PgPool,
        journal: Arc<Journal>,
        command: &str,
        extra: &[(&str, String)],
    ) -> Engine<SourceReader> {
        let settings = EngineSettings {
            allow_empty: self.allow_empty,
            on_conflict: self.on_conflict,
            command: command.to_owned(),
            options: self.recorded(extra),
            ..EngineSettings::default()
        };
        Engine::new(
            SourceReader::new(source, self.table.clone()),
            journal,
            settings,
            RunControl::new(self.limits),
        )
    }
}
