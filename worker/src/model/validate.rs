//! Semantic checks the schema cannot express (references between fields, ranges, uniqueness). Every problem is
//! reported at once, each with the path of the field to fix.

use std::collections::HashSet;
use std::fmt;

use super::{Duration, MAX_FIELD_NAME, MAX_LABELS, MAX_METRICS, MAX_RULES, PipelineDefinition, WindowKind};

/// Largest number of windows one reading may fall into (hopping windows: size / advance).
pub const MAX_WINDOWS_PER_READING: i64 = 60;

/// One problem in a pipeline definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, for example `processing.thresholds[0].clear`.
    pub path: String,
    pub message: String,
}

/// Every problem found in a pipeline definition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Report(Vec<FieldError>);

impl Report {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), message: message.into() });
    }
}

fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

/// Checks a definition; `Ok` means the engine can run it.
pub fn validate(def: &PipelineDefinition) -> Result<(), ValidationErrors> {
    let mut r = Report::default();
    let fields = &def.input.fields;
    let metrics: HashSet<&str> = fields.metrics.iter().map(String::as_str).collect();

    // Input fields.
    if fields.metrics.is_empty() {
        r.error("input.fields.metrics", "list at least one numeric field to read, for example [temperature]");
    }
    if fields.metrics.len() > MAX_METRICS {
        r.error("input.fields.metrics", format!("at most {MAX_METRICS} metrics per pipeline"));
    }
    if fields.labels.len() > MAX_LABELS {
        r.error("input.fields.labels", format!("at most {MAX_LABELS} label fields per pipeline"));
    }
    let mut seen_fields = HashSet::new();
    let named = [("sensorId", &fields.sensor_id), ("timestamp", &fields.timestamp)];
    let all_fields = named
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_str()))
        .chain(fields.metrics.iter().enumerate().map(|(i, m)| (format!("metrics[{i}]"), m.as_str())))
        .chain(fields.zone.iter().map(|z| ("zone".to_owned(), z.as_str())))
        .chain(fields.labels.iter().enumerate().map(|(i, l)| (format!("labels[{i}]"), l.as_str())));
    for (key, field) in all_fields {
        if field.is_empty() {
            r.error(format!("input.fields.{key}"), "field name must not be empty");
        } else if field.len() > MAX_FIELD_NAME {
            r.error(format!("input.fields.{key}"), format!("field names are at most {MAX_FIELD_NAME} bytes long"));
        } else if !seen_fields.insert(field) {
            r.error(format!("input.fields.{key}"), format!("field {field:?} is mapped twice"));
        }
    }
    for (i, label) in fields.labels.iter().enumerate() {
        if label == "sensor" || label == "zone" {
            r.error(
                format!("input.fields.labels[{i}]"),
                "a label may not be called \"sensor\" or \"zone\": those names select the built-in groupings",
            );
        }
    }

    // Names are ids in output records and metric labels: keep them unique and tame.
    let p = &def.processing;
    for (path, n) in
        [("thresholds", p.thresholds.len()), ("spikes", p.spikes.len()), ("aggregations", p.aggregations.len())]
    {
        if n > MAX_RULES {
            r.error(format!("processing.{path}"), format!("at most {MAX_RULES} per pipeline, not {n}"));
        }
    }
    let mut names = HashSet::new();
    let mut check_name = |r: &mut Report, path: String, name: &str| {
        if !is_valid_name(name) {
            r.error(
                path,
                format!("name {name:?} must be 1-63 lowercase letters, digits, '-' or '_', starting with a letter"),
            );
        } else if !names.insert(name.to_owned()) {
            r.error(path, format!("name {name:?} is used by another rule or aggregation"));
        }
    };
    let check_metric = |r: &mut Report, path: String, metric: &str| {
        if !metrics.contains(metric) {
            r.error(path, format!("unknown metric {metric:?}; input.fields.metrics lists {:?}", fields.metrics));
        }
    };

    for (i, t) in p.thresholds.iter().enumerate() {
        let at = format!("processing.thresholds[{i}]");
        check_name(&mut r, format!("{at}.name"), &t.name);
        check_metric(&mut r, format!("{at}.metric"), &t.metric);
        match (t.above, t.below) {
            (Some(_), Some(_)) | (None, None) => r.error(&at, "set exactly one of `above` and `below`"),
            (Some(limit), None) => {
                if !limit.is_finite() {
                    r.error(format!("{at}.above"), "must be a finite number");
                }
                if let Some(clear) = t.clear.filter(|c| !(c.is_finite() && *c <= limit)) {
                    r.error(format!("{at}.clear"), format!("{clear} must be at or below the limit {limit} (`above`)"));
                }
            }
            (None, Some(limit)) => {
                if !limit.is_finite() {
                    r.error(format!("{at}.below"), "must be a finite number");
                }
                if let Some(clear) = t.clear.filter(|c| !(c.is_finite() && *c >= limit)) {
                    r.error(format!("{at}.clear"), format!("{clear} must be at or above the limit {limit} (`below`)"));
                }
            }
        }
        if t.min_count == 0 {
            r.error(format!("{at}.minCount"), "must be at least 1");
        }
    }

    for (i, s) in p.spikes.iter().enumerate() {
        let at = format!("processing.spikes[{i}]");
        check_name(&mut r, format!("{at}.name"), &s.name);
        check_metric(&mut r, format!("{at}.metric"), &s.metric);
        if !(s.delta.is_finite() && s.delta > 0.0) {
            r.error(format!("{at}.delta"), "must be a positive number");
        }
        if s.within == Duration::ZERO {
            r.error(format!("{at}.within"), "must be longer than 0s");
        }
    }

    if let Some(s) = &p.silence {
        check_name(&mut r, "processing.silence.name".to_owned(), &s.name);
        if s.timeout == Duration::ZERO {
            r.error("processing.silence.timeout", "must be longer than 0s");
        }
    }

    for (i, a) in p.aggregations.iter().enumerate() {
        let at = format!("processing.aggregations[{i}]");
        check_name(&mut r, format!("{at}.name"), &a.name);
        for (j, m) in a.metrics.iter().enumerate() {
            check_metric(&mut r, format!("{at}.metrics[{j}]"), m);
        }
        if a.functions.is_empty() {
            r.error(format!("{at}.functions"), "list at least one of avg, min, max, count, sum");
        }
        let group = a.group_by.as_str();
        if group != "sensor" && group != "zone" && !fields.labels.iter().any(|l| l == group) {
            r.error(
                format!("{at}.groupBy"),
                format!("{group:?} is neither sensor, zone nor one of input.fields.labels {:?}", fields.labels),
            );
        }
        if group == "zone" && fields.zone.is_none() && fields.sensor_zones.is_empty() {
            r.error(format!("{at}.groupBy"), "grouping by zone needs input.fields.zone or input.fields.sensorZones");
        }
        let size = a.window.size.as_millis_i64();
        if size <= 0 {
            r.error(format!("{at}.window.size"), "must be longer than 0s");
            continue;
        }
        match (a.window.kind, a.window.advance) {
            (WindowKind::Tumbling, Some(_)) => {
                r.error(format!("{at}.window.advance"), "only hopping windows have an advance")
            }
            (WindowKind::Hopping, None) => r.error(format!("{at}.window.advance"), "hopping windows need an advance"),
            (WindowKind::Hopping, Some(advance)) => {
                let advance = advance.as_millis_i64();
                if advance <= 0 || advance > size || size % advance != 0 {
                    r.error(
                        format!("{at}.window.advance"),
                        "must be longer than 0s, at most the window size, and divide the size evenly",
                    );
                } else if size / advance > MAX_WINDOWS_PER_READING {
                    r.error(
                        format!("{at}.window.advance"),
                        format!("size / advance must be at most {MAX_WINDOWS_PER_READING} windows per reading"),
                    );
                }
            }
            (WindowKind::Tumbling, None) => {}
        }
    }

    check_retention(&mut r, p);
    if r.0.is_empty() { Ok(()) } else { Err(ValidationErrors(r.0)) }
}

