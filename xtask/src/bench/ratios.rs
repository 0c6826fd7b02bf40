//! Ratios taken within each round, then summarised: the machine's speed drifts between
//! rounds (its neighbours come and go), so a ratio of two medians taken over different
//! rounds mixes states, while the setups of one round ran seconds apart.

/// `(setup - nothing) / (floor - nothing)` of each round: the setup's overhead in units
/// of the empty program's, both against the same round's bare syscall. A round whose
/// floor cost nothing measurable (`floor <= nothing`) has no ratio.
pub(super) fn per_round(nothing: &[f64], floor: &[f64], setup: &[f64]) -> Vec<f64> {
    nothing
        .iter()
        .zip(floor)
        .zip(setup)
        .filter(|((n, f), _)| *f > *n)
        .map(|((n, f), s)| (s - n) / (f - n))
        .collect()
}

/// `(a - nothing) / (b - nothing)` of each round: one overhead against another's.
pub(super) fn overhead_per_round(nothing: &[f64], a: &[f64], b: &[f64]) -> Vec<f64> {
    per_round(nothing, b, a)
}

/// Median and range of ratios: `None` for none.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub(super) struct Summary {
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) max: f64,
}

pub(super) fn summary(ratios: &[f64]) -> Option<Summary> {
    if ratios.is_empty() {
        return None;
    }
    Some(Summary {
        median: super::median(ratios),
        min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} ({:.2}–{:.2})", self.median, self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_is_its_own_reference() {
        // Round 2 ran on a machine twice as slow: the ratio is the same in both.
        let nothing = [100.0, 200.0];
        let floor = [150.0, 300.0];
        let setup = [160.0, 320.0];
        assert_eq!(per_round(&nothing, &floor, &setup), [1.2, 1.2]);
        // Medians across rounds would have said (240 - 150) / (225 - 150) = 1.2 here too,
        // but not when the setups' rounds fall in different states:
        let setup = [320.0, 160.0];
        let r = per_round(&nothing, &floor, &setup);
        assert_eq!(r, [4.4, -0.4]);
    }

    #[test]
    fn a_round_without_a_measurable_floor_has_no_ratio() {
        assert_eq!(
            per_round(&[100.0, 100.0], &[100.0, 90.0], &[120.0, 120.0]),
            Vec::<f64>::new()
        );
    }

    #[test]
    fn summary_gives_median_and_range() {
        let s = summary(&[1.3, 1.1, 1.2, 0.9]).unwrap();
        assert_eq!((s.min, s.max), (0.9, 1.3));
        assert!((s.median - 1.15).abs() < 1e-9);
        assert_eq!(s.to_string(), "1.15 (0.90–1.30)");
        assert_eq!(summary(&[]), None);
    }

    #[test]
    fn one_overhead_against_another() {
        // sysfence +49 ns, bpftrace +84 ns over 93 ns.
        let r = overhead_per_round(&[93.0], &[142.0], &[177.0]);
        assert!((r[0] - 49.0 / 84.0).abs() < 1e-9);
    }
}
