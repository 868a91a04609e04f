//! One reconcile of one SensorPipeline: the finalizer hands off to [`apply`] or [`cleanup`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::status::{Observed, Problem, compute};
use super::{Context, Error, claimed_by_others, deref};
use crate::autoscale::Sample;
use crate::build::{self, Objects};
use crate::crd::{DeletionPolicy, LagStatus, SensorPipeline, TopicStatus};
use crate::topics::{ObservedTopic, TopicAction, plan_topics};
use crate::validate::{Role, ValidPipeline, planned_topics, validate};

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "sensorpipe-operator";
/// Guards the Kafka-side cleanup (topics, consumer group) on deletion.
pub const FINALIZER: &str = "sensorpipe.io/kafka-cleanup";

pub(super) fn key_of(sp: &DeserializeGuard<SensorPipeline>) -> String {
    format!("{}/{}", sp.namespace().unwrap_or_default(), sp.name_any())
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now()).to_string()
}

/// Entry point for the controller.
pub async fn reconcile(guard: Arc<DeserializeGuard<SensorPipeline>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = key_of(&guard);
    let started = Instant::now();
    let _in_flight = ctx.watchdog.reconciling(&key);
    ctx.metrics.reconciles.with_label_values(&[&key]).inc();
    let result = match &guard.0 {
        Ok(sp) => {
            let api: Api<SensorPipeline> = Api::namespaced(ctx.client.clone(), &sp.namespace().unwrap_or_default());
            finalizer(&api, FINALIZER, Arc::new(sp.clone()), |event| async {
                match event {
                    Finalized::Apply(sp) => apply(&sp, &ctx).await,
                    Finalized::Cleanup(sp) => cleanup(&sp, &ctx).await,
                }
            })
            .await
            .map_err(|e| match e {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e
                }
                other => Error::Finalizer(other.to_string()),
            })
        }
        Err(invalid) => report_malformed(&guard, &invalid.error, &ctx).await,
    };
    ctx.metrics.reconcile_duration.with_label_values(&[&key]).observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.memory(&key, |m| m.failures = 0);
    }
    result
}

/// An object that does not even parse (it predates a schema change, or the CRD was bypassed).
async fn report_malformed(
    guard: &DeserializeGuard<SensorPipeline>,
    error: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    let key = key_of(guard);
    ctx.metrics.reconcile_errors.with_label_values(&[&key, "InvalidSpec"]).inc();
    let message = format!("the object cannot be read: {error}");
    let observed = Observed {
        generation: guard.meta().generation,
        invalid: Some(Problem { reason: "InvalidSpec", message: message.clone() }),
        ..Observed::default()
    };
    let api: Api<SensorPipeline> = Api::namespaced(ctx.client.clone(), &guard.namespace().unwrap_or_default());
    write_status(ctx, &key, &api, &guard.name_any(), None, &observed).await?;
    let reference = guard.object_ref(&());
    publish(ctx, &reference, EventType::Warning, "InvalidSpec", &message).await;
    Ok(Action::await_change())
}

async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.to_owned()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, reference).await {
        tracing::warn!(error = %e, reason, "cannot publish event");
    }
}