/// State may only be forgotten once nothing can need it: the retention must outlast every time span a rule or
/// window looks back over, and the reorder and lateness spans.
fn check_retention(r: &mut Report, p: &crate::model::Processing) {
    let retention = p.state_retention.as_millis_i64();
    let e = &p.event_time;
    let mut spans = vec![(
        "eventTime.maxOutOfOrderness + allowedLateness".to_owned(),
        e.max_out_of_orderness.as_millis_i64() + e.allowed_lateness.as_millis_i64(),
    )];
    spans.extend(p.silence.iter().map(|s| ("silence.timeout".to_owned(), s.timeout.as_millis_i64())));
    spans.extend(p.spikes.iter().map(|s| (format!("spike {} within", s.name), s.within.as_millis_i64())));
    spans.extend(p.thresholds.iter().map(|t| (format!("threshold {} for", t.name), t.for_duration.as_millis_i64())));
    spans.extend(p.aggregations.iter().map(|a| {
        (
            format!("aggregation {} window + allowedLateness", a.name),
            a.window.size.as_millis_i64() + e.allowed_lateness.as_millis_i64(),
        )
    }));
    if let Some((what, span)) = spans.into_iter().max_by_key(|(_, span)| *span)
        && retention <= span
    {
        r.error(
            "processing.stateRetention",
            format!("must be longer than {what} ({}s): state still needed would be forgotten", span / 1000),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_pipeline;
    use super::{MAX_FIELD_NAME, MAX_RULES};

    fn errors_of(yaml: &str) -> String {
        load_pipeline(yaml, "t.yaml").unwrap_err().to_string()
    }

    const BASE: &str = "input:\n  fields:\n    metrics: [temperature]\n    zone: zone\nprocessing:\n";

    #[test]
    fn threshold_clear_must_be_on_the_right_side() {
        let e =
            errors_of(&format!("{BASE}  thresholds:\n  - {{name: hot, metric: temperature, above: 30, clear: 31}}\n"));
        assert!(e.contains("processing.thresholds[0].clear: 31 must be at or below the limit 30"), "{e}");
        let e =
            errors_of(&format!("{BASE}  thresholds:\n  - {{name: cold, metric: temperature, below: 5, clear: 4}}\n"));
        assert!(e.contains("must be at or above the limit 5"), "{e}");
    }

    #[test]
    fn lists_and_field_names_have_the_crd_bounds() {
        let rules: String =
            (0..=MAX_RULES).map(|i| format!("  - {{name: t{i}, metric: temperature, above: 30}}\n")).collect();
        let e = errors_of(&format!("{BASE}  thresholds:\n{rules}"));
        assert!(e.contains("processing.thresholds: at most 64 per pipeline, not 65"), "{e}");
        let long = "f".repeat(MAX_FIELD_NAME + 1);
        let e = errors_of(&format!("input:\n  fields:\n    metrics: [temperature]\n    zone: {long}\n"));
        assert!(e.contains("input.fields.zone: field names are at most 253 bytes long"), "{e}");
    }

    #[test]
    fn threshold_needs_exactly_one_direction() {
        let e = errors_of(&format!("{BASE}  thresholds:\n  - {{name: x, metric: temperature}}\n"));
        assert!(e.contains("exactly one of `above` and `below`"), "{e}");
    }

    #[test]
    fn reports_all_problems_at_once() {
        let e = errors_of(&format!(
            "{BASE}  thresholds:\n  - {{name: Bad Name, metric: t, above: 1, minCount: 0}}\n  spikes:\n  - {{name: s, metric: temperature, delta: -1, within: 0s}}\n"
        ));
        for needle in [
            "thresholds[0].name",
            "thresholds[0].metric",
            "thresholds[0].minCount",
            "spikes[0].delta",
            "spikes[0].within",
        ] {
            assert!(e.contains(needle), "missing {needle} in {e}");
        }
    }

    #[test]
    fn names_are_unique_across_rules() {
        let e = errors_of(&format!(
            "{BASE}  thresholds:\n  - {{name: a, metric: temperature, above: 1}}\n  spikes:\n  - {{name: a, metric: temperature, delta: 1, within: 1m}}\n"
        ));
        assert!(e.contains("spikes[0].name: name \"a\" is used by another"), "{e}");
    }

    #[test]
    fn windows_and_groupings_are_checked() {
        let e = errors_of(&format!(
            "{BASE}  aggregations:\n  - {{name: a, window: {{type: hopping, size: 5m, advance: 2m}}, groupBy: floor}}\n  - {{name: b, window: {{size: 5m, advance: 1m}}}}\n"
        ));
        assert!(
            e.contains("aggregations[0].window.advance: must be longer than 0s, at most the window size, and divide"),
            "{e}"
        );
        assert!(e.contains("aggregations[0].groupBy: \"floor\" is neither"), "{e}");
        assert!(e.contains("aggregations[1].window.advance: only hopping windows"), "{e}");
    }

    #[test]
    fn zone_grouping_needs_a_zone_source() {
        let e = errors_of(
            "input:\n  fields: {metrics: [t]}\nprocessing:\n  aggregations:\n  - {name: a, window: {size: 5m}}\n",
        );
        assert!(e.contains("grouping by zone needs input.fields.zone"), "{e}");
    }

    #[test]
    fn fields_must_not_collide() {
        let e = errors_of("input:\n  fields: {metrics: [timestamp, t, t]}\n");
        assert!(e.contains("input.fields.metrics[0]: field \"timestamp\" is mapped twice"), "{e}");
        assert!(e.contains("input.fields.metrics[2]: field \"t\" is mapped twice"), "{e}");
    }
}
