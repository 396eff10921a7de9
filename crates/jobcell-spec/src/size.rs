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
    /// Bytes in one of this unit.
    pub fn factor(self) -> u64 {
        match self {
            Unit::Bytes => 1,
            Unit::KiB => 1 << 10,
            Unit::MiB => 1 << 20,
        }
    }
}

/// A size split into an exact decimal (`mantissa / scale`) and its unit suffix, as written.
struct Parts<'a> {
    mantissa: u128,
    scale: u128,
    unit: &'a str,
}

/// Split `input` (trimmed) into its number (digits with at most one '.', on either side of
/// which digits may be missing but not both) and the unit after it (spaces allowed between).
fn split(input: &str) -> Result<Parts<'_>, SizeError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(SizeError::Malformed(input.to_string()));
    }
    let too_large = || SizeError::TooLarge(input.to_string());
    let scale = 10u128
        .checked_pow(frac.len() as u32)
        .ok_or_else(too_large)?;
    let mantissa: u128 = format!("{int}{frac}").parse().map_err(|_| too_large())?;
    Ok(Parts {
        mantissa,
        scale,
        unit: unit.trim(),
    })
}

/// Bytes per unit for a suffix: K, M, G, T, each alone or with B or iB, any case; B alone is
/// bytes. All powers of 1024.
fn unit_factor(unit: &str) -> Option<u128> {
    let u = unit.to_ascii_lowercase();
    if u == "b" {
        return Some(1);
    }
    let prefix = u
        .strip_suffix("ib")
        .or_else(|| u.strip_suffix('b'))
        .unwrap_or(&u);
    Some(match prefix {
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    })
}

/// Parse a size to bytes; a bare number is in `bare`. Decimals are exact and round down to a
/// whole byte (`1.5GiB` is 1610612736 bytes). This is the one size parser: command-line flags,
/// node config, the daemon's limits and image imports all read sizes with it.
pub fn parse_size(input: &str, bare: Unit) -> Result<u64, SizeError> {
    let p = split(input)?;
    let factor = match p.unit {
        "" => bare.factor() as u128,
        u => unit_factor(u).ok_or_else(|| SizeError::UnknownUnit {
            input: input.to_string(),
            unit: u.to_string(),
        })?,
    };
    let bytes = p
        .mantissa
        .checked_mul(factor)
        .ok_or_else(|| SizeError::TooLarge(input.to_string()))?
        / p.scale;
    u64::try_from(bytes).map_err(|_| SizeError::TooLarge(input.to_string()))
}

