//! Readings for one-machine mode: simulated sensors at a rate (the worker's simulator, whose episodes make every
//! rule fire), or JSON lines from a file or standard input. Both are produced to the input topic keyed by sensor
//! id, as real devices would be.

use std::io::BufRead as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sensorpipe_worker::runtime::produce::{ProduceTarget, TopicWriter};
use sensorpipe_worker::simulate::{SimConfig, generate};

/// Where readings come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Simulated sensors: `rate` readings per second of wall time, covering the `duration` of simulated time that
    /// ends now.
    Simulate { rate: f64, sensors: usize, zones: usize, duration_ms: i64, seed: u64 },
    /// JSON lines from a file, or standard input for `-`.
    Lines(String),
}

/// Produces the source to `target` until it ends or `stop` is set; returns the records produced.
pub fn produce(source: &Source, target: &ProduceTarget, stop: &Arc<AtomicBool>) -> anyhow::Result<u64> {
    let mut writer = TopicWriter::new(target).context("cannot create the input producer")?;
    let mut send = |line: &[u8]| -> std::io::Result<()> {
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("input stopped"));
        }
        writer.write(line).map_err(std::io::Error::other)
    };
    let result = match source {
        Source::Simulate { sensors, zones, duration_ms, seed, .. } => {
            let now = jiff::Timestamp::now().as_millisecond();
            let cfg = SimConfig {
                sensors: *sensors,
                zones: *zones,
                // The span ends at the current minute: simulated time runs fast, and readings from the future
                // would be dead-lettered by the clock guard (`eventTime.maxClockSkew`). Whole minutes, so windows
                // line up with the clock the page shows.
                start_ms: (now - duration_ms) - (now - duration_ms).rem_euclid(60_000),
                duration_ms: *duration_ms,
                seed: *seed,
                ..SimConfig::default()
            };
            generate(&cfg, &mut send).map(|_| ()).map_err(|e| anyhow::anyhow!("{e}"))
        }
        Source::Lines(path) => {
            let reader: Box<dyn std::io::BufRead> = if path == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(
                    std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?,
                ))
            };
            send_lines(reader, &mut send)
        }
    };
    // An error caused by the stop request is the stop, not a failure.
    if !stop.load(Ordering::Relaxed) {
        result?;
    }
    writer.finish(Duration::from_secs(30)).context("not every input record was acknowledged")
}

fn send_lines(
    reader: Box<dyn std::io::BufRead>,
    send: &mut impl FnMut(&[u8]) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    for line in reader.split(b'\n') {
        let line = line?;
        if !line.iter().all(u8::is_ascii_whitespace) {
            send(&line)?;
        }
    }
    Ok(())
}
