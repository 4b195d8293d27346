//! A/B experiments between flow versions. Assignment is a pure function of (experiment
//! key, subject id): stable across devices and instances with no lookup.
//!
//! The hash: SHA-256 of the UTF-8 string `"<experiment key>:<subject id>"`; its first 8
//! bytes, read as a big-endian unsigned integer, modulo the sum of the weights, give a
//! point; variants own consecutive ranges of points in their listed order, each as wide
//! as its weight.

use sha2::{Digest, Sha256};

use super::flow::names;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExperimentState {
    /// Created; assigns nobody yet.
    Draft,
    /// Assigns new subjects by the hash.
    Running,
    /// Assigns nobody: new subjects get the newest active version again.
    Stopped,
    /// A winner was declared: every new subject gets its version.
    Completed,
}

names!(ExperimentState { Draft => "DRAFT", Running => "RUNNING", Stopped => "STOPPED", Completed => "COMPLETED" });

/// What an admin does to an experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    DeclareWinner,
}

impl ExperimentState {
    /// The lifecycle: a draft or stopped experiment starts; a running one stops; a winner
    /// can be declared once, from any state but completed. None when the move is refused.
    pub fn after(self, action: Action) -> Option<ExperimentState> {
        use ExperimentState::*;
        match (self, action) {
            (Draft | Stopped, Action::Start) => Some(Running),
            (Running, Action::Stop) => Some(Stopped),
            (Draft | Running | Stopped, Action::DeclareWinner) => Some(Completed),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    pub name: String,
    pub version: i32,
    pub weight: u32,
}

/// The hash point of a subject in an experiment, before the modulo.
pub fn hash_point(experiment_key: &str, subject_id: &str) -> u64 {
    let digest = Sha256::digest(format!("{experiment_key}:{subject_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The variant a subject gets. None when no variant has any weight.
pub fn assign<'v>(experiment_key: &str, subject_id: &str, variants: &'v [Variant]) -> Option<&'v Variant> {
    let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = hash_point(experiment_key, subject_id) % total;
    for variant in variants {
        let weight = u64::from(variant.weight);
        if point < weight {
            return Some(variant);
        }
        point -= weight;
    }
    None
}

/// Problems with a set of variants, as messages; empty when it is usable.
pub fn check_variants(variants: &[Variant]) -> Vec<String> {
    let mut problems = Vec::new();
    if variants.len() < 2 {
        problems.push("an experiment needs at least two variants".to_string());
    }
    for (i, v) in variants.iter().enumerate() {
        if !super::validation::is_valid_key(&v.name) {
            problems.push(format!("variant name `{}` is not a valid key", v.name));
        }
        if variants[..i].iter().any(|o| o.name == v.name) {
            problems.push(format!("variant name `{}` is used twice", v.name));
        }
    }
    if variants.iter().all(|v| v.weight == 0) {
        problems.push("at least one variant needs a positive weight".to_string());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variants(weights: &[u32]) -> Vec<Variant> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Variant { name: format!("v{i}"), version: i as i32 + 1, weight: *w })
            .collect()
    }

    #[test]
    fn the_hash_is_the_documented_one_and_stable() {
        // SHA-256("onboarding-test:alice") starts with these 8 bytes; any change to the
        // hash would move every subject to another variant.
        let digest = Sha256::digest(b"onboarding-test:alice");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(hash_point("onboarding-test", "alice"), expected);
        assert_eq!(hash_point("onboarding-test", "alice"), hash_point("onboarding-test", "alice"));
        assert_ne!(hash_point("onboarding-test", "alice"), hash_point("other-test", "alice"));
    }

    #[test]
    fn assignment_is_uniform_within_one_percent_at_100k_subjects() {
        for weights in [&[50, 50][..], &[1, 1, 1], &[10, 90], &[20, 30, 50]] {
            let vs = variants(weights);
            let total: u32 = weights.iter().sum();
            let mut counts = vec![0u64; vs.len()];
            for i in 0..100_000 {
                let v = assign("uniformity", &format!("subject-{i}"), &vs).unwrap();
                counts[v.version as usize - 1] += 1;
            }
            for (i, count) in counts.iter().enumerate() {
                let expected = 100_000.0 * f64::from(weights[i]) / f64::from(total);
                let share = (*count as f64 - expected).abs() / 100_000.0;
                assert!(share < 0.01, "weights {weights:?}: variant {i} got {count}, expected {expected}");
            }
        }
    }

    #[test]
    fn zero_weights_assign_nobody_to_that_variant() {
        let vs = variants(&[0, 5]);
        for i in 0..1000 {
            assert_eq!(assign("z", &i.to_string(), &vs).unwrap().name, "v1");
        }
        assert_eq!(assign("z", "a", &variants(&[0, 0])), None);
    }

    #[test]
    fn the_lifecycle_allows_only_its_moves() {
        use ExperimentState::*;
        assert_eq!(Draft.after(Action::Start), Some(Running));
        assert_eq!(Stopped.after(Action::Start), Some(Running));
        assert_eq!(Running.after(Action::Start), None);
        assert_eq!(Running.after(Action::Stop), Some(Stopped));
        assert_eq!(Draft.after(Action::Stop), None);
        assert_eq!(Stopped.after(Action::Stop), None);
        for s in [Draft, Running, Stopped] {
            assert_eq!(s.after(Action::DeclareWinner), Some(Completed));
        }
        for a in [Action::Start, Action::Stop, Action::DeclareWinner] {
            assert_eq!(Completed.after(a), None, "a completed experiment is final");
        }
    }

    #[test]
    fn variant_sets_are_checked() {
        assert!(check_variants(&variants(&[1, 1])).is_empty());
        assert_eq!(check_variants(&variants(&[1])).len(), 1);
        assert_eq!(check_variants(&variants(&[0, 0])).len(), 1);
        let mut dup = variants(&[1, 1]);
        dup[1].name = "v0".into();
        assert_eq!(check_variants(&dup), ["variant name `v0` is used twice"]);
    }
}
