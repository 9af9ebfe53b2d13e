//! Range-checked flag values: clap calls these, so a value out of range is refused with the
//! flag's name before anything runs. The ranges are the library's (RON files are held to the
//! same), plus those of values only the command line takes.

use crate::node::config::{check_range, DEADLINE_MS, QUEUE, SCORE_THRESH};
use crate::sim::scenario::{FPS, GT_MIN_PIXELS, LIMIT};
use std::fmt::{Debug, Display};
use std::ops::RangeInclusive;
use std::str::FromStr;

/// `calibrate --tolerance`: the accuracy-drop budget, a fraction.
pub const TOLERANCE: RangeInclusive<f64> = 0.0..=0.99;
/// `calibrate --store-capacity`: units in the medial store (each a few KB per layer).
pub const STORE_CAPACITY: RangeInclusive<usize> = 1..=100_000;
/// `--threads` (0 = all cores).
pub const THREADS: RangeInclusive<usize> = 0..=1024;
/// `bench backbone --iters`.
pub const ITERS: RangeInclusive<usize> = 1..=10_000;

fn parse<T>(s: &str, key: &str, range: RangeInclusive<T>) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display + Debug + Copy,
{
    let v: T = s.trim().parse().map_err(|_| {
        format!(
            "{key} must be a number in {}..={}",
            range.start(),
            range.end()
        )
    })?;
    check_range(key, v, range)
}

pub fn fps(s: &str) -> Result<f64, String> {
    parse(s, "fps", FPS)
}
pub fn deadline_ms(s: &str) -> Result<f64, String> {
    parse(s, "deadline", DEADLINE_MS)
}
pub fn queue(s: &str) -> Result<usize, String> {
    parse(s, "queue", QUEUE)
}
pub fn score_thresh(s: &str) -> Result<f32, String> {
    parse(s, "score threshold", SCORE_THRESH)
}
pub fn limit(s: &str) -> Result<usize, String> {
    parse(s, "limit", LIMIT)
}
pub fn keep_records(s: &str) -> Result<usize, String> {
    parse(s, "keep-records", LIMIT)
}
pub fn gt_min_pixels(s: &str) -> Result<usize, String> {
    parse(s, "gt-min-pixels", GT_MIN_PIXELS)
}
pub fn tolerance(s: &str) -> Result<f64, String> {
    parse(s, "tolerance", TOLERANCE)
}
pub fn store_capacity(s: &str) -> Result<usize, String> {
    parse(s, "store capacity", STORE_CAPACITY)
}
pub fn threads(s: &str) -> Result<usize, String> {
    parse(s, "threads", THREADS)
}
pub fn iters(s: &str) -> Result<usize, String> {
    parse(s, "iters", ITERS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_are_bounded() {
        assert_eq!(fps("17"), Ok(17.0));
        assert_eq!(
            fps("1e-300").unwrap_err(),
            "fps must be in 0.01..=10000, got 1e-300"
        );
        assert_eq!(
            deadline_ms("1e300").unwrap_err(),
            "deadline must be in 0.1..=3600000, got 1e300"
        );
        assert!(deadline_ms("NaN").is_err());
        assert!(fps("inf").is_err());
        assert_eq!(queue("0").unwrap_err(), "queue must be in 1..=64, got 0");
        assert!(queue("-1").unwrap_err().contains("must be a number"));
        assert!(score_thresh("1.01").is_err());
        assert!(tolerance("1").is_err());
        assert_eq!(store_capacity("4000"), Ok(4000));
        assert!(store_capacity("0").is_err());
        assert!(gt_min_pixels("0").is_err());
        assert_eq!(limit("0"), Ok(0));
        assert!(threads("100000").is_err());
        assert!(iters("0").is_err());
    }
}
