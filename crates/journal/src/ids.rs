//! Ids as types: a run id, a journal id and a `collector_result_id` all meet
//! Postgres as a uuid or a bigint, and a swapped argument compiles happily
//! when they are all `Uuid`. Newtypes make the ledger's "which journal, which
//! run" impossible to mix up; they serialize as the bare uuid, so the journal
//! and JSON carry the same bytes and text as before.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random id.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            /// The nil id (for records that belong to no real one).
            pub const NIL: Self = Self(Uuid::nil());
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::from_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// A run: one invocation of a command that changed the journal (also in
    /// `backfill.ledger.run_id`).
    RunId
);

uuid_id!(
    /// A journal, created with it (also in `backfill.ledger.journal_id`).
    JournalId
);
