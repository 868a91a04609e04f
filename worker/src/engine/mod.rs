//! The engine: one [`PartitionEngine`] per input partition turns record bytes into anomalies, aggregates and dead
//! letters. It is pure — no clock, no I/O — so the Kafka runtime, the one-machine mode and `replay` all run the
//! same code, and tests drive it directly.
//!
//! Flow of a record: parse → too late? (dead letter `late`) → behind the watermark? (windows only) → reorder
//! buffer → released in canonical event-time order when the watermark passes it → silence deadlines that fall
//! before it, detection rules, windows → windows whose end the frontier passed are emitted.
//! The watermark W is the partition's newest event time minus `maxOutOfOrderness`: readings before W are complete
//! and leave the reorder buffer. The frontier is W minus `allowedLateness`: readings before it are too late, and
//! windows ending at or before it are emitted. docs/engine.md explains the choices.

mod idle;
mod intern;
mod merge;
mod plan;
mod reading;
mod reorder;
mod retention;
mod sensor;
mod silence;
mod snapshot;
mod spike;
mod threshold;
mod window;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use idle::Idleness;
pub use merge::{MergeEngine, Merged, MetricAcc, PartialWindow, SourceProgress};
pub use snapshot::{Migration, SnapshotError};

use intern::{Interner, NONE};
use plan::{GroupBy, Plan};
use reading::{GROUP_SLOTS, Reading};
use reorder::ReorderBuffer;
use sensor::SensorState;
use serde::{Deserialize, Serialize};
use silence::SilenceQueue;
use spike::SpikeState;
use window::{Acc, Closed, WindowState};

use crate::model::{Function, MAX_METRICS, PipelineDefinition, Severity, ValidationErrors, validate};
use crate::parse::ParsedReading;
use crate::reason::Reason;
use crate::records::{Aggregate, Anomaly, AnomalyKind, AnomalyState, DeadLetter, MetricStats};

/// A validated, compiled pipeline; cheap to clone and share between partitions.
#[derive(Clone, Debug)]
pub struct Pipeline {
    plan: Arc<Plan>,
}

impl Pipeline {
    pub fn new(def: &PipelineDefinition) -> Result<Self, ValidationErrors> {
        validate(def)?;
        Ok(Self { plan: Arc::new(Plan::compile(def)) })
    }

    /// A fresh engine for one partition.
    pub fn engine(&self) -> PartitionEngine {
        PartitionEngine::from_state(self.plan.clone(), State::new(&self.plan))
    }

    /// An engine continuing from [`PartitionEngine::snapshot`].
    pub fn restore(&self, snapshot: &[u8]) -> Result<PartitionEngine, SnapshotError> {
        self.restore_migrating(snapshot).map(|(engine, _)| engine)
    }

    /// An engine continuing from a snapshot taken with this definition or an earlier compatible one (the same
    /// input fields and event-time bounds): rules and aggregations unchanged by name and definition keep their
    /// state, the others start empty, as the [`Migration`] lists.
    pub fn restore_migrating(&self, snapshot: &[u8]) -> Result<(PartitionEngine, Migration), SnapshotError> {
        let decoded = snapshot::decode(snapshot, &self.plan.signature)?;
        let state =
            if decoded.map.keeps_all() { decoded.state } else { decoded.state.migrate(&decoded.map, &self.plan) };
        Ok((PartitionEngine::from_state(self.plan.clone(), state), decoded.migration))
    }

    /// A fresh merge stage for one repartition partition (zone and label windows across input partitions).
    pub fn merge_engine(&self) -> MergeEngine {
        MergeEngine::new(self.plan.clone())
    }

    /// A merge stage continuing from [`MergeEngine::snapshot`] (of this or a compatible definition, as
    /// [`Pipeline::restore_migrating`]).
    pub fn restore_merge(&self, snapshot: &[u8]) -> Result<(MergeEngine, Migration), SnapshotError> {
        MergeEngine::restore(self.plan.clone(), snapshot)
    }