async fn write_status(
    ctx: &Context,
    key: &str,
    api: &Api<SensorPipeline>,
    name: &str,
    previous: Option<&crate::crd::SensorPipelineStatus>,
    observed: &Observed,
) -> Result<(), Error> {
    let status = compute(previous, observed, &now_rfc3339());
    for c in &status.conditions {
        let value = i64::from(c.status == crate::crd::ConditionStatus::True);
        ctx.metrics.condition.with_label_values(&[key, &c.type_]).set(value);
    }
    if previous == Some(&status) {
        return Ok(());
    }
    let patch = json!({"apiVersion": "sensorpipe.io/v1alpha1", "kind": "SensorPipeline", "status": status});
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Every readable SensorPipeline this operator watches (malformed ones are skipped: they claim nothing).
async fn all_pipelines(ctx: &Context) -> Result<Vec<SensorPipeline>, Error> {
    let mut all = Vec::new();
    for api in ctx.apis::<DeserializeGuard<SensorPipeline>>() {
        all.extend(api.list(&ListParams::default()).await?.items.into_iter().filter_map(|g| g.0.ok()));
    }
    Ok(all)
}

async fn apply(sp: &SensorPipeline, ctx: &Context) -> Result<Action, Error> {
    let name = sp.name_any();
    let namespace = sp.namespace().unwrap_or_default();
    let key = format!("{namespace}/{name}");
    let api: Api<SensorPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = sp.status.as_ref();
    let reference = sp.object_ref(&());
    let mut observed = Observed { generation: sp.metadata.generation, ..Observed::default() };

    // Validate (pure). A spec that cannot run waits for the user to change it.
    let valid = match validate(sp) {
        Ok(v) => v,
        Err(invalid) => {
            let message = invalid.to_string();
            ctx.metrics.reconcile_errors.with_label_values(&[&key, "InvalidSpec"]).inc();
            let already = previous.is_some_and(|s| {
                s.observed_generation == sp.metadata.generation
                    && s.conditions.iter().any(|c| c.type_ == "Degraded" && c.message == message)
            });
            if !already {
                publish(ctx, &reference, EventType::Warning, "InvalidSpec", &message).await;
            }
            observed.invalid = Some(Problem { reason: "InvalidSpec", message });
            write_status(ctx, &key, &api, &name, previous, &observed).await?;
            return Ok(Action::await_change());
        }
    };

    // Dereference: other pipelines (topic claims) and the Kafka credentials.
    let all = all_pipelines(ctx).await?;
    let conflicts = claimed_by_others(sp, &all);
    let conflicted: HashSet<&str> = conflicts.iter().map(|(t, _)| t.as_str()).collect();
    for (topic, owner) in &conflicts {
        observed.problems.push(Problem {
            reason: "ResourceConflict",
            message: format!(
                "topic {topic} is already used by pipeline {owner}; no workers run until this pipeline names \
                 another topic or {owner} is gone"
            ),
        });
    }
    let props = match deref::admin_properties(&ctx.client, &valid).await {
        Ok(p) => p,
        Err(e) => {
            observed.topic_problems.push(Problem { reason: "SecretMissing", message: e.to_string() });
            write_status(ctx, &key, &api, &name, previous, &observed).await?;
            return Err(e);
        }
    };

    // Topics.
    let mut kafka_error: Option<Error> = None;
    let admin = ctx.admin(&props)?;
    let names: Vec<String> = valid.topics.iter().map(|t| t.name.clone()).collect();
    let mut seen: BTreeMap<String, Option<ObservedTopic>> = BTreeMap::new();
    match admin.describe(&names).await {
        Err(e) => {
            observed.topic_problems.push(Problem { reason: e.reason(), message: e.to_string() });
            kafka_error = Some(e.into());
        }
        Ok(s) => {
            seen = s;
            let desired: Vec<_> =
                valid.topics.iter().filter(|t| !conflicted.contains(t.name.as_str())).cloned().collect();
            let (actions, issues) = plan_topics(&desired, &seen);
            for action in actions {
                let (result, what) = match &action {
                    TopicAction::Create { name, partitions, replication_factor, config } => (
                        admin.create(name, *partitions, *replication_factor, config).await,
                        format!("created topic {name} ({partitions} partitions)"),
                    ),
                    TopicAction::AddPartitions { name, from, to } => {
                        (admin.add_partitions(name, *to).await, format!("topic {name}: partitions {from} → {to}"))
                    }
                    TopicAction::RevertConfig { name, config } => {
                        let current = seen.get(name).cloned().flatten().map(|t| t.overrides).unwrap_or_default();
                        (
                            admin.set_config(name, &current, config).await,
                            format!("topic {name}: reverted config drift {config:?}"),
                        )
                    }
                };
                match result {
                    Ok(()) => publish(ctx, &reference, EventType::Normal, "TopicReconciled", &what).await,
                    Err(e) => {
                        let reason = if matches!(action, TopicAction::AddPartitions { .. })
                            && matches!(e, crate::topics::AdminError::Refused { .. })
                        {
                            "NotSupported"
                        } else {
                            e.reason()
                        };
                        publish(ctx, &reference, EventType::Warning, reason, &e.to_string()).await;
                        observed.topic_problems.push(Problem { reason, message: e.to_string() });
                        if matches!(e, crate::topics::AdminError::Unavailable(_)) {
                            kafka_error = Some(e.into());
                        }
                    }
                }
            }
            for issue in issues {
                observed.topic_problems.push(Problem { reason: issue.reason, message: issue.message });
            }
            if kafka_error.is_none()
                && let Ok(after) = admin.describe(&names).await
            {
                seen = after;
            }
        }
    }
    observed.topics = valid
        .topics
        .iter()
        .map(|t| TopicStatus {
            role: t.role.as_str().to_owned(),
            name: t.name.clone(),
            partitions: seen.get(&t.name).cloned().flatten().map(|o| o.partitions),
            managed: t.managed,
        })
        .collect();
    let input_partitions = seen.get(&valid.topic(Role::Input).name).cloned().flatten().map(|o| o.partitions);

    // Current workers.
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let worker_name = build::worker_name(&valid);
    let existing = deployments.get_opt(&worker_name).await?;
    let current = existing.as_ref().and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas).unwrap_or(0);

    // Lag, throughput and the autoscaler.
    let mut desired = valid.replicas;
    if kafka_error.is_none() && input_partitions.is_some() {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        match admin.lag(&valid.group_id, &valid.topic(Role::Input).name, now_ms).await {
            Ok(lag) => {
                let now = Instant::now();
                let throughput = ctx.memory(&key, |m| {
                    let t = m.last_committed.map(|(at, total)| {
                        ((lag.committed_total - total).max(0) as f64) / now.duration_since(at).as_secs_f64().max(1e-3)
                    });
                    m.last_committed = Some((now, lag.committed_total));
                    t
                });
                let seconds = lag.oldest_unprocessed_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
                ctx.metrics.lag_records.with_label_values(&[&key]).set(lag.records);
                ctx.metrics.lag_seconds.with_label_values(&[&key]).set(seconds);
                if let Some(t) = throughput {
                    ctx.metrics.throughput.with_label_values(&[&key]).set(t);
                }
                observed.lag = Some(LagStatus {
                    records: lag.records,
                    throughput: throughput.map(|t| (t * 10.0).round() / 10.0),
                    seconds: Some((seconds * 10.0).round() / 10.0),
                });
                if let Some(spec) = valid.autoscaling.as_ref().filter(|_| conflicts.is_empty()) {
                    let sample = Sample { at: now, lag_records: lag.records, lag_seconds: seconds };
                    let partitions = input_partitions.unwrap_or(1);
                    let decision = ctx.memory(&key, |m| m.autoscaler.decide(spec, sample, current, partitions));
                    if existing.is_some() && decision.replicas != current {
                        publish(ctx, &reference, EventType::Normal, decision.reason, &decision.message).await;
                        ctx.metrics.scale_events.with_label_values(&[&key, decision.reason]).inc();
                        observed.last_scale_time = Some(now_rfc3339());
                    }
                    desired = decision.replicas;
                    observed.autoscaling = Some((decision.reason, decision.message));
                }
            }
            Err(e) => {
                observed.topic_problems.push(Problem { reason: e.reason(), message: e.to_string() });
                kafka_error = Some(e.into());
            }
        }
    }
    if !conflicts.is_empty() {
        // Its workers would write into the other pipeline's topic: none run until the conflict is gone (the
        // requeue timer looks again; the owner's deletion is not an event of this pipeline).
        desired = 0;
    } else if let Some(spec) = &valid.autoscaling
        && observed.autoscaling.is_none()
    {
        // No lag reading this time: hold the current size (within bounds) rather than guess.
        desired = if existing.is_some() {
            current.clamp(spec.min_replicas, spec.max_replicas)
        } else {
            spec.min_replicas.max(1)
        };
        observed.autoscaling =
            Some(("NoMetrics", "consumer lag could not be read; holding the worker count".to_owned()));
    }

    // Build (pure) and apply, unless the workers could not run (no input topic, Kafka unreachable).
    let blocked = observed
        .topic_problems
        .iter()
        .any(|p| matches!(p.reason, "InputTopicMissing" | "KafkaUnavailable" | "SecretMissing"))
        || (existing.is_none() && !observed.topic_problems.is_empty());
    if !blocked {
        let served = ctx.has_service_monitor().await;
        let objects = build::build(&valid, &ctx.defaults, desired, served && ctx.defaults.service_monitors);
        let mut applied = apply_objects(ctx, &namespace, &objects).await;
        if applied.is_ok() && served && !ctx.defaults.service_monitors {
            applied = delete_service_monitor(ctx, &namespace, &worker_name).await;
        }
        if let Err(e) = applied {
            observed.problems.push(Problem { reason: "ApplyFailed", message: e.to_string() });
            write_status(
                ctx,
                &key,
                &api,
                &name,
                previous,
                &observe_workers(observed, &deployments, &worker_name, desired, &valid).await,
            )
            .await?;
            return Err(e);
        }
    }
    let observed =
        observe_workers(observed, &deployments, &worker_name, if blocked { current } else { desired }, &valid).await;
    ctx.metrics.desired_replicas.with_label_values(&[&key]).set(i64::from(observed.desired_replicas));
    ctx.metrics.ready_replicas.with_label_values(&[&key]).set(i64::from(observed.workers.map_or(0, |w| w.1)));
    for p in observed.topic_problems.iter().chain(&observed.problems) {
        ctx.metrics.reconcile_errors.with_label_values(&[&key, p.reason]).inc();
    }
    write_status(ctx, &key, &api, &name, previous, &observed).await?;
    match kafka_error {
        Some(e) => Err(e),
        None => Ok(Action::requeue(ctx.resync)),
    }
}

