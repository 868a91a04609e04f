//! `spec.kafka`: how workers and the operator reach the Kafka cluster. Secrets are referenced, never inlined; the
//! worker receives them as environment variables from `secretKeyRef`s, so they never appear in a ConfigMap.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Connection to the Kafka cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Bootstrap servers, `host:port[,host:port...]`, for example `my-cluster-kafka-bootstrap:9093`.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,
    /// TLS to the brokers (and optionally client certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// SASL authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSpec>,
    /// Extra librdkafka client properties for every client (for example `compression.type: zstd`). Settings
    /// that exactly-once depends on (isolation level, idempotence, transactional ids, offset commits) cannot be
    /// overridden.
    /// Settings that carry secrets (`sasl.password`, `ssl.key.password`, …) are refused: they take their values
    /// from Secrets through `sasl` and `tls`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// Allow SASL `PLAIN` without `tls`: the password then crosses the network in clear text, to whatever host
    /// `bootstrapServers` names. Default false: such a spec is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_sasl: bool,
}

impl KafkaSpec {
    /// librdkafka's `security.protocol` for the TLS/SASL settings; `None`: plaintext (the default).
    pub fn security_protocol(&self) -> Option<&'static str> {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (true, true) => Some("SASL_SSL"),
            (true, false) => Some("SSL"),
            (false, true) => Some("SASL_PLAINTEXT"),
            (false, false) => None,
        }
    }
}

/// A key of a Secret in the pipeline's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// TLS settings. CA and client certificates are PEM, mounted from Secrets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// CA certificate(s) to verify the brokers with; default: the system trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<SecretKeyRef>,
    /// Client certificate for mutual TLS (requires `clientKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<SecretKeyRef>,
    /// Client private key for mutual TLS (requires `clientCert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<SecretKeyRef>,
}

/// SASL mechanism.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "PLAIN")]
    Plain,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::Plain => "PLAIN",
        }
    }
}

/// SASL username/password authentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaslSpec {
    /// `SCRAM-SHA-512` (default), `SCRAM-SHA-256` or `PLAIN`.
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// Where the username is.
    pub username: SecretKeyRef,
    /// Where the password is.
    pub password: SecretKeyRef,
}
