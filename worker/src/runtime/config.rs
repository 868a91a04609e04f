//! What a worker needs to know to run: the pipeline file (the operator mounts it from a ConfigMap), the Kafka
//! connection (environment, so Secrets can be injected), topic names and delivery settings.
//!
//! Kafka client properties pass through to librdkafka unchanged, so TLS and SASL work as documented there. Values
//! come from `--kafka-property` flags, `KEY=VALUE` files (a mounted Secret) and `SENSORPIPE_KAFKA_*` environment
//! variables (`SENSORPIPE_KAFKA_SASL_PASSWORD` → `sasl.password`). Values are never logged, only keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use serde::Deserialize;

use crate::model::Duration;

/// How outputs and input offsets are tied together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    /// Outputs, the state snapshot and the input offsets of a batch are committed in one Kafka transaction.
    #[value(name = "exactlyOnce")]
    ExactlyOnce,
    /// Input offsets are committed only after every output of the batch was acknowledged; a crash may repeat
    /// outputs, never lose them.
    #[value(name = "atLeastOnce")]
    AtLeastOnce,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::ExactlyOnce => "exactlyOnce",
            Delivery::AtLeastOnce => "atLeastOnce",
        }
    }
}

/// `sensorpipe-worker run` flags; every one can also come from the environment variable shown in `--help`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The SensorPipeline manifest (or its spec) to run.
    #[arg(short, long, env = "SENSORPIPE_PIPELINE_FILE")]
    pub pipeline: PathBuf,
    /// Pipeline name, used as a metric label and in default topic, group and transactional ids.
    /// Default: `metadata.name` of the manifest.
    #[arg(long, env = "SENSORPIPE_PIPELINE_NAME")]
    pub name: Option<String>,
    /// Kafka bootstrap servers (`host:port,...`).
    #[arg(long, env = "SENSORPIPE_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: String,
    /// Consumer group id. Default: `sensorpipe-<name>`.
    #[arg(long, env = "SENSORPIPE_GROUP_ID")]
    pub group_id: Option<String>,
    /// Prefix of the transactional ids (one per input partition: `<prefix>-<partition>`). Default: the group id.
    #[arg(long, env = "SENSORPIPE_TRANSACTIONAL_ID_PREFIX")]
    pub transactional_id_prefix: Option<String>,
    /// Input topic. Default: `spec.input.topic` of the manifest.
    #[arg(long, env = "SENSORPIPE_INPUT_TOPIC")]
    pub input_topic: Option<String>,
    /// Anomalies topic. Default: `spec.outputs.anomalies.topic`, else `<name>-anomalies`.
    #[arg(long, env = "SENSORPIPE_ANOMALIES_TOPIC")]
    pub anomalies_topic: Option<String>,
    /// Aggregates topic. Default: `spec.outputs.aggregates.topic`, else `<name>-aggregates`.
    #[arg(long, env = "SENSORPIPE_AGGREGATES_TOPIC")]
    pub aggregates_topic: Option<String>,
    /// Dead-letter topic. Default: `spec.outputs.deadLetter.topic`, else `<name>-dead-letter`.
    #[arg(long, env = "SENSORPIPE_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Topic of the engine state snapshots (compacted; at least as many partitions as the input is best).
    /// Default: `<name>-state`.
    #[arg(long, env = "SENSORPIPE_STATE_TOPIC")]
    pub state_topic: Option<String>,
    /// Topic between the two stages of zone and label windows (partials and partition frontiers; best with as
    /// many partitions as the input). Used only when an aggregation groups by zone or label.
    /// Default: `<name>-repartition`.
    #[arg(long, env = "SENSORPIPE_REPARTITION_TOPIC")]
    pub repartition_topic: Option<String>,
    /// Delivery guarantee. Default: `spec.workers.delivery`, else exactlyOnce.
    #[arg(long, env = "SENSORPIPE_DELIVERY", value_enum)]
    pub delivery: Option<Delivery>,
    /// How often a batch is committed (the transaction length): the floor of output latency.
    #[arg(long, env = "SENSORPIPE_COMMIT_INTERVAL", default_value = "200ms")]
    pub commit_interval: Duration,
    /// Commit earlier once this many input records are in a batch.
    #[arg(long, env = "SENSORPIPE_MAX_BATCH", default_value_t = 50_000)]
    pub max_batch: u64,
    /// Threads that process partitions in parallel (parse, engine, produce; a partition is on one thread at a
    /// time, so per-sensor order holds). 0: one per CPU the process may use (its cgroup's CPU limit).
    #[arg(long, env = "SENSORPIPE_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// How often each partition's engine state is snapshotted into the state topic. A restore replays at most
    /// this much input.
    #[arg(long, env = "SENSORPIPE_SNAPSHOT_INTERVAL", default_value = "10s")]
    pub snapshot_interval: Duration,
    /// /healthz fails when a partition with lag has committed nothing for this long (a restart by the liveness
    /// probe gets fresh Kafka clients); a batch that the broker keeps refusing shows on /readyz first.
    #[arg(long, env = "SENSORPIPE_STALL_TIMEOUT", default_value = "5m")]
    pub stall_timeout: Duration,
    /// Limit of one blocking Kafka call (a transaction's commit or abort, an offset fetch, a restore's wait for
    /// the next record); a commit that times out is called again.
    #[arg(long, env = "SENSORPIPE_KAFKA_TIMEOUT", default_value = "30s")]
    pub kafka_timeout: Duration,
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "SENSORPIPE_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: SocketAddr,
    /// Most zone/metric/function series exported as `sensorpipe_worker_zone_aggregate` gauges.
    #[arg(long, env = "SENSORPIPE_ZONE_GAUGE_LIMIT", default_value_t = 500)]
    pub zone_gauge_limit: usize,
    /// librdkafka property `key=value`, applied to every client (repeatable).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_properties: Vec<String>,
    /// File of librdkafka properties, one `key=value` per line (`#` comments), e.g. a mounted Secret (repeatable).
    #[arg(long = "kafka-properties-file", env = "SENSORPIPE_KAFKA_PROPERTIES_FILE", value_delimiter = ',')]
    pub kafka_properties_files: Vec<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "SENSORPIPE_LOG_JSON")]
    pub log_json: bool,
    /// Exit when this process is no longer our parent: `sensorpipe run` sets it, so its workers never outlive
    /// it, even when it is killed with SIGKILL.
    #[arg(long, env = "SENSORPIPE_PARENT_PID", hide = true)]
    pub parent_pid: Option<u32>,
}

