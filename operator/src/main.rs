//! Entry point of the operator binary: `run` the controller (with leader election), or print the `crd`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::LeaseManagerBuilder;
use sensorpipe_operator::build::Defaults;
use sensorpipe_operator::controller::{self, Context};
use sensorpipe_operator::health::{Role, Watchdog};
use sensorpipe_operator::http::{self, Health};
use sensorpipe_operator::metrics::Metrics;
use sensorpipe_worker::model::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "sensorpipe-operator",
    version,
    about = "Reconciles SensorPipeline resources into Kafka topics and workers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller against the cluster of the in-cluster config or $KUBECONFIG.
    Run(RunArgs),
    /// Print the SensorPipeline CustomResourceDefinition as YAML (what `crds/` holds).
    Crd,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Worker image for pipelines that do not set `spec.workers.image`.
    #[arg(long, env = "SENSORPIPE_WORKER_IMAGE")]
    worker_image: String,
    /// Give each pipeline a ServiceMonitor for its workers when the cluster serves the Prometheus Operator's CRD.
    /// Turn off when another scrape config (such as the chart's PodMonitor) covers the workers; existing ones are
    /// then deleted.
    #[arg(long, env = "SENSORPIPE_WORKER_SERVICE_MONITORS", default_value_t = true, action = clap::ArgAction::Set)]
    worker_service_monitors: bool,
    /// Watch SensorPipelines in these namespaces only (comma-separated), reading Deployments and Secrets there
    /// alone, so that Roles in them are all the RBAC it needs. Empty: the whole cluster.
    #[arg(long, env = "SENSORPIPE_WATCH_NAMESPACES", value_delimiter = ',', value_parser = namespace_name)]
    watch_namespaces: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "SENSORPIPE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Elect a leader through a Lease, so only one replica reconciles. Off: this process always reconciles.
    #[arg(long, env = "SENSORPIPE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader Lease (default: the operator's own, from the service account, else `default`).
    #[arg(long, env = "SENSORPIPE_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "SENSORPIPE_LEASE_NAME", default_value = "sensorpipe-operator")]
    lease_name: String,
    /// How long a leader holds the Lease without renewing it.
    #[arg(long, env = "SENSORPIPE_LEASE_DURATION", default_value = "15s")]
    lease_duration: Duration,
    /// How often a healthy pipeline is observed again (lag, autoscaler, status).
    #[arg(long, env = "SENSORPIPE_RESYNC", default_value = "15s")]
    resync: Duration,
    /// Timeout of each Kafka admin call.
    #[arg(long, env = "SENSORPIPE_KAFKA_TIMEOUT", default_value = "10s")]
    kafka_timeout: Duration,
    /// Log as JSON lines.
    #[arg(long, env = "SENSORPIPE_LOG_JSON")]
    log_json: bool,
}