    /// Whether some aggregation groups by zone or label: its windows are merged across partitions by a second
    /// stage (see [`MergeEngine`]) when the pipeline runs on Kafka.
    pub fn has_merge_stage(&self) -> bool {
        self.plan.aggregations.iter().any(|a| a.group_by != GroupBy::Sensor)
    }

    /// Whether a zone or label window ends in `(after, up_to]`: the merge stage needs to hear of a partition's
    /// frontier only when it crosses such an end. `after` = `None`: nothing was reported yet.
    pub fn merge_window_ends_in(&self, after: Option<i64>, up_to: i64) -> bool {
        let Some(after) = after else { return true };
        // Window ends are multiples of the advance (validation: the advance divides the size).
        self.plan.aggregations.iter().filter(|a| a.group_by != GroupBy::Sensor).any(|a| {
            let next_end = after.div_euclid(a.advance_ms).saturating_add(1).saturating_mul(a.advance_ms);
            next_end <= up_to
        })
    }

    /// `eventTime.idleTimeout` in ms (0: idleness off).
    pub fn idle_timeout_ms(&self) -> i64 {
        self.plan.idle_timeout_ms
    }

    /// `eventTime.maxOutOfOrderness` in ms.
    pub fn out_of_orderness_ms(&self) -> i64 {
        self.plan.out_of_orderness_ms
    }

    /// Parses a record without running it: for benchmarks and diagnostics.
    pub fn parse<'a>(&self, payload: &'a [u8]) -> Result<ParsedReading<'a>, crate::parse::ParseError> {
        self.plan.parser.parse(payload)
    }
}

/// What one call emitted. Reuse one across calls and [`Outputs::clear`] it to avoid allocating.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outputs {
    pub anomalies: Vec<Anomaly>,
    pub aggregates: Vec<Aggregate>,
    pub dead_letters: Vec<DeadLetter>,
    /// Zone and label windows of one partition, for the merge stage (only from an engine told to
    /// [`PartitionEngine::emit_partials`]).
    pub partials: Vec<PartialWindow>,
}

impl Outputs {
    pub fn clear(&mut self) {
        self.anomalies.clear();
        self.aggregates.clear();
        self.dead_letters.clear();
        self.partials.clear();
    }

    /// Records held, of all four kinds.
    pub fn len(&self) -> usize {
        self.anomalies.len() + self.aggregates.len() + self.dead_letters.len() + self.partials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counters since the engine was created (not part of a snapshot) and current sizes of the state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Readings accepted (parsed and not too late).
    pub readings: u64,
    /// Readings behind the watermark but within the allowed lateness: aggregated, not seen by detection rules.
    pub late_for_rules: u64,
    /// Dead letters per reason, indexed by `reason as usize` (the order of [`Reason::ALL`]).
    pub dead_letters: [u64; Reason::ALL.len()],
    /// Readings waiting in the reorder buffer.
    pub buffered: usize,
    pub sensors: usize,
    pub silent_sensors: usize,
    pub open_windows: usize,
    pub open_window_groups: usize,
    /// Zone and label values remembered.
    pub groups: usize,
}

/// Everything a partition remembers; exactly what a snapshot holds.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    max_ts: i64,
    watermark: i64,
    sensors: Interner,
    /// Indexed by interned sensor id.
    sensor_state: Vec<SensorState>,
    groups: Interner,
    reorder: ReorderBuffer,
    silence: SilenceQueue,
    /// [aggregation]
    windows: Vec<WindowState>,
    /// Watermark at which the next retention sweep runs (`retention`).
    next_sweep: i64,
}

impl State {
    fn new(plan: &Plan) -> Self {
        Self {
            max_ts: i64::MIN,
            watermark: i64::MIN,
            sensors: Interner::default(),
            sensor_state: Vec::new(),
            groups: Interner::default(),
            reorder: ReorderBuffer::default(),
            silence: SilenceQueue::default(),
            windows: vec![WindowState::default(); plan.aggregations.len()],
            next_sweep: i64::MIN,
        }
    }
}

