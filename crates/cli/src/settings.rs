//! Settings resolved once, from flags and the environment, into types that
//! build the engine: no command re-derives a setting, none is silently
//! defaulted twice.
//!
//! Why typed connect options: a URL string travels into messages, journals
//! and fingerprints, and with it its password. Parsed once into
//! `PgConnectOptions`, the URL is only ever shown as `user@host:port/db`.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use backfill_engine::{Engine, EngineSettings, Limits, OnConflict, RunControl, RunId};
use backfill_journal::{Journal, SourceFingerprint};
use backfill_postgres::{redact_url, SourceReader, SourceTable, Timeouts};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use crate::args::{Cli, Common, OnConflictArg};

/// libpq's variables that name a server: any of them set means the
/// environment carries the connection.
const PG_SERVER_VARS: [&str; 5] = ["PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER"];

/// A database to connect to.
#[derive(Clone, Debug)]
pub struct Endpoint {
    options: PgConnectOptions,
    display: String,
}

impl Endpoint {
    /// Parses a URL (libpq's environment fills what it leaves out, and the
    /// password file what it and `PGPASSWORD` leave out); `flag` names where
    /// it came from. The URL is never echoed: it may hold a password.
    pub fn parse(url: &str, flag: &str) -> Result<Self> {
        // `postgres:/user:secret@host/db` parses as a URL whose path (the
        // database name) holds the password, which would then be shown.
        let scheme_ok = ["postgres://", "postgresql://"].iter().any(|s| {
            url.get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        });
        let parsed = PgConnectOptions::from_str(url).ok().filter(|_| scheme_ok);
        let Some(options) = parsed else {
            bail!(
                "{flag} is not a valid Postgres URL (expected postgres://user[:password]@host[:port]/database[?sslmode=…]; not shown, it may hold a password)"
            );
        };
        warn_about_password_file(redact_url(url) != url);
        Ok(Self::new(options))
    }

    /// The connection libpq's variables describe (`PGHOST`, `PGPORT`,
    /// `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`,
    /// `PGAPPNAME`, the password file), if any of them names a server.
    pub fn from_env() -> Option<Self> {
        if !PG_SERVER_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return None;
        }
        warn_about_password_file(false);
        Some(Self::new(PgConnectOptions::new()))
    }

    fn new(options: PgConnectOptions) -> Self {
        let display = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        Self { options, display }
    }

    /// Names the connections `backfill <command> <run>` in
    /// `pg_stat_activity`, unless the user named them (URL
    /// `application_name`, `PGAPPNAME`).
    pub fn named(mut self, command: &str, run: Option<RunId>) -> Self {
        if self.options.get_application_name().is_none() {
            let name = match run {
                Some(run) => format!("backfill {command} {run}"),
                None => format!("backfill {command}"),
            };
            self.options = self.options.application_name(&name);
        }
        self
    }

    /// `postgres://user@host:port/database`: never a password.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The connect options.
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// A pool of at most `max` connections.
    pub async fn connect(&self, max: u32) -> Result<PgPool> {
        Ok(backfill_postgres::connect(&self.options, &self.display, max).await?)
    }
}

