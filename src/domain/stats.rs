//! The arithmetic behind analytics, pure: percentiles, rates, funnel drop-off, the Wilson
//! interval, the normal distribution, the two-proportion z-test, the small-sample rule and
//! UTC time buckets. Persistence counts; everything derived from the counts happens here,
//! once, so SQLite and PostgreSQL report the same numbers.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

/// The z of a two-sided 95% interval: the 97.5th percentile of the standard normal.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// The smallest sample the experiment report draws conclusions from (see `small_sample`).
pub const MIN_EXPOSURES: i64 = 100;
pub const MIN_OUTCOMES: i64 = 10;

/// `part / whole`, None when `whole` is zero (a rate of nothing is unknown, not 0).
pub fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole != 0).then(|| part as f64 / whole as f64)
}

/// The `fraction` percentile of ascending `sorted` values, interpolating linearly between
/// the closest ranks: exactly PostgreSQL's `percentile_cont`, computed the same way
/// (`lo + (hi - lo) * (fraction * (n - 1) - floor)`), so both backends agree to the bit.
/// None for no values.
pub fn percentile_cont(sorted: &[f64], fraction: f64) -> Option<f64> {
    let at = Ranks::of(sorted.len() as i64, fraction)?;
    Some(at.interpolate(sorted[at.lower as usize], sorted[at.upper as usize]))
}

/// Where `percentile_cont(fraction)` of n sorted values looks: the values at ranks `lower`
/// and `upper` (0-based), mixed by `weight`. Lets a caller that cannot hold every value
/// (the analytics rollup) fetch just those two.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranks {
    pub lower: i64,
    pub upper: i64,
    weight: f64,
}

impl Ranks {
    pub fn of(n: i64, fraction: f64) -> Option<Ranks> {
        if n <= 0 {
            return None;
        }
        let position = fraction * (n - 1) as f64;
        let (first, second) = (position.floor(), position.ceil());
        Some(Ranks { lower: first as i64, upper: second as i64, weight: position - first })
    }

    pub fn interpolate(self, lower: f64, upper: f64) -> f64 {
        if self.upper > self.lower { lower + (upper - lower) * self.weight } else { lower }
    }
}

/// The median and 90th percentile of some durations, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub median: Option<f64>,
    pub p90: Option<f64>,
}

impl Percentiles {
    /// From durations in any order.
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        values.sort_by(f64::total_cmp);
        Percentiles { median: percentile_cont(&values, 0.5), p90: percentile_cont(&values, 0.9) }
    }

    /// The same, in hours (seconds / 3600).
    pub fn hours(self) -> Percentiles {
        Percentiles { median: self.median.map(hours), p90: self.p90.map(hours) }
    }
}

pub fn hours(seconds: f64) -> f64 {
    seconds / 3600.0
}

/// Seconds between two instants, exact to the microsecond the databases keep.
pub fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    let micros = (to - from).num_microseconds().unwrap_or(i64::MAX);
    micros as f64 / 1e6
}

/// One step's losses in a funnel: `previous` is the number that completed the step before
/// (for the first step, everyone enrolled).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropOff {
    pub previous: i64,
    /// previous − completed. Negative when more completed this step than the one before,
    /// which happens: steps without dependencies can be done in any order.
    pub count: i64,
    /// count / previous; None when previous is 0.
    pub rate: Option<f64>,
}

/// Drop-off per step, given how many enrolled and how many completed each step in order.
pub fn drop_offs(enrolled: i64, completed: &[i64]) -> Vec<DropOff> {
    let mut previous = enrolled;
    completed
        .iter()
        .map(|&done| {
            let count = previous - done;
            let step = DropOff { previous, count, rate: ratio(count, previous) };
            previous = done;
            step
        })
        .collect()
}

/// Successes out of trials: completions out of exposures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proportion {
    pub successes: i64,
    pub trials: i64,
}

impl Proportion {
    pub fn rate(self) -> Option<f64> {
        ratio(self.successes, self.trials)
    }

