//! The worker Deployment: `sensorpipe-worker run` with the pipeline from the ConfigMap, Kafka secrets as env from
//! `secretKeyRef`s, probes on the metrics port, a restricted security context, and the config hash on the pod
//! template so that a spec change rolls the workers.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Defaults, KAFKA_PROPERTIES_FILE, PIPELINE_FILE, labels, meta, selector_labels, worker_name};
use crate::crd::SecretKeyRef;
use crate::validate::{Role, ValidPipeline};

pub const METRICS_PORT: i32 = 9090;
/// The ConfigMap's mount. The TLS files are mounted beside it, not inside: the kubelet mounts ConfigMap volumes
/// read-only, so the runtime cannot create a mount point within one ("mkdir …/tls: read-only file system", and the
/// pod never starts).
const CONFIG_DIR: &str = "/etc/sensorpipe/config";
pub(super) const TLS_DIR: &str = "/etc/sensorpipe/tls";
/// Pod template annotation holding the ConfigMap digest.
pub const CONFIG_HASH_ANNOTATION: &str = "sensorpipe.io/config-hash";

pub(super) fn build(p: &ValidPipeline, defaults: &Defaults, replicas: i32, config_hash: &str) -> Deployment {
    let workers = &p.object.spec.workers;
    let (volumes, mounts) = volumes(p);
    let container = Container {
        name: "worker".to_owned(),
        image: Some(workers.image.clone().unwrap_or_else(|| defaults.worker_image.clone())),
        args: Some(vec!["run".to_owned()]),
        env: Some(env(p)),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_owned()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        resources: Some(workers.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Capabilities::default() }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let pod_labels = labels(p);
    Deployment {
        metadata: meta(p, worker_name(p)),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(selector_labels(p)), ..LabelSelector::default() },
            // Replace one worker at a time, never surging: the replica count is already capped at the input's
            // partitions, a surge worker would get no partition, stay unready (readiness is "assigned") and
            // stall the rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned())])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    // The worker commits and leaves the group on SIGTERM; give it time to finish the batch.
                    termination_grace_period_seconds: Some(30),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        // The Secret files (CA, client key) are root-owned in the volume; with fsGroup the kubelet
                        // gives them to this group and makes them group-readable, so the worker can read them.
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    node_selector: (!workers.node_selector.is_empty()).then(|| workers.node_selector.clone()),
                    tolerations: (!workers.tolerations.is_empty()).then(|| workers.tolerations.clone()),
                    affinity: workers.affinity.clone(),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), Quantity("128Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("512Mi".to_owned()))])),
        ..ResourceRequirements::default()
    }
}

fn plain(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), ..EnvVar::default() }
}

fn secret(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: r.name.clone(), key: r.key.clone(), optional: Some(false) }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The worker's settings (see `sensorpipe-worker run --help`); topics come from the mounted manifest.
fn env(p: &ValidPipeline) -> Vec<EnvVar> {
    let kafka = &p.object.spec.kafka;
    let mut env = vec![
        plain("SENSORPIPE_PIPELINE_FILE", format!("{CONFIG_DIR}/{PIPELINE_FILE}")),
        plain("SENSORPIPE_KAFKA_PROPERTIES_FILE", format!("{CONFIG_DIR}/{KAFKA_PROPERTIES_FILE}")),
        plain("SENSORPIPE_PIPELINE_NAME", p.name.clone()),
        plain("SENSORPIPE_BOOTSTRAP_SERVERS", kafka.bootstrap_servers.clone()),
        plain("SENSORPIPE_GROUP_ID", p.group_id.clone()),
        plain("SENSORPIPE_TRANSACTIONAL_ID_PREFIX", p.transactional_id_prefix.clone()),
        plain("SENSORPIPE_STATE_TOPIC", p.topic(Role::State).name.clone()),
        plain(
            "SENSORPIPE_REPARTITION_TOPIC",
            p.repartition_topic().map_or_else(|| format!("{}-repartition", p.group_id), |t| t.name.clone()),
        ),
        plain("SENSORPIPE_DELIVERY", p.delivery.as_str()),
        plain("SENSORPIPE_HTTP_ADDR", format!("0.0.0.0:{METRICS_PORT}")),
        plain("SENSORPIPE_LOG_JSON", "true"),
    ];
    if let Some(sasl) = &kafka.sasl {
        env.push(secret("SENSORPIPE_KAFKA_SASL_USERNAME", &sasl.username));
        env.push(secret("SENSORPIPE_KAFKA_SASL_PASSWORD", &sasl.password));
    }
    env
}