/// libpq ignores a password file that group or others can read, and says
/// so; sqlx ignores it silently. Say it, when the file would be consulted.
fn warn_about_password_file(password_given: bool) {
    if password_given || std::env::var_os("PGPASSWORD").is_some() {
        return;
    }
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")));
    let Some(path) = path else { return };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: password file {} has group or world access (mode {mode:04o}): it is ignored, as libpq does; chmod 0600 {}",
                    path.display(),
                    path.display()
                );
            }
        }
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
    /// (or `DATABASE_URL`), else to libpq's environment.
    pub fn resolve(cli: &Cli) -> Result<Self> {
        let url = |specific: &Option<String>, name: &str| -> Result<Endpoint> {
            match (specific, &cli.database_url) {
                (Some(url), _) => Endpoint::parse(url, &format!("--{name}-url")),
                (None, Some(url)) => Endpoint::parse(url, "--database-url (DATABASE_URL)"),
                (None, None) => Endpoint::from_env().ok_or_else(|| {
                    anyhow::anyhow!(
                        "no {name} database: pass --database-url (or --{name}-url), set DATABASE_URL, or set libpq's PGHOST/PGDATABASE/PGUSER"
                    )
                }),
            }
        };
        Ok(Self {
            source: url(&cli.source_url, "source")?,
            target: url(&cli.target_url, "target")?,
        })
    }

    /// Names both sides' connections after the command and run.
    pub fn named(self, command: &str, run: Option<RunId>) -> Self {
        Self {
            source: self.source.named(command, run),
            target: self.target.named(command, run),
        }
    }

    /// True when source and target are the same database.
    pub fn same(&self) -> bool {
        self.source.display == self.target.display
    }

    /// Pools on source and target (one pool when they are the same).
    pub async fn pools(&self) -> Result<(PgPool, PgPool)> {
        // Target: two appliers (or verify's read-ahead), one to retake a
        // lost lock (the lock's own connection leaves the pool), the view
        // and restore checks. Source: the reader and its collector results.
        // One pool serves both when they are one database.
        // The target first, and restored before the source is reached: an
        // unreachable source must not leave a killed initial load's
        // constraints absent.
        let target = self.target.connect(6).await?;
        crate::context::restore_deferred(&target).await?;
        let source = if self.same() {
            target.clone()
        } else {
            self.source.connect(3).await?
        };
        Ok((source, target))
    }

    /// The target database as the journal binds it (not the user).
    pub fn target_fingerprint(&self) -> String {
        let o = &self.target.options;
        format!(
            "postgres://{}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        )
    }

    /// What the journal is bound to: the source database (not the user
    /// reading it) and table.
    pub fn fingerprint(&self, table: &SourceTable) -> SourceFingerprint {
        let o = &self.source.options;
        SourceFingerprint {
            database: format!(
                "postgres://{}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
            ),
            table: table.to_string(),
        }
    }
}

/// What a resumed command takes over from the journal when its own flags are
/// silent: the table the journal is bound to, and the options of the run
/// that was interrupted (a run that did not complete) or of the `plan` whose
/// events it applies.
#[derive(Clone, Debug, Default)]
pub struct Inherited {
    /// The bound source table.
    pub table: Option<String>,
    /// `--batch-size` of the interrupted run.
    pub batch_size: Option<u32>,
    /// `--max-rows-per-sec` of the interrupted run.
    pub max_rows_per_sec: Option<u64>,
    /// `--on-conflict` of the interrupted run.
    pub on_conflict: Option<OnConflictArg>,
    /// `--connections` of the interrupted run.
    pub connections: Option<u8>,
    /// The interrupted run was a dry run: its resume stays dry.
    pub dry_run: bool,
    /// The interrupted run, for messages.
    pub from: Option<(RunId, String)>,
}