impl State {
    /// This state as the plan `map` was made for needs it: each rule's and aggregation's state moved to the
    /// rule's index in the new plan, empty for a rule new or changed, gone for one removed.
    fn migrate(mut self, map: &snapshot::RuleMap, plan: &Plan) -> Self {
        for sensor in &mut self.sensor_state {
            sensor.thresholds = carry(&mut sensor.thresholds, &map.thresholds).collect();
            sensor.spikes = carry(&mut sensor.spikes, &map.spikes).collect();
        }
        self.windows = carry(&mut self.windows, &map.aggregations).collect();
        if !map.silence {
            // A new or changed silence rule: every sensor seen so far gets a deadline under the new timeout, none
            // is silent (an episode open under the old rule ends unreported; the new rule reports afresh).
            self.silence = SilenceQueue::default();
            let timeout = plan.silence.as_ref().map(|s| s.timeout_ms);
            for (i, sensor) in self.sensor_state.iter_mut().enumerate() {
                sensor.silent = false;
                if let Some(timeout) = timeout
                    && sensor.last_seen != i64::MIN
                {
                    self.silence.schedule(sensor.last_seen.saturating_add(timeout), i as u32);
                }
            }
        }
        self
    }
}

/// The states of the new plan's rules from the old ones: `map[i]` is where rule `i`'s state was, `None` for a
/// rule that starts empty (names are unique, so no state is taken twice).
fn carry<'a, T: Default>(old: &'a mut [T], map: &'a [Option<usize>]) -> impl Iterator<Item = T> + 'a {
    map.iter().map(move |j| j.and_then(|j| old.get_mut(j).map(std::mem::take)).unwrap_or_default())
}

/// The engine state of one input partition.
#[derive(Debug)]
pub struct PartitionEngine {
    plan: Arc<Plan>,
    state: State,
    stats: EngineStats,
    released: Vec<(u64, Reading)>,
    closed: Vec<Closed>,
    /// The reader's clock (ms) for the clock guard; `None`: unchecked. Not state: set by the caller.
    clock_ms: Option<i64>,
    /// The input partition whose partial zone and label windows this engine emits; `None`: it emits them final.
    partial_source: Option<i32>,
}

impl PartitionEngine {
    fn from_state(plan: Arc<Plan>, state: State) -> Self {
        Self {
            plan,
            state,
            stats: EngineStats::default(),
            released: Vec::new(),
            closed: Vec::new(),
            clock_ms: None,
            partial_source: None,
        }
    }

    /// Sets the reader's clock: readings more than `eventTime.maxClockSkew` ahead of it are dead-lettered as
    /// `timestamp_in_future`. The Kafka runtime passes the wall clock, `replay` the records' Kafka timestamps.
    pub fn set_clock(&mut self, now_ms: i64) {
        self.clock_ms = Some(now_ms);
    }

    /// Makes zone and label windows come out as [`PartialWindow`]s of input partition `source`, for the merge
    /// stage, instead of final aggregates. Sensor windows stay final: a sensor lives in one partition.
    pub fn emit_partials(&mut self, source: i32) {
        self.partial_source = Some(source);
    }

    /// Watermark − allowed lateness: windows ending at or before it are emitted; `None` before the first reading.
    pub fn frontier(&self) -> Option<i64> {
        self.watermark().map(|w| w.saturating_sub(self.plan.lateness_ms))
    }

    /// Processes one record value. Never fails: unusable records become dead letters in `out`.
    pub fn process(&mut self, payload: &[u8], out: &mut Outputs) {
        match self.plan.parser.parse(payload) {
            Ok(reading) => self.ingest(reading, payload, out),
            Err(e) => {
                self.stats.dead_letters[e.reason as usize] += 1;
                out.dead_letters.push(DeadLetter::new(e.reason, e.detail, payload));
            }
        }
    }

