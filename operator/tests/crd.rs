//! The generated CRD: `crds/` matches the generator, and manifests are judged by its schema and CEL rules the way
//! an API server judges them at `kubectl apply` (structural schema, pruning of unknown fields, defaults, then
//! `x-kubernetes-validations` evaluated by kube's `cel` feature, the `cel` crate — a CEL interpreter in Rust, not
//! Kubernetes' own, and without its cost estimation; e2e/test_crd_cost.py runs the API server's CRD validation).

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns: a panic is the failure report

use std::path::PathBuf;

use kube::core::cel::Validator;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn crd() -> Value {
    let text = std::fs::read_to_string(root().join("crds/sensorpipe.io_sensorpipelines.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn example() -> Value {
    let text = std::fs::read_to_string(root().join("examples/smart-building.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Fields of `object` the schema does not declare (the API server would drop them, or reject them with
/// `kubectl apply --validate=strict`).
fn unknown_fields(schema: &Value, object: &Value, path: &str, out: &mut Vec<String>) {
    match object {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            for (k, v) in map {
                let at = format!("{path}.{k}");
                if let Some(sub) = props.and_then(|p| p.get(k)) {
                    unknown_fields(sub, v, &at, out);
                } else if let Some(sub) = additional.filter(|a| a.is_object()) {
                    unknown_fields(sub, v, &at, out);
                } else if !(preserve || path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata")) {
                    out.push(at);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                unknown_fields(&schema["items"], v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// What the API server would say about `object`: schema errors, unknown fields and failed CEL rules.
fn admission_errors(object: &Value) -> Vec<String> {
    let schema = schema();
    let mut errors = Vec::new();
    // OpenAPI v3 schemas are JSON Schema enough for types, required, enums, ranges and patterns.
    let validator = jsonschema::validator_for(&schema).unwrap();
    errors.extend(validator.iter_errors(object).map(|e| format!("{}: {e}", e.instance_path())));
    unknown_fields(&schema, object, "", &mut errors);
    if let Err(cel) = Validator::new().validate(&schema, object, None) {
        errors.extend(cel.into_vec().into_iter().map(|e| e.to_string()));
    }
    errors
}

#[test]
fn crds_folder_matches_the_generator() {
    let generated = sensorpipe_operator::crd::crd_yaml().unwrap();
    let committed = std::fs::read_to_string(root().join("crds/sensorpipe.io_sensorpipelines.yaml")).unwrap();
    assert!(generated == committed, "crds/ is stale: run scripts/generate.sh");
}

#[test]
fn the_crd_has_what_kubectl_users_rely_on() {
    let crd = crd();
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "sensorpipe.io");
    assert_eq!(spec["names"]["shortNames"][0], "sp");
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let columns: Vec<&str> =
        version["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for column in ["Ready", "Replicas", "Lag", "Age"] {
        assert!(columns.contains(&column), "printer column {column} missing: {columns:?}");
    }
    assert!(version["subresources"]["status"].is_object());
    assert_eq!(version["subresources"]["scale"]["specReplicasPath"], ".spec.workers.replicas");
    assert_eq!(version["subresources"]["scale"]["statusReplicasPath"], ".status.replicas");
}

#[test]
fn every_spec_field_is_described() {
    fn walk(path: &str, v: &Value, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let at = format!("{path}.{name}");
                if prop.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
                    missing.push(at.clone());
                }
                walk(&at, prop, missing);
            }
        }
        if let Some(items) = v.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
        if let Some(additional) = v.get("additionalProperties").filter(|a| a.is_object()) {
            walk(&format!("{path}{{}}"), additional, missing);
        }
    }
    let schema = schema();
    let mut missing = Vec::new();
    walk("spec", &schema["properties"]["spec"], &mut missing);
    walk("status", &schema["properties"]["status"], &mut missing);
    assert!(missing.is_empty(), "fields without a description: {missing:#?}");
}

#[test]
fn the_example_is_admitted() {
    let errors = admission_errors(&example());
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Each mistake, applied to the example, with the message the user sees.
#[test]
fn cross_field_mistakes_are_rejected_with_their_message() {
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "clear above an `above` limit",
            Box::new(|v| v["spec"]["processing"]["thresholds"][0]["clear"] = 31.into()),
            "clear must be at or below the limit",
        ),
        (
            "both above and below",
            Box::new(|v| v["spec"]["processing"]["thresholds"][0]["below"] = 5.into()),
            "set exactly one of above and below",
        ),
        (
            "min above max replicas",
            Box::new(|v| v["spec"]["workers"]["autoscaling"]["minReplicas"] = 20.into()),
            "minReplicas must not exceed maxReplicas",
        ),
        (
            "hopping without advance",
            Box::new(|v| v["spec"]["processing"]["aggregations"][0]["window"]["type"] = "hopping".into()),
            "a hopping window needs advance",
        ),
        (
            "advance longer than size",
            Box::new(|v| {
                let w = &mut v["spec"]["processing"]["aggregations"][0]["window"];
                w["type"] = "hopping".into();
                w["advance"] = "10m".into();
            }),
            "advance must be positive and at most size",
        ),
        (
            "output on the input topic",
            Box::new(|v| v["spec"]["outputs"]["aggregates"]["topic"] = "temperature_readings".into()),
            "topics must all differ",
        ),
        (
            "default topic name collides",
            Box::new(|v| {
                v["spec"]["outputs"]["deadLetter"].as_object_mut().unwrap().remove("topic");
                v["spec"]["outputs"]["anomalies"]["topic"] = "building-a-dead-letter".into();
            }),
            "topics must all differ",
        ),
        (
            "no lag target",
            Box::new(|v| {
                let a = v["spec"]["workers"]["autoscaling"].as_object_mut().unwrap();
                a.remove("lagRecordsTarget");
                a.remove("lagSecondsTarget");
            }),
            "set lagRecordsTarget, lagSecondsTarget or both",
        ),
        (
            "non-positive spike delta",
            Box::new(|v| v["spec"]["processing"]["spikes"][0]["delta"] = (-1.0).into()),
            "delta must be positive",
        ),
        ("unknown delivery", Box::new(|v| v["spec"]["workers"]["delivery"] = "maybeOnce".into()), "maybeOnce"),
        ("typo in a field name", Box::new(|v| v["spec"]["input"]["partitons"] = 3.into()), ".spec.input.partitons"),
    ];
    for (what, mutate, expected) in cases {
        let mut v = example();
        mutate(&mut v);
        let errors = admission_errors(&v);
        assert!(errors.iter().any(|e| e.contains(expected)), "{what}: expected {expected:?} in {errors:#?}");
    }
}