    pub fn failures(self) -> i64 {
        self.trials - self.successes
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The Wilson score interval of a proportion: with p = successes/n,
/// `(p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)`. Unlike p ± z·sqrt(p(1−p)/n) it
/// stays within [0, 1] and is honest at 0% and 100% and for small n. None when n is 0.
pub fn wilson_interval(p: Proportion, z: f64) -> Option<Interval> {
    let rate = p.rate()?;
    let n = p.trials as f64;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let centre = (rate + z2 / (2.0 * n)) / denominator;
    let half = z * (rate * (1.0 - rate) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    Some(Interval { low: (centre - half).max(0.0), high: (centre + half).min(1.0) })
}

/// P(Z ≤ x) for a standard normal Z. Hart's double-precision rational approximation
/// (Algorithm 5666, as given by G. West, "Better approximations to cumulative normal
/// functions", 2005): absolute error below 1e-15. It computes the tail directly, so tiny
/// p-values keep their precision (relative error below 1e-8) instead of cancelling
/// against 1.
pub fn normal_cdf(x: f64) -> f64 {
    let tail = normal_tail(x.abs());
    if x > 0.0 { 1.0 - tail } else { tail }
}

/// P(Z ≥ x) for x ≥ 0.
fn normal_tail(x: f64) -> f64 {
    if x > 37.0 {
        return 0.0;
    }
    let e = (-x * x / 2.0).exp();
    if x < 7.071_067_811_865_47 {
        let numerator = polynomial(
            &[
                3.526_249_659_989_11e-2,
                0.700_383_064_443_688,
                6.373_962_203_531_65,
                33.912_866_078_383,
                112.079_291_497_871,
                221.213_596_169_931,
                220.206_867_912_376,
            ],
            x,
        );
        let denominator = polynomial(
            &[
                8.838_834_764_831_84e-2,
                1.755_667_163_182_64,
                16.064_177_579_207,
                86.780_732_202_946_1,
                296.564_248_779_674,
                637.333_633_378_831,
                793.826_512_519_948,
                440.413_735_824_752,
            ],
            x,
        );
        e * numerator / denominator
    } else {
        // The continued fraction for the far tail.
        let mut b = x + 0.65;
        b = x + 4.0 / b;
        b = x + 3.0 / b;
        b = x + 2.0 / b;
        b = x + 1.0 / b;
        e / b / 2.506_628_274_631
    }
}

/// Horner's rule, highest power first.
fn polynomial(coefficients: &[f64], x: f64) -> f64 {
    coefficients.iter().fold(0.0, |acc, c| acc * x + c)
}

/// A pooled two-proportion z-test of `treatment` against `control`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZTest {
    /// (p_treatment − p_control) / sqrt(p̂(1−p̂)(1/n_control + 1/n_treatment)), p̂ pooled.
    pub z: f64,
    /// Two-sided: 2·P(Z ≥ |z|).
    pub p_value: f64,
}

/// None when undefined: an empty group, or a pooled rate of exactly 0 or 1 (no variance,
/// nothing to test).
pub fn two_proportion_z_test(control: Proportion, treatment: Proportion) -> Option<ZTest> {
    if control.trials == 0 || treatment.trials == 0 {
        return None;
    }
    let (n1, n2) = (control.trials as f64, treatment.trials as f64);
    let pooled = (control.successes + treatment.successes) as f64 / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 || !se.is_finite() {
        return None;
    }
    let z = (treatment.successes as f64 / n2 - control.successes as f64 / n1) / se;
    Some(ZTest { z, p_value: (2.0 * normal_tail(z.abs())).min(1.0) })
}

/// A variant's rate against the control's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Lift {
    /// rate − control rate.
    pub absolute: Option<f64>,
    /// (rate − control rate) / control rate; None when the control rate is 0.
    pub relative: Option<f64>,
    pub p_value: Option<f64>,
}

pub fn lift(control: Proportion, treatment: Proportion) -> Lift {
    let (Some(c), Some(t)) = (control.rate(), treatment.rate()) else { return Lift::default() };
    Lift {
        absolute: Some(t - c),
        relative: (c != 0.0).then(|| (t - c) / c),
        p_value: two_proportion_z_test(control, treatment).map(|test| test.p_value),
    }
}

/// Why a group is too small to conclude from, in plain words; empty when it is not.
/// The rule (the usual conditions for the normal approximation behind the z-test, and a
/// floor against reading noise): at least `MIN_EXPOSURES` exposures, and at least
/// `MIN_OUTCOMES` completions and `MIN_OUTCOMES` exposures without completion.
pub fn small_sample(group: &str, p: Proportion) -> Vec<String> {
    let mut reasons = Vec::new();
    if p.trials < MIN_EXPOSURES {
        reasons.push(format!("{group} has {}, fewer than {MIN_EXPOSURES}", counted(p.trials, "exposure")));
    }
    if p.successes < MIN_OUTCOMES {
        reasons.push(format!("{group} has {}, fewer than {MIN_OUTCOMES}", counted(p.successes, "completion")));
    }
    if p.failures() < MIN_OUTCOMES {
        reasons.push(format!(
            "{group} has {} without completion, fewer than {MIN_OUTCOMES}",
            counted(p.failures(), "exposure")
        ));
    }
    reasons
}

fn counted(n: i64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// The warning for a comparison of `groups` (name, proportion), None when each is large
/// enough.
pub fn small_sample_warning(groups: &[(&str, Proportion)]) -> Option<String> {
    let reasons: Vec<String> = groups.iter().flat_map(|(name, p)| small_sample(name, *p)).collect();
    (!reasons.is_empty()).then(|| format!("Too little data to conclude: {}.", reasons.join("; ")))
}

/// The width of a time bucket. Days are UTC days; weeks start on Monday 00:00 UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    Day,
    Week,
}

impl Bucket {
    fn days(self) -> i64 {
        match self {
            Bucket::Day => 1,
            Bucket::Week => 7,
        }
    }