    /// The partition watermark (newest event time − max out-of-orderness; readings before it are complete),
    /// `None` before the first reading.
    pub fn watermark(&self) -> Option<i64> {
        (self.state.watermark != i64::MIN).then_some(self.state.watermark)
    }

    /// Moves the watermark forward without a reading, for a partition known to be idle (the caller decides on
    /// what evidence; the engine never reads a clock). Has no effect if `watermark` is not ahead.
    pub fn advance_watermark(&mut self, watermark: i64, out: &mut Outputs) {
        if watermark > self.state.watermark {
            self.advance_to(watermark, out);
        }
    }

    /// End of input: everything buffered is evaluated, silence deadlines up to the newest event time fire, and
    /// every open window is emitted. Further input is evaluated as if it came after a gap.
    pub fn flush(&mut self, out: &mut Outputs) {
        if self.state.max_ts == i64::MIN {
            return;
        }
        let complete = self.state.max_ts.saturating_add(1);
        if complete > self.state.watermark {
            self.advance_to(complete, out);
        }
        self.close_windows(i64::MAX, out);
    }

    /// The lowest watermark at which advancing would change what the partition has emitted: a buffered reading
    /// released, a silence deadline passed, the oldest window closed. An idle partition is moved on only then,
    /// not on every tick (each move is committed with a snapshot). `None`: nothing is waiting.
    pub fn next_due(&self) -> Option<i64> {
        let plan = &*self.plan;
        let st = &self.state;
        let windows =
            plan.aggregations.iter().zip(&st.windows).filter_map(|(a, w)| {
                w.first_start().map(|s| s.saturating_add(a.size_ms).saturating_add(plan.lateness_ms))
            });
        let silence = plan.silence.as_ref().and(st.silence.earliest()).map(|d| d.saturating_add(1));
        let buffered = st.reorder.min_ts().map(|t| t.saturating_add(1));
        windows.chain(silence).chain(buffered).min()
    }

    /// `eventTime.allowedLateness` in ms.
    pub fn lateness_ms(&self) -> i64 {
        self.plan.lateness_ms
    }