fn volumes(p: &ValidPipeline) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![Volume {
        name: "config".to_owned(),
        config_map: Some(ConfigMapVolumeSource { name: worker_name(p), ..ConfigMapVolumeSource::default() }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".to_owned(),
        mount_path: CONFIG_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut secret_volume = |name: &str, dir: &str, items: Vec<(&SecretKeyRef, &str)>| {
        // A volume holds keys of one Secret; the CRD allows each file to come from its own Secret.
        for (i, (r, path)) in items.into_iter().enumerate() {
            let vol = format!("{name}-{i}");
            volumes.push(Volume {
                name: vol.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(r.name.clone()),
                    items: Some(vec![KeyToPath { key: r.key.clone(), path: path.to_owned(), mode: None }]),
                    // Owner and group (the pod's fsGroup) may read; nobody else.
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
            mounts.push(VolumeMount {
                name: vol,
                mount_path: format!("{TLS_DIR}/{dir}/{path}"),
                sub_path: Some(path.to_owned()),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
    };
    if let Some(tls) = &p.object.spec.kafka.tls {
        if let Some(ca) = &tls.ca_cert {
            secret_volume("tls-ca", "ca", vec![(ca, "ca.crt")]);
        }
        if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
            secret_volume("tls-client", "client", vec![(cert, "tls.crt"), (key, "tls.key")]);
        }
    }
    (volumes, mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    fn defaults() -> Defaults {
        Defaults { worker_image: "sensorpipe-worker:0.1.0".to_owned(), service_monitors: true }
    }

    fn env_of(d: &Deployment) -> BTreeMap<String, EnvVar> {
        let c = &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        c.env.clone().unwrap().into_iter().map(|e| (e.name.clone(), e)).collect()
    }

    #[test]
    fn runs_the_worker_with_the_pipeline_settings() {
        let p = fixtures::example();
        let d = build(&p, &defaults(), 4, "abc");
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(4));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("sensorpipe-worker:0.1.0"));
        assert_eq!(c.args.as_deref(), Some(&["run".to_owned()][..]));
        let env = env_of(&d);
        assert_eq!(env["SENSORPIPE_GROUP_ID"].value.as_deref(), Some("sensorpipe-facilities-building-a"));
        assert_eq!(env["SENSORPIPE_PIPELINE_FILE"].value.as_deref(), Some("/etc/sensorpipe/config/pipeline.yaml"));
        assert_eq!(env["SENSORPIPE_STATE_TOPIC"].value.as_deref(), Some("sensorpipe-facilities-building-a-state"));
        assert_eq!(
            env["SENSORPIPE_REPARTITION_TOPIC"].value.as_deref(),
            Some("sensorpipe-facilities-building-a-repartition")
        );
        assert_eq!(
            spec.template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION],
            "abc"
        );
        // The selector matches the pod labels (an apply would be rejected otherwise).
        let pod_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(pod_labels.get(k), Some(v));
        }
        assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!((sc.allow_privilege_escalation, sc.read_only_root_filesystem), (Some(false), Some(true)));
        assert_eq!(pod.security_context.as_ref().unwrap().seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let rolling = spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
        assert_eq!(
            (rolling.max_surge.clone(), rolling.max_unavailable.clone()),
            (Some(IntOrString::Int(0)), Some(IntOrString::Int(1))),
            "no surge beyond the partition cap"
        );
    }

    #[test]
    fn secrets_arrive_as_secret_refs_and_files_never_as_values() {
        let p = fixtures::from_yaml(&fixtures::MINIMAL.replace(
            "kafka: {bootstrapServers: \"kafka:9092\"}",
            "kafka:\n    bootstrapServers: kafka:9093\n    tls: {caCert: {name: ca, key: ca.crt}, clientCert: {name: me, key: tls.crt}, clientKey: {name: me, key: tls.key}}\n    sasl: {username: {name: creds, key: user}, password: {name: creds, key: pass}}",
        ));
        let d = build(&p, &defaults(), 1, "h");
        let env = env_of(&d);
        let pass = env["SENSORPIPE_KAFKA_SASL_PASSWORD"].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((pass.name.as_str(), pass.key.as_str()), ("creds", "pass"));
        assert!(env["SENSORPIPE_KAFKA_SASL_PASSWORD"].value.is_none());
        let pod = d.spec.unwrap().template.spec.unwrap();
        let mounts: Vec<String> =
            pod.containers[0].volume_mounts.clone().unwrap().into_iter().map(|m| m.mount_path).collect();
        for path in [
            "/etc/sensorpipe/tls/ca/ca.crt",
            "/etc/sensorpipe/tls/client/tls.crt",
            "/etc/sensorpipe/tls/client/tls.key",
        ] {
            assert!(mounts.iter().any(|m| m == path), "{path} not mounted: {mounts:?}");
        }
        // No mount point inside the read-only ConfigMap mount (the runtime could not create it).
        assert!(mounts.iter().all(|m| m == "/etc/sensorpipe/config" || !m.starts_with("/etc/sensorpipe/config/")));
        // The files are readable by the worker's group, which the kubelet makes their owner through fsGroup.
        assert_eq!(pod.security_context.as_ref().unwrap().fs_group, Some(65532));
        let volumes = pod.volumes.unwrap();
        assert!(volumes.iter().filter_map(|v| v.secret.as_ref()).all(|s| s.default_mode == Some(0o440)));
        assert_eq!(volumes.len(), 4);
    }

    #[test]
    fn scheduling_and_image_come_from_the_spec() {
        let p = fixtures::from_yaml(&fixtures::MINIMAL.replace(
            "  processing:",
            "  workers:\n    image: registry.local/worker:dev\n    nodeSelector: {pool: iot}\n    tolerations: [{key: iot, operator: Exists}]\n    resources: {limits: {cpu: \"2\"}}\n  processing:",
        ));
        let d = build(&p, &defaults(), 1, "h");
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("registry.local/worker:dev"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "iot");
        assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("iot"));
        assert_eq!(pod.containers[0].resources.as_ref().unwrap().limits.as_ref().unwrap()["cpu"].0, "2");
    }
}
