//! What an enrollment counts for in analytics, as cells of a rollup: the one definition
//! that the write path (the change a save makes), the rebuild and the readers share.
//!
//! A cell is a count of one measure, in one cohort (flow version row, variant, UTC start
//! day), for the enrollment itself (step key "") or one of its step rows. An enrollment's
//! cells follow from its stored rows alone, so the change a save makes is the difference
//! between the cells of the rows before and after it.
//!
//! Time to complete is counted in a histogram (measure `time`, one cell per bucket) so a
//! percentile can find the bucket holding the rank it needs from counts, then read the few
//! exact values of that bucket. Bucket edges are whole seconds and never change: stored
//! counts depend on them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate, Utc};

use super::progress::{Enrollment, EnrollmentStatus, StepStatus};
use super::stats::seconds_between;

/// Enrollment-level measures (step key "").
pub const ENROLLED: &str = "enrolled";
/// Step-level: the step applies (it has a row).
pub const APPLIED: &str = "applied";
/// Step-level: the step became available.
pub const REACHED: &str = "reached";
/// Both levels: a histogram bucket of time to complete.
pub const TIME: &str = "time";

/// The measure counting rows in a status: `status:COMPLETED`, for instance.
pub fn status_measure(status: &str) -> String {
    format!("status:{status}")
}

/// The cohort an enrollment belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cohort {
    pub flow_id: i64,
    pub variant: Option<String>,
    pub started_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    pub flow_id: i64,
    /// Days since 1970-01-01 (UTC) of the enrollment's start.
    pub start_day: i32,
    /// "" outside any experiment.
    pub variant: String,
    /// "" for the enrollment itself.
    pub step_key: String,
    pub measure: String,
    /// The histogram bucket for `time`; 0 for plain counts.
    pub bucket: i32,
}

/// The UTC day of an instant, as days since 1970-01-01.
pub fn day_number(at: DateTime<Utc>) -> i32 {
    at.date_naive().signed_duration_since(NaiveDate::default()).num_days() as i32
}

/// The first instant of a day number.
pub fn day_start(day: i32) -> DateTime<Utc> {
    let date = NaiveDate::default() + chrono::Duration::days(day.into());
    date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// Seconds from an enrollment's start to a completion, exact to the microsecond stored.
pub fn elapsed(started_at: DateTime<Utc>, completed_at: DateTime<Utc>) -> f64 {
    seconds_between(started_at, completed_at)
}

/// The upper edges of the histogram buckets, in seconds: 1, 2, ... then each about 3%
/// above the one before (integer arithmetic, so the edges are the same on every machine),
/// up to past a century. Bucket b holds [edge b−1, edge b); bucket 0 everything below 1 s
/// (negative included: an event may predate the enrollment); the last everything above.
fn edges() -> &'static [i64] {
    static EDGES: OnceLock<Vec<i64>> = OnceLock::new();
    EDGES.get_or_init(|| {
        let mut edges = vec![1_i64];
        while edges[edges.len() - 1] < 200 * 366 * 86_400 {
            let last = edges[edges.len() - 1];
            edges.push(last + (last / 32).max(1));
        }
        edges
    })
}

/// The bucket holding a duration.
pub fn bucket_of(seconds: f64) -> i32 {
    edges().partition_point(|&edge| edge as f64 <= seconds) as i32
}

/// The bounds of a bucket: [lower, upper), None where unbounded.
pub fn bucket_bounds(bucket: i32) -> (Option<f64>, Option<f64>) {
    let edges = edges();
    let b = bucket.max(0) as usize;
    let lower = b.checked_sub(1).map(|i| edges[i] as f64);
    (lower, edges.get(b).map(|&e| e as f64))
}

/// The seconds to store on a completed enrollment: None unless it is completed.
pub fn enrollment_elapsed(state: &Enrollment) -> Option<f64> {
    match (state.status, state.completed_at) {
        (EnrollmentStatus::Completed, Some(at)) => Some(elapsed(state.started_at, at)),
        _ => None,
    }
}

/// The seconds to store on a step row: None unless the step is completed.
pub fn step_elapsed(state: &Enrollment, step: &str) -> Option<f64> {
    let s = state.steps.get(step)?;
    match (s.status, s.completed_at) {
        (StepStatus::Completed, Some(at)) => Some(elapsed(state.started_at, at)),
        _ => None,
    }
}

/// The cells one enrollment, as stored, counts for (each once).
pub fn cells(cohort: &Cohort, state: &Enrollment) -> Vec<Cell> {
    let mut out = Vec::new();
    let mut cell = cell_maker(cohort);
    enrollment_cells(state, &mut cell, &mut out);
    for key in state.steps.keys() {
        step_cells(state, key, &mut cell, &mut out);
    }
    out
}