async fn observe_workers(
    mut observed: Observed,
    deployments: &Api<Deployment>,
    name: &str,
    desired: i32,
    valid: &ValidPipeline,
) -> Observed {
    if let Ok(Some(d)) = deployments.get_opt(name).await {
        let s = d.status.unwrap_or_default();
        observed.workers =
            Some((s.replicas.unwrap_or(0), s.ready_replicas.unwrap_or(0), s.updated_replicas.unwrap_or(0)));
    }
    observed.desired_replicas = desired;
    observed.selector = Some(build::selector_string(valid));
    observed
}

async fn apply_objects(ctx: &Context, namespace: &str, o: &Objects) -> Result<(), Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let c = &ctx.client;
    let name = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| m.name.clone().unwrap_or_default();
    Api::<ConfigMap>::namespaced(c.clone(), namespace)
        .patch(&name(&o.config_map.metadata), &pp, &Patch::Apply(&o.config_map))
        .await?;
    Api::<Service>::namespaced(c.clone(), namespace)
        .patch(&name(&o.service.metadata), &pp, &Patch::Apply(&o.service))
        .await?;
    Api::<PodDisruptionBudget>::namespaced(c.clone(), namespace)
        .patch(&name(&o.pdb.metadata), &pp, &Patch::Apply(&o.pdb))
        .await?;
    if let Some(sm) = &o.service_monitor {
        Api::<DynamicObject>::namespaced_with(c.clone(), namespace, &build::service_monitor_resource())
            .patch(&name(&sm.metadata), &pp, &Patch::Apply(sm))
            .await?;
    }
    Api::<Deployment>::namespaced(c.clone(), namespace)
        .patch(&name(&o.deployment.metadata), &pp, &Patch::Apply(&o.deployment))
        .await?;
    Ok(())
}