/// Output and internal topics of one pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    pub input: String,
    pub anomalies: String,
    pub aggregates: String,
    pub dead_letter: String,
    pub state: String,
    pub repartition: String,
}

/// The resolved runtime configuration.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub name: String,
    pub bootstrap_servers: String,
    pub group_id: String,
    pub transactional_id_prefix: String,
    pub topics: Topics,
    pub delivery: Delivery,
    pub commit_interval: StdDuration,
    pub max_batch: u64,
    /// Processing threads, at least 1.
    pub threads: usize,
    pub snapshot_interval: StdDuration,
    pub stall_timeout: StdDuration,
    pub kafka_timeout: StdDuration,
    pub http_addr: SocketAddr,
    pub zone_gauge_limit: usize,
    /// librdkafka properties for every client, after the defaults.
    pub kafka: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {error}")]
    Yaml { path: String, error: serde_yaml::Error },
    #[error("{origin}: `{entry}` is not KEY=VALUE")]
    Property { origin: String, entry: String },
    #[error("no input topic: set spec.input.topic in the pipeline or --input-topic")]
    NoInputTopic,
    #[error("no pipeline name: set metadata.name in the pipeline or --name")]
    NoName,
}

/// The runtime parts of a SensorPipeline manifest (the engine's parts are read by `model::load_pipeline`).
#[derive(Debug, Default, Deserialize)]
struct ManifestRuntime {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: SpecRuntime,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecRuntime {
    #[serde(default)]
    input: TopicRef,
    #[serde(default)]
    outputs: Outputs,
    #[serde(default)]
    workers: Workers,
}

#[derive(Debug, Default, Deserialize)]
struct TopicRef {
    topic: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Outputs {
    #[serde(default)]
    anomalies: TopicRef,
    #[serde(default)]
    aggregates: TopicRef,
    #[serde(default)]
    dead_letter: TopicRef,
}

#[derive(Debug, Default, Deserialize)]
struct Workers {
    delivery: Option<Delivery>,
}

impl RuntimeConfig {
    /// The consumer group of the merge stage (the repartition topic): the pipeline's group with `-merge`.
    pub fn merge_group_id(&self) -> String {
        format!("{}-merge", self.group_id)
    }
}

impl RunArgs {
    /// Resolves flags, environment and the manifest into one configuration. `env` is the process environment
    /// (a parameter so tests need not mutate it).
    pub fn resolve(&self, env: impl IntoIterator<Item = (String, String)>) -> Result<RuntimeConfig, ConfigError> {
        let shown = self.pipeline.display().to_string();
        let yaml = std::fs::read_to_string(&self.pipeline)
            .map_err(|error| ConfigError::Read { path: shown.clone(), error })?;
        let manifest: ManifestRuntime =
            serde_yaml::from_str(&yaml).map_err(|error| ConfigError::Yaml { path: shown.clone(), error })?;
        let name = self.name.clone().or(manifest.metadata.name).ok_or(ConfigError::NoName)?;
        let group_id = self.group_id.clone().unwrap_or_else(|| format!("sensorpipe-{name}"));
        let pick = |flag: &Option<String>, spec: Option<String>, suffix: &str| {
            flag.clone().or(spec).unwrap_or_else(|| format!("{name}-{suffix}"))
        };
        let topics = Topics {
            input: self.input_topic.clone().or(manifest.spec.input.topic).ok_or(ConfigError::NoInputTopic)?,
            anomalies: pick(&self.anomalies_topic, manifest.spec.outputs.anomalies.topic, "anomalies"),
            aggregates: pick(&self.aggregates_topic, manifest.spec.outputs.aggregates.topic, "aggregates"),
            dead_letter: pick(&self.dead_letter_topic, manifest.spec.outputs.dead_letter.topic, "dead-letter"),
            state: pick(&self.state_topic, None, "state"),
            repartition: pick(&self.repartition_topic, None, "repartition"),
        };
        let mut kafka = BTreeMap::new();
        for path in &self.kafka_properties_files {
            let origin = path.display().to_string();
            let text =
                std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: origin.clone(), error })?;
            parse_properties(&text, &origin, &mut kafka)?;
        }
        for (key, value) in env {
            if let Some(rest) = key.strip_prefix(ENV_PREFIX).filter(|r| !r.is_empty() && *r != "PROPERTIES_FILE") {
                kafka.insert(rest.to_ascii_lowercase().replace('_', "."), value);
            }
        }
        for entry in &self.kafka_properties {
            parse_properties(entry, "--kafka-property", &mut kafka)?;
        }
        check_tls_files(&kafka)?;
        Ok(RuntimeConfig {
            transactional_id_prefix: self.transactional_id_prefix.clone().unwrap_or_else(|| group_id.clone()),
            group_id,
            name,
            bootstrap_servers: self.bootstrap_servers.clone(),
            topics,
            delivery: self.delivery.or(manifest.spec.workers.delivery).unwrap_or(Delivery::ExactlyOnce),
            commit_interval: self.commit_interval.into(),
            max_batch: self.max_batch.max(1),
            threads: match self.threads {
                0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
                n => n,
            },
            snapshot_interval: self.snapshot_interval.into(),
            stall_timeout: self.stall_timeout.into(),
            kafka_timeout: self.kafka_timeout.into(),
            http_addr: self.http_addr,
            zone_gauge_limit: self.zone_gauge_limit,
            kafka,
        })
    }
}