/// Makes the cells of one cohort (its day and variant worked out once).
fn cell_maker(cohort: &Cohort) -> impl FnMut(&str, String, i32) -> Cell {
    let (flow_id, start_day) = (cohort.flow_id, day_number(cohort.started_at));
    let variant = cohort.variant.clone().unwrap_or_default();
    move |step_key, measure, bucket| Cell {
        flow_id,
        start_day,
        variant: variant.clone(),
        step_key: step_key.to_string(),
        measure,
        bucket,
    }
}

/// The cells of the enrollment row itself: they follow from its status and times alone.
fn enrollment_cells(state: &Enrollment, cell: &mut impl FnMut(&str, String, i32) -> Cell, out: &mut Vec<Cell>) {
    out.push(cell("", ENROLLED.into(), 0));
    out.push(cell("", status_measure(state.status.name()), 0));
    if let Some(seconds) = enrollment_elapsed(state) {
        out.push(cell("", TIME.into(), bucket_of(seconds)));
    }
}

/// The cells of one step row: they follow from that row and the enrollment's start alone.
fn step_cells(state: &Enrollment, key: &str, cell: &mut impl FnMut(&str, String, i32) -> Cell, out: &mut Vec<Cell>) {
    let Some(step) = state.steps.get(key) else { return };
    out.push(cell(key, APPLIED.into(), 0));
    if step.available_at.is_some() {
        out.push(cell(key, REACHED.into(), 0));
    }
    out.push(cell(key, status_measure(step.status.name()), 0));
    if let Some(seconds) = step_elapsed(state, key) {
        out.push(cell(key, TIME.into(), bucket_of(seconds)));
    }
}

/// The net change in cells from one stored enrollment to another (None: no row), sorted,
/// without zeros. A version migration moves every cell from one cohort to the other.
pub fn changes(before: Option<(&Cohort, &Enrollment)>, after: Option<(&Cohort, &Enrollment)>) -> Vec<(Cell, i64)> {
    let mut net: BTreeMap<Cell, i64> = BTreeMap::new();
    for (side, sign) in [(before, -1), (after, 1)] {
        if let Some((cohort, state)) = side {
            for cell in cells(cohort, state) {
                *net.entry(cell).or_default() += sign;
            }
        }
    }
    net.into_iter().filter(|(_, n)| *n != 0).collect()
}

