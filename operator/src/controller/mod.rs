//! The controller: watches SensorPipelines (and the Deployments they own) and reconciles each as a pipeline —
//! dereference (the only reads) → validate (pure) → topics → autoscaler → build (pure) → apply → status.
//!
//! Permanent failures (an invalid spec) get a Degraded condition and a Warning Event and wait for a change;
//! transient ones (Kafka or the API unreachable) are retried with exponential backoff. A malformed object is
//! caught by `DeserializeGuard` and reported on the object, so it never breaks the watch of the others.

mod conflicts;
mod deref;
mod reconcile;
pub mod status;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource};

pub use conflicts::claimed_by_others;
pub use reconcile::{FIELD_MANAGER, FINALIZER, reconcile};

use crate::autoscale::Autoscaler;
use crate::build::Defaults;
use crate::crd::SensorPipeline;
use crate::health::Watchdog;
use crate::metrics::Metrics;
use crate::topics::{AdminError, KafkaAdmin};

/// Why a reconcile failed (transient: retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Kafka(#[from] AdminError),
    #[error("{0}")]
    Secret(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Deletion waits for the workers to leave the consumer group: not a failure, the finalizer stays and the
    /// cleanup runs again shortly.
    #[error("waiting for the workers to leave consumer group {0}")]
    WorkersStopping(String),
}

impl Error {
    /// Bounded reason, for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::Kafka(e) => e.reason(),
            Error::Secret(_) => "SecretMissing",
            Error::Finalizer(_) => "Finalizer",
            Error::WorkersStopping(_) => "WorkersStopping",
        }
    }
}

/// What the operator remembers about a pipeline between reconciles (lost on restart, which costs one
/// observation window of autoscaler history).
#[derive(Debug, Default)]
pub(crate) struct Memory {
    pub autoscaler: Autoscaler,
    /// (when, committed offsets summed) at the previous lag observation, for throughput.
    pub last_committed: Option<(Instant, i64)>,
    pub failures: u32,
}

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub defaults: Defaults,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// Timeout of each Kafka admin call.
    pub kafka_timeout: Duration,
    /// How often a healthy pipeline is observed again (lag, autoscaler, status).
    pub resync: Duration,
    /// Reconciles in flight, for `/healthz`.
    pub watchdog: Watchdog,
    /// The namespaces watched (`--watch-namespaces`); empty: the whole cluster. A namespaced install reads
    /// pipelines, Deployments and Secrets of these namespaces only, so its RBAC can be Roles in them.
    pub namespaces: Vec<String>,
    memory: Mutex<HashMap<String, Memory>>,
    admins: Mutex<HashMap<u64, KafkaAdmin>>,
    service_monitor: Mutex<Option<(Instant, bool)>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("defaults", &self.defaults).finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        defaults: Defaults,
        metrics: Metrics,
        kafka_timeout: Duration,
        resync: Duration,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: "sensorpipe-operator".into(), instance: std::env::var("POD_NAME").ok() },
        );
        Self {
            client,
            defaults,
            metrics,
            recorder,
            kafka_timeout,
            resync,
            watchdog: Watchdog::default(),
            namespaces: Vec::new(),
            memory: Mutex::default(),
            admins: Mutex::default(),
            service_monitor: Mutex::default(),
        }
    }

    /// Watches these namespaces only (empty: the whole cluster).
    pub fn watching(mut self, namespaces: Vec<String>) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// One API per watched namespace, or one for the whole cluster.
    pub(crate) fn apis<K>(&self) -> Vec<Api<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        if self.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.namespaces.iter().map(|ns| Api::namespaced(self.client.clone(), ns)).collect()
        }
    }

    pub(crate) fn memory<T>(&self, key: &str, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut all = self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(all.entry(key.to_owned()).or_default())
    }

    pub(crate) fn forget(&self, key: &str) {
        self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
        self.metrics.forget(key);
    }

    /// One admin client per distinct connection settings, reused across reconciles.
    pub(crate) fn admin(
        &self,
        properties: &std::collections::BTreeMap<String, String>,
    ) -> Result<KafkaAdmin, AdminError> {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (k, v) in properties {
            h.update(k.as_bytes());
            h.update(&[0]);
            h.update(v.as_bytes());
            h.update(&[0]);
        }
        let key = h.digest();
        let mut admins = self.admins.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(a) = admins.get(&key) {
            return Ok(a.clone());
        }
        let admin = KafkaAdmin::new(properties, self.kafka_timeout)?;
        admins.insert(key, admin.clone());
        Ok(admin)
    }

    /// Whether the cluster serves the Prometheus Operator's ServiceMonitor (checked at most every 5 minutes).
    pub(crate) async fn has_service_monitor(&self) -> bool {
        if let Some((at, yes)) = *self.service_monitor.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
            && at.elapsed() < Duration::from_secs(300)
        {
            return yes;
        }
        let yes = match self.client.list_api_group_resources("monitoring.coreos.com/v1").await {
            Ok(list) => list.resources.iter().any(|r| r.kind == "ServiceMonitor"),
            Err(_) => false,
        };
        *self.service_monitor.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), yes));
        yes
    }
}

