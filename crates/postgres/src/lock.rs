//! One applier per target (and, later, per shard): a session advisory lock,
//! proven still held inside every batch's transaction.
//!
//! Why not just `pg_try_advisory_lock` once: a session lock lives as long as
//! its connection. After a Postgres restart or a terminated backend it is
//! gone, silently, and a second applier is admitted while the first carries
//! on. So the lock's holder is named by its backend pid, and each batch's
//! transaction checks `pg_locks` for that pid before it commits: a lost lock
//! is retaken on a new connection if it is free, and the batch is refused if
//! another process took it meanwhile.
//!
//! Shards (DESIGN §11): a whole-target run holds the target key exclusively;
//! a shard holds it shared plus its own shard key exclusively, so shards run
//! side by side but never beside a whole-target run.

use sqlx::{Connection, PgConnection, PgPool};

use crate::{db, Error, Result};

/// The target's advisory lock key ("backfill" in ASCII).
pub const LOCK_KEY: i64 = 0x6261_636b_6669_6c6c;

/// What a lock covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockScope {
    /// The whole target: no other applier at all.
    Whole,
    /// Shard `index` of `count`: other shards may run, a whole run may not.
    Shard {
        /// This shard (0-based).
        index: u32,
        /// Shards in all.
        count: u32,
    },
}

impl LockScope {
    /// The key held exclusively.
    pub fn exclusive_key(self) -> i64 {
        match self {
            Self::Whole => LOCK_KEY,
            // Distinct per (index, count), never equal to LOCK_KEY.
            Self::Shard { index, count } => {
                (LOCK_KEY ^ 0x7fff_0000_0000_0000) ^ (i64::from(count) << 32) ^ i64::from(index)
            }
        }
    }
}

/// The (classid, objid) under which `pg_locks` shows a bigint advisory key.
fn lock_ids(key: i64) -> (i64, i64) {
    let bits = u64::from_ne_bytes(key.to_ne_bytes());
    let high = u32::try_from(bits >> 32).unwrap_or(u32::MAX);
    let low = u32::try_from(bits & 0xffff_ffff).unwrap_or(u32::MAX);
    (i64::from(high), i64::from(low))
}

/// A held target lock. Dropping it closes its connection, which releases
/// the lock; [`release`](Self::release) does so at once.
pub struct TargetLock {
    pool: PgPool,
    scope: LockScope,
    conn: PgConnection,
    pid: i32,
}

impl std::fmt::Debug for TargetLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetLock")
            .field("scope", &self.scope)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

async fn try_take(pool: &PgPool, scope: LockScope) -> Result<Option<(PgConnection, i32)>> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(db("connecting to take the target lock"))?
        .detach();
    let taken: bool = match scope {
        LockScope::Whole => sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut conn)
            .await
            .map_err(db("taking the target's advisory lock"))?,
        LockScope::Shard { .. } => sqlx::query_scalar(
            "SELECT CASE WHEN pg_try_advisory_lock_shared($1)
                         THEN CASE WHEN pg_try_advisory_lock($2) THEN true
                                   ELSE NOT pg_advisory_unlock_shared($1) END
                         ELSE false END",
        )
        .bind(LOCK_KEY)
        .bind(scope.exclusive_key())
        .fetch_one(&mut conn)
        .await
        .map_err(db("taking the shard's advisory lock"))?,
    };
    if !taken {
        conn.close().await.ok();
        return Ok(None);
    }
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .map_err(db("reading the lock holder's pid"))?;
    // Behind a transaction-mode pooler, consecutive statements of one client
    // connection run on different backends, and a session lock is held by
    // whichever backend took it, for whoever gets that backend next.
    for _ in 0..2 {
        let again: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .map_err(db("reading the lock holder's pid"))?;
        if again != pid {
            return Err(Error::TransactionPooler {
                url: "the target".into(),
                first: pid,
                second: again,
            });
        }
    }
    Ok(Some((conn, pid)))
}

impl TargetLock {
    /// Takes the lock, or fails with [`Error::TargetLocked`].
    pub async fn acquire(pool: &PgPool, scope: LockScope) -> Result<Self> {
        match try_take(pool, scope).await? {
            Some((conn, pid)) => Ok(Self {
                pool: pool.clone(),
                scope,
                conn,
                pid,
            }),
            None => Err(Error::TargetLocked {
                key: scope.exclusive_key(),
            }),
        }
    }

    /// The backend pid that holds the lock.
    pub fn holder_pid(&self) -> i32 {
        self.pid
    }

    /// Proves, inside the caller's transaction, that this process still
    /// holds the lock. A lock whose connection ended is retaken if it is
    /// free; if another process holds it, [`Error::LockLost`].
    pub async fn check(&mut self, tx: &mut PgConnection) -> Result<()> {
        if self.held_by(tx, self.pid).await? {
            return Ok(());
        }
        let key = self.scope.exclusive_key();
        match try_take(&self.pool, self.scope).await? {
            Some((conn, pid)) => {
                let old = std::mem::replace(&mut self.conn, conn);
                drop(old);
                self.pid = pid;
                if self.held_by(tx, pid).await? {
                    Ok(())
                } else {
                    Err(Error::LockLost { key })
                }
            }
            None => Err(Error::LockLost { key }),
        }
    }

    async fn held_by(&self, tx: &mut PgConnection, pid: i32) -> Result<bool> {
        let (classid, objid) = lock_ids(self.scope.exclusive_key());
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks
                             WHERE locktype = 'advisory' AND pid = $1 AND granted
                               AND mode = 'ExclusiveLock' AND objsubid = 1
                               AND classid::int8 = $2 AND objid::int8 = $3
                               AND database = (SELECT oid FROM pg_database
                                                WHERE datname = current_database()))",
        )
        .bind(pid)
        .bind(classid)
        .bind(objid)
        .fetch_one(tx)
        .await
        .map_err(db("checking the target lock"))
    }

    /// Releases the lock and closes its connection.
    pub async fn release(self) {
        let mut conn = self.conn;
        let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_split_the_key_as_pg_locks_shows_it() {
        // pg_locks: classid = high 32 bits, objid = low 32 bits (as oids).
        assert_eq!(lock_ids(LOCK_KEY), (0x6261_636b, 0x6669_6c6c));
        assert_eq!(lock_ids(-1), (0xffff_ffff, 0xffff_ffff));
    }

    #[test]
    fn shard_keys_are_distinct_and_never_the_target_key() {
        let mut keys = std::collections::HashSet::new();
        keys.insert(LockScope::Whole.exclusive_key());
        for count in 1..20 {
            for index in 0..count {
                assert!(keys.insert(LockScope::Shard { index, count }.exclusive_key()));
            }
        }
    }
}
