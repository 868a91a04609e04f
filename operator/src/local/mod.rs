//! One-machine mode, `sensorpipe run PIPELINE.yaml`: the same manifest a user would `kubectl apply`, run here
//! with an embedded Kafka-protocol broker (or a real cluster), topics created through the operator's own plan,
//! N worker processes in one consumer group, optional simulated or file input, anomalies printed as they fire,
//! and a live page. Ctrl-C stops the input, then the workers (each commits its last batch), then the rest.
//!
//! Rooms: `broker.rs` (embedded broker, topics), `workers.rs` (worker processes), `input.rs` (simulator, JSON
//! lines), `feed.rs` (outputs → terminal and page), `live.rs` (what the page shows), `web.rs` (HTTP, SSE) and
//! `page.html`.

pub mod broker;
pub mod feed;
pub mod input;
pub mod live;
pub mod web;
pub mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sensorpipe_worker::model::Duration as SpecDuration;
use sensorpipe_worker::runtime::produce::ProduceTarget;
use tokio::sync::broadcast;

use crate::crd::{Delivery, SensorPipeline};
use crate::validate::{Role, validate};
use broker::Broker;
use input::Source;
use live::{Live, Stats, Update};
use workers::{Worker, WorkerSettings};

/// `sensorpipe run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The SensorPipeline manifest (the file you would `kubectl apply`).
    pub pipeline: PathBuf,
    /// Use this Kafka cluster instead of the embedded broker (TLS/SASL through --kafka-property).
    #[arg(long, env = "SENSORPIPE_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,
    /// librdkafka property `key=value` for every client on --bootstrap-servers (repeatable).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_properties: Vec<String>,
    /// Worker processes in the consumer group (at most the input's partition count does work).
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Produce simulated sensor readings at this many readings per second (the simulator's episodes make every
    /// rule fire; simulated time runs as fast as the rate makes it).
    #[arg(long, value_name = "READINGS_PER_SECOND", conflicts_with = "input")]
    pub simulate: Option<f64>,
    /// Simulated sensors.
    #[arg(long, default_value_t = 50)]
    pub sensors: usize,
    /// Simulated zones.
    #[arg(long, default_value_t = 5)]
    pub zones: usize,
    /// Simulated time to produce (then the simulation stops; the rest keeps running).
    #[arg(long, default_value = "24h")]
    pub simulate_for: SpecDuration,
    /// Seed of the simulation (the same seed gives the same readings).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Produce JSON lines from this file (`-`: standard input) to the input topic, keyed by the sensor id field.
    #[arg(long, value_name = "FILE")]
    pub input: Option<String>,
    /// Address of the live page.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The worker binary (default: `sensorpipe-worker` next to this one, else on the PATH).
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// Where the workers' logs go (default: a new temporary directory).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Do not print anomalies to the terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(&args.pipeline).with_context(|| format!("cannot read {}", args.pipeline.display()))?;
    let sp: SensorPipeline = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a SensorPipeline manifest", args.pipeline.display()))?;
    let valid = validate(&sp).map_err(|e| anyhow::anyhow!("{}: invalid pipeline: {e}", args.pipeline.display()))?;
    let name = valid.name.clone();

    let broker = match &args.bootstrap_servers {
        None => Broker::embedded()?,
        Some(bs) => {
            let mut properties = std::collections::BTreeMap::from([("bootstrap.servers".to_owned(), bs.clone())]);
            for p in &args.kafka_properties {
                let (k, v) = p.split_once('=').with_context(|| format!("--kafka-property {p:?} is not KEY=VALUE"))?;
                properties.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            Broker::External { bootstrap: bs.clone(), properties }
        }
    };
    let bootstrap = broker.bootstrap();
    let delivery = if broker.is_embedded() {
        "atLeastOnce"
    } else {
        match valid.delivery {
            Delivery::ExactlyOnce => "exactlyOnce",
            Delivery::AtLeastOnce => "atLeastOnce",
        }
    };
    say(&format!(
        "sensorpipe {name}: broker {} ({bootstrap}), delivery {delivery}",
        if broker.is_embedded() { "embedded" } else { "external" }
    ));
    for line in broker.ensure_topics(&sp, Duration::from_secs(10)).await? {
        say(&format!("  {line}"));
    }

    let log_dir = match &args.log_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("sensorpipe-{name}-{}", std::process::id())),
    };
    std::fs::create_dir_all(&log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
    let partitions = valid.topic(Role::Input).partitions.unwrap_or(1).max(1) as usize;
    let replicas = args.replicas.clamp(1, partitions);
    if replicas < args.replicas {
        say(&format!("  {replicas} workers, not {}: the input has {partitions} partitions", args.replicas));
    }
    let settings = WorkerSettings {
        binary: workers::find_binary(args.worker_bin.as_deref()),
        pipeline: args.pipeline.clone(),
        bootstrap: bootstrap.clone(),
        group_id: valid.group_id.clone(),
        state_topic: valid.topic(Role::State).name.clone(),
        repartition_topic: valid
            .repartition_topic()
            .map_or_else(|| format!("{}-repartition", valid.group_id), |t| t.name.clone()),
        delivery: broker.is_embedded().then_some("atLeastOnce"),
        kafka_properties: if broker.is_embedded() { Vec::new() } else { args.kafka_properties.clone() },
        log_dir: log_dir.clone(),
    };
    let mut pool = Vec::new();
    for i in 0..replicas {
        pool.push(Worker::start(i, &settings)?);
    }
    for w in &pool {
        say(&format!("  worker {}: metrics http://{}/metrics, log {}", w.index, w.metrics, w.log.display()));
    }

    // The page and the feed start at once, so the page is up within seconds.
    let mut page = Live::new(&name, &bootstrap, delivery);
    page.metrics = sp.spec.input.format.fields.metrics.clone();
    let live = Arc::new(Mutex::new(page));
    let (updates, _) = broadcast::channel::<Update>(4096);
    let (addr, server) = web::bind(args.listen, live.clone(), updates.clone())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server = tokio::spawn(server);
    say(&format!("live page: http://{addr}/"));

    let stop = Arc::new(AtomicBool::new(false));
    let feed = {
        let (properties, live, updates, stop) = (broker.properties(), live.clone(), updates.clone(), stop.clone());
        let topics = feed::FeedTopics {
            anomalies: valid.topic(Role::Anomalies).name.clone(),
            aggregates: valid.topic(Role::Aggregates).name.clone(),
        };
        let print = !args.quiet;
        std::thread::spawn(move || feed::run(&properties, &topics, &live, &updates, &stop, print))
    };

    // Input starts once every worker has its partitions, so the first readings are not replayed by a rebalance.
    wait_ready(&mut pool, partitions, Duration::from_secs(60)).await?;
    say(&format!("{} workers ready", pool.len()));
    let input_stop = Arc::new(AtomicBool::new(false));
    let source = match (&args.simulate, &args.input) {
        (Some(rate), _) => Some(Source::Simulate {
            rate: *rate,
            sensors: args.sensors,
            zones: args.zones,
            duration_ms: std::time::Duration::from(args.simulate_for).as_millis() as i64,
            seed: args.seed,
        }),
        (None, Some(path)) => Some(Source::Lines(path.clone())),
        (None, None) => None,
    };
    let producer = source.map(|source| {
        let target = ProduceTarget {
            bootstrap_servers: bootstrap.clone(),
            topic: valid.topic(Role::Input).name.clone(),
            rate: match source {
                Source::Simulate { rate, .. } => Some(rate),
                Source::Lines(_) => None,
            },
            kafka: broker.properties().into_iter().filter(|(k, _)| k != "bootstrap.servers").collect(),
            key_field: sp.spec.input.format.fields.sensor_id.clone(),
        };
        let stop = input_stop.clone();
        std::thread::spawn(move || {
            let result = input::produce(&source, &target, &stop);
            match &result {
                Ok(n) if !stop.load(Ordering::Relaxed) => say(&format!("input finished: {n} readings produced")),
                Ok(_) => {}
                Err(e) => say(&format!("error: input stopped: {e:#}")),
            }
            result
        })
    });
    if producer.is_none() {
        say(&format!("waiting for readings on topic {} (Ctrl-C to stop)", valid.topic(Role::Input).name));
    }

    // Stats every second until Ctrl-C / SIGTERM.
    let admin = crate::topics::admin::KafkaAdmin::new(&broker.properties(), Duration::from_secs(5))?;
    let input_topic = valid.topic(Role::Input).name.clone();
    let mut last: Option<(Instant, u64)> = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        let stats = observe(&mut pool, &settings, &admin, &valid.group_id, &input_topic, &mut last).await;
        live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stats = stats.clone();
        let _ = updates.send(Update::Stats(stats));
    }

    say("stopping: input, then workers (each commits its last batch)…");
    input_stop.store(true, Ordering::Relaxed);
    if let Some(p) = producer {
        let _ = tokio::task::spawn_blocking(move || p.join()).await;
    }
    let stopping: Vec<_> =
        pool.into_iter().map(|w| std::thread::spawn(move || w.stop(Duration::from_secs(20)))).collect();
    for s in stopping {
        let _ = s.join();
    }
    // Let the feed read the workers' last outputs before it stops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    if let Ok(Ok(Err(e))) = tokio::task::spawn_blocking(move || feed.join()).await {
        say(&format!("warning: output reader: {e:#}"));
    }
    server.abort();
    let l = live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    say(&format!(
        "stopped: {} anomalies, {} window aggregates seen; worker logs in {}",
        l.anomalies_total,
        l.aggregates_total,
        log_dir.display()
    ));
    Ok(())
}

