//! Transaction and produce faults that a real broker cannot be made to produce on demand — EndTxn answered with
//! a retriable, an abortable, a fencing or an authorization error, produce requests refused — injected with
//! librdkafka's mock cluster (`rdkafka::mocking`), with the worker binary running against it over loopback.
//!
//! The mock cluster is a stand-in where nothing real can do this: it writes no transaction markers and filters
//! no aborted records, and it keeps no transactional offset commits. So these tests check how the worker answers
//! each fault — the same call retried, the batch aborted and redone, the producer replaced, the process exiting
//! non-zero — and that nothing is lost; read_committed visibility (no duplicates after an abort) is checked on
//! Apache Kafka by the e2e tests (`e2e/test_chaos.py`, `e2e/test_worker_faults.py`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the failure report

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sensorpipe_worker::engine::{Outputs, Pipeline};
use sensorpipe_worker::model::load_pipeline;

const PIPELINE: &str = r#"
apiVersion: sensorpipe.io/v1alpha1
kind: SensorPipeline
metadata: {name: mock}
spec:
  kafka: {bootstrapServers: "unused:9092"}
  input:
    topic: readings
    fields: {sensorId: sensor_id, timestamp: timestamp, timestampUnit: epochSeconds, metrics: [temperature]}
  processing:
    eventTime: {maxOutOfOrderness: 10s, allowedLateness: 30s, idleTimeout: 0s}
    thresholds:
      - {name: overheat, metric: temperature, above: 30, clear: 29, severity: critical}
    aggregations:
      - name: sensor-1m
        window: {type: tumbling, size: 1m}
        groupBy: sensor
        metrics: [temperature]
        functions: [avg, count]
  outputs:
    anomalies: {topic: anomalies}
    aggregates: {topic: aggregates}
    deadLetter: {topic: dead-letters}
  workers: {delivery: exactlyOnce}
"#;

const PARTITIONS: i32 = 2;
const SENSORS: usize = 10;
const READINGS_PER_SENSOR: usize = 120;

/// One mock cluster with the pipeline's topics and a known input, and the outputs `replay` gives for it.
struct Setup {
    mock: MockCluster<'static, DefaultProducerContext>,
    dir: tempfile::TempDir,
    pipeline_file: PathBuf,
    /// Ids of the anomalies and aggregates a stream that has seen the input emits, sorted.
    expected: Vec<String>,
}

