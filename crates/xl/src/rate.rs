//! `rate=<RATE>/s[@<INTERVAL>]`.
//!
//! Units are decimal, as in the doc ("1MB/s@20ms" is "20,000 bytes in every 20
//! millisecond period", so M = 1000*1000) and in libxlu_vif.c (K/M/G multiply by
//! 1000). A lower-case `b` means bits: divided by 8, truncating like xl.

use crate::{Rate, RateFault, XlError};

/// xl's default replenishment interval: 50ms.
const DEFAULT_INTERVAL_US: u64 = 50_000;

/// libxl keeps the rate number before scaling, and the interval, in 32 bits.
const MAX_NUMBER: u64 = u32::MAX as u64;

/// Parses a `rate=` value such as `10Mb/s`, `250KB/s` or `1MB/s@20ms`.
pub fn parse_rate(s: &str) -> Result<Rate, XlError> {
    let fail = |fault| XlError::BadRate {
        rate: s.to_string(),
        fault,
    };
    let (rate, interval) = match s.split_once('@') {
        Some((r, i)) => (r, Some(i)),
        None => (s, None),
    };

    let rate = rate.strip_suffix("/s").ok_or(fail(RateFault::Malformed))?;
    let (digits, unit) = split_number(rate);
    let n = number(digits).map_err(fail)?;
    // The doc spells the prefix K; lower-case k (the SI spelling) is also
    // accepted as the same factor, so "kB/s" is not a surprise error.
    let (scale, per_byte) = match unit {
        "B" => (1, 1),
        "KB" | "kB" => (1_000, 1),
        "MB" => (1_000_000, 1),
        "GB" => (1_000_000_000, 1),
        "b" => (1, 8),
        "Kb" | "kb" => (1_000, 8),
        "Mb" => (1_000_000, 8),
        "Gb" => (1_000_000_000, 8),
        // Only a word of letters is a (mistyped) unit; "1.5MB" is malformed.
        u if u.chars().all(|c| c.is_ascii_alphabetic()) => {
            return Err(fail(RateFault::UnknownUnit))
        }
        _ => return Err(fail(RateFault::Malformed)),
    };
    let bytes_per_sec = n.checked_mul(scale).ok_or(fail(RateFault::Overflow))? / per_byte;
    if bytes_per_sec == 0 {
        return Err(fail(RateFault::Zero));
    }

    let interval_us = match interval {
        None => DEFAULT_INTERVAL_US,
        Some(i) => parse_interval(i).map_err(fail)?,
    };
    // Callers compute the credit per interval; make sure that cannot overflow.
    bytes_per_sec
        .checked_mul(interval_us)
        .ok_or(fail(RateFault::Overflow))?;
    Ok(Rate {
        bytes_per_sec,
        interval_us,
    })
}

/// `20ms`, `500us`, `1s`. The doc says a bare number is microseconds while
/// libxlu_vif.c reads it as seconds; rather than guess, a unit is required.
fn parse_interval(s: &str) -> Result<u64, RateFault> {
    let (digits, unit) = split_number(s);
    let scale = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        _ => return Err(RateFault::BadInterval),
    };
    let n = number(digits).map_err(|f| match f {
        RateFault::Malformed => RateFault::BadInterval,
        other => other,
    })?;
    let us = n.checked_mul(scale).ok_or(RateFault::Overflow)?;
    if us > MAX_NUMBER {
        return Err(RateFault::Overflow);
    }
    Ok(us)
}

/// Splits leading ASCII digits from the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// A plain decimal in 1..=u32::MAX. (xl's strtoull(.., 0) would read a leading
/// 0 as octal; decimal is what every example and reader expects.)
fn number(digits: &str) -> Result<u64, RateFault> {
    if digits.is_empty() {
        return Err(RateFault::Malformed);
    }
    let n: u64 = digits.parse().map_err(|_| RateFault::Overflow)?;
    match n {
        0 => Err(RateFault::Zero),
        n if n > MAX_NUMBER => Err(RateFault::Overflow),
        n => Ok(n),
    }
}
