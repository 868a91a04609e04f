//! `sensorpipe-worker`: the data-plane binary.
//!
//! - `replay`: backtest a pipeline over a JSONL file or stdin.
//! - `simulate`: synthetic smart-building sensor data with a ground-truth file.
//! - `schema`: JSON Schemas of the output records.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sensorpipe_worker::engine::Pipeline;
use sensorpipe_worker::model::{Duration, load_pipeline_file};
use sensorpipe_worker::replay::{DirectorySink, replay};
use sensorpipe_worker::simulate::{SimConfig, generate};

#[derive(Parser, Debug)]
#[command(
    name = "sensorpipe-worker",
    version,
    about = "sensorpipe data plane: event-time analytics of sensor readings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline over a JSONL file (one reading per line) and write anomalies, aggregates and dead letters
    /// as JSONL into a directory. Open windows are emitted at the end of the input.
    Replay {
        /// The SensorPipeline manifest (or its spec) to run.
        #[arg(short, long)]
        pipeline: PathBuf,
        /// JSONL input; `-` reads standard input.
        #[arg(short, long, default_value = "-")]
        input: String,
        /// Directory for anomalies.jsonl, aggregates.jsonl and dead_letters.jsonl.
        #[arg(short, long)]
        out_dir: PathBuf,
    },
    /// Write simulated smart-building readings as JSONL, deterministic for a seed.
    Simulate(SimulateArgs),
    /// Print the JSON Schema of an output record.
    Schema {
        #[arg(value_enum)]
        record: RecordKind,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RecordKind {
    Anomaly,
    Aggregate,
    DeadLetter,
}

#[derive(clap::Args, Debug)]
struct SimulateArgs {
    /// Number of sensors.
    #[arg(long, default_value_t = d().sensors)]
    sensors: usize,
    /// Number of zones (floors) the sensors are spread over.
    #[arg(long, default_value_t = d().zones)]
    zones: usize,
    /// Simulated time span.
    #[arg(long, default_value_t = ms(d().duration_ms))]
    duration: Duration,
    /// Time between two readings of one sensor (whole seconds).
    #[arg(long, default_value_t = ms(d().interval_ms))]
    interval: Duration,
    /// Start of the simulated time (RFC 3339).
    #[arg(long, default_value_t = default_start())]
    start: jiff::Timestamp,
    #[arg(long, default_value_t = d().seed)]
    seed: u64,
    /// Overheating episodes (threshold anomalies).
    #[arg(long, default_value_t = d().overheats)]
    overheats: usize,
    /// Sudden rises (spike and threshold anomalies).
    #[arg(long, default_value_t = d().spike_rises)]
    spike_rises: usize,
    /// Sudden falls (spike anomalies).
    #[arg(long, default_value_t = d().spike_falls)]
    spike_falls: usize,
    /// Slow drifts by more than the spike delta, but slower than the spike span (no anomaly).
    #[arg(long, default_value_t = d().drifts)]
    drifts: usize,
    /// Sensors stuck at one value for an hour (no anomaly).
    #[arg(long, default_value_t = d().stuck)]
    stuck: usize,
    /// Sensors silent for 10-20 minutes (silence anomalies).
    #[arg(long, default_value_t = d().silences)]
    silences: usize,
    /// Fraction of records delivered out of order, within --max-delay.
    #[arg(long, default_value_t = d().out_of_order)]
    out_of_order: f64,
    /// Largest delay of an out-of-order record; at most the pipeline's maxOutOfOrderness.
    #[arg(long, default_value_t = ms(d().max_delay_ms))]
    max_delay: Duration,
    /// Fraction of records delivered too late for the pipeline (dead letter `late`).
    #[arg(long, default_value_t = d().late)]
    late: f64,
    /// Fraction of records replaced by malformed ones, one dead-letter reason after another.
    #[arg(long, default_value_t = d().malformed)]
    malformed: f64,
    /// The pipeline's maxOutOfOrderness (places late records and computes the truth).
    #[arg(long, default_value_t = ms(d().out_of_orderness_ms))]
    out_of_orderness: Duration,
    /// The pipeline's allowedLateness.
    #[arg(long, default_value_t = ms(d().allowed_lateness_ms))]
    allowed_lateness: Duration,
    /// Output file; `-` writes standard output.
    #[arg(short, long, default_value = "-")]
    output: String,
    /// Also write the ground truth (injected episodes, expected dead letters) as JSON here.
    #[arg(long)]
    truth: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Replay { pipeline, input, out_dir } => {
            let def = load_pipeline_file(&pipeline)?;
            let pipeline = Pipeline::new(&def).map_err(|e| anyhow::anyhow!("invalid pipeline:\n{e}"))?;
            let reader: Box<dyn BufRead> = if input == "-" {
                Box::new(BufReader::with_capacity(1 << 20, io::stdin().lock()))
            } else {
                let file = File::open(&input).with_context(|| format!("cannot open {input}"))?;
                Box::new(BufReader::with_capacity(1 << 20, file))
            };
            let mut sink = DirectorySink::create(&out_dir)?;
            let summary = replay(&pipeline, reader, &mut sink)?;
            sink.finish()?;
            eprintln!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::Simulate(args) => simulate(args),
        Command::Schema { record } => {
            let schema = match record {
                RecordKind::Anomaly => schemars::schema_for!(sensorpipe_worker::records::Anomaly),
                RecordKind::Aggregate => {
                    schemars::schema_for!(sensorpipe_worker::records::Aggregate)
                }
                RecordKind::DeadLetter => {
                    schemars::schema_for!(sensorpipe_worker::records::DeadLetter)
                }
            };
            let mut out = io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &schema)?;
            writeln!(out)?;
            Ok(())
        }
    }
}

/// The simulator's defaults, the single source of the CLI's.
fn d() -> SimConfig {
    SimConfig::default()
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or_default())
}

fn default_start() -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(d().start_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    let cfg = SimConfig {
        sensors: a.sensors,
        zones: a.zones,
        start_ms: a.start.as_millisecond(),
        duration_ms: a.duration.as_millis_i64(),
        interval_ms: a.interval.as_millis_i64(),
        seed: a.seed,
        overheats: a.overheats,
        spike_rises: a.spike_rises,
        spike_falls: a.spike_falls,
        drifts: a.drifts,
        stuck: a.stuck,
        silences: a.silences,
        out_of_order: a.out_of_order,
        max_delay_ms: a.max_delay.as_millis_i64(),
        late: a.late,
        malformed: a.malformed,
        out_of_orderness_ms: a.out_of_orderness.as_millis_i64(),
        allowed_lateness_ms: a.allowed_lateness.as_millis_i64(),
    };
    let mut out: Box<dyn Write> = if a.output == "-" {
        Box::new(BufWriter::with_capacity(1 << 20, io::stdout().lock()))
    } else {
        Box::new(BufWriter::with_capacity(
            1 << 20,
            File::create(&a.output).with_context(|| format!("cannot create {}", a.output))?,
        ))
    };
    let truth = generate(&cfg, |line| {
        out.write_all(line)?;
        out.write_all(b"\n")
    })?;
    out.flush()?;
    if let Some(path) = a.truth {
        let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        serde_json::to_writer_pretty(BufWriter::new(file), &truth)?;
    }
    eprintln!("simulated {} records, {} episodes", truth.records, truth.episodes.len());
    Ok(())
}
