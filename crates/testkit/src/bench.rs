//! What the benchmarks share: counts read from the environment, and the
//! median of their rounds (on a shared machine a burst of other work lands
//! on one round, and the median leaves it out).

/// `name` from the environment as a count; `default` when it is unset or
/// not a number.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The median of `values`: the middle one, or the mean of the middle two
/// for an even count; `None` for no values.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn a_setting_that_is_not_a_count_falls_back_to_its_default() {
        assert_eq!(setting("FERRISHOP_TESTKIT_UNSET_SETTING", 7), 7);
    }
}
