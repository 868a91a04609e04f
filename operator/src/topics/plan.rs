//! Pure topic reconciliation: desired topics ([`TopicPlan`]) against what the broker reports → the actions to
//! take and the problems to report. Decreasing partitions and changing the replication factor are refused
//! (Kafka cannot do the first; the second needs a reassignment the operator does not make on its own).

use std::collections::BTreeMap;

use super::ObservedTopic;
use crate::validate::{Role, TopicPlan};

/// A change to make on the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicAction {
    Create {
        name: String,
        partitions: i32,
        replication_factor: Option<i32>,
        config: BTreeMap<String, String>,
    },
    AddPartitions {
        name: String,
        from: i32,
        to: i32,
    },
    /// Set these configs back to the spec's values.
    RevertConfig {
        name: String,
        config: BTreeMap<String, String>,
    },
}

/// Something the operator cannot fix by itself; it becomes a condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicIssue {
    /// Condition reason: `InputTopicMissing` or `NotSupported`.
    pub reason: &'static str,
    pub message: String,
}

/// Compares desired with observed topics. `observed[name]` is `None` when the topic does not exist.
/// `default_partitions` fills in a managed topic without a partition count (the state topic of an unmanaged
/// input follows the input).
pub fn plan_topics(
    desired: &[TopicPlan],
    observed: &BTreeMap<String, Option<ObservedTopic>>,
) -> (Vec<TopicAction>, Vec<TopicIssue>) {
    let mut actions = Vec::new();
    let mut issues = Vec::new();
    let input_partitions = desired
        .iter()
        .find(|t| t.role == Role::Input)
        .and_then(|t| observed.get(&t.name).cloned().flatten().map(|o| o.partitions).or(t.partitions));
    for t in desired {
        let want_partitions = match (t.partitions, t.role) {
            (Some(p), _) => Some(p),
            (None, Role::State | Role::Repartition) => input_partitions,
            (None, _) => None,
        };
        match observed.get(&t.name).cloned().flatten() {
            None if t.managed => actions.push(TopicAction::Create {
                name: t.name.clone(),
                partitions: want_partitions.unwrap_or(1),
                replication_factor: t.replication_factor,
                config: t.config.clone(),
            }),
            None => issues.push(TopicIssue {
                reason: "InputTopicMissing",
                message: format!(
                    "input topic {} does not exist; create it, or set spec.input.managed: true to have it created",
                    t.name
                ),
            }),
            Some(_) if !t.managed => {}
            Some(o) => {
                match want_partitions {
                    // A group's partials must all meet in one repartition partition, and the workers hash over
                    // the count they started with: the repartition topic keeps the count it was created with.
                    Some(_) if t.role == Role::Repartition => {}
                    Some(want) if want > o.partitions => {
                        actions.push(TopicAction::AddPartitions { name: t.name.clone(), from: o.partitions, to: want })
                    }
                    // The state topic may have more partitions than the input; that is harmless.
                    Some(want) if want < o.partitions && t.role != Role::State => issues.push(TopicIssue {
                        reason: "NotSupported",
                        message: format!(
                            "topic {} has {} partitions; Kafka cannot reduce them to {want} (left as is)",
                            t.name, o.partitions
                        ),
                    }),
                    _ => {}
                }
                if let Some(rf) = t.replication_factor
                    && o.replication_factor != rf
                {
                    issues.push(TopicIssue {
                        reason: "NotSupported",
                        message: format!(
                            "topic {} has replication factor {}; changing it to {rf} needs a partition reassignment \
                             (left as is)",
                            t.name, o.replication_factor
                        ),
                    });
                }
                let drift: BTreeMap<String, String> = t
                    .config
                    .iter()
                    .filter(|(k, v)| o.config.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !drift.is_empty() {
                    actions.push(TopicAction::RevertConfig { name: t.name.clone(), config: drift });
                }
            }
        }
    }
    (actions, issues)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(role: Role, name: &str, managed: bool, partitions: Option<i32>) -> TopicPlan {
        TopicPlan {
            role,
            name: name.to_owned(),
            managed,
            partitions,
            replication_factor: None,
            config: BTreeMap::new(),
        }
    }

    fn seen(partitions: i32, rf: i32, config: &[(&str, &str)]) -> Option<ObservedTopic> {
        Some(ObservedTopic {
            partitions,
            replication_factor: rf,
            config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            overrides: BTreeMap::new(),
        })
    }

    #[test]
    fn creates_missing_managed_topics_and_reports_a_missing_unmanaged_input() {
        let desired = [plan(Role::Input, "in", false, None), plan(Role::Anomalies, "a", true, Some(3))];
        let (actions, issues) = plan_topics(&desired, &BTreeMap::from([("in".into(), None), ("a".into(), None)]));
        assert_eq!(
            actions,
            vec![TopicAction::Create {
                name: "a".into(),
                partitions: 3,
                replication_factor: None,
                config: BTreeMap::new()
            }]
        );
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].reason, "InputTopicMissing");
        assert!(issues[0].message.contains("managed: true"), "{}", issues[0].message);
    }

    #[test]
    fn state_topic_follows_the_actual_input_partitions() {
        let desired = [plan(Role::Input, "in", false, None), plan(Role::State, "s", true, None)];
        let observed = BTreeMap::from([("in".into(), seen(12, 1, &[])), ("s".into(), None)]);
        let (actions, _) = plan_topics(&desired, &observed);
        assert!(matches!(&actions[0], TopicAction::Create { partitions: 12, .. }), "{actions:?}");
    }

    #[test]
    fn grows_partitions_refuses_to_shrink_them_or_change_replication() {
        let mut grow = plan(Role::Anomalies, "a", true, Some(6));
        grow.replication_factor = Some(3);
        let shrink = plan(Role::Aggregates, "g", true, Some(2));
        let observed = BTreeMap::from([("a".into(), seen(3, 1, &[])), ("g".into(), seen(4, 1, &[]))]);
        let (actions, issues) = plan_topics(&[grow, shrink], &observed);
        assert_eq!(actions, vec![TopicAction::AddPartitions { name: "a".into(), from: 3, to: 6 }]);
        let reasons: Vec<_> = issues.iter().map(|i| (i.reason, i.message.contains("replication"))).collect();
        assert_eq!(reasons, vec![("NotSupported", true), ("NotSupported", false)]);
    }

    #[test]
    fn reverts_only_drifted_configs_of_managed_topics() {
        let mut t = plan(Role::Anomalies, "a", true, Some(1));
        t.config = BTreeMap::from([("retention.ms".into(), "1000".into()), ("cleanup.policy".into(), "delete".into())]);
        let mut input = plan(Role::Input, "in", false, None);
        input.config = BTreeMap::from([("retention.ms".into(), "5".into())]);
        let observed = BTreeMap::from([
            ("a".into(), seen(1, 1, &[("retention.ms", "99"), ("cleanup.policy", "delete"), ("other", "x")])),
            ("in".into(), seen(1, 1, &[("retention.ms", "7")])),
        ]);
        let (actions, issues) = plan_topics(&[t, input], &observed);
        assert!(issues.is_empty());
        assert_eq!(
            actions,
            vec![TopicAction::RevertConfig {
                name: "a".into(),
                config: BTreeMap::from([("retention.ms".into(), "1000".into())])
            }]
        );
    }

    #[test]
    fn nothing_to_do_when_everything_matches() {
        let t = plan(Role::Anomalies, "a", true, Some(2));
        let (actions, issues) = plan_topics(&[t], &BTreeMap::from([("a".into(), seen(2, 1, &[]))]));
        assert!(actions.is_empty() && issues.is_empty());
    }
}