/// Retries a failed reconcile with exponential backoff (5 s doubling, at most 5 minutes).
pub fn error_policy(sp: Arc<DeserializeGuard<SensorPipeline>>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = reconcile::key_of(sp.as_ref());
    if let Error::WorkersStopping(group) = error {
        tracing::info!(pipeline = %key, group, "waiting for the workers to leave the consumer group");
        return Action::requeue(Duration::from_secs(2));
    }
    ctx.metrics.reconcile_errors.with_label_values(&[&key, error.reason()]).inc();
    let failures = ctx.memory(&key, |m| {
        m.failures = m.failures.saturating_add(1);
        m.failures
    });
    // 5 s, 10 s, … 160 s, then the 5-minute cap (the exponent stops at 6: 5 s × 2⁶ = 320 s).
    let delay =
        Duration::from_secs(5u64.saturating_mul(1 << failures.min(7).saturating_sub(1))).min(Duration::from_secs(300));
    tracing::warn!(pipeline = %key, error = %error, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// What of a pipeline is worth a reconcile when it changes: the spec (`metadata.generation`), a deletion, and
/// the finalizers, labels and annotations — not its status, which the reconcile itself writes. Lag, throughput
/// and autoscaling are refreshed by the requeue timer (`--resync`) instead.
fn worth_a_reconcile(sp: &DeserializeGuard<SensorPipeline>) -> Option<u64> {
    let meta = sp.meta();
    let mut h = std::hash::DefaultHasher::new();
    (meta.generation, meta.deletion_timestamp.is_some(), &meta.finalizers, &meta.labels, &meta.annotations)
        .hash(&mut h);
    Some(h.finish())
}

/// Runs the controller until `shutdown` resolves: one per watched namespace (a namespaced install may list and
/// watch nothing cluster-wide), or one for the whole cluster.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let shutdown = shutdown.shared();
    let deployments = ctx.apis::<Deployment>();
    let controllers = ctx
        .apis::<DeserializeGuard<SensorPipeline>>()
        .into_iter()
        .zip(deployments)
        .map(|(pipelines, deployments)| run_one(ctx.clone(), pipelines, deployments, shutdown.clone()));
    futures::future::join_all(controllers).await;
}

async fn run_one(
    ctx: Arc<Context>,
    pipelines: Api<DeserializeGuard<SensorPipeline>>,
    deployments: Api<Deployment>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (reader, writer) = reflector::store();
    // Every status write is a change of the watched object; without this filter each one triggered the next
    // reconcile, and with data flowing (lag and throughput change every time) the operator never rested.
    let changes = watcher(pipelines, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(worth_a_reconcile, PredicateConfig::default());
    Controller::for_stream(changes, reader)
        .owns(deployments, watcher::Config::default().labels("app.kubernetes.io/managed-by=sensorpipe-operator"))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
