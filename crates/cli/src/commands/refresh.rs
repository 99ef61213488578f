//! `refresh`: REFRESH MATERIALIZED VIEW [CONCURRENTLY] mv_brand_daily_metrics.

use anyhow::Result;
use backfill_postgres::schema;

use crate::args::Cli;
use crate::settings::Databases;
use crate::Exit;

pub async fn run(cli: &Cli) -> Result<Exit> {
    let target = Databases::resolve(cli)?
        .named("refresh", None)
        .target
        .connect(2) // a restore holds one and works on the other
        .await?;
    crate::context::restore_deferred(&target).await?;
    let concurrent = schema::refresh_view(&target).await?;
    if cli.json {
        out!(
            "{}",
            serde_json::json!({ "command": "refresh", "view": "mv_brand_daily_metrics", "concurrently": concurrent })
        )?;
    } else if !cli.quiet {
        let how = if concurrent { " concurrently" } else { "" };
        out!("mv_brand_daily_metrics refreshed{how}")?;
    }
    Ok(Exit::Ok)
}