    /// The whole partition state, to restore with [`Pipeline::restore`].
    pub fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(&self.state, &self.plan.signature)
    }

    /// Readings so far that were behind the watermark but within the allowed lateness (cheap, unlike `stats`).
    pub fn late_for_rules(&self) -> u64 {
        self.stats.late_for_rules
    }

    /// Open episodes per rule (sensors firing a threshold or spike rule, or silent), in plan order: thresholds,
    /// spikes, silence. For the "currently firing" gauges; walks every sensor once, so call it per batch, not per
    /// reading.
    pub fn active_anomalies(&self) -> Vec<(&str, usize)> {
        let plan = &*self.plan;
        let (thresholds, spikes) = (plan.thresholds.len(), plan.spikes.len());
        let mut open = vec![0_usize; thresholds + spikes + 1];
        for s in &self.state.sensor_state {
            for (i, t) in s.thresholds.iter().enumerate() {
                open[i] += usize::from(t.is_firing());
            }
            for (i, k) in s.spikes.iter().enumerate() {
                open[thresholds + i] += usize::from(k.is_firing());
            }
            open[thresholds + spikes] += usize::from(s.silent);
        }
        let names = plan.thresholds.iter().map(|r| r.name.as_str()).chain(plan.spikes.iter().map(|r| r.name.as_str()));
        let mut out: Vec<(&str, usize)> = names.zip(open.iter().copied()).collect();
        if let Some(rule) = &plan.silence {
            out.push((rule.name.as_str(), open[thresholds + spikes]));
        }
        out
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            buffered: self.state.reorder.len(),
            sensors: self.state.sensors.len(),
            silent_sensors: self.state.sensor_state.iter().filter(|s| s.silent).count(),
            open_windows: self.state.windows.iter().map(WindowState::open_windows).sum(),
            open_window_groups: self.state.windows.iter().map(WindowState::open_groups).sum(),
            groups: self.state.groups.len(),
            ..self.stats.clone()
        }
    }

    fn ingest(&mut self, r: ParsedReading<'_>, payload: &[u8], out: &mut Outputs) {
        let plan = &*self.plan;
        let st = &mut self.state;
        if let Some(now) = self.clock_ms
            && plan.max_clock_skew_ms > 0
            && r.ts_ms > now.saturating_add(plan.max_clock_skew_ms)
        {
            self.stats.dead_letters[Reason::TimestampInFuture as usize] += 1;
            let detail = format!(
                "event time {} is more than eventTime.maxClockSkew ahead of the clock {}",
                crate::records::rfc3339_ms::format(r.ts_ms),
                crate::records::rfc3339_ms::format(now),
            );
            out.dead_letters.push(DeadLetter::new(Reason::TimestampInFuture, detail, payload));
            return;
        }
        let frontier = st.watermark.saturating_sub(plan.lateness_ms);
        if r.ts_ms < frontier {
            self.stats.dead_letters[Reason::Late as usize] += 1;
            let detail = format!(
                "event time {} is before the partition watermark {} minus the allowed lateness",
                crate::records::rfc3339_ms::format(r.ts_ms),
                crate::records::rfc3339_ms::format(st.watermark),
            );
            out.dead_letters.push(DeadLetter::new(Reason::Late, detail, payload));
            return;
        }
        self.stats.readings += 1;

        let (sensor, new) = st.sensors.intern(&r.sensor);
        if new {
            let hash = xxhash_rust::xxh3::xxh3_64(r.sensor.as_bytes());
            let mapped_zone = plan.sensor_zones.get(&*r.sensor).map_or(NONE, |z| st.groups.intern(z).0);
            st.sensor_state.push(SensorState::new(hash, mapped_zone, plan.thresholds.len(), plan.spikes.len()));
        }
        let mut groups = [NONE; GROUP_SLOTS];
        groups[0] = match r.zone.as_deref().filter(|z| !z.is_empty()) {
            Some(zone) => st.groups.intern(zone).0,
            None => st.sensor_state[sensor as usize].mapped_zone,
        };
        for (slot, label) in groups[1..].iter_mut().zip(&r.labels) {
            if let Some(label) = label.as_deref().filter(|l| !l.is_empty()) {
                *slot = st.groups.intern(label).0;
            }
        }
        let mut values = [f64::NAN; MAX_METRICS];
        for (v, parsed) in values.iter_mut().zip(r.values) {
            if let Some(parsed) = parsed {
                *v = parsed;
            }
        }
        let reading = Reading { ts: r.ts_ms, sensor, values, groups };

        if r.ts_ms < st.watermark {
            // The rules have moved past this time; the windows are still open.
            self.stats.late_for_rules += 1;
            add_to_windows(plan, &mut st.windows, &reading);
        } else {
            st.reorder.push(st.sensor_state[sensor as usize].hash, reading);
        }
        if r.ts_ms > st.max_ts {
            st.max_ts = r.ts_ms;
            let watermark = r.ts_ms.saturating_sub(plan.out_of_orderness_ms);
            if watermark > st.watermark {
                self.advance_to(watermark, out);
            }
        }
    }

    fn advance_to(&mut self, watermark: i64, out: &mut Outputs) {
        let plan = self.plan.clone();
        self.state.watermark = watermark;
        let mut released = std::mem::take(&mut self.released);
        released.clear();
        {
            let st = &mut self.state;
            let (sensors, groups) = (&st.sensors, &st.groups);
            st.reorder.release(watermark, &mut released, |a, b| canonical_cmp(sensors, groups, a, b));
        }
        touch_sensor_states(&self.state.sensor_state, &released);
        for (_, reading) in &released {
            self.fire_silences(&plan, reading.ts, out);
            self.apply_rules(&plan, reading, out);
            add_to_windows(&plan, &mut self.state.windows, reading);
        }
        self.released = released;
        self.fire_silences(&plan, watermark, out);
        self.close_windows(watermark.saturating_sub(plan.lateness_ms), out);
        retention::sweep(&plan, &mut self.state);
    }

    /// Fires every silence deadline strictly before `before`: a reading at the deadline itself keeps a sensor alive.
    fn fire_silences(&mut self, plan: &Plan, before: i64, out: &mut Outputs) {
        let Some(rule) = &plan.silence else { return };
        while let Some((deadline, sensor, last_seen)) =
            self.state.silence.pop_due(before, rule.timeout_ms, &mut self.state.sensor_state)
        {
            let mut a = self.anomaly(
                &rule.name,
                AnomalyKind::Silence,
                AnomalyState::Firing,
                rule.severity,
                sensor,
                self.state.sensor_state[sensor as usize].zone,
                deadline,
            );
            a.limit = rule.timeout_ms as f64 / 1000.0;
            a.last_seen = Some(last_seen);
            out.anomalies.push(a);
        }
    }

    fn apply_rules(&mut self, plan: &Plan, r: &Reading, out: &mut Outputs) {
        let s = r.sensor as usize;
        if r.groups[0] != NONE {
            self.state.sensor_state[s].zone = r.groups[0];
        }
        if let Some(rule) = &plan.silence
            && let Some(last_seen) =
                self.state.silence.on_reading(&mut self.state.sensor_state[s], r.sensor, r.ts, rule.timeout_ms)
        {
            let mut a = self.anomaly(
                &rule.name,
                AnomalyKind::Silence,
                AnomalyState::Resolved,
                rule.severity,
                r.sensor,
                r.groups[0],
                r.ts,
            );
            a.limit = rule.timeout_ms as f64 / 1000.0;
            a.last_seen = Some(last_seen);
            out.anomalies.push(a);
        }
        for (i, rule) in plan.thresholds.iter().enumerate() {
            let Some(v) = r.value(rule.metric) else {
                continue;
            };
            if let Some(state) = self.state.sensor_state[s].thresholds[i].observe(rule, r.ts, v) {
                let mut a =
                    self.anomaly(&rule.name, AnomalyKind::Threshold, state, rule.severity, r.sensor, r.groups[0], r.ts);
                a.metric = Some(plan.metric_names[rule.metric].clone());
                a.value = Some(v);
                a.limit = rule.limit;
                out.anomalies.push(a);
            }
        }
        for (i, rule) in plan.spikes.iter().enumerate() {
            let Some(v) = r.value(rule.metric) else {
                continue;
            };
            if let Some((state, baseline)) = self.state.sensor_state[s].spikes[i].observe(rule, r.ts, v) {
                let mut a =
                    self.anomaly(&rule.name, AnomalyKind::Spike, state, rule.severity, r.sensor, r.groups[0], r.ts);
                a.metric = Some(plan.metric_names[rule.metric].clone());
                a.value = Some(v);
                a.limit = rule.delta;
                a.baseline_time = baseline.map(|b| b.0);
                a.baseline = baseline.map(|b| b.1);
                out.anomalies.push(a);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn anomaly(
        &self,
        rule: &str,
        kind: AnomalyKind,
        state: AnomalyState,
        severity: Severity,
        sensor: u32,
        zone: u32,
        event_time: i64,
    ) -> Anomaly {
        let sensor = self.state.sensors.name(sensor).unwrap_or_default().to_owned();
        Anomaly {
            id: Anomaly::make_id(rule, &sensor, event_time, state),
            rule: rule.to_owned(),
            kind,
            state,
            severity,
            sensor,
            zone: self.state.groups.name(zone).map(str::to_owned),
            metric: None,
            value: None,
            limit: 0.0,
            event_time,
            baseline: None,
            baseline_time: None,
            last_seen: None,
        }
    }

    fn close_windows(&mut self, frontier: i64, out: &mut Outputs) {
        let plan = self.plan.clone();
        for (i, agg) in plan.aggregations.iter().enumerate() {
            self.closed.clear();
            self.state.windows[i].close(agg, frontier, &mut self.closed);
            if self.closed.is_empty() {
                continue;
            }
            let st = &self.state;
            let key_name = |key: u32| match agg.group_by {
                GroupBy::Sensor => st.sensors.name(key),
                GroupBy::Slot(_) => st.groups.name(key),
            };
            self.closed.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| key_name(a.key).cmp(&key_name(b.key))));
            for c in &self.closed {
                match (agg.group_by, self.partial_source) {
                    (GroupBy::Slot(_), Some(source)) => out.partials.push(PartialWindow {
                        aggregation: agg.name.clone(),
                        key: key_name(c.key).map(str::to_owned),
                        window_start: c.start,
                        source,
                        metrics: c.accs.iter().map(MetricAcc::of).collect(),
                    }),
                    _ => out.aggregates.push(finalize(&plan, agg, key_name(c.key), c.start, &c.accs)),
                }
            }
        }
    }
}