    pub fn width(self) -> Duration {
        Duration::days(self.days())
    }

    /// The first day of the bucket containing `day` (the earliest date there is, for a
    /// week that would begin before it).
    pub fn start_of(self, day: NaiveDate) -> NaiveDate {
        match self {
            Bucket::Day => day,
            Bucket::Week => day
                .checked_sub_days(chrono::Days::new(u64::from(day.weekday().num_days_from_monday())))
                .unwrap_or(NaiveDate::MIN),
        }
    }
}

/// The earliest instant an analytics window may name: 1970-01-01T00:00:00Z.
pub fn earliest_instant() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// The first instant past what an analytics window may name: 10000-01-01T00:00:00Z (so
/// every year up to 9999 may be named).
pub fn instant_past_latest() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(10_000, 1, 1).map_or(DateTime::<Utc>::MAX_UTC, midnight)
}

/// An instant of an analytics window (`since`, `until`) within the accepted years,
/// 1970 to 9999, so no date arithmetic on it can leave chrono's range.
pub fn check_instant(what: &str, at: DateTime<Utc>) -> Result<(), String> {
    if at < earliest_instant() || at >= instant_past_latest() {
        return Err(format!("{what} must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z, not {at}"));
    }
    Ok(())
}

pub fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

/// The buckets covering [since, until): from the one containing `since` to the last one
/// starting before `until`. Err(count) when there would be more than `max` (checked before
/// building them, so a huge window costs nothing).
pub fn buckets(bucket: Bucket, since: DateTime<Utc>, until: DateTime<Utc>, max: i64) -> Result<Vec<NaiveDate>, i64> {
    let first = bucket.start_of(since.date_naive());
    let span = (until - midnight(first)).num_seconds();
    let width = bucket.days() * 86_400;
    let count = if span <= 0 { 0 } else { span.saturating_add(width - 1) / width };
    if count > max {
        return Err(count);
    }
    Ok((0..count)
        .map_while(|i| first.checked_add_signed(Duration::try_days(i.saturating_mul(bucket.days()))?))
        .collect())
}

