//! `--interval`: the same snapshot again and again, as a time series, until the children exit,
//! `--duration` runs out, or a signal (Ctrl-C) ends it with what was collected.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::interrupt;
use super::model::{InspectBody, SampleLine, WatchInfo};
use super::sample::{Context, InspectRequest, plan, take_snapshot};
use crate::error::{Error, Result};

/// How to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Time between sample starts.
    pub interval: Duration,
    /// Stop after this long (default: when the children have exited).
    pub duration: Option<Duration>,
    /// Keep a totals-only summary of every sample for the final document (`samples[]`).
    pub keep_samples: bool,
    /// Print progress on stderr (the CLI sets it when stderr is a terminal).
    pub progress: bool,
}

/// Parse `500ms`, `2s`, `1.5s`, `1m`, `1h` (a bare number is seconds).
///
/// # Errors
/// A usage error naming the flag.
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::usage(format!(
            "{flag} must be a duration such as 500ms, 2s or 1m, got '{s}'"
        ))
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "ms" => v / 1000.0,
        "" | "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 366.0 * 86400.0 {
        return Err(Error::usage(format!(
            "{flag} must be greater than 0 and at most a year, got '{s}'"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Watch: take a snapshot every `opts.interval`, hand each to `on_sample` (a JSON Lines
/// record's body), and return the final document's body (the last snapshot, plus `samples[]` when
/// `keep_samples`).
///
/// # Errors
/// The errors of [`plan`] before the first sample (no such pid, no children, ...), and the
/// first sample's read errors; later failures end the watch with a reason instead. Errors
/// of `on_sample` (e.g. a closed stdout) end it too.
pub fn watch(
    req: &InspectRequest,
    opts: &WatchOptions,
    mut on_sample: impl FnMut(&SampleLine) -> Result<()>,
) -> Result<InspectBody> {
    let ctx = Context::detect();
    let page_size = crate::kernel::page_size() as u64;
    let mut current = plan(req)?;
    let t0 = Instant::now();
    let mut seq = 0u64;
    let mut summaries = Vec::new();
    let mut last = None;
    let ended_by;
    let progress = opts.progress && std::io::stderr().is_terminal();
    loop {
        if interrupt::requested().is_some() {
            ended_by = "interrupted";
            break;
        }
        if seq > 0 {
            match plan(req) {
                Ok(p) => current = p,
                Err(_) => {
                    ended_by = if super::access::still_alive(&current.root) {
                        "children_exited"
                    } else {
                        "parent_exited"
                    };
                    break;
                }
            }
        }
        let t_ms = t0.elapsed().as_millis() as u64;
        let snap = match take_snapshot(&current, req, &ctx) {
            Ok(s) => s,
            Err(e) if seq == 0 => return Err(e),
            Err(_) => {
                ended_by = if super::access::still_alive(&current.root) {
                    "children_exited"
                } else {
                    "parent_exited"
                };
                break;
            }
        };
        let record = SampleLine {
            seq,
            t_ms,
            snapshot: snap,
        };
        on_sample(&record)?;
        let snap = record.snapshot;
        if opts.keep_samples {
            summaries.push(snap.summary(seq, t_ms));
        }
        if progress {
            let diverged: u64 = snap.pairs.iter().map(|p| p.totals.diverged).sum();
            let mib = diverged as f64 * page_size as f64 / (1 << 20) as f64;
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\rcowscope: sample {} at {:.1} s, {} pair{}, {:.1} MiB diverged   ",
                seq + 1,
                t_ms as f64 / 1000.0,
                snap.pairs.len(),
                if snap.pairs.len() == 1 { "" } else { "s" },
                mib
            );
            let _ = e.flush();
        }
        last = Some(snap);
        seq += 1;
        let next = opts.interval.saturating_mul(seq as u32);
        if opts.duration.is_some_and(|d| next >= d) {
            ended_by = "duration";
            break;
        }
        let wait = next.saturating_sub(t0.elapsed());
        if interrupt::sleep(wait) {
            ended_by = "interrupted";
            break;
        }
    }
    if progress {
        eprintln!();
    }
    let Some(snapshot) = last else {
        return Err(Error::usage(format!(
            "the watch ended ({ended_by}) before the first sample"
        )));
    };
    Ok(InspectBody {
        snapshot,
        zero_page: super::zero_info(&ctx),
        range: req.range.map(super::hex_range),
        watch: Some(WatchInfo {
            interval_ms: opts.interval.as_millis() as u64,
            duration_ms: opts.duration.map(|d| d.as_millis() as u64),
            ended_by: ended_by.into(),
            samples: seq,
        }),
        samples: opts.keep_samples.then_some(summaries),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::milliseconds("500ms", 500)]
    #[case::seconds("2s", 2000)]
    #[case::fractional_seconds("1.5s", 1500)]
    #[case::bare_number_is_seconds("3", 3000)]
    #[case::minutes("1m", 60_000)]
    fn durations_parse(#[case] s: &str, #[case] ms: u128) {
        assert_eq!(parse_duration("--interval", s).unwrap().as_millis(), ms);
    }

    #[rstest]
    #[case::zero("0s")]
    #[case::negative("-1s")]
    #[case::unknown_unit("5 parsecs")]
    #[case::empty("")]
    #[case::too_long("400d")]
    fn bad_durations_are_usage_errors(#[case] s: &str) {
        match parse_duration("--interval", s) {
            Err(Error::Usage(m)) => assert!(m.contains("--interval"), "{m}"),
            other => panic!("{s:?}: {other:?}"),
        }
    }
}
