//! Backtest: run a pipeline over a JSONL file (one record per line) and write what it emits as JSONL files.
//! Deterministic — the same input gives byte-identical outputs — and flushed at the end of input, so the last
//! windows are emitted too.
//!
//! Given one input, replay is one partition with every window final (no merge stage: one engine sees every
//! reading). Given one input per partition (a topic exported partition by partition), it runs as the Kafka
//! runtime does: one engine per partition and zone and label windows merged across them ([`replay_partitions`]). A line may
//! start with the record's Kafka timestamp in ms and a tab, as `kcat -C -f '%T\t%s\n'` exports a topic; that
//! timestamp is replay's processing-time clock: readings more than `eventTime.maxClockSkew` ahead of it are
//! dead-lettered as `timestamp_in_future`, and a gap of at least `eventTime.idleTimeout` between two records
//! moves the watermark on by the gap before the second one (idleness, as the runtime applies it). Lines without
//! a timestamp have no clock: neither applies.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::{MergeEngine, Outputs, PartitionEngine, Pipeline, SourceProgress};
use crate::reason::Reason;

/// Names of the files `replay` writes into its output directory.
pub const ANOMALIES_FILE: &str = "anomalies.jsonl";
pub const AGGREGATES_FILE: &str = "aggregates.jsonl";
pub const DEAD_LETTERS_FILE: &str = "dead_letters.jsonl";

/// Counts of one replay run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    pub records: u64,
    pub anomalies: u64,
    pub aggregates: u64,
    pub dead_letters: u64,
    /// Readings behind the watermark but within the allowed lateness (aggregated, not seen by the rules).
    pub late_for_rules: u64,
    pub dead_letters_by_reason: std::collections::BTreeMap<String, u64>,
}

/// Where a replay writes.
pub trait ReplaySink {
    fn write(&mut self, outputs: &Outputs) -> io::Result<()>;
}

/// Writes the three JSONL files into a directory.
#[derive(Debug)]
pub struct DirectorySink {
    anomalies: BufWriter<File>,
    aggregates: BufWriter<File>,
    dead_letters: BufWriter<File>,
}

impl DirectorySink {
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let open = |name: &str| -> io::Result<BufWriter<File>> {
            let path: PathBuf = dir.join(name);
            File::create(&path)
                .map(BufWriter::new)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        Ok(Self {
            anomalies: open(ANOMALIES_FILE)?,
            aggregates: open(AGGREGATES_FILE)?,
            dead_letters: open(DEAD_LETTERS_FILE)?,
        })
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.anomalies.flush()?;
        self.aggregates.flush()?;
        self.dead_letters.flush()
    }
}

