//! The Kafka runtime: the engine inside a consumer group, with exactly-once or at-least-once delivery, state
//! snapshots and restore, a dead-letter topic, metrics and health endpoints. Design: docs/runtime.md.
//!
//! - [`config`]: flags, environment and manifest → [`RuntimeConfig`].
//! - `group`: the consumer loop and rebalance handling; `partition`: one partition's engine and transactions.
//! - `parallel`: partitions processed on several cores, each from a queue of its own.
//! - `repartition`: the topic between the two stages of zone and label windows; `restore`: snapshot lookup and
//!   replay; `kafka`: client settings; `bounded`: transactional calls with a
//!   deadline of their own; [`metrics`], `http`.
//! - [`produce`]: writing simulated readings to a topic at a rate.

mod bounded;
pub mod config;
mod group;
mod http;
mod kafka;
pub mod metrics;
mod parallel;
mod partition;
pub mod produce;
mod repartition;
mod restore;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};

pub use config::{Delivery, RunArgs, RuntimeConfig, Topics};
pub use group::RunError;
pub use partition::{DETAIL_HEADER, ORIGINAL_SIZE_HEADER, ORIGINAL_XXH3_HEADER, REASON_HEADER, SOURCE_HEADER};

use crate::engine::Pipeline;
use crate::model::load_pipeline_file;
use metrics::Metrics;

/// Liveness and readiness, shared by the loop and the HTTP server.
#[derive(Debug, Default)]
pub struct Health {
    pub assigned: AtomicBool,
    pub restoring: AtomicUsize,
    pub stopping: AtomicBool,
    last_beat_ms: AtomicI64,
    /// Per stage (input, merge), what its last housekeeping round found wrong.
    trouble: Mutex<[Trouble; 2]>,
    /// A fatal error no retry fixes; the loop exits with it (non-zero, so the orchestrator restarts the worker).
    fatal: Mutex<Option<String>>,
}

/// What is wrong with a stage's tasks, for /readyz and /healthz.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Trouble {
    /// Tasks whose last batches failed twice or more in a row (waiting out their backoff), and the latest reason.
    pub blocked: usize,
    pub reason: Option<String>,
    /// A task with lag that committed nothing for the stall timeout.
    pub stalled: Option<String>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

impl Health {
    pub fn beat(&self) {
        self.last_beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn since_beat(&self) -> Option<Duration> {
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        (last > 0).then(|| Duration::from_millis(u64::try_from(now_ms() - last).unwrap_or_default()))
    }

    pub fn ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed) && self.restoring.load(Ordering::Relaxed) == 0 && self.blocked().is_none()
    }

    fn trouble(&self) -> std::sync::MutexGuard<'_, [Trouble; 2]> {
        self.trouble.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set_trouble(&self, stage: usize, trouble: Trouble) {
        self.trouble()[stage] = trouble;
    }

    /// Why batches keep failing, when some do: "N partition(s) retrying: <reason>".
    pub fn blocked(&self) -> Option<String> {
        let t = self.trouble();
        let blocked: usize = t.iter().map(|s| s.blocked).sum();
        let reason = t.iter().find_map(|s| s.reason.clone()).unwrap_or_default();
        (blocked > 0).then(|| format!("{blocked} partition(s) retrying failed batches: {reason}"))
    }

    pub(crate) fn blocked_count(&self) -> usize {
        self.trouble().iter().map(|s| s.blocked).sum()
    }

    /// Records a fatal error (the first one wins); the group loop stops with it at its next round.
    pub(crate) fn fail(&self, why: String) {
        let mut fatal = self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if fatal.is_none() {
            tracing::error!(error = why, "fatal error; the worker exits");
            *fatal = Some(why);
        }
    }

    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A partition that makes no progress while it has lag, if there is one.
    pub fn stalled(&self) -> Option<String> {
        self.trouble().iter().find_map(|s| s.stalled.clone())
    }
}

/// What the loop's parts share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: RuntimeConfig,
    pub pipeline: Pipeline,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Limit of one blocking Kafka call (transaction commit, offset fetch, metadata).
    pub kafka_timeout: Duration,
    pub state_partitions: i32,
    /// Some aggregation groups by zone or label: stage 1 emits partials to the repartition topic and this
    /// worker also runs stage-2 tasks for the repartition partitions it is given.
    pub merge: bool,
    pub input_partitions: i32,
    /// 0 without a merge stage.
    pub repartition_partitions: i32,
    /// Dead letters larger than this (value, key, detail and source) are cut (reason `too_large`).
    pub dead_letter_limit: usize,
    /// Processes partitions in parallel; `None` with one thread.
    pub pool: Option<rayon::ThreadPool>,
    /// Wakes the idle poll loop when a record, a rebalance or an error arrives.
    pub wake: Arc<parallel::Wake>,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SENSORPIPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless; ignore its error.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// How long a topic missing at start is waited for (ample for the metadata of a just-created topic to spread).