/// One look at the workers and the group: restarts a worker that died (as a Deployment would; its partitions
/// wait in the group meanwhile), then throughput since the previous look (`last`), readiness and lag.
async fn observe(
    pool: &mut [Worker],
    settings: &WorkerSettings,
    admin: &crate::topics::admin::KafkaAdmin,
    group: &str,
    input: &str,
    last: &mut Option<(Instant, u64)>,
) -> Stats {
    let mut stats = Stats { replicas: pool.len() as u32, ..Stats::default() };
    for w in pool.iter_mut() {
        if let Some(status) = w.exited() {
            say(&format!("worker {} exited ({status}); restarting it. Its log: {}", w.index, w.log.display()));
            match Worker::start(w.index, settings) {
                Ok(fresh) => {
                    say(&format!("  worker {}: metrics http://{}/metrics", fresh.index, fresh.metrics));
                    *w = fresh;
                }
                Err(e) => say(&format!("error: cannot restart worker {}: {e:#}", w.index)),
            }
            continue;
        }
        let scrape = w.scrape().await.unwrap_or_default();
        stats.ready_replicas += u32::from(scrape.ready);
        stats.records_processed += scrape.records_processed;
    }
    let now = Instant::now();
    stats.throughput = match *last {
        Some((t, n)) if now > t => stats.records_processed.saturating_sub(n) as f64 / (now - t).as_secs_f64(),
        _ => 0.0,
    };
    *last = Some((now, stats.records_processed));
    if let Ok(lag) = admin.lag(group, input, jiff::Timestamp::now().as_millisecond()).await {
        stats.lag_records = lag.records;
        stats.lag_seconds = lag.oldest_unprocessed_ms.unwrap_or(0) as f64 / 1000.0;
    }
    stats
}

/// Waits until every worker is ready and together they own all `partitions`: a worker is ready as soon as it
/// has some partitions, and the group may still be handing the rest to the others.
async fn wait_ready(pool: &mut [Worker], partitions: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (mut ready, mut assigned) = (0, 0);
        for w in pool.iter_mut() {
            if let Some(status) = w.exited() {
                bail!("worker {} exited ({status}) before it was ready; its log: {}", w.index, w.log.display());
            }
            let scrape = w.scrape().await.unwrap_or_default();
            ready += usize::from(scrape.ready);
            assigned += scrape.assigned_partitions;
        }
        if ready == pool.len() && assigned == partitions {
            return Ok(());
        }
        if Instant::now() > deadline {
            say(&format!(
                "warning: {ready} of {} workers ready, {assigned} of {partitions} partitions assigned after \
                 {timeout:?}; starting anyway",
                pool.len()
            ));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return ctrl_c.await.unwrap_or_default(),
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// A status line for the user (stderr, so stdout carries only the anomalies).
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