/// The files librdkafka is told to read (CA, client certificate and key, CRL) can be read by this process, so a
/// mounted Secret the worker's user may not read fails here with the file and the reason, not later as an OpenSSL
/// "BIO lib" error of the client.
fn check_tls_files(kafka: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for key in ["ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.crl.location"] {
        let Some(path) = kafka.get(key).filter(|p| p.as_str() != "probe") else { continue };
        let path = std::path::Path::new(path);
        if path.is_dir() {
            continue; // a CA directory: OpenSSL reads the hashed names in it
        }
        std::fs::File::open(path)
            .map_err(|error| ConfigError::Read { path: format!("{key} {}", path.display()), error })?;
    }
    Ok(())
}

/// Environment variables with this prefix become librdkafka properties.
pub const ENV_PREFIX: &str = "SENSORPIPE_KAFKA_";

/// `key=value` lines; blank lines and `#` comments are skipped.
fn parse_properties(text: &str, origin: &str, into: &mut BTreeMap<String, String>) -> Result<(), ConfigError> {
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (key, value) = line
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| ConfigError::Property { origin: origin.to_owned(), entry: redact(line) })?;
        into.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(())
}

/// An entry as it may appear in an error: the key only, never a value.
fn redact(entry: &str) -> String {
    match entry.split_once(['=', ':', ' ']) {
        Some((key, _)) => format!("{key}…"),
        None if entry.len() > 3 => format!("{}…", &entry[..entry.floor_char_boundary(3)]),
        None => "…".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn manifest(dir: &Path, yaml: &str) -> PathBuf {
        let path = dir.join("p.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// The config of `run -p <manifest> --bootstrap-servers h:1 <extra>` with `env`.
    fn resolve(
        manifest: &Path,
        extra: &[&str],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RuntimeConfig, ConfigError> {
        let mut args = vec!["x", "-p", manifest.to_str().unwrap(), "--bootstrap-servers", "h:1"];
        args.extend_from_slice(extra);
        Cli::parse_from(args).run.resolve(env)
    }

    #[test]
    fn topics_and_delivery_come_from_the_manifest_and_flags_override_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = manifest(
            dir.path(),
            "kind: SensorPipeline\nmetadata: {name: b}\nspec:\n  input: {topic: in, fields: {}}\n  outputs:\n    anomalies: {topic: an}\n  workers: {delivery: atLeastOnce}\n",
        );
        let p = p.to_str().unwrap();
        let cli = Cli::parse_from(["x", "-p", p, "--bootstrap-servers", "h:1", "--aggregates-topic", "agg"]);
        let c = cli.run.resolve([]).unwrap();
        assert_eq!(c.name, "b");
        assert_eq!(c.group_id, "sensorpipe-b");
        assert_eq!(c.transactional_id_prefix, "sensorpipe-b");
        assert_eq!(
            c.topics,
            Topics {
                input: "in".into(),
                anomalies: "an".into(),
                aggregates: "agg".into(),
                dead_letter: "b-dead-letter".into(),
                state: "b-state".into(),
                repartition: "b-repartition".into()
            }
        );
        assert_eq!(c.delivery, Delivery::AtLeastOnce);
    }

    #[test]
    fn kafka_properties_merge_files_env_and_flags_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = manifest(dir.path(), "metadata: {name: b}\nspec: {input: {topic: in}}\n");
        let props = dir.path().join("secret.properties");
        std::fs::write(&props, "# mounted\nsasl.username=u\nsasl.password = from-file\nsecurity.protocol=SASL_SSL\n")
            .unwrap();
        let env = [("SENSORPIPE_KAFKA_SASL_PASSWORD".to_owned(), "from-env".to_owned())];
        let extra = [
            "--kafka-properties-file",
            props.to_str().unwrap(),
            "--kafka-property",
            "security.protocol=SASL_PLAINTEXT",
        ];
        let c = resolve(&p, &extra, env).unwrap();
        assert_eq!(c.kafka["sasl.username"], "u");
        assert_eq!(c.kafka["sasl.password"], "from-env");
        assert_eq!(c.kafka["security.protocol"], "SASL_PLAINTEXT");
    }

    #[test]
    fn a_bad_property_line_is_reported_without_its_value() {
        let mut m = BTreeMap::new();
        let err = parse_properties("sasl.password hunter2", "secret", &mut m).unwrap_err().to_string();
        assert!(err.contains("sasl.password…"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_tls_file_that_cannot_be_read_is_named_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = manifest(dir.path(), "metadata: {name: b}\nspec: {input: {topic: in}}\n");
        let ca = dir.path().join("ca.crt");
        let run = |ca: &Path| resolve(&p, &["--kafka-property", &format!("ssl.ca.location={}", ca.display())], []);
        let err = run(&ca).unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot read ssl.ca.location {}: ", ca.display())), "{err}");
        std::fs::write(&ca, "PEM").unwrap();
        assert!(run(&ca).is_ok());
        assert!(run(dir.path()).is_ok(), "a CA directory is left to OpenSSL");
    }

    #[test]
    fn a_missing_input_topic_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = manifest(dir.path(), "metadata: {name: b}\nspec: {}\n");
        let cli = Cli::parse_from(["x", "-p", p.to_str().unwrap(), "--bootstrap-servers", "h:1"]);
        assert!(matches!(cli.run.resolve([]), Err(ConfigError::NoInputTopic)));
    }
}
