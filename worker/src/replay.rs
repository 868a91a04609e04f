//! Backtest: run a pipeline over a JSONL file (one record per line) and write what it emits as JSONL files.
//! Deterministic — the same input gives byte-identical outputs — and flushed at the end of input, so the last
//! windows are emitted too.
//!
//! Replay is one partition with every window final (no merge stage: one engine sees every reading). A line may
//! start with the record's Kafka timestamp in ms and a tab, as `kcat -C -f '%T\t%s\n'` exports a topic; that
//! timestamp is replay's processing-time clock: readings more than `eventTime.maxClockSkew` ahead of it are
//! dead-lettered as `timestamp_in_future`, and a gap of at least `eventTime.idleTimeout` between two records
//! moves the watermark on by the gap before the second one (idleness, as the runtime applies it). Lines without
//! a timestamp have no clock: neither applies.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::{Outputs, Pipeline};
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
    mut input: impl BufRead,
    sink: &mut impl ReplaySink,
    flush: bool,
) -> io::Result<ReplaySummary> {
    let mut engine = pipeline.engine();
    let mut idle = crate::engine::Idleness::default();
    let mut out = Outputs::default();
    let mut summary = ReplaySummary::default();
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
            d.source = Some(format!("line {line_no}"));
        }
        if out.len() >= 4096 {
            count(&mut summary, &out);
            sink.write(&out)?;
            out.clear();
        }
    }
    if flush {
        engine.flush(&mut out);
    }
    count(&mut summary, &out);
    sink.write(&out)?;
    // The engine already counts dead letters by reason; the summary reports its counters.
    let stats = engine.stats();
    summary.late_for_rules = stats.late_for_rules;
    summary.dead_letters_by_reason = Reason::ALL
        .iter()
        .zip(stats.dead_letters)
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.as_str().to_owned(), n))
        .collect();
    Ok(summary)
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
    summary.anomalies += out.anomalies.len() as u64;
    summary.aggregates += out.aggregates.len() as u64;
    summary.dead_letters += out.dead_letters.len() as u64;
}
