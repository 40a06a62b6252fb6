//! The commands. Each module holds one command's clap arguments and its `run`: check the
//! options, run the producer, wrap the body in an [`Envelope`](crate::doc::Envelope) with this
//! machine's [`SystemInfo`](crate::mem::system::SystemInfo), render it in the format asked,
//! emit it (stdout, or a file written atomically) and return the exit code
//! ([`crate::error`]'s `EXIT_*`). `main.rs` only parses and dispatches.

pub mod baseline;
pub mod compare;
pub mod experiment;
pub mod fork_report;
pub mod guest;
pub mod inspect;
pub mod pages;
pub mod schema;
pub mod trace;

use std::time::Duration;

use crate::error::{Error, Result};

/// The shortest duration [`parse_duration`] accepts.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// The longest duration [`parse_duration`] accepts: 7 days.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 86_400);

/// Parse a duration given as text, for every command's `--interval` and `--duration`.
///
/// Grammar: a decimal number, then a unit: `ms`, `s`, `m` (minutes) or `h` (`500ms`, `2s`,
/// `1.5s`, `1m`, `1h`); spaces around it are ignored. The unit is required (a bare `5` could
/// mean seconds or milliseconds). The value must lie between [`MIN_DURATION`] (1 ms) and
/// [`MAX_DURATION`] (7 days).
///
/// # Errors
/// [`Error::Usage`] naming `what` and the text given, for anything else.
pub fn parse_duration(what: &str, s: &str) -> Result<Duration> {
    let bad = || {
        Error::usage(format!(
            "{what} must be a duration such as 500ms, 2s, 1m or 1h, got '{s}'"
        ))
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || !num.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        "" => {
            return Err(Error::usage(format!(
                "{what} needs a unit (ms, s, m or h), got '{s}'"
            )));
        }
        _ => return Err(bad()),
    };
    let range = MIN_DURATION.as_secs_f64()..=MAX_DURATION.as_secs_f64();
    if !(secs.is_finite() && range.contains(&secs)) {
        return Err(Error::usage(format!(
            "{what} must be between 1ms and 7 days (168h), got '{s}'"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parse a whole number given as text, naming the option in the error.
///
/// # Errors
/// [`Error::Usage`] naming `what` and the text given.
pub fn parse_number<T: std::str::FromStr>(what: &str, s: &str) -> Result<T> {
    s.trim()
        .parse::<T>()
        .map_err(|_| Error::usage(format!("{what} must be a whole number, got '{s}'")))
}

/// The formats of a document with no picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DocFormat {
    /// One JSON document.
    Json,
    /// A table for people.
    Table,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::milliseconds("500ms", 500)]
    #[case::seconds("2s", 2000)]
    #[case::fractional_seconds("1.5s", 1500)]
    #[case::minutes("1m", 60_000)]
    #[case::hours("1h", 3_600_000)]
    #[case::spaces_around(" 20ms ", 20)]
    #[case::the_shortest("1ms", 1)]
    #[case::the_longest("168h", 604_800_000)]
    fn durations_with_a_unit_parse(#[case] s: &str, #[case] ms: u128) {
        assert_eq!(parse_duration("--interval", s).unwrap().as_millis(), ms);
    }

    #[rstest]
    #[case::bare_number_has_no_unit("5")]
    #[case::zero("0s")]
    #[case::below_a_millisecond("0.5ms")]
    #[case::negative("-1s")]
    #[case::over_seven_days("169h")]
    #[case::unknown_unit("5 parsecs")]
    #[case::space_before_the_unit("5 s")]
    #[case::minutes_spelt_min("1min")]
    #[case::days_are_not_a_unit("1d")]
    #[case::words("soon")]
    #[case::empty("")]
    #[case::only_a_dot(".s")]
    #[case::two_dots("1.2.3s")]
    #[case::exponent("1e3ms")]
    #[case::huge("99999999999999999999999h")]
    fn anything_else_is_a_usage_error_naming_the_flag(#[case] s: &str) {
        match parse_duration("--interval", s) {
            Err(Error::Usage(m)) => assert!(m.starts_with("--interval "), "{m}"),
            other => panic!("{s:?}: {other:?}"),
        }
    }
}