impl Inherited {
    /// Reads it from the journal.
    pub fn from_journal(journal: &Journal) -> Result<Self> {
        let mut inherited = Inherited {
            table: journal.source().map(|s| s.table),
            ..Inherited::default()
        };
        let runs = journal.runs()?;
        let Some(last) = runs.last() else {
            return Ok(inherited);
        };
        // An interrupted run is resumed with its options; a completed `plan`
        // chose the options its events are to be applied with.
        if last.end == Some(backfill_journal::RunEnd::Completed) && last.command != "plan" {
            return Ok(inherited);
        }
        let option = |name: &str| {
            last.options
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        inherited.batch_size = option("batch-size").and_then(|v| v.parse().ok());
        inherited.max_rows_per_sec = option("max-rows-per-sec").and_then(|v| v.parse().ok());
        inherited.on_conflict = match option("on-conflict") {
            Some("replace") => Some(OnConflictArg::Replace),
            Some("skip") => Some(OnConflictArg::Skip),
            _ => None,
        };
        inherited.connections = option("connections").and_then(|v| v.parse().ok());
        inherited.dry_run = option("dry-run") == Some("true");
        inherited.from = Some((last.id, last.command.clone()));
        Ok(inherited)
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
    /// lock_timeout and statement_timeout of each batch.
    pub timeouts: Timeouts,
    /// Batches applied at once (`--connections`).
    pub appliers: usize,
}

impl RunSettings {
    /// Checks and resolves the shared options: a flag given wins, then what
    /// the journal says (`inherited`), then the default.
    pub fn resolve(common: &Common, inherited: &Inherited) -> Result<Self> {
        let table = common
            .source_table
            .clone()
            .or_else(|| inherited.table.clone())
            .unwrap_or_else(|| "extracted_positions".to_owned());
        if table.trim().is_empty() {
            bail!("--source-table is empty");
        }
        let max_rows_per_sec = match common.max_rows_per_sec.or(inherited.max_rows_per_sec) {
            Some(0) => bail!("--max-rows-per-sec must be at least 1 (omit it for no limit)"),
            rate => rate.and_then(NonZeroU64::new),
        };
        let batch_size = common.batch_size.or(inherited.batch_size).unwrap_or(1000);
        Ok(Self {
            table: SourceTable::parse(&table),
            limits: Limits {
                batch_size: usize::try_from(batch_size).unwrap_or(1000),
                max_rows_per_sec,
                paused: false,
            },
            on_conflict: match common
                .on_conflict
                .or(inherited.on_conflict)
                .unwrap_or_default()
            {
                OnConflictArg::Skip => OnConflict::Skip,
                OnConflictArg::Replace => OnConflict::Replace,
            },
            allow_empty: common.allow_empty,
            appliers: usize::from(common.connections.or(inherited.connections).unwrap_or(2)),
            timeouts: Timeouts {
                lock: positive(common.lock_timeout, "--lock-timeout")?,
                statement: positive(common.statement_timeout, "--statement-timeout")?,
            },
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
        options.push(("connections".to_owned(), self.appliers.to_string()));
        options.push((
            "lock-timeout".to_owned(),
            humantime::format_duration(self.timeouts.lock).to_string(),
        ));
        options.push((
            "statement-timeout".to_owned(),
            humantime::format_duration(self.timeouts.statement).to_string(),
        ));
        options.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        options
    }

    /// The Postgres sink for `journal` on `target`, with the timeouts and a
    /// notice on stderr before each retry (unless `quiet`).
    pub fn sink(
        &self,
        target: PgPool,
        journal: &Journal,
        quiet: bool,
    ) -> backfill_postgres::PostgresSink {
        let sink =
            backfill_postgres::PostgresSink::new(target, journal.id()).with_timeouts(self.timeouts);
        if quiet {
            return sink;
        }
        sink.on_retry(Arc::new(
            |cause: &str, attempt: u32, of: u32, wait: Duration| {
                eprintln!(
                "waiting: {} on the target; retrying the batch in {} (attempt {attempt} of {of})",
                cause.replace('_', " "),
                humantime::format_duration(wait)
            );
            },
        ))
    }

    /// The engine for run `run` of a command over `source`.
    pub fn engine(
        &self,
        source: PgPool,
        journal: Arc<Journal>,
        command: &str,
        run: RunId,
        bind: (Option<SourceFingerprint>, Option<String>),
        extra: &[(&str, String)],
    ) -> Engine<SourceReader> {
        let settings = EngineSettings {
            allow_empty: self.allow_empty,
            on_conflict: self.on_conflict,
            command: command.to_owned(),
            options: self.recorded(extra),
            run_id: Some(run),
            bind: bind.0,
            bind_target: bind.1,
            appliers: self.appliers,
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

fn positive(d: Duration, flag: &str) -> Result<Duration> {
    if d.is_zero() {
        bail!("{flag} must be positive (Postgres reads 0 as no limit, which is what it prevents)");
    }
    Ok(d)
}