fn write_lines<T: Serialize>(w: &mut impl Write, items: &[T]) -> io::Result<()> {
    for item in items {
        serde_json::to_writer(&mut *w, item)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

impl ReplaySink for DirectorySink {
    fn write(&mut self, o: &Outputs) -> io::Result<()> {
        write_lines(&mut self.anomalies, &o.anomalies)?;
        write_lines(&mut self.aggregates, &o.aggregates)?;
        write_lines(&mut self.dead_letters, &o.dead_letters)
    }
}

/// Collects everything in memory (tests, small inputs).
impl ReplaySink for Outputs {
    fn write(&mut self, o: &Outputs) -> io::Result<()> {
        self.anomalies.extend_from_slice(&o.anomalies);
        self.aggregates.extend_from_slice(&o.aggregates);
        self.dead_letters.extend_from_slice(&o.dead_letters);
        Ok(())
    }
}

/// Runs `pipeline` over `input` (JSONL; blank lines are skipped) into `sink`, flushing at the end.
pub fn replay(pipeline: &Pipeline, input: impl BufRead, sink: &mut impl ReplaySink) -> io::Result<ReplaySummary> {
    replay_with(pipeline, input, sink, true)
}

/// [`replay`], with the end-of-input flush optional: without it, the outputs are what a stream that has seen
/// this input (and no more) has emitted.
pub fn replay_with(
    pipeline: &Pipeline,
    input: impl BufRead,
    sink: &mut impl ReplaySink,
    flush: bool,
) -> io::Result<ReplaySummary> {
    replay_partitions(pipeline, vec![input], sink, flush)
}

/// Replays a topic exported per partition: one engine per input, as the Kafka runtime runs one per partition,
/// and — with more than one input — zone and label windows merged across them by the merge stage, emitted when
/// every input's frontier has passed them (at the end of input with `flush`). The outputs equal what the
/// runtime emits for the same partitions.
pub fn replay_partitions<R: BufRead>(
    pipeline: &Pipeline,
    inputs: Vec<R>,
    sink: &mut impl ReplaySink,
    flush: bool,
) -> io::Result<ReplaySummary> {
    let sources = inputs.len();
    let mut merge = (sources > 1 && pipeline.has_merge_stage()).then(|| pipeline.merge_engine());
    let mut summary = ReplaySummary::default();
    let mut frontiers = Vec::with_capacity(sources);
    let mut by_reason = [0u64; Reason::ALL.len()];
    for (source, input) in inputs.into_iter().enumerate() {
        let label = if sources > 1 { format!("input {source} ") } else { String::new() };
        let mut engine = pipeline.engine();
        if merge.is_some() {
            engine.emit_partials(source as i32);
        }
        replay_one(pipeline, &mut engine, input, sink, &mut summary, merge.as_mut(), &label)?;
        let mut out = Outputs::default();
        if flush {
            engine.flush(&mut out);
        }
        frontiers.push(if flush { Some(i64::MAX) } else { engine.frontier() });
        write(sink, &mut summary, &mut out, merge.as_mut())?;
        let stats = engine.stats();
        summary.late_for_rules += stats.late_for_rules;
        for (n, add) in by_reason.iter_mut().zip(stats.dead_letters) {
            *n += add;
        }
    }
    if let Some(m) = merge.as_mut() {
        let mut out = Outputs::default();
        for (source, frontier) in frontiers.iter().enumerate() {
            if let Some(frontier) = *frontier {
                let p = SourceProgress { source: source as i32, sources: sources as i32, frontier };
                m.progress(p, &mut out.aggregates);
            }
        }
        write(sink, &mut summary, &mut out, None)?;
    }
    // The engines already count dead letters by reason; the summary reports their counters.
    summary.dead_letters_by_reason =
        Reason::ALL.iter().zip(by_reason).filter(|(_, n)| *n > 0).map(|(r, n)| (r.as_str().to_owned(), n)).collect();
    Ok(summary)
}

/// Writes `out` (its partials into the merge stage) and clears it.
fn write(
    sink: &mut impl ReplaySink,
    summary: &mut ReplaySummary,
    out: &mut Outputs,
    merge: Option<&mut MergeEngine>,
) -> io::Result<()> {
    if let Some(m) = merge {
        for p in out.partials.drain(..) {
            m.add(p);
        }
    }
    count(summary, out);
    sink.write(out)?;
    out.clear();
    Ok(())
}

/// One input through one engine (no end-of-input flush).
fn replay_one(
    pipeline: &Pipeline,
    engine: &mut PartitionEngine,
    mut input: impl BufRead,
    sink: &mut impl ReplaySink,
    summary: &mut ReplaySummary,
    mut merge: Option<&mut MergeEngine>,
    label: &str,
) -> io::Result<()> {
    let mut idle = crate::engine::Idleness::default();
    let mut out = Outputs::default();
    let mut line = Vec::with_capacity(256);
    let mut line_no = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        line_no += 1;
        let record = trim_line_end(&line);
        if record.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        summary.records += 1;
        let (clock, record) = split_timestamp(record);
        if let Some(now) = clock {
            engine.set_clock(now);
            if let Some(w) = idle.watermark(now, pipeline.idle_timeout_ms(), pipeline.out_of_orderness_ms()) {
                engine.advance_watermark(w, &mut out);
            }
        }
        let before = out.dead_letters.len();
        engine.process(record, &mut out);
        if let Some(now) = clock {
            idle.on_record(now, engine.watermark());
        }
        for d in &mut out.dead_letters[before..] {
            d.source = Some(format!("{label}line {line_no}"));
        }
        if out.len() >= 4096 {
            write(sink, summary, &mut out, merge.as_deref_mut())?;
        }
    }
    write(sink, summary, &mut out, merge)
}

/// A leading `<Kafka timestamp ms>\t`, and the record after it.
fn split_timestamp(line: &[u8]) -> (Option<i64>, &[u8]) {
    let Some(tab) = line.iter().position(|b| *b == b'\t') else { return (None, line) };
    let digits = &line[..tab];
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return (None, line);
    }
    let ts = std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok());
    (ts, if ts.is_some() { &line[tab + 1..] } else { line })
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn count(summary: &mut ReplaySummary, out: &Outputs) {
    // Partials are not outputs: they go into the merge stage.
    summary.anomalies += out.anomalies.len() as u64;
    summary.aggregates += out.aggregates.len() as u64;
    summary.dead_letters += out.dead_letters.len() as u64;
}