/// A namespace name as Kubernetes allows it (an RFC 1123 label), so a typo fails at start, not as a 404 later.
fn namespace_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    let label = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if label { Ok(s.to_owned()) } else { Err(format!("{s:?} is not a namespace name (RFC 1123 label)")) }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match sensorpipe_operator::crd::crd_yaml() {
            Ok(yaml) => {
                #[allow(clippy::print_stdout)]
                {
                    print!("{yaml}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            init_logging(args.log_json);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// While leading: reads the Lease every third of its duration and tells the watchdog when its renewal time
/// moved, so that `/healthz` fails when renewals stop (a stuck lease task would otherwise leave a leader that
/// believes it leads while a standby takes over).
async fn watch_renewals(
    leases: Api<Lease>,
    name: String,
    identity: String,
    duration: std::time::Duration,
    watchdog: Watchdog,
) {
    let within = duration * 2;
    watchdog.lease_renewed(within);
    let mut last = None;
    loop {
        tokio::time::sleep((duration / 3).max(std::time::Duration::from_secs(1))).await;
        match leases.get(&name).await {
            Ok(lease) => {
                let spec = lease.spec.unwrap_or_default();
                let renewed = spec.renew_time.map(|t| t.0);
                if spec.holder_identity.as_deref() == Some(identity.as_str()) && renewed != last {
                    watchdog.lease_renewed(within);
                    last = renewed;
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading the leader lease"),
        }
    }
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn,rdkafka=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json { builder.json().init() } else { builder.init() }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // One TLS provider, chosen here: feature unification (the test build links kube's default aws-lc-rs beside
    // our ring) must not make the client panic at its first connection.
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        tracing::debug!("a TLS crypto provider was already installed");
    }
    let metrics = Metrics::new()?;
    // A reconcile makes a handful of Kafka calls, each bounded by --kafka-timeout, and API calls: one running
    // twenty timeouts (at least 5 minutes) is stuck.
    let kafka_timeout: std::time::Duration = args.kafka_timeout.into();
    let watchdog = Watchdog::new((kafka_timeout * 20).max(std::time::Duration::from_secs(300)));
    let server =
        tokio::spawn(http::serve(args.http_addr, Health { metrics: metrics.clone(), watchdog: watchdog.clone() }));
    let client = kube::Client::try_default().await?;
    client.apiserver_version().await?;
    watchdog.set_role(if args.leader_election { Role::Standby } else { Role::Leading });
    let scope = if args.watch_namespaces.is_empty() { "cluster".to_owned() } else { args.watch_namespaces.join(",") };
    tracing::info!(addr = %args.http_addr, leader_election = args.leader_election, watching = %scope, "sensorpipe-operator started");

    let mut ctx = Context::new(
        client.clone(),
        Defaults { worker_image: args.worker_image.clone(), service_monitors: args.worker_service_monitors },
        metrics.clone(),
        args.kafka_timeout.into(),
        args.resync.into(),
    );
    ctx.watchdog = watchdog.clone();
    let ctx = Arc::new(ctx.watching(args.watch_namespaces.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };

    if !args.leader_election {
        metrics.leader.set(1);
        controller::run(ctx, stopped()).await;
        return Ok(());
    }
    let namespace = args.lease_namespace.clone().unwrap_or_else(own_namespace);
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("sensorpipe-operator-{}", std::process::id()));
    let lease_seconds = std::time::Duration::from(args.lease_duration).as_secs().max(2);
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(lease_seconds)
        .with_grace(lease_seconds / 3)
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(lease = %args.lease_name, namespace, identity, "waiting for the leader lease");
    let mut stop = stop_rx.clone();
    let elected = tokio::select! {
        r = leader.wait_for(|l| *l) => { r?; true }
        _ = stop.wait_for(|s| *s) => false,
    };
    if !elected {
        drop(leader);
        let _ = lease_task.await;
        return Ok(());
    }
    tracing::info!(identity, "leading: reconciling");
    metrics.leader.set(1);
    watchdog.set_role(Role::Leading);
    let renewals = tokio::spawn(watch_renewals(
        Api::namespaced(client, &namespace),
        args.lease_name.clone(),
        identity.clone(),
        std::time::Duration::from_secs(lease_seconds),
        watchdog.clone(),
    ));
    let mut lost = leader.clone();
    let lost_or_stopped = {
        let stopped = stopped();
        async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => tracing::warn!("leader lease lost; stopping"),
                _ = stopped => {},
            }
        }
    };
    controller::run(ctx, lost_or_stopped).await;
    renewals.abort();
    metrics.leader.set(0);
    watchdog.set_role(Role::Standby);
    let lost = !*leader.borrow();
    // Closing the channel releases the lease, so a standby takes over without waiting for it to expire.
    drop(leader);
    let _ = lease_task.await;
    server.abort();
    if lost && !*stop_rx.borrow() {
        anyhow::bail!("lost the leader lease; exiting so a fresh start can compete for it again");
    }
    Ok(())
}

fn own_namespace() -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "default".to_owned())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            return;
        }
    }
    let _ = ctrl_c.await;
}
