//! The worker replicas of one-machine mode: `sensorpipe-worker run` processes in one consumer group, as the
//! operator's Deployment would run them, each serving its Prometheus metrics on its own loopback port. Each runs
//! in its own process group, so a Ctrl-C in the terminal reaches this process only and the workers are stopped in
//! order (SIGTERM: they finish their batch and commit); with `--parent-pid` they exit by themselves if this process
//! dies without stopping them.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How to start the workers.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub binary: PathBuf,
    pub pipeline: PathBuf,
    pub bootstrap: String,
    pub group_id: String,
    /// The internal topics, as the operator's plan names them.
    pub state_topic: String,
    pub repartition_topic: String,
    /// `Some("atLeastOnce")` on the embedded broker; `None` leaves the pipeline's choice.
    pub delivery: Option<&'static str>,
    pub kafka_properties: Vec<String>,
    pub log_dir: PathBuf,
}

/// A worker's own view of itself, from one scrape of its metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scrape {
    pub ready: bool,
    pub assigned_partitions: usize,
    pub records_processed: u64,
}

/// One running worker.
#[derive(Debug)]
pub struct Worker {
    pub index: usize,
    pub metrics: SocketAddr,
    pub log: PathBuf,
    child: Child,
    /// Records of this topic are the merge stage's, not readings: not counted as processed.
    repartition_topic: String,
}

/// The worker binary: `--worker-bin`, else `sensorpipe-worker` next to this executable, else on the PATH.
pub fn find_binary(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("sensorpipe-worker")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("sensorpipe-worker"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Worker {
    pub fn start(index: usize, s: &WorkerSettings) -> anyhow::Result<Self> {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = s.log_dir.join(format!("worker-{index}.log"));
        // Appended to, so a restarted worker's log follows the one that died.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(&s.binary);
        cmd.arg("run")
            .arg("--pipeline")
            .arg(&s.pipeline)
            .args(["--bootstrap-servers", &s.bootstrap, "--group-id", &s.group_id])
            .args(["--state-topic", &s.state_topic, "--repartition-topic", &s.repartition_topic])
            .args(["--http-addr", &metrics.to_string()])
            // Workers stop when this process is gone, even after a SIGKILL that leaves no time to stop them.
            .args(["--parent-pid", &std::process::id().to_string()])
            // A restarted or added worker joins within seconds instead of the 45 s default session timeout.
            .args(["--kafka-property", "session.timeout.ms=6000"]);
        if let Some(d) = s.delivery {
            cmd.args(["--delivery", d]);
        }
        for p in &s.kafka_properties {
            cmd.args(["--kafka-property", p]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {} (set --worker-bin)", s.binary.display()))?;
        Ok(Self { index, metrics, log, child, repartition_topic: s.repartition_topic.clone() })
    }

    /// What the worker reports on `/metrics`, `None` when it does not answer.
    pub async fn scrape(&self) -> Option<Scrape> {
        let (status, text) = get(self.metrics, "/metrics").await?;
        (status == 200).then(|| Scrape {
            // The gauge behind /readyz: partitions assigned and no restore running.
            ready: sum_metric(&text, "sensorpipe_worker_ready") >= 1.0,
            assigned_partitions: sum_metric(&text, "sensorpipe_worker_assigned_partitions") as usize,
            records_processed: (sum_metric(&text, "sensorpipe_worker_records_consumed_total")
                - sum_metric_of(&text, "sensorpipe_worker_records_consumed_total", &self.repartition_topic))
                as u64,
        })
    }

    /// The exit status if the worker has stopped.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on a worker's loopback endpoint: status and body, `None` when it does not answer within 2 s.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent.get(&url).call().ok()?;
        let status = response.status().as_u16();
        Some((status, response.body_mut().read_to_string().ok()?))
    })
    .await
    .ok()
    .flatten()
}

/// Sum of a metric family's samples in an exposition (all label sets).
/// The sum of the series of `name` whose `topic` label is `topic`.
fn sum_metric_of(text: &str, name: &str, topic: &str) -> f64 {
    let label = format!("topic=\"{topic}\"");
    text.lines()
        .filter(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b'{') && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{' | b' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_series_of_one_family_only() {
        let text = "# TYPE x_total counter\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3.5\nx_total_other 100\nx_totals 7\n";
        assert!((sum_metric(text, "x_total") - 5.5).abs() < 1e-9);
        assert!(sum_metric(text, "missing").abs() < 1e-9);
        let text = "x_total{topic=\"in\",o=\"a\"} 2\nx_total{topic=\"in-repartition\"} 3\n";
        assert!((sum_metric_of(text, "x_total", "in-repartition") - 3.0).abs() < 1e-9);
    }
}