/// The change a save makes within one cohort: the enrollment row goes from `before` to
/// `after`, and so do the rows of `steps`; every other step row stays as it was. Equal to
/// `changes` of the two enrollments as stored, but it looks at the saved rows only: a
/// batch of events saves a step or two of enrollments with a hundred.
pub fn save_changes(cohort: &Cohort, before: &Enrollment, after: &Enrollment, steps: &[String]) -> Vec<(Cell, i64)> {
    let mut cell = cell_maker(cohort);
    let (mut minus, mut plus) = (Vec::new(), Vec::new());
    enrollment_cells(before, &mut cell, &mut minus);
    enrollment_cells(after, &mut cell, &mut plus);
    let mut keys: Vec<&String> = steps.iter().collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        // A step the save does not carry is not written: its row stays as loaded.
        if after.steps.contains_key(key.as_str()) {
            step_cells(before, key, &mut cell, &mut minus);
            step_cells(after, key, &mut cell, &mut plus);
        }
    }
    let mut net: BTreeMap<Cell, i64> = BTreeMap::new();
    for (cells, sign) in [(minus, -1), (plus, 1)] {
        for cell in cells {
            *net.entry(cell).or_default() += sign;
        }
    }
    net.into_iter().filter(|(_, n)| *n != 0).collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::StepState;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 2, h, m, 0).unwrap()
    }

    fn cohort() -> Cohort {
        Cohort { flow_id: 7, variant: None, started_at: at(10, 0) }
    }

    #[test]
    fn days_count_from_the_epoch_in_utc() {
        assert_eq!(day_number(Utc.with_ymd_and_hms(1970, 1, 1, 23, 59, 59).unwrap()), 0);
        assert_eq!(day_number(Utc.with_ymd_and_hms(1970, 1, 2, 0, 0, 0).unwrap()), 1);
        assert_eq!(day_number(Utc.with_ymd_and_hms(1969, 12, 31, 12, 0, 0).unwrap()), -1);
        let day = day_number(at(10, 0));
        assert_eq!(day_start(day), at(0, 0));
        assert_eq!(day_number(day_start(day)), day);
    }

    #[test]
    fn buckets_partition_the_line_at_their_edges() {
        assert_eq!(bucket_of(-5.0), 0);
        assert_eq!(bucket_of(0.999_999), 0);
        assert_eq!(bucket_of(1.0), 1);
        assert_eq!(bucket_of(1.5), 1);
        assert_eq!(bucket_of(2.0), 2);
        assert_eq!(bucket_bounds(0), (None, Some(1.0)));
        assert_eq!(bucket_bounds(1), (Some(1.0), Some(2.0)));
        // Every value lands in the bucket whose bounds hold it, across the whole range.
        for seconds in [0.5, 3.0, 59.9, 3_600.0, 86_399.999_999, 1e7, 3.1e9, 1e12] {
            let (lower, upper) = bucket_bounds(bucket_of(seconds));
            assert!(lower.is_none_or(|l| l <= seconds), "{seconds} below {lower:?}");
            assert!(upper.is_none_or(|u| seconds < u), "{seconds} not below {upper:?}");
        }
        // About 3% wide past the first few dozen seconds: a bucket holds few values.
        let b = bucket_of(86_400.0);
        let (lower, upper) = bucket_bounds(b);
        let width = upper.unwrap() / lower.unwrap();
        assert!((1.02..1.04).contains(&width), "{width}");
        // The edges are fixed forever: stored counts depend on them.
        assert_eq!(edges().len(), 671);
        assert_eq!(edges()[40], 41);
        assert_eq!(bucket_of(86_400.0), 306);
    }

    #[test]
    fn a_new_enrollment_counts_as_enrolled_and_in_its_status() {
        let state = Enrollment::new(at(10, 0));
        let got: Vec<(String, String)> =
            cells(&cohort(), &state).into_iter().map(|c| (c.step_key, c.measure)).collect();
        assert_eq!(got, vec![("".into(), "enrolled".into()), ("".into(), "status:IN_PROGRESS".into())]);
    }

    #[test]
    fn completing_a_step_moves_it_between_statuses_and_adds_its_time() {
        let mut before = Enrollment::new(at(10, 0));
        before.steps.insert("a".into(), StepState { available_at: Some(at(10, 0)), ..StepState::untouched() });
        let mut after = before.clone();
        let step = after.steps.get_mut("a").unwrap();
        step.status = StepStatus::Completed;
        step.completed_at = Some(at(11, 0));
        let got: Vec<(String, i32, i64)> = changes(Some((&cohort(), &before)), Some((&cohort(), &after)))
            .into_iter()
            .map(|(c, n)| (c.measure, c.bucket, n))
            .collect();
        assert_eq!(
            got,
            vec![
                ("status:COMPLETED".into(), 0, 1),
                ("status:PENDING".into(), 0, -1),
                ("time".into(), bucket_of(3600.0), 1),
            ]
        );
        assert_eq!(step_elapsed(&after, "a"), Some(3600.0));
        assert_eq!(step_elapsed(&before, "a"), None);
    }

    #[test]
    fn a_migration_moves_every_cell_to_the_new_version() {
        let mut state = Enrollment::new(at(10, 0));
        state.status = EnrollmentStatus::Completed;
        state.completed_at = Some(at(12, 30));
        let moved = Cohort { flow_id: 8, ..cohort() };
        let net = changes(Some((&cohort(), &state)), Some((&moved, &state)));
        assert_eq!(net.len(), 6);
        assert_eq!(net.iter().filter(|(c, n)| c.flow_id == 7 && *n == -1).count(), 3);
        assert_eq!(net.iter().filter(|(c, n)| c.flow_id == 8 && *n == 1).count(), 3);
        assert!(changes(Some((&cohort(), &state)), Some((&cohort(), &state))).is_empty());
    }

    #[test]
    fn a_save_changes_what_its_rows_change_and_nothing_else() {
        let mut before = Enrollment::new(at(10, 0));
        for key in ["a", "b", "c"] {
            before.steps.insert(key.into(), StepState { available_at: Some(at(10, 0)), ..StepState::untouched() });
        }
        let mut after = before.clone();
        for key in ["a", "c"] {
            let step = after.steps.get_mut(key).unwrap();
            step.status = StepStatus::Completed;
            step.completed_at = Some(at(11, 0));
        }
        after.steps.insert("d".into(), StepState::untouched());
        after.status = EnrollmentStatus::Completed;
        after.completed_at = Some(at(11, 0));
        // Saved: the enrollment row and the rows of a (twice), d, and x (which it lacks);
        // c changed in memory but is not saved, so its row, and its cells, stay as loaded.
        let saved: Vec<String> = ["a", "d", "a", "x"].map(String::from).to_vec();
        let mut stored = before.clone();
        stored.status = after.status;
        stored.completed_at = after.completed_at;
        for key in ["a", "d"] {
            stored.steps.insert(key.into(), after.steps[key].clone());
        }
        let expected = changes(Some((&cohort(), &before)), Some((&cohort(), &stored)));
        assert_eq!(save_changes(&cohort(), &before, &after, &saved), expected);
        assert!(expected.iter().any(|(c, _)| c.step_key == "d"));
        assert!(expected.iter().all(|(c, _)| c.step_key != "c" && c.step_key != "b"));
        assert!(save_changes(&cohort(), &before, &before, &saved).is_empty());
    }
}
