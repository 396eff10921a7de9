//! Sizes in the units HTCondor and Slurm users write: `2048`, `2G`, `512MB`, `1.5GiB`.
//!
//! Like HTCondor, every unit is a power of 1024 (`1KB` = `1KiB` = 1024 bytes), and a bare number
//! is read in a default unit chosen by the caller (MiB for memory, KiB for disk).

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("empty size")]
    Empty,
    #[error("'{0}' is not a size (examples: 2048, 512M, 2G, 1.5GiB)")]
    Malformed(String),
    #[error("unknown unit '{unit}' in '{input}' (use K, M, G, T, optionally with B or iB)")]
    UnknownUnit { input: String, unit: String },
    #[error("size '{0}' is too large")]
    TooLarge(String),
}

/// The unit a bare number is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    KiB,
    MiB,
}

impl Unit {
    fn factor(self) -> u64 {
        match self {
            Unit::Bytes => 1,
            Unit::KiB => 1 << 10,
            Unit::MiB => 1 << 20,
        }
    }
}

/// Parse a size to bytes; a bare number is in `bare`.
pub fn parse_size(input: &str, bare: Unit) -> Result<u64, SizeError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim();
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(SizeError::Malformed(input.to_string()));
    }
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => bare.factor(),
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(SizeError::UnknownUnit {
                input: input.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    let bytes = if let Some((int, frac)) = num.split_once('.') {
        // Exact decimal arithmetic: 1.5GiB is exactly 1610612736 bytes.
        let int: u128 = int.parse().map_err(|_| SizeError::TooLarge(input.into()))?;
        let scale = 10u128
            .checked_pow(frac.len() as u32)
            .ok_or_else(|| SizeError::Malformed(input.into()))?;
        let frac: u128 = frac
            .parse()
            .map_err(|_| SizeError::Malformed(input.into()))?;
        (int * scale + frac)
            .checked_mul(factor as u128)
            .map(|v| v / scale)
            .ok_or_else(|| SizeError::TooLarge(input.into()))?
    } else {
        let int: u128 = num.parse().map_err(|_| SizeError::TooLarge(input.into()))?;
        int.checked_mul(factor as u128)
            .ok_or_else(|| SizeError::TooLarge(input.into()))?
    };
    u64::try_from(bytes).map_err(|_| SizeError::TooLarge(input.to_string()))
}

/// Render bytes for people: `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("2048", Unit::MiB), Ok(2048 << 20));
        assert_eq!(parse_size("2048", Unit::KiB), Ok(2048 << 10));
        assert_eq!(parse_size("2G", Unit::MiB), Ok(2 << 30));
        assert_eq!(parse_size("512MB", Unit::MiB), Ok(512 << 20));
        assert_eq!(parse_size("1.5GiB", Unit::MiB), Ok(1610612736));
        assert_eq!(parse_size("100b", Unit::MiB), Ok(100));
        assert_eq!(parse_size(" 4 k ", Unit::MiB), Ok(4096));
        assert_eq!(parse_size("0.5k", Unit::Bytes), Ok(512));
    }

    #[test]
    fn errors() {
        assert_eq!(parse_size("", Unit::MiB), Err(SizeError::Empty));
        assert!(matches!(
            parse_size("G", Unit::MiB),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            parse_size("1.2.3G", Unit::MiB),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            parse_size("-1G", Unit::MiB),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            parse_size("12X", Unit::MiB),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("99999999999T", Unit::MiB),
            Err(SizeError::TooLarge(_))
        ));
        let e = parse_size("12parsecs", Unit::MiB).unwrap_err().to_string();
        assert!(e.contains("12parsecs") && e.contains("parsecs"), "{e}");
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536 << 20), "1.5 GiB");
    }
}