/// Removes the ServiceMonitor an earlier configuration created (gone is success).
async fn delete_service_monitor(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), namespace, &build::service_monitor_resource());
    match api.delete(name, &kube::api::DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletion: in-cluster children go with the owner references; Kafka topics and the consumer group only with
/// `deletionPolicy: Delete`, and never a topic another pipeline still claims. Repeatable: gone is success.
/// Scales the pipeline's workers to zero (the Deployment itself goes with the pipeline, by its owner reference).
async fn stop_workers(sp: &SensorPipeline, ctx: &Context) -> Result<(), Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &sp.namespace().unwrap_or_default());
    let zero = json!({"spec": {"replicas": 0}});
    match deployments.patch(&format!("{}-worker", sp.name_any()), &PatchParams::default(), &Patch::Merge(&zero)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn cleanup(sp: &SensorPipeline, ctx: &Context) -> Result<Action, Error> {
    let key = format!("{}/{}", sp.namespace().unwrap_or_default(), sp.name_any());
    let reference = sp.object_ref(&());
    if sp.status.as_ref().is_none_or(|s| s.phase != crate::crd::Phase::Terminating) {
        // A merge patch of the phase alone: an apply would drop the other status fields this manager owns.
        let api: Api<SensorPipeline> = Api::namespaced(ctx.client.clone(), &sp.namespace().unwrap_or_default());
        let terminating = json!({"status": {"phase": "Terminating"}});
        if let Err(e) = api.patch_status(&sp.name_any(), &PatchParams::default(), &Patch::Merge(&terminating)).await {
            tracing::warn!(pipeline = %key, error = %e, "cannot set the Terminating phase");
        }
    }
    if sp.spec.deletion_policy == DeletionPolicy::Delete {
        let all: Vec<SensorPipeline> =
            all_pipelines(ctx).await?.into_iter().filter(|o| o.metadata.uid != sp.metadata.uid).collect();
        // Topics any other pipeline still names (as input or output) stay.
        let others: HashSet<String> = all.iter().flat_map(|o| planned_topics(o).into_iter().map(|t| t.name)).collect();
        let ours: Vec<String> =
            planned_topics(sp).into_iter().filter(|t| t.managed && !others.contains(&t.name)).map(|t| t.name).collect();
        let props = match validate(sp) {
            Ok(valid) => deref::admin_properties(&ctx.client, &valid).await?,
            Err(_) => BTreeMap::from([("bootstrap.servers".to_owned(), sp.spec.kafka.bootstrap_servers.clone())]),
        };
        let admin = ctx.admin(&props)?;
        // Workers first: Kafka deletes only a group without members, and topics deleted under running workers
        // only give them errors. Scaling to zero lets each commit its last batch and leave the group.
        stop_workers(sp, ctx).await?;
        let group = crate::validate::group_id(sp);
        for g in [group.clone(), crate::validate::merge_group_id(sp)] {
            if !admin.delete_group(&g).await? {
                // An error, not a requeue: a cleanup that returns Ok has its finalizer removed.
                return Err(Error::WorkersStopping(g));
            }
        }
        let refs: Vec<&str> = ours.iter().map(String::as_str).collect();
        admin.delete_topics(&refs).await?;
        publish(
            ctx,
            &reference,
            EventType::Normal,
            "KafkaDeleted",
            &format!("deleted topics {ours:?} and consumer groups {group} and {group}-merge"),
        )
        .await;
    } else {
        publish(
            ctx,
            &reference,
            EventType::Normal,
            "KafkaRetained",
            "deletionPolicy Retain: topics and consumer group kept",
        )
        .await;
    }
    ctx.forget(&key);
    Ok(Action::await_change())
}