/// A size as an HTCondor submit file writes it, in whole `unit`s rounded up (`1.2M` of MiB is
/// 2): [`parse_size`]'s numbers, with only the suffixes HTCondor's own parser takes (K, M, G, T,
/// optionally followed by B; not B alone, not iB), so a submit file means the same to both.
pub fn parse_condor_size(input: &str, bare: Unit, unit: Unit) -> Result<u64, SizeError> {
    let p = split(input)?;
    let factor = match p.unit {
        "" => bare.factor() as u128,
        u if matches!(
            u.to_ascii_lowercase().as_str(),
            "k" | "kb" | "m" | "mb" | "g" | "gb" | "t" | "tb"
        ) =>
        {
            unit_factor(u).expect("every HTCondor suffix is a unit")
        }
        u => {
            return Err(SizeError::UnknownUnit {
                input: input.to_string(),
                unit: u.to_string(),
            })
        }
    };
    let num = p
        .mantissa
        .checked_mul(factor)
        .ok_or_else(|| SizeError::TooLarge(input.to_string()))?;
    let units = num.div_ceil(p.scale * unit.factor() as u128);
    u64::try_from(units).map_err(|_| SizeError::TooLarge(input.to_string()))
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

    /// Every accepted spelling, for each bare unit: (input, bare, bytes).
    const ACCEPTED: &[(&str, Unit, u64)] = &[
        ("2048", Unit::MiB, 2048 << 20),
        ("2048", Unit::KiB, 2048 << 10),
        ("10", Unit::Bytes, 10),
        ("0", Unit::MiB, 0),
        ("2G", Unit::MiB, 2 << 30),
        ("2g", Unit::Bytes, 2 << 30),
        ("2GB", Unit::MiB, 2 << 30),
        ("2gb", Unit::MiB, 2 << 30),
        ("2GiB", Unit::MiB, 2 << 30),
        ("2gib", Unit::MiB, 2 << 30),
        ("512MB", Unit::MiB, 512 << 20),
        ("512 m", Unit::KiB, 512 << 20),
        ("3MiB", Unit::Bytes, 3 << 20),
        ("1t", Unit::MiB, 1 << 40),
        ("1TiB", Unit::MiB, 1 << 40),
        ("100b", Unit::MiB, 100),
        ("100 B", Unit::MiB, 100),
        (" 4 k ", Unit::MiB, 4096),
        ("4KB", Unit::MiB, 4096),
        ("1.5G", Unit::Bytes, 1610612736),
        ("1.5GiB", Unit::MiB, 1610612736),
        ("1.5gb", Unit::MiB, 1610612736),
        ("0.5k", Unit::Bytes, 512),
        (".5k", Unit::Bytes, 512),
        ("5.k", Unit::Bytes, 5120),
        ("1.5", Unit::KiB, 1536),
        ("0.1k", Unit::Bytes, 102),
        ("16777215T", Unit::MiB, 16777215 << 40),
    ];

    #[test]
    fn accepted_spellings() {
        for &(input, bare, bytes) in ACCEPTED {
            assert_eq!(parse_size(input, bare), Ok(bytes), "{input:?} ({bare:?})");
        }
    }

    #[test]
    fn refused_spellings() {
        assert_eq!(parse_size("", Unit::MiB), Err(SizeError::Empty));
        assert_eq!(parse_size("  ", Unit::MiB), Err(SizeError::Empty));
        for bad in ["G", ".", ".G", "1.2.3G", "-1G", "+1G", "1e3", "1,5G"] {
            assert!(
                matches!(parse_size(bad, Unit::MiB), Err(SizeError::Malformed(_)))
                    || matches!(
                        parse_size(bad, Unit::MiB),
                        Err(SizeError::UnknownUnit { .. })
                    ),
                "{bad:?}: {:?}",
                parse_size(bad, Unit::MiB)
            );
        }
        for bad in [
            "12X", "1 KBB", "1kibb", "1ib", "1iB", "2 GiBs", "3 P", "4 M B",
        ] {
            assert!(
                matches!(
                    parse_size(bad, Unit::MiB),
                    Err(SizeError::UnknownUnit { .. })
                ),
                "{bad:?}: {:?}",
                parse_size(bad, Unit::MiB)
            );
        }
        for big in ["99999999999T", "16777216T", "18446744073709551616", "1e40"] {
            let r = parse_size(big, Unit::Bytes);
            assert!(r.is_err(), "{big:?}: {r:?}");
        }
        let e = parse_size("12parsecs", Unit::MiB).unwrap_err().to_string();
        assert!(e.contains("12parsecs") && e.contains("parsecs"), "{e}");
    }

    #[test]
    fn condor_sizes_round_up_and_take_htcondors_suffixes_only() {
        let (mib, kib) = (Unit::MiB, Unit::KiB);
        for (input, bare, unit, want) in [
            ("100", mib, mib, 100),
            ("1.5G", mib, mib, 1536),
            ("1.2G", mib, mib, 1229),
            ("1.2M", mib, mib, 2),
            ("1024K", mib, mib, 1),
            ("2 Gb", mib, mib, 2048),
            ("10GB", kib, kib, 10485760),
            ("1.5", kib, kib, 2),
            ("0.1k", kib, kib, 1),
            ("3 kb", kib, kib, 3),
            ("1t", kib, kib, 1 << 30),
        ] {
            assert_eq!(parse_condor_size(input, bare, unit), Ok(want), "{input:?}");
        }
        for bad in [
            "", "12X", "1b", "1000 KiB", "1 gib", "MY.x*2", "1.2.3", "-1",
        ] {
            assert!(parse_condor_size(bad, mib, mib).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536 << 20), "1.5 GiB");
    }
}
