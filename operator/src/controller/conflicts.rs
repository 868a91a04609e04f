//! Topic claims across pipelines (pure): an output or state topic belongs to the oldest pipeline that names it;
//! a newer pipeline naming it gets a ResourceConflict and leaves the topic alone (two pipelines writing one
//! output topic would mix their records; deleting it would destroy the other's data).

use crate::crd::SensorPipeline;
use crate::validate::{Role, validate};

/// Topics `me` writes that an older pipeline already writes: (topic, "namespace/name" of the owner).
pub fn claimed_by_others(me: &SensorPipeline, all: &[SensorPipeline]) -> Vec<(String, String)> {
    let Ok(mine) = validate(me) else { return Vec::new() };
    let key = |sp: &SensorPipeline| {
        (sp.metadata.creation_timestamp.clone().map(|t| t.0), sp.metadata.namespace.clone(), sp.metadata.name.clone())
    };
    let mut out = Vec::new();
    for other in all.iter().filter(|o| o.metadata.uid != me.metadata.uid && key(o) < key(me)) {
        let Ok(theirs) = validate(other) else { continue };
        for t in mine.topics.iter().filter(|t| t.role != Role::Input) {
            // Reading the same input is fine; writing into another pipeline's input or outputs is not.
            if theirs.topics.iter().any(|o| o.name == t.name) {
                out.push((t.name.clone(), format!("{}/{}", theirs.namespace, theirs.name)));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn sp(name: &str, uid: &str, created_s: i64, anomalies: &str) -> SensorPipeline {
        let yaml = format!(
            "apiVersion: sensorpipe.io/v1alpha1\nkind: SensorPipeline\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  kafka: {{bootstrapServers: k:9092}}\n  input: {{topic: readings, fields: {{metrics: [t]}}}}\n  outputs: {{anomalies: {{topic: {anomalies}}}}}\n"
        );
        let mut sp: SensorPipeline = serde_yaml::from_str(&yaml).unwrap();
        sp.metadata.uid = Some(uid.into());
        sp.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(created_s).unwrap()));
        sp
    }

    #[test]
    fn the_newer_pipeline_loses_and_the_shared_input_is_fine() {
        let old = sp("a", "1", 100, "alerts");
        let new = sp("b", "2", 200, "alerts");
        let all = vec![old.clone(), new.clone()];
        assert_eq!(claimed_by_others(&new, &all), vec![("alerts".to_owned(), "ns/a".to_owned())]);
        assert!(claimed_by_others(&old, &all).is_empty(), "the older one keeps its topic");
        let separate = sp("c", "3", 300, "other");
        assert!(claimed_by_others(&separate, &[old, separate.clone()]).is_empty(), "same input topic is allowed");
    }
}