/// Sums per-day counts into `starts` (the bucket starts, ascending, as from `buckets`).
/// Days outside every bucket are ignored.
pub fn sum_by_bucket(bucket: Bucket, starts: &[NaiveDate], days: &[(NaiveDate, i64)]) -> Vec<i64> {
    let mut sums = vec![0i64; starts.len()];
    for (day, count) in days {
        if let Ok(i) = starts.binary_search(&bucket.start_of(*day)) {
            sums[i] = sums[i].saturating_add(*count);
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!((actual - expected).abs() <= tolerance, "{actual} is not within {tolerance} of {expected}");
    }

    #[test]
    fn percentile_interpolates_between_closest_ranks() {
        // Odd count: the median is the middle value; p90 sits 0.8 of the way from 9 to 20
        // (position 0.9 * 4 = 3.6).
        let odd = [1.0, 2.0, 4.0, 9.0, 20.0];
        assert_eq!(percentile_cont(&odd, 0.5), Some(4.0));
        close(percentile_cont(&odd, 0.9).unwrap(), 9.0 + 11.0 * 0.6, 1e-12);
        // Even count: the median is halfway between the middle two (position 1.5).
        let even = [1.0, 3.0, 10.0, 30.0];
        assert_eq!(percentile_cont(&even, 0.5), Some(6.5));
        // p90: position 2.7, so 10 + 0.7 * 20 = 24.
        close(percentile_cont(&even, 0.9).unwrap(), 24.0, 1e-12);
        assert_eq!(percentile_cont(&[7.0], 0.9), Some(7.0));
        assert_eq!(percentile_cont(&[], 0.5), None);
        assert_eq!(percentile_cont(&even, 0.0), Some(1.0));
        assert_eq!(percentile_cont(&even, 1.0), Some(30.0));
    }

    #[test]
    fn percentiles_sort_their_input_and_convert_to_hours() {
        let p = Percentiles::of(vec![7200.0, 3600.0, 36000.0]).hours();
        assert_eq!(p.median, Some(2.0));
        close(p.p90.unwrap(), 2.0 + 8.0 * 0.8, 1e-12);
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    }

    #[test]
    fn seconds_are_exact_to_the_microsecond() {
        let a = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let b = a + Duration::microseconds(5_400_000_001);
        assert_eq!(seconds_between(a, b), 5400.000001);
        assert_eq!(seconds_between(b, a), -5400.000001);
    }

    #[test]
    fn drop_off_runs_from_enrolled_through_each_completed_count() {
        let d = drop_offs(10, &[8, 8, 2, 3, 0]);
        assert_eq!(d[0], DropOff { previous: 10, count: 2, rate: Some(0.2) });
        assert_eq!(d[1], DropOff { previous: 8, count: 0, rate: Some(0.0) });
        assert_eq!(d[2], DropOff { previous: 8, count: 6, rate: Some(0.75) });
        assert_eq!(d[3], DropOff { previous: 2, count: -1, rate: Some(-0.5) });
        assert_eq!(d[4], DropOff { previous: 3, count: 3, rate: Some(1.0) });
        assert_eq!(drop_offs(0, &[0])[0], DropOff { previous: 0, count: 0, rate: None });
    }

    #[test]
    fn normal_cdf_matches_reference_values() {
        // Reference: 0.5 * erfc(-x / sqrt(2)) from Python's math.erfc.
        let reference = [
            (0.0, 0.5),
            (1.0, 0.8413447460685429),
            (-1.0, 0.15865525393145707),
            (1.96, 0.9750021048517795),
            (-1.96, 0.024997895148220435),
            (2.5, 0.9937903346742238),
            (-3.0, 0.0013498980316300957),
            (0.3, 0.6179114221889526),
            (6.0, 0.9999999990134123),
            (7.5, 0.9999999999999681),
        ];
        for (x, expected) in reference {
            close(normal_cdf(x), expected, 1e-15);
        }
        // Far tails keep relative precision (the approximation's worst is 9e-9 near 7.8).
        let tails = [(-5.0, 2.866515718791946e-07), (-8.5, 9.479534822203355e-18), (-10.0, 7.619853024160593e-24)];
        for (x, expected) in tails {
            close(normal_cdf(x) / expected, 1.0, 1e-8);
        }
        assert_eq!(normal_cdf(-40.0), 0.0);
        assert_eq!(normal_cdf(40.0), 1.0);
        close(normal_cdf(Z_95), 0.975, 1e-12);
    }

    #[test]
    fn wilson_interval_matches_reference_values() {
        // 45 of 100: centre (0.45 + 1.92/100) / 1.0384, 0.3561 .. 0.5476.
        let i = wilson_interval(Proportion { successes: 45, trials: 100 }, Z_95).unwrap();
        close(i.low, 0.3561453797951198, 1e-12);
        close(i.high, 0.5475539700255787, 1e-12);
        // 0 of 10: the interval starts at 0 and still has width.
        let i = wilson_interval(Proportion { successes: 0, trials: 10 }, Z_95).unwrap();
        close(i.low, 0.0, 1e-15);
        close(i.high, 0.2775327998628892, 1e-12);
        // 10 of 10 mirrors it.
        let i = wilson_interval(Proportion { successes: 10, trials: 10 }, Z_95).unwrap();
        close(i.low, 1.0 - 0.2775327998628892, 1e-12);
        close(i.high, 1.0, 1e-15);
        assert_eq!(wilson_interval(Proportion { successes: 0, trials: 0 }, Z_95), None);
    }

    #[test]
    fn z_test_matches_reference_values() {
        // 200/1000 vs 250/1000: pooled 0.225, se sqrt(0.225 * 0.775 * 0.002), z 2.6774...
        let test = two_proportion_z_test(
            Proportion { successes: 200, trials: 1000 },
            Proportion { successes: 250, trials: 1000 },
        )
        .unwrap();
        close(test.z, 2.677397763008329, 1e-12);
        close(test.p_value, 0.007419649261025693, 1e-12);
        // Symmetric: a worse treatment has the same p-value and a negative z.
        let reverse = two_proportion_z_test(
            Proportion { successes: 250, trials: 1000 },
            Proportion { successes: 200, trials: 1000 },
        )
        .unwrap();
        close(reverse.z, -test.z, 1e-12);
        close(reverse.p_value, test.p_value, 1e-15);
        // Equal rates: z 0, p 1.
        let same =
            two_proportion_z_test(Proportion { successes: 5, trials: 10 }, Proportion { successes: 10, trials: 20 })
                .unwrap();
        assert_eq!((same.z, same.p_value), (0.0, 1.0));
        // Undefined: an empty group, or no variance at all.
        let none = Proportion { successes: 0, trials: 0 };
        assert_eq!(two_proportion_z_test(none, Proportion { successes: 1, trials: 2 }), None);
        let zero = Proportion { successes: 0, trials: 50 };
        assert_eq!(two_proportion_z_test(zero, zero), None);
    }

    #[test]
    fn lift_is_relative_to_the_control() {
        let l = lift(Proportion { successes: 20, trials: 100 }, Proportion { successes: 30, trials: 100 });
        close(l.absolute.unwrap(), 0.1, 1e-15);
        close(l.relative.unwrap(), 0.5, 1e-15);
        assert!(l.p_value.is_some());
        let zero_control = lift(Proportion { successes: 0, trials: 10 }, Proportion { successes: 3, trials: 10 });
        assert_eq!(zero_control.relative, None);
        close(zero_control.absolute.unwrap(), 0.3, 1e-15);
        assert_eq!(
            lift(Proportion { successes: 0, trials: 0 }, Proportion { successes: 3, trials: 10 }),
            Lift::default()
        );
    }

    #[test]
    fn small_samples_are_named_with_their_shortfall() {
        let big = Proportion { successes: 50, trials: 100 };
        assert_eq!(small_sample_warning(&[("control", big), ("b", big)]), None);
        let warning =
            small_sample_warning(&[("control", big), ("b", Proportion { successes: 95, trials: 99 })]).unwrap();
        assert_eq!(
            warning,
            "Too little data to conclude: b has 99 exposures, fewer than 100; \
             b has 4 exposures without completion, fewer than 10."
        );
        assert_eq!(
            small_sample("a", Proportion { successes: 9, trials: 200 }),
            vec!["a has 9 completions, fewer than 10"]
        );
        assert_eq!(
            small_sample("a", Proportion { successes: 1, trials: 1 }),
            vec![
                "a has 1 exposure, fewer than 100",
                "a has 1 completion, fewer than 10",
                "a has 0 exposures without completion, fewer than 10"
            ]
        );
    }

    #[test]
    fn buckets_cover_the_window_from_the_bucket_containing_since() {
        let at = |d: &str| format!("{d}T00:00:00Z").parse::<DateTime<Utc>>().unwrap();
        let day = |d: &str| d.parse::<NaiveDate>().unwrap();
        // 2026-11-04 is a Wednesday: its week starts Monday 2026-11-02.
        let since = at("2026-11-04") + Duration::hours(15);
        let weeks = buckets(Bucket::Week, since, at("2026-11-16"), 1000).unwrap();
        assert_eq!(weeks, vec![day("2026-11-02"), day("2026-11-09")]);
        // One second into the next week adds it.
        let weeks = buckets(Bucket::Week, since, at("2026-11-16") + Duration::seconds(1), 1000).unwrap();
        assert_eq!(weeks.len(), 3);
        let days = buckets(Bucket::Day, since, at("2026-11-06") + Duration::hours(1), 1000).unwrap();
        assert_eq!(days, vec![day("2026-11-04"), day("2026-11-05"), day("2026-11-06")]);
        assert_eq!(
            buckets(Bucket::Day, at("2026-01-01"), at("2026-01-01") + Duration::days(1000), 1000).unwrap().len(),
            1000
        );
        assert_eq!(buckets(Bucket::Day, at("2026-01-01"), at("2026-01-01") + Duration::days(1001), 1000), Err(1001));
        // A Sunday belongs to the week of the Monday before.
        assert_eq!(Bucket::Week.start_of(day("2026-11-08")), day("2026-11-02"));
        assert_eq!(Bucket::Week.start_of(day("2026-11-09")), day("2026-11-09"));

        let sums = sum_by_bucket(
            Bucket::Week,
            &weeks,
            &[(day("2026-11-02"), 1), (day("2026-11-08"), 2), (day("2026-11-16"), 4), (day("2026-12-01"), 8)],
        );
        assert_eq!(sums, vec![3, 0, 4]);
    }
}
