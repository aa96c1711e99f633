//! Numbers as people read them.

use std::fmt;

/// Bytes in binary units: `512 B`, `4.0 KiB`, `1.5 GiB`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// A signed change in bytes: `+32.0 MiB`, `-4.0 KiB`, `±0 B`.
pub struct Delta(pub i64);

impl fmt::Display for Delta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.signum() {
            0 => f.write_str("±0 B"),
            1 => write!(f, "+{}", Bytes(self.0.unsigned_abs())),
            _ => write!(f, "-{}", Bytes(self.0.unsigned_abs())),
        }
    }
}

/// A count with thousands separators: `1,048,576`.
pub struct Count(pub u64);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(digit);
        }
        f.write_str(&out)
    }
}

/// `part` as a percentage of `whole`.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// "1 call", "2 calls".
pub fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{} {}", Count(count), if count == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(32 << 20).to_string(), "32.0 MiB");
        assert_eq!(Bytes(1536 << 20).to_string(), "1.5 GiB");
        assert_eq!(Delta(-4096).to_string(), "-4.0 KiB");
        assert_eq!(Delta(0).to_string(), "±0 B");
        assert_eq!(Count(1_048_576).to_string(), "1,048,576");
        assert_eq!(Count(999).to_string(), "999");
        assert_eq!(plural(1, "call", "calls"), "1 call");
    }
}
