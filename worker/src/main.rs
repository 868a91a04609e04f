//! `sensorpipe-worker`: the data-plane binary.
//!
//! - `replay`: backtest a pipeline over a JSONL file or stdin.
//! - `simulate`: synthetic smart-building sensor data with a ground-truth file.
//! - `schema`: JSON Schemas of the output records.
//! - `run`: the pipeline in a Kafka consumer group (what the operator deploys).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sensorpipe_worker::engine::Pipeline;
use sensorpipe_worker::model::{Duration, load_pipeline_file};
use sensorpipe_worker::replay::{DirectorySink, replay_partitions};
use sensorpipe_worker::runtime::RunArgs;
use sensorpipe_worker::runtime::produce::{ProduceTarget, TopicWriter};
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
        /// JSONL input; `-` reads standard input. Repeat it with one file per partition of a topic to run as the
        /// Kafka runtime does: one engine per partition, zone and label windows merged across them.
        #[arg(short, long, default_value = "-")]
        input: Vec<String>,
        /// Directory for anomalies.jsonl, aggregates.jsonl and dead_letters.jsonl.
        #[arg(short, long)]
        out_dir: PathBuf,
        /// Leave open windows and buffered readings unemitted at the end, as a stream that has not ended would
        /// (to compare with what `run` has emitted so far).
        #[arg(long)]
        no_flush: bool,
    },
    /// Run the pipeline on a Kafka cluster: consume the input topic in a consumer group, produce anomalies,
    /// aggregates and dead letters, serve /metrics, /healthz and /readyz. Stops cleanly on SIGTERM or SIGINT.
    Run(Box<RunArgs>),
    /// Write simulated smart-building readings as JSONL, deterministic for a seed.
    Simulate(Box<SimulateArgs>),
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
    /// Produce the records to this Kafka topic (keyed by sensor id) instead of writing JSONL.
    #[arg(long, requires = "bootstrap_servers")]
    topic: Option<String>,
    /// Kafka bootstrap servers for --topic.
    #[arg(long, env = "SENSORPIPE_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
    /// Records per second to produce with --topic (default: as fast as the broker takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// librdkafka property `key=value` for the --topic producer (repeatable).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
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
        Command::Replay { pipeline, input, out_dir, no_flush } => {
            let def = load_pipeline_file(&pipeline)?;
            let pipeline = Pipeline::new(&def).map_err(|e| anyhow::anyhow!("invalid pipeline:\n{e}"))?;
            let mut readers: Vec<Box<dyn BufRead>> = Vec::new();
            for input in &input {
                readers.push(if input == "-" {
                    Box::new(BufReader::with_capacity(1 << 20, io::stdin().lock()))
                } else {
                    let file = File::open(input).with_context(|| format!("cannot open {input}"))?;
                    Box::new(BufReader::with_capacity(1 << 20, file))
                });
            }
            let mut sink = DirectorySink::create(&out_dir)?;
            let summary = replay_partitions(&pipeline, readers, &mut sink, !no_flush)?;
            sink.finish()?;
            eprintln!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::Simulate(args) => simulate(*args),
        Command::Run(args) => sensorpipe_worker::runtime::run(&args),
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
    if let Some(topic) = a.topic {
        let mut kafka = std::collections::BTreeMap::new();
        for entry in &a.kafka_properties {
            let (k, v) =
                entry.split_once('=').with_context(|| format!("--kafka-property {entry:?} is not KEY=VALUE"))?;
            kafka.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        let target = ProduceTarget {
            bootstrap_servers: a.bootstrap_servers.unwrap_or_default(),
            topic: topic.clone(),
            rate: a.rate,
            kafka,
            key_field: "sensor_id".to_owned(),
        };
        let mut writer = TopicWriter::new(&target)?;
        let started = std::time::Instant::now();
        let truth = generate(&cfg, |line| writer.write(line).map_err(io::Error::other))?;
        let sent = writer.finish(std::time::Duration::from_secs(120))?;
        if let Some(path) = a.truth {
            let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            serde_json::to_writer_pretty(BufWriter::new(file), &truth)?;
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!("produced {sent} records to {topic} in {secs:.1} s ({:.0} records/s)", sent as f64 / secs.max(1e-9));
        return Ok(());
    }
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
