//! Numbers and verdicts as the harness prints them (`cargo xtask bench`,
//! `cargo xtask soak`).

/// `327798` as `327,798`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Bytes in MiB with one decimal.
pub fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// ✓ or ✗.
pub fn mark(met: bool) -> &'static str {
    if met {
        "✓"
    } else {
        "✗"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_easily() {
        assert_eq!(thousands(327_798), "327,798");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(0), "0");
        assert_eq!(mebibytes(48 << 20), "48.0 MiB");
        assert_eq!(mebibytes(1 << 19), "0.5 MiB");
    }

    #[test]
    fn marks() {
        assert_eq!(mark(true), "✓");
        assert_eq!(mark(false), "✗");
    }
}