const TOPIC_WAIT: Duration = Duration::from_secs(10);

/// Number of partitions of `topic`, with a message that says what to do when it is missing. A topic created a
/// moment ago may not have reached the broker asked yet (metadata spreads from the controller to every broker),
/// so a missing topic is asked for again until `timeout` has passed.
fn partitions_of(cfg: &RuntimeConfig, topic: &str, timeout: Duration) -> anyhow::Result<i32> {
    let probe: BaseConsumer = kafka::reader(cfg, true).create()?;
    let deadline = std::time::Instant::now() + timeout;
    let mut said = false;
    loop {
        let md = probe
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| format!("cannot read metadata of topic {topic} from {}", cfg.bootstrap_servers))?;
        let t = md.topics().first().filter(|t| t.error().is_none() && !t.partitions().is_empty());
        if let Some(t) = t {
            return Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX));
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "topic {topic} does not exist on {}; create it (the operator does) and retry",
                cfg.bootstrap_servers
            )
        }
        if !std::mem::replace(&mut said, true) {
            tracing::info!(topic, "topic not in the cluster metadata yet; waiting up to {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The largest dead letter sent whole: the producer's `message.max.bytes` (librdkafka's default 1 000 000) and at
/// most Kafka's default topic limit (`max.message.bytes`, 1 MiB), less room for headers and record overhead.
fn dead_letter_limit(cfg: &RuntimeConfig) -> usize {
    let producer_max = cfg.kafka.get("message.max.bytes").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1_000_000);
    producer_max.min(1 << 20).saturating_sub(4096)
}

/// `sensorpipe-worker run`: runs until SIGTERM or SIGINT, then commits, leaves the group and exits.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let cfg = args.resolve(std::env::vars())?;
    init_logging(args.log_json);
    let def = load_pipeline_file(&args.pipeline)?;
    let pipeline = Pipeline::new(&def).map_err(|e| anyhow::anyhow!("invalid pipeline:\n{e}"))?;
    let metrics = Arc::new(Metrics::new(&cfg.name, cfg.zone_gauge_limit)?);
    metrics.initialise_topics(&cfg.topics);
    let health = Arc::new(Health::default());
    let kafka_timeout = cfg.kafka_timeout;
    tracing::info!(
        pipeline = %cfg.name,
        bootstrap = %cfg.bootstrap_servers,
        group = %cfg.group_id,
        delivery = cfg.delivery.as_str(),
        topics = ?cfg.topics,
        kafka_properties = ?cfg.kafka.keys().collect::<Vec<_>>(),
        "starting"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(cfg.http_addr))
        .with_context(|| format!("cannot listen on {}", cfg.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let (stop_http, stopped_http) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(http::serve(listener, metrics.clone(), health.clone(), async {
        let _ = stopped_http.await;
    }));
    let signal_health = health.clone();
    let parent = args.parent_pid;
    runtime.spawn(async move {
        tokio::select! {
            () = wait_for_signal() => {}
            () = parent_gone(parent) => {
                // No orderly stop: the parent may have taken the (embedded) broker with it, and a commit would
                // wait for it. Nothing is lost: the last batch's input offsets are not committed either.
                tracing::error!("the parent process is gone; exiting");
                std::process::exit(1);
            }
        }
        tracing::info!("stop requested");
        signal_health.stopping.store(true, Ordering::Relaxed);
    });

    let state_partitions = partitions_of(&cfg, &cfg.topics.state, TOPIC_WAIT)?;
    let input_partitions = partitions_of(&cfg, &cfg.topics.input, TOPIC_WAIT)?;
    let merge = pipeline.has_merge_stage();
    let repartition_partitions = if merge { partitions_of(&cfg, &cfg.topics.repartition, TOPIC_WAIT)? } else { 0 };
    let dead_letter_limit = dead_letter_limit(&cfg);
    let pool = parallel::pool(cfg.threads)?;
    tracing::info!(threads = cfg.threads, "processing threads");
    let shared = Arc::new(Shared {
        pool,
        wake: Arc::default(),
        dead_letter_limit,
        cfg,
        pipeline,
        metrics,
        health,
        kafka_timeout,
        state_partitions,
        merge,
        input_partitions,
        repartition_partitions,
    });
    let consumer = group::consumer(shared.clone(), partition::Stage::Input)?;
    let merge = if shared.merge { Some(group::consumer(shared.clone(), partition::Stage::Merge)?) } else { None };
    let result = group::run(&shared, consumer, merge);
    let _ = stop_http.send(());
    let _ = runtime.block_on(server);
    result.map_err(Into::into)
}

/// Resolves when `parent` is set and is no longer this process's parent (it exited; we were re-parented).
async fn parent_gone(parent: Option<u32>) {
    let Some(parent) = parent else { return std::future::pending().await };
    loop {
        if std::os::unix::process::parent_id() != parent {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
