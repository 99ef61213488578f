//! The command line, as clap types. Nothing here does anything.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The journal directory when `--journal` is not given.
pub const DEFAULT_JOURNAL: &str = "./backfill-journal";

/// Moves extracted_positions into the metrics star schema: correctly,
/// resumably, auditably.
#[derive(Debug, Parser)]
#[command(
    name = "backfill",
    version,
    about,
    long_about = None,
    after_help = "The options above (--journal, --database-url, --json, …) go before the command:\n  backfill --journal ./bf-journal --json status"
)]
pub struct Cli {
    /// Postgres URL for source and target (default for both).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Postgres URL of the source, if not --database-url.
    #[arg(long)]
    pub source_url: Option<String>,
    /// Postgres URL of the target, if not --database-url.
    #[arg(long)]
    pub target_url: Option<String>,
    /// The journal directory.
    #[arg(long, default_value = DEFAULT_JOURNAL)]
    pub journal: PathBuf,
    /// Machine-readable output (JSON on stdout).
    #[arg(long)]
    pub json: bool,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check or create the contract tables.
    Schema {
        /// check or apply.
        #[command(subcommand)]
        action: SchemaCommand,
    },
    /// DROPS and recreates the database backfill_demo on the server, seeds
    /// it and runs the backfill on it (a journal at --journal is replaced).
    Demo(DemoArgs),
    /// Add synthetic source rows to the source database (demos, benchmarks).
    Seed(SeedArgs),
    /// Read the source and record every key's event in the journal.
    Plan(PlanArgs),
    /// Apply pending (and failed) events from the journal; resumes anything.
    Replay(ReplayArgs),
    /// Plan and replay, pipelined, then refresh the view.
    Run(RunArgs),
    /// Counts by state, cursor, runs, rate (journal only).
    Status,
    /// Refresh mv_brand_daily_metrics.
    Refresh,
    /// What was planned, written, skipped and why; and proof of it.
    Journal {
        /// inspect or verify.
        #[command(subcommand)]
        action: JournalCommand,
    },
    /// Remove exactly what this journal wrote (dry unless --yes).
    Rollback(RollbackArgs),
}

/// `journal` subcommands.
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Show the journal, or one key's full history (no database needed).
    Inspect(InspectArgs),
    /// Compare target rows, journal and ledger key by key (exit 1 on any difference).
    Verify(VerifyArgs),
}

/// `journal inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// One key: its state, history, hashes, target rows and notes.
    #[arg(long)]
    pub collector_result: Option<i64>,
    /// One run: its command, options, how it ended and what it did.
    #[arg(long, conflicts_with = "collector_result")]
    pub run: Option<uuid::Uuid>,
    /// List keys in this state (pending, applied, skipped, rejected, failed, drifted, rolled_back).
    #[arg(long)]
    pub state: Option<String>,
    /// List keys with this reason (e.g. existing_in_target, no_brand_row).
    #[arg(long)]
    pub reason: Option<String>,
    /// At most this many keys listed (0: all); `keys_total` counts them all.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// `journal verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Keys read back per batch.
    #[arg(long, default_value_t = 2000)]
    pub batch_size: usize,
}

/// `rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Only keys applied by this run.
    #[arg(long)]
    pub run: Option<uuid::Uuid>,
    /// Do it (without: print what would be removed, change nothing).
    #[arg(long)]
    pub yes: bool,
    /// Also remove keys whose target rows changed since they were written.
    #[arg(long)]
    pub force: bool,
    /// Keys per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

/// `schema` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// List missing source and target tables and columns.
    Check {
        /// The source table (it may have been renamed).
        #[arg(long, default_value = "extracted_positions")]
        source_table: String,
    },
    /// Create the contract tables (for demos and tests).
    Apply {
        /// Only the source tables.
        #[arg(long)]
        source: bool,
        /// Only the target tables.
        #[arg(long)]
        target: bool,
    },
}

/// `--on-conflict`.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum OnConflictArg {
    /// Leave facts written by others (state skipped, existing_in_target).
    #[default]
    Skip,
    /// Replace them with ours.
    Replace,
}

/// Options shared by the commands that read or write.
#[derive(Debug, Args)]
pub struct Common {
    /// Collector results per batch [default: 1000; `replay` resumes with the
    /// interrupted run's].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: Option<u32>,
    /// The source table (it may have been renamed); `schema.table` allowed
    /// [default: the table the journal is bound to, else extracted_positions].
    #[arg(long)]
    pub source_table: Option<String>,
    /// What to do with facts in the target that this journal did not write
    /// [default: skip; `replay` resumes with the interrupted run's].
    #[arg(long, value_enum)]
    pub on_conflict: Option<OnConflictArg>,
    /// Read at most this many source rows per second [`replay` resumes with
    /// the interrupted run's].
    #[arg(long)]
    pub max_rows_per_sec: Option<u64>,
    /// Accept an empty source table instead of failing.
    #[arg(long)]
    pub allow_empty: bool,
    /// How long a batch waits for a lock on a target table before it gives
    /// up and is retried with backoff (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// How long one statement of a batch may run before it is cancelled and
    /// the batch retried.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub statement_timeout: std::time::Duration,
    /// Batches applied at once, each in its own transaction on its own
    /// target connection (1 halves the load a run puts on the target)
    /// [default: 2; `replay` resumes with the interrupted run's].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub connections: Option<u8>,
}

/// `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Re-read the whole source (detect drift), not only past the cursor.
    #[arg(long)]
    pub rescan: bool,
}

/// `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Go through the motions without writing (NullSink).
    #[arg(long)]
    pub dry_run: bool,
    /// Do not retry keys that failed before.
    #[arg(long)]
    pub no_retry_failed: bool,
    /// Also re-plan drifted keys from the source and rewrite them (replace).
    #[arg(long)]
    pub reapply_drifted: bool,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Go through the motions without writing (NullSink).
    #[arg(long)]
    pub dry_run: bool,
    /// Re-read the whole source (detect drift), not only past the cursor.
    #[arg(long)]
    pub rescan: bool,
    /// Do not refresh mv_brand_daily_metrics afterwards.
    #[arg(long)]
    pub no_refresh: bool,
    /// Load into empty target tables with their foreign keys and unique
    /// constraints deferred (recorded, dropped, re-created and validated at
    /// the end; restored by any later command after a crash). No other
    /// session may write the five tables meanwhile.
    #[arg(long, conflicts_with_all = ["dry_run", "rescan"])]
    pub initial_load: bool,
}

/// `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Collector results to seed (about six source rows each).
    #[arg(long, default_value_t = 20_000)]
    pub results: i64,
    /// Collector results per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: u32,
}

/// `seed`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Collector results to add (about six source rows each).
    #[arg(long)]
    pub results: i64,
}
