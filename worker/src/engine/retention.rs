//! Bounded state: sensors and group values (zones, labels) not seen for `processing.stateRetention` of event
//! time are forgotten, so a partition's state follows the sensors that exist now, not every sensor that ever did.
//!
//! Every quarter of the retention (in watermark time) the state is compacted: what is still referenced is kept
//! and renumbered densely, the rest is dropped. A sensor is kept while it has a reading in the reorder buffer or
//! an open sensor window, was seen within the retention, or still owes a silence report (validation makes the
//! retention longer than the silence timeout, so a forgotten sensor's silence was reported). A group value is kept
//! while a kept sensor or an open window or buffered reading refers to it. The sweep depends only on the state and
//! the watermark, so a restored engine (snapshot + replay) sweeps at the same points and stays identical.

use super::State;
use super::intern::NONE;
use super::plan::{GroupBy, Plan};
use super::reorder::ReorderBuffer;

/// Compacts the state when the watermark has passed the next sweep point.
pub(super) fn sweep(plan: &Plan, st: &mut State) {
    if st.watermark < st.next_sweep || plan.retention_ms <= 0 {
        return;
    }
    st.next_sweep = st.watermark.saturating_add((plan.retention_ms / 4).max(1));
    let horizon = st.watermark.saturating_sub(plan.retention_ms);

    let mut keep_sensor: Vec<bool> = st
        .sensor_state
        .iter()
        .map(|s| s.last_seen >= horizon || (plan.silence.is_some() && !s.silent && s.last_seen != i64::MIN))
        .collect();
    let mut keep_group = vec![false; st.groups.len()];
    let mut mark_group = |g: u32| {
        if g != NONE {
            keep_group[g as usize] = true;
        }
    };
    let buffered: Vec<_> = Vec::from(std::mem::take(&mut st.reorder));
    for (_, r) in &buffered {
        keep_sensor[r.sensor as usize] = true;
        r.groups.iter().copied().for_each(&mut mark_group);
    }
    for (agg, w) in plan.aggregations.iter().zip(&st.windows) {
        match agg.group_by {
            GroupBy::Sensor => w.keys().for_each(|k| keep_sensor[k as usize] = true),
            GroupBy::Slot(_) => w.keys().for_each(&mut mark_group),
        }
    }
    for (s, _) in st.sensor_state.iter().zip(&keep_sensor).filter(|(_, k)| **k) {
        mark_group(s.zone);
        mark_group(s.mapped_zone);
    }
    if keep_sensor.iter().all(|k| *k) && keep_group.iter().all(|k| *k) {
        st.reorder = ReorderBuffer::from(buffered);
        return;
    }

    let sensors = st.sensors.retain(&keep_sensor);
    let groups = st.groups.retain(&keep_group);
    let group = |g: u32| if g == NONE { NONE } else { groups[g as usize] };
    let mut kept = keep_sensor.iter();
    st.sensor_state.retain(|_| kept.next().copied().unwrap_or(false));
    for s in &mut st.sensor_state {
        s.zone = group(s.zone);
        s.mapped_zone = group(s.mapped_zone);
    }
    st.silence.remap(&sensors);
    st.reorder = ReorderBuffer::from(
        buffered
            .into_iter()
            .map(|(hash, mut r)| {
                r.sensor = sensors[r.sensor as usize];
                r.groups = r.groups.map(group);
                (hash, r)
            })
            .collect::<Vec<_>>(),
    );
    for (agg, w) in plan.aggregations.iter().zip(&mut st.windows) {
        match agg.group_by {
            GroupBy::Sensor => w.remap_keys(&sensors),
            GroupBy::Slot(_) => w.remap_keys(&groups),
        }
    }
}