/// The output record of one closed window: the aggregation's functions of each metric's accumulator (a metric no
/// reading carried is left out). Shared by single-stage windows and the merge stage.
fn finalize(plan: &Plan, agg: &plan::AggregationPlan, key: Option<&str>, start: i64, accs: &[Acc]) -> Aggregate {
    let mut stats = BTreeMap::new();
    for (acc, &m) in accs.iter().zip(&agg.metrics) {
        if acc.count == 0 {
            continue;
        }
        let mut s = MetricStats::default();
        for f in &agg.functions {
            match f {
                Function::Avg => s.avg = Some(acc.sum / acc.count as f64),
                Function::Min => s.min = Some(acc.min),
                Function::Max => s.max = Some(acc.max),
                Function::Count => s.count = Some(acc.count),
                Function::Sum => s.sum = Some(acc.sum),
            }
        }
        stats.insert(plan.metric_names[m].clone(), s);
    }
    Aggregate {
        id: Aggregate::make_id(&agg.name, key, start),
        aggregation: agg.name.clone(),
        group_by: agg.group_by_name.clone(),
        key: key.map(str::to_owned),
        window_start: start,
        window_end: start + agg.size_ms,
        stats,
    }
}

/// Loads every released reading's sensor state once before the rules run. The loads are independent, so the
/// CPU overlaps their cache misses; the rule pass then finds the states in cache. It matters once a partition
/// has more sensors than the cache holds (docs/benchmarks.md).
fn touch_sensor_states(states: &[SensorState], released: &[(u64, Reading)]) {
    let mut acc = 0i64;
    for (_, r) in released {
        if let Some(s) = states.get(r.sensor as usize) {
            acc ^= s.last_seen ^ s.spikes.iter().map(SpikeState::touch).fold(0, |a, b| a ^ b);
        }
    }
    std::hint::black_box(acc);
}

fn add_to_windows(plan: &Plan, windows: &mut [WindowState], r: &Reading) {
    for (agg, w) in plan.aggregations.iter().zip(windows) {
        let key = match agg.group_by {
            GroupBy::Sensor => r.sensor,
            GroupBy::Slot(slot) => r.groups[slot],
        };
        w.add(agg, r.ts, key, &r.values);
    }
}

/// Arrival-independent order of released readings: time, sensor-name hash, then names and values for the
/// (astronomically rare, or duplicate-reading) ties.
fn canonical_cmp(sensors: &Interner, groups: &Interner, a: &(u64, Reading), b: &(u64, Reading)) -> Ordering {
    let (ha, ra) = a;
    let (hb, rb) = b;
    ra.ts
        .cmp(&rb.ts)
        .then(ha.cmp(hb))
        .then_with(|| sensors.name(ra.sensor).cmp(&sensors.name(rb.sensor)))
        .then_with(|| {
            ra.values.iter().zip(&rb.values).map(|(x, y)| x.total_cmp(y)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
        })
        .then_with(|| {
            ra.groups
                .iter()
                .zip(&rb.groups)
                .map(|(x, y)| groups.name(*x).cmp(&groups.name(*y)))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        })
}
