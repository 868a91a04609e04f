//! Status (pure): what the reconcile observed → the SensorPipeline's status, with conditions in the Kubernetes
//! convention (a condition's `lastTransitionTime` changes only when its status does).

use crate::crd::{
    Condition, ConditionStatus, LagStatus, Phase, SensorPipelineStatus, TopicStatus, condition_types as ct,
};

/// A problem worth a Degraded condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase reason: `InvalidSpec`, `ResourceConflict`, `NotSupported`, `InputTopicMissing`,
    /// `KafkaUnavailable`, `KafkaRefused`, `ApplyFailed`.
    pub reason: &'static str,
    pub message: String,
}

/// Everything one reconcile learned.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub generation: Option<i64>,
    /// The spec cannot run at all (nothing else was attempted).
    pub invalid: Option<Problem>,
    /// Topic-side problems; the first decides TopicsReady's reason.
    pub topic_problems: Vec<Problem>,
    /// Other problems (conflicts, apply failures).
    pub problems: Vec<Problem>,
    pub topics: Vec<TopicStatus>,
    /// Deployment status: (replicas, ready replicas, updated replicas), when it exists.
    pub workers: Option<(i32, i32, i32)>,
    pub desired_replicas: i32,
    pub selector: Option<String>,
    /// The autoscaler's last decision: (reason, message), when autoscaling is on.
    pub autoscaling: Option<(&'static str, String)>,
    pub lag: Option<LagStatus>,
    pub last_scale_time: Option<String>,
    pub deleting: bool,
}

fn condition(type_: &str, ok: bool, reason: &str, message: String, generation: Option<i64>) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { ConditionStatus::True } else { ConditionStatus::False },
        reason: reason.to_owned(),
        message,
        last_transition_time: None,
        observed_generation: generation,
    }
}

