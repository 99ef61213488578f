//! A scratch database per test (feature `testing`): tests run in parallel and
//! never share state. Created from `DATABASE_URL` (default: the local server,
//! user postgres), dropped when the value is dropped.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::schema;

/// The server tests use: `DATABASE_URL`, else the local default.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one test.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    /// A pool on it.
    pub pool: PgPool,
    name: String,
    admin: String,
}

impl TestDb {
    /// An empty database.
    pub async fn empty() -> Self {
        Self::empty_on(&admin_url()).await
    }

    /// An empty database on the server of `admin` (a URL to its `postgres`
    /// database), e.g. a second cluster a test script started.
    pub async fn empty_on(admin: &str) -> Self {
        let admin = admin.to_owned();
        let name = format!("backfill_test_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("tests need PostgreSQL: run scripts/test.sh, or set DATABASE_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let (base, query) = admin
            .split_once('?')
            .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        let url = match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        };
        let options = PgConnectOptions::from_str(&admin)
            .expect("DATABASE_URL")
            .database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .expect("connect to test database");
        Self {
            url,
            pool,
            name,
            admin,
        }
    }

    /// A database with the contract schema (source and target).
    pub async fn with_schema() -> Self {
        Self::with_schema_on(&admin_url()).await
    }

    /// A database with the contract schema on the server of `admin`.
    pub async fn with_schema_on(admin: &str) -> Self {
        let db = Self::empty_on(admin).await;
        schema::apply(&db.pool, schema::SchemaParts::ALL)
            .await
            .expect("apply schema");
        db
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = self.admin.clone();
        // Drop on a thread of its own: Drop cannot await, and the test's
        // runtime is blocked here. FORCE ends the pool's connections (the
        // pool is tied to the test's runtime and cannot be closed from here).
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Every target row as text, without database ids, in a stable order: two
/// targets with the same content dump the same.
pub async fn dump_target(pool: &PgPool) -> Vec<String> {
    let queries = [
        "SELECT format('fact %s %s %s %s %s %s %s %s %s', collector_result_id, brand_id, customer_id, query_id,
                collector_type, topic, collected_at AT TIME ZONE 'UTC', metadata, created_at AT TIME ZONE 'UTC')
           FROM metric_facts ORDER BY collector_result_id",
        "SELECT format('bm %s %s %s %s %s %s %s', f.collector_result_id, b.visibility_index, b.share_of_answers,
                b.total_mentions, b.product_mentions, b.first_position, b.has_presence)
           FROM brand_metrics b JOIN metric_facts f ON f.id = b.metric_fact_id ORDER BY 1",
        "SELECT format('bs %s %s %s %s %s', f.collector_result_id, s.sentiment_label, s.sentiment_score,
                s.positive_sentences, s.negative_sentences)
           FROM brand_sentiment s JOIN metric_facts f ON f.id = s.metric_fact_id ORDER BY 1",
        "SELECT format('cm %s %s %s %s %s %s %s %s', f.collector_result_id, c.competitor_id, c.visibility_index,
                c.share_of_answers, c.total_mentions, c.product_mentions, c.first_position, c.has_presence)
           FROM competitor_metrics c JOIN metric_facts f ON f.id = c.metric_fact_id ORDER BY 1",
        "SELECT format('cs %s %s %s %s %s %s', f.collector_result_id, s.competitor_id, s.sentiment_label,
                s.sentiment_score, s.positive_sentences, s.negative_sentences)
           FROM competitor_sentiment s JOIN metric_facts f ON f.id = s.metric_fact_id ORDER BY 1",
    ];
    let mut out = Vec::new();
    for sql in queries {
        let rows: Vec<String> = sqlx::query_scalar(sql)
            .fetch_all(pool)
            .await
            .expect("dump target");
        out.extend(rows);
    }
    out
}
