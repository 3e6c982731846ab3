//! Durations on the command line: a count and a unit suffix (`90s`, `30m`, `12h`,
//! `30d`, ...), shared by `--key-lifetime` and `weftnet ca sign --expires`.

/// Seconds of `text` (already trimmed), a count followed by one of `units` (suffix,
/// seconds per unit); `None` if it is not one. Saturates instead of overflowing.
pub(crate) fn unit_seconds(text: &str, units: &[(&str, u64)]) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = units.iter().find(|(u, _)| *u == unit)?.1;
    Some(n.saturating_mul(mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: [(&str, u64); 2] = [("s", 1), ("h", 3600)];

    #[test]
    fn counts_times_the_unit() {
        assert_eq!(unit_seconds("90s", &UNITS), Some(90));
        assert_eq!(unit_seconds("2h", &UNITS), Some(7200));
        assert_eq!(unit_seconds("0s", &UNITS), Some(0));
        assert_eq!(
            unit_seconds("99999999999999999999h", &UNITS),
            None,
            "count overflow"
        );
        assert_eq!(
            unit_seconds("18446744073709551615h", &UNITS),
            Some(u64::MAX)
        );
    }

    #[test]
    fn anything_else_is_none() {
        for bad in ["", "90", "s", "3d", "1.5h", "-1s", "1hs", "1 h"] {
            assert_eq!(unit_seconds(bad, &UNITS), None, "{bad:?}");
        }
    }
}