/// The new status; `previous` supplies transition times of conditions whose status did not change, and
/// `now` (RFC 3339) is the transition time of those that did.
pub fn compute(previous: Option<&SensorPipelineStatus>, o: &Observed, now: &str) -> SensorPipelineStatus {
    let g = o.generation;
    let mut conditions = Vec::new();
    let phase;
    if let Some(invalid) = &o.invalid {
        conditions.push(condition(ct::READY, false, invalid.reason, invalid.message.clone(), g));
        conditions.push(condition(ct::DEGRADED, true, invalid.reason, invalid.message.clone(), g));
        phase = Phase::Failed;
    } else {
        let topics_ok = o.topic_problems.is_empty();
        conditions.push(match o.topic_problems.first() {
            None => {
                condition(ct::TOPICS_READY, true, "TopicsReady", format!("{} topics as specified", o.topics.len()), g)
            }
            Some(p) => condition(ct::TOPICS_READY, false, p.reason, p.message.clone(), g),
        });
        let (replicas, ready, updated) = o.workers.unwrap_or_default();
        let workers_ok = o.workers.is_some()
            && ready >= o.desired_replicas
            && updated >= o.desired_replicas
            && replicas == o.desired_replicas;
        conditions.push(condition(
            ct::WORKERS_READY,
            workers_ok,
            if workers_ok {
                "WorkersReady"
            } else if o.workers.is_none() {
                "NotDeployed"
            } else {
                "Progressing"
            },
            match o.workers {
                None => "worker Deployment not created yet".to_owned(),
                Some(_) => format!("{ready} of {} workers ready ({updated} up to date)", o.desired_replicas),
            },
            g,
        ));
        if let Some((reason, message)) = &o.autoscaling {
            conditions.push(condition(ct::AUTOSCALING, true, reason, message.clone(), g));
        }
        let degraded: Vec<&Problem> = o.topic_problems.iter().chain(&o.problems).collect();
        conditions.push(match degraded.first() {
            None => condition(ct::DEGRADED, false, "AsExpected", "no problems".to_owned(), g),
            Some(p) => condition(
                ct::DEGRADED,
                true,
                p.reason,
                degraded.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; "),
                g,
            ),
        });
        let ready = topics_ok && workers_ok && degraded.is_empty();
        let conflict = degraded.iter().find(|p| p.reason == "ResourceConflict");
        conditions.insert(
            0,
            condition(
                ct::READY,
                ready,
                if ready {
                    "Ready"
                } else if conflict.is_some() {
                    "ResourceConflict"
                } else if !degraded.is_empty() {
                    "Degraded"
                } else {
                    "Progressing"
                },
                if let Some(c) = conflict.filter(|_| !ready) {
                    c.message.clone()
                } else if ready {
                    format!(
                        "{ready_workers} workers processing {input}",
                        ready_workers = o.workers.map_or(0, |w| w.1),
                        input = o.topics.first().map_or("", |t| t.name.as_str())
                    )
                } else {
                    "see the other conditions".to_owned()
                },
                g,
            ),
        );
        phase = if o.deleting {
            Phase::Terminating
        } else if !degraded.is_empty() {
            Phase::Degraded
        } else if ready && o.desired_replicas == 0 {
            Phase::Idle
        } else if ready {
            Phase::Running
        } else {
            Phase::Pending
        };
    }
    for c in &mut conditions {
        let before = previous.and_then(|p| p.conditions.iter().find(|old| old.type_ == c.type_));
        c.last_transition_time = match before {
            Some(old) if old.status == c.status => old.last_transition_time.clone().or_else(|| Some(now.to_owned())),
            _ => Some(now.to_owned()),
        };
    }
    let (replicas, ready_replicas, _) = o.workers.unwrap_or_default();
    SensorPipelineStatus {
        observed_generation: g,
        phase,
        conditions,
        topics: if o.invalid.is_some() {
            previous.map(|p| p.topics.clone()).unwrap_or_default()
        } else {
            o.topics.clone()
        },
        replicas,
        ready_replicas,
        desired_replicas: o.desired_replicas,
        selector: o.selector.clone(),
        lag: o.lag.clone().or_else(|| previous.and_then(|p| p.lag.clone())),
        last_scale_time: o.last_scale_time.clone().or_else(|| previous.and_then(|p| p.last_scale_time.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(s: &'a SensorPipelineStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("no {t} condition"))
    }

    fn healthy() -> Observed {
        Observed {
            generation: Some(2),
            topics: vec![TopicStatus { role: "input".into(), name: "in".into(), partitions: Some(4), managed: true }],
            workers: Some((2, 2, 2)),
            desired_replicas: 2,
            ..Observed::default()
        }
    }

    #[test]
    fn ready_when_topics_and_workers_are() {
        let s = compute(None, &healthy(), "t0");
        assert_eq!(s.phase, Phase::Running);
        assert_eq!(get(&s, ct::READY).status, ConditionStatus::True);
        assert_eq!(get(&s, ct::DEGRADED).status, ConditionStatus::False);
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(get(&s, ct::READY).observed_generation, Some(2));
    }

    #[test]
    fn not_ready_while_workers_roll() {
        let mut o = healthy();
        o.workers = Some((3, 1, 1));
        let s = compute(None, &o, "t0");
        assert_eq!(get(&s, ct::WORKERS_READY).status, ConditionStatus::False);
        assert_eq!(get(&s, ct::WORKERS_READY).message, "1 of 2 workers ready (1 up to date)");
        assert_eq!((s.phase, get(&s, ct::READY).status), (Phase::Pending, ConditionStatus::False));
    }

    #[test]
    fn invalid_spec_fails_with_the_message() {
        let mut o = healthy();
        o.invalid = Some(Problem { reason: "InvalidSpec", message: "spec.x: wrong".into() });
        let s = compute(None, &o, "t0");
        assert_eq!(s.phase, Phase::Failed);
        let d = get(&s, ct::DEGRADED);
        assert_eq!(
            (d.status, d.reason.as_str(), d.message.as_str()),
            (ConditionStatus::True, "InvalidSpec", "spec.x: wrong")
        );
    }

    #[test]
    fn topic_problems_degrade_and_name_the_reason() {
        let mut o = healthy();
        o.topic_problems.push(Problem { reason: "NotSupported", message: "cannot shrink".into() });
        let s = compute(None, &o, "t0");
        assert_eq!(s.phase, Phase::Degraded);
        assert_eq!(get(&s, ct::TOPICS_READY).reason, "NotSupported");
        assert_eq!(get(&s, ct::DEGRADED).reason, "NotSupported");
        assert_eq!(get(&s, ct::READY).status, ConditionStatus::False);
    }

    #[test]
    fn transition_time_changes_only_with_the_status() {
        let first = compute(None, &healthy(), "t0");
        let same = compute(Some(&first), &healthy(), "t1");
        assert_eq!(get(&same, ct::READY).last_transition_time.as_deref(), Some("t0"));
        let mut o = healthy();
        o.workers = Some((2, 1, 2));
        let changed = compute(Some(&same), &o, "t2");
        assert_eq!(get(&changed, ct::READY).last_transition_time.as_deref(), Some("t2"));
        assert_eq!(get(&changed, ct::TOPICS_READY).last_transition_time.as_deref(), Some("t0"));
    }

    #[test]
    fn scaled_to_zero_is_idle() {
        let mut o = healthy();
        o.workers = Some((0, 0, 0));
        o.desired_replicas = 0;
        assert_eq!(compute(None, &o, "t").phase, Phase::Idle);
    }
}