fn reading(sensor: usize, i: usize) -> Vec<u8> {
    // A sawtooth that crosses the 30 °C threshold every 40 readings, 10 s apart.
    let temperature = 20.0 + ((i + sensor * 7) % 40) as f64 / 2.0;
    let ts = 1_673_049_600 + (i as i64) * 10;
    format!(r#"{{"sensor_id":"s{sensor}","timestamp":{ts},"temperature":{temperature}}}"#).into_bytes()
}

fn setup() -> Setup {
    let mock = MockCluster::new(1).unwrap();
    for (topic, partitions) in
        [("readings", PARTITIONS), ("anomalies", 1), ("aggregates", 1), ("dead-letters", 1), ("mock-state", PARTITIONS)]
    {
        mock.create_topic(topic, partitions, 1).unwrap();
    }
    let producer: BaseProducer = client(&mock.bootstrap_servers()).create().unwrap();
    let pipeline = Pipeline::new(&load_pipeline(PIPELINE, "mock").unwrap()).unwrap();
    let mut engines: Vec<_> = (0..PARTITIONS).map(|_| pipeline.engine()).collect();
    let mut out = Outputs::default();
    for i in 0..READINGS_PER_SENSOR {
        for sensor in 0..SENSORS {
            let partition = (sensor % PARTITIONS as usize) as i32;
            let value = reading(sensor, i);
            let key = format!("s{sensor}");
            producer.send(BaseRecord::to("readings").partition(partition).key(&key).payload(&value)).unwrap();
            engines[partition as usize].process(&value, &mut out);
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut expected: Vec<String> = out.anomalies.iter().map(|a| a.id.clone()).collect();
    expected.extend(out.aggregates.iter().map(|a| a.id.clone()));
    expected.sort();
    assert!(expected.len() > 50, "the input must give outputs to check: {}", expected.len());
    let dir = tempfile::tempdir().unwrap();
    let pipeline_file = dir.path().join("pipeline.yaml");
    std::fs::write(&pipeline_file, PIPELINE).unwrap();
    Setup { mock, dir, pipeline_file, expected }
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// A running `sensorpipe-worker run` against the mock cluster.
struct Worker {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Worker {
    fn start(setup: &Setup) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = setup.dir.path().join("worker.log");
        let child = Command::new(env!("CARGO_BIN_EXE_sensorpipe-worker"))
            .args(["run", "-p"])
            .arg(&setup.pipeline_file)
            .args(["--bootstrap-servers", &setup.mock.bootstrap_servers()])
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--commit-interval", "100ms", "--snapshot-interval", "1s", "--kafka-timeout", "3s"])
            .args(["--kafka-property", "session.timeout.ms=6000", "--kafka-property", "heartbeat.interval.ms=500"])
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, port, log }
    }

    fn metrics(&self) -> String {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .get(&format!("http://127.0.0.1:{}/metrics", self.port))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    /// The sum of a metric's samples whose labels include `labels` (`key="value"`).
    fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait(timeout, "the worker to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    /// Waits until the worker has processed the whole input, then stops it as the orchestrator would (SIGTERM:
    /// it commits what it holds and leaves the group) and checks that it exited cleanly.
    fn finish(mut self, timeout: Duration) {
        let total = (SENSORS * READINGS_PER_SENSOR) as f64;
        wait(timeout, "the worker to process the whole input", || {
            self.metric("sensorpipe_worker_records_consumed_total", &[]) >= total
                && self.metric("sensorpipe_worker_consumer_lag_records", &[]) == 0.0
        });
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "the worker did not stop cleanly:\n{}", self.log());
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The ids of every anomaly and aggregate on the mock cluster, sorted (duplicates kept).
fn outputs(setup: &Setup) -> Vec<String> {
    let consumer: BaseConsumer = client(&setup.mock.bootstrap_servers()).set("group.id", "reader").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for topic in ["anomalies", "aggregates"] {
        tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut ids = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            ids.push(v["id"].as_str().unwrap().to_owned());
            last = Instant::now();
        }
    }
    ids.sort();
    ids
}

/// Every expected id is there (at least once).
fn assert_contains(got: &[String], expected: &[String]) {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for id in got {
        *count.entry(id).or_default() += 1;
    }
    let missing: Vec<&String> = expected.iter().filter(|id| !count.contains_key(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} of {} outputs missing, e.g. {:?}",
        missing.len(),
        expected.len(),
        &missing[..3.min(missing.len())]
    );
}

fn log_has(log: &Path, text: &str) -> bool {
    std::fs::read_to_string(log).unwrap_or_default().contains(text)
}

/// The fault injected in `s` makes the worker abort a batch; it redoes it, and every output is there.
fn aborts_redoes_and_loses_nothing(s: &Setup) {
    let w = Worker::start(s);
    wait(Duration::from_secs(60), "an abort", || {
        w.metric("sensorpipe_worker_transactions_total", &[r#"outcome="aborted""#]) >= 1.0
    });
    assert!(log_has(&w.log, "batch given up"), "{}", w.log());
    w.finish(Duration::from_secs(90));
    assert_contains(&outputs(s), &s.expected);
}

#[test]
fn a_commit_that_times_out_is_called_again_not_aborted() {
    let s = setup();
    // librdkafka retries these itself, with a backoff growing to 1 s: ten of them outlast the worker's 3 s
    // `--kafka-timeout`, so `commit_transaction` returns a retriable timeout and the worker must call it again
    // (redoing the batch's snapshot and `send_offsets` fails, and aborting would redo a batch in flight). The
    // partitions commit at the same time and share the injected errors, so each gets ten.
    let errors = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS; 10 * PARTITIONS as usize];
    s.mock.request_errors(RDKafkaApiKey::EndTxn, &errors);
    let w = Worker::start(&s);
    wait(Duration::from_secs(60), "a commit to time out", || log_has(&w.log, "commit not acknowledged; retrying"));
    let log = w.log.clone();
    w.finish(Duration::from_secs(90));
    assert!(!log_has(&log, "batch given up"), "a batch was aborted:\n{}", std::fs::read_to_string(&log).unwrap());
    // No abort: on the mock cluster, which filters nothing, a redone batch would show as duplicates.
    assert_eq!(outputs(&s), s.expected);
}

#[test]
fn an_abortable_commit_error_aborts_and_redoes_the_batch() {
    let s = setup();
    // An error librdkafka has no rule for is abortable: the worker aborts, restores and redoes the batch.
    s.mock.request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN]);
    aborts_redoes_and_loses_nothing(&s);
}

#[test]
fn a_fenced_producer_is_replaced_and_its_batch_redone() {
    let s = setup();
    // A transaction the coordinator timed out fences its producer: that partition's batch is dropped and redone
    // with a new producer, and the worker goes on.
    s.mock.request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED]);
    let w = Worker::start(&s);
    wait(Duration::from_secs(60), "the fencing to be reported", || log_has(&w.log, "fenced"));
    w.finish(Duration::from_secs(90));
    assert_contains(&outputs(&s), &s.expected);
}

#[test]
fn an_authorization_failure_exits_non_zero_with_the_reason() {
    let s = setup();
    // No new producer fixes a missing ACL on the transactional id: the worker exits and says why.
    s.mock.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED],
    );
    let mut w = Worker::start(&s);
    assert!(!w.wait_exit(Duration::from_secs(60)).success(), "{}", w.log());
    let log = w.log();
    assert!(log.contains("exiting so that the orchestrator restarts the worker"), "{log}");
    assert!(log.to_lowercase().contains("authorization"), "{log}");
}

#[test]
fn refused_produce_requests_back_off_and_lose_nothing() {
    let s = setup();
    // A missing topic ACL: every produce request refused a few times. Each batch holding a refused output is
    // aborted and redone after a growing backoff; once the broker accepts again, every output is there.
    s.mock.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 4]);
    aborts_redoes_and_loses_nothing(&s);
}
