//! Test harness: the Apache Kafka broker these tests run against, and unique names on it.
//!
//! The test command starts one broker for the whole run (`e2e/brokers.py serve`) and names its `cluster.json` in
//! `SENSORPIPE_TEST_KAFKA`; every test shares it, with topics and groups of its own. Without that variable (a plain
//! `cargo test`), the first test of this process starts a broker the same way, kept until the process exits (the
//! harness watches this process's PID). Kafka itself is installed by `scripts/kafka.sh`.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)] // test harness: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The broker of this test process.
#[derive(Debug)]
pub struct Kafka {
    pub bootstrap: String,
    /// The harness process when this process started the broker (stopped with it).
    _harness: Option<Child>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bootstrap_of(cluster_json: &str) -> String {
    let info: serde_json::Value = serde_json::from_str(cluster_json).expect("cluster.json is JSON");
    info["bootstrap"].as_str().expect("cluster.json names the bootstrap servers").to_owned()
}

fn start_own() -> Kafka {
    let root = root();
    let python = root.join("target/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/venv.sh and scripts/kafka.sh", python.display());
    let dir = std::env::temp_dir().join(format!("sensorpipe-test-kafka-{}", std::process::id()));
    let mut child = Command::new(python)
        .arg(root.join("e2e/brokers.py"))
        .args(["serve", "--dir"])
        .arg(&dir)
        .args(["--parent-pid", &std::process::id().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Kafka harness");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("harness stdout")).read_line(&mut line).expect("harness output");
    assert!(!line.trim().is_empty(), "the Kafka harness exited without starting a broker (logs in {})", dir.display());
    Kafka { bootstrap: bootstrap_of(&line), _harness: Some(child) }
}

/// The shared broker (the test command's, or one started for this process).
pub fn kafka() -> &'static Kafka {
    static KAFKA: OnceLock<Kafka> = OnceLock::new();
    KAFKA.get_or_init(|| match std::env::var_os("SENSORPIPE_TEST_KAFKA") {
        Some(path) => {
            let text = std::fs::read_to_string(Path::new(&path))
                .unwrap_or_else(|e| panic!("SENSORPIPE_TEST_KAFKA={}: {e}", Path::new(&path).display()));
            Kafka { bootstrap: bootstrap_of(&text), _harness: None }
        }
        None => start_own(),
    })
}

/// A name no other test on the shared broker uses: `prefix`, this process's id, the time and a counter.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{prefix}-{}-{}-{}", std::process::id(), ms % 1_000_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl Kafka {
    /// Partitions of `topic`, or `None` when it does not exist.
    pub fn partitions(&self, topic: &str) -> Option<usize> {
        let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().ok()?;
        let md = probe.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
        md.topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|n| *n > 0)
    }

    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }
}
