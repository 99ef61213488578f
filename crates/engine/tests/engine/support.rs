//! A memory source of realistic groups, a journal in a temporary directory,
//! and an engine over them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use backfill_core::testing::{realistic_group, Group, GroupBuilder};
use backfill_core::{plan, Digest};
use backfill_engine::{
    Engine, EngineSettings, Event, Limits, MemorySink, MemorySource, Observer, RunControl,
};
use backfill_journal::Journal;

/// The competitor names of `realistic_group`.
pub const COMPETITORS: [&str; 5] = ["Acme", "Beta Corp", "Gamma", "Delta", "Epsilon"];

pub struct World {
    pub source: MemorySource,
    pub journal: Arc<Journal>,
    pub _dir: tempfile::TempDir,
    /// Every group added, by key (for expected events).
    pub groups: BTreeMap<i64, Group>,
    competitors: HashSet<String>,
}

impl World {
    /// `n` realistic groups with keys 1..=n, plus key 1_000 without a brand
    /// row (skipped) and key 1_001 without a collector result (rejected).
    pub fn new(n: i64) -> Self {
        let mut world = Self::empty();
        for key in 1..=n {
            world.add(realistic_group(key));
        }
        world.add(GroupBuilder::new(1_000).without_brand_row().build());
        world.add(GroupBuilder::new(1_001).orphan().build());
        world
    }

    pub fn empty() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path()).unwrap());
        Self {
            source: MemorySource::new(),
            journal,
            _dir: dir,
            groups: BTreeMap::new(),
            competitors: HashSet::new(),
        }
    }

    /// Adds a group and its directory rows (each competitor once).
    pub fn add(&mut self, group: Group) {
        let dirs = &group.directories;
        self.source.set_group(group.key, group.rows.clone());
        if let Some(customer) = dirs.brand_customer(group.brand_id) {
            self.source.add_brand(group.brand_id, customer);
        }
        if let Some(at) = dirs.collector_result_created_at(group.key) {
            self.source.add_collector_result(group.key, at);
        }
        for name in COMPETITORS {
            if self.competitors.insert(name.to_owned()) {
                self.source
                    .add_competitor(group.brand_id, group.competitor_id(name), name);
            }
        }
        self.groups.insert(group.key, group);
    }

    /// The content hash the core plans for `key` from its own directories.
    pub fn expected_hash(&self, key: i64) -> Digest {
        let g = &self.groups[&key];
        plan(key, &g.rows, &g.directories).unwrap().content_hash
    }

    /// Keys whose plan migrates.
    pub fn migrating(&self) -> Vec<i64> {
        self.groups
            .values()
            .filter(|g| {
                plan(g.key, &g.rows, &g.directories)
                    .unwrap()
                    .target_rows()
                    .is_some()
            })
            .map(|g| g.key)
            .collect()
    }

    pub fn sink(&self) -> MemorySink {
        MemorySink::new(self.journal.id())
    }

    pub fn engine(&self, batch_size: usize) -> Engine<MemorySource> {
        self.engine_with(batch_size, EngineSettings::default())
    }

    pub fn engine_with(&self, batch_size: usize, settings: EngineSettings) -> Engine<MemorySource> {
        let control = RunControl::new(Limits {
            batch_size,
            ..Limits::default()
        });
        Engine::new(self.source.clone(), self.journal.clone(), settings, control)
    }
}

/// The keys and content hashes a memory target holds, with our ledger.
pub fn target(sink: &MemorySink) -> BTreeMap<i64, Digest> {
    sink.facts()
        .into_iter()
        .filter_map(|(k, f)| f.ledger.map(|(_, h, _)| (k, h)))
        .collect()
}

/// Records every event; runs `on_batch(n, control)` after the n-th applied
/// batch.
pub struct Recorder {
    pub events: Mutex<Vec<Event>>,
    pub control: RunControl,
    #[allow(clippy::type_complexity)]
    pub on_batch: Box<dyn Fn(usize, &RunControl) + Send + Sync>,
}

impl Recorder {
    pub fn attach(
        control: &RunControl,
        on_batch: impl Fn(usize, &RunControl) + Send + Sync + 'static,
    ) -> Arc<Self> {
        let recorder = Arc::new(Self {
            events: Mutex::new(Vec::new()),
            control: control.clone(),
            on_batch: Box::new(on_batch),
        });
        control.observe(recorder.clone());
        recorder
    }

    /// The keys of each applied batch, in order.
    pub fn batch_sizes(&self) -> Vec<u64> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::BatchApplied { keys, .. } => Some(*keys),
                _ => None,
            })
            .collect()
    }
}

impl Observer for Recorder {
    fn on_event(&self, event: &Event) {
        let batches = {
            let mut events = self.events.lock().unwrap();
            events.push(event.clone());
            events
                .iter()
                .filter(|e| matches!(e, Event::BatchApplied { .. }))
                .count()
        };
        if matches!(event, Event::BatchApplied { .. }) {
            (self.on_batch)(batches, &self.control);
        }
    }
}
