//! Epoch seconds as the local date-times the queue commands print, and back (`history
//! -completedsince 2026-12-07 04:30`), through the C library's time zone rules.

fn broken_down(t: f64) -> libc::tm {
    let secs = t.floor() as libc::time_t;
    // SAFETY: an all-zero tm is a valid value (integers and a null zone pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r is the reentrant form.
    unsafe { libc::localtime_r(&secs, &mut tm) };
    tm
}

/// `12/7 04:30`, as condor_q and condor_history print times in their tables.
pub fn short(t: f64) -> String {
    let tm = broken_down(t);
    format!(
        "{}/{} {:02}:{:02}",
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

/// `2026-12-07 04:30:12.345`.
pub fn full(t: f64) -> String {
    let tm = broken_down(t);
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ((t - t.floor()) * 1000.0) as u32 % 1000
    )
}

/// Epoch seconds, `YYYY-MM-DD`, or `YYYY-MM-DD HH:MM[:SS]` (also with a `T`), local time.
pub fn parse(text: &str) -> anyhow::Result<f64> {
    let bad = || {
        anyhow::anyhow!(
            "'{text}' is not a time (epoch seconds, YYYY-MM-DD or 'YYYY-MM-DD HH:MM[:SS]')"
        )
    };
    let s = text.trim();
    if let Ok(n) = s.parse::<f64>() {
        return if n.is_finite() && n >= 0.0 {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let (date, clock) = match s.split_once([' ', 'T']) {
        Some((d, c)) => (d, Some(c.trim())),
        None => (s, None),
    };
    let num = |p: &str| p.parse::<i32>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d.as_slice() else {
        return Err(bad());
    };
    let (y, mo, da) = (num(y)?, num(mo)?, num(da)?);
    let (h, mi, se) = match clock {
        None => (0, 0, 0),
        Some(c) => {
            let parts: Vec<&str> = c.split(':').collect();
            match parts.as_slice() {
                [h, m] => (num(h)?, num(m)?, 0),
                [h, m, s] => (num(h)?, num(m)?, num(s)?),
                _ => return Err(bad()),
            }
        }
    };
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&da)
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0..61).contains(&se)
    {
        return Err(bad());
    }
    // SAFETY: an all-zero tm is a valid value (integers and a null zone pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = da;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    tm.tm_isdst = -1;
    // SAFETY: mktime reads and normalizes the local tm it is given.
    let t = unsafe { libc::mktime(&mut tm) };
    if t < 0 || tm.tm_mday != da {
        return Err(bad());
    }
    Ok(t as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints_and_refuses_the_rest() {
        let t = parse("2026-12-07 04:30").unwrap();
        assert_eq!(short(t), "12/7 04:30");
        assert_eq!(full(t + 12.5), "2026-12-07 04:30:12.500");
        assert_eq!(parse("2026-12-07").unwrap() + 4.5 * 3600.0, t);
        assert_eq!(parse("1700000000").unwrap(), 1_700_000_000.0);
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-12-07 25:00",
            "-5",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
