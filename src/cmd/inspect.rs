//! `cowscope inspect`: parse the flags' text, install the signal
//! handlers, inspect once or watch, render, write, and pick the exit code.
//!
//! Exit codes: 0 every page was classified; 3 some pages are `unproven` (PFNs hidden: the
//! document is still complete and honest, but it could not prove everything), a live
//! descendant could not be read (permission) or a pool's frames could not be walked, in any
//! sample of a watch; 2 usage or input errors (nothing could be read). A single inspect
//! interrupted by SIGINT/SIGTERM resumes anything frozen and dies of that signal without
//! output (130/143 to the shell); a watch ends cleanly with what it collected.

use std::path::PathBuf;
use std::time::Duration;

use crate::doc::{Envelope, InspectDoc, InspectSampleDoc};
use crate::error::{EXIT_OK, EXIT_UNPROVEN, Error, Result};
use crate::inspect::InspectBody;
use crate::inspect::interrupt;
use crate::inspect::sample::InspectRequest;
use crate::inspect::watch::WatchOptions;
use crate::mem::system::SystemInfo;
use crate::output;

use super::parse_duration;

/// Output formats of `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON document.
    Json,
    /// Human tables.
    Table,
    /// An SVG page map (once) or timeline (with `--interval`).
    Svg,
    /// JSON Lines: one record per sample, flushed as it is taken.
    Jsonl,
    /// OpenMetrics text (also valid Prometheus text for node_exporter's textfile
    /// collector): the current pair and pool figures as gauges.
    Openmetrics,
}

/// `inspect` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The parent process.
    #[arg(long)]
    pub pid: String,
    /// Only these children (repeatable; each must descend from --pid). Default: every live
    /// descendant, each against the process it was forked from.
    #[arg(long = "child", value_name = "PID")]
    pub children: Vec<String>,
    /// Never use the PAGEMAP_SCAN ioctl: take the paths of a kernel without it (before 6.7),
    /// plain pagemap reads and smaps. The classes and counts are the same.
    #[arg(long)]
    pub no_scan: bool,
    /// Stop every target with SIGSTOP for one consistent read; always resumed (also on
    /// error, Ctrl-C, or if cowscope is killed: a watchdog process resumes them).
    #[arg(long)]
    pub freeze: bool,
    /// json, table (with --interval: one line per sample as it is taken, then the last
    /// sample's tables), svg (a page map; with --interval a timeline), jsonl (one record
    /// per sample), or openmetrics (gauges for Prometheus; with --interval it needs --out,
    /// replaced atomically at each sample).
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Write the result here instead of stdout. A regular file is replaced atomically when
    /// the run ends (a jsonl watch streams into a temporary file beside it, renamed into
    /// place when the watch ends, also on Ctrl-C); a FIFO or character device is written
    /// through, record by record.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Walk only START-END (hex).
    #[arg(long)]
    pub range: Option<String>,
    /// Add runs of pages with one class (needs --range).
    #[arg(long)]
    pub per_page: bool,
    /// Add a page map of at most N cells per VMA to the JSON (svg uses 96).
    #[arg(long, value_name = "N")]
    pub cells: Option<String>,
    /// Sample repeatedly at this interval until the children exit: a number and a unit
    /// (ms, s, m, h), e.g. 500ms or 2s; 1ms to 168h.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// With --interval: stop after this long (same form as --interval).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
}

/// Page-map cells per VMA row in the SVG.
pub const SVG_CELLS: usize = 96;
/// Largest `--cells`.
pub const MAX_CELLS: usize = 4096;

fn number(flag: &str, s: &str) -> Result<i32> {
    s.trim()
        .parse::<i32>()
        .map_err(|_| Error::usage(format!("{flag} must be a process id, got '{s}'")))
}

/// Run `cowscope inspect`; returns the exit code.
///
/// # Errors
/// Usage and read errors (exit 2).
pub fn run(a: Args) -> Result<i32> {
    if a.no_scan {
        crate::mem::scan::turn_off();
    }
    let req = request(&a)?;
    let (interval, duration) = watch_times(&a)?;
    interrupt::install().map_err(|e| Error::io("installing signal handlers", e))?;
    match interval {
        None => inspect_once(&a, &req),
        Some(interval) => watch(&a, &req, interval, duration),
    }
}

/// The request the flags ask for (`--cells` checked, 96 cells for an SVG page map).
fn request(a: &Args) -> Result<InspectRequest> {
    let cells = match (&a.cells, a.format) {
        (Some(c), _) => {
            let n: usize = c
                .trim()
                .parse()
                .map_err(|_| Error::usage(format!("--cells must be a whole number, got '{c}'")))?;
            if n > MAX_CELLS {
                return Err(Error::usage(format!(
                    "--cells must be at most {MAX_CELLS}, got {n}"
                )));
            }
            n
        }
        (None, Format::Svg) => SVG_CELLS,
        (None, _) => 0,
    };
    Ok(InspectRequest {
        pid: number("--pid", &a.pid)?,
        children: a
            .children
            .iter()
            .map(|c| number("--child", c))
            .collect::<Result<_>>()?,
        freeze: a.freeze,
        range: a
            .range
            .as_deref()
            .map(crate::pages::parse_range)
            .transpose()?,
        cells,
        per_page: a.per_page,
    })
}

/// `--interval` and `--duration` (which needs `--interval`).
fn watch_times(a: &Args) -> Result<(Option<Duration>, Option<Duration>)> {
    let interval = a
        .interval
        .as_deref()
        .map(|s| parse_duration("--interval", s))
        .transpose()?;
    let duration = a
        .duration
        .as_deref()
        .map(|s| parse_duration("--duration", s))
        .transpose()?;
    if duration.is_some() && interval.is_none() {
        return Err(Error::usage("--duration needs --interval"));
    }
    Ok((interval, duration))
}

/// Inspect once, render in the format asked, write it.
fn inspect_once(a: &Args, req: &InspectRequest) -> Result<i32> {
    let report = Envelope::new(crate::mem::system::detect(), crate::inspect::inspect(req)?);
    if let Some(sig) = interrupt::requested() {
        // Everything frozen was resumed on the way out of inspect(); leave as the
        // signal asked.
        interrupt::die_of(sig);
    }
    let text = match a.format {
        Format::Json => output::to_json(&report)?,
        Format::Table => crate::render::inspect_table::report(&report),
        Format::Svg => crate::render::inspect_svg::page_map(&report),
        Format::Openmetrics => crate::render::openmetrics::exposition(
            &report.body.snapshot,
            report.system.page_size,
            unix_now(),
        ),
        Format::Jsonl => {
            let rec: InspectSampleDoc = Envelope::new(
                report.system.clone(),
                crate::inspect::SampleLine {
                    seq: 0,
                    t_ms: 0,
                    snapshot: report.body.snapshot.clone(),
                },
            );
            format!("{}\n", serde_json::to_string(&rec)?)
        }
    };
    output::emit(&text, a.out.as_deref())?;
    Ok(exit_code(&report))
}

/// Watch: per format, what each sample writes as it is taken, and what is written at the end.
fn watch(
    a: &Args,
    req: &InspectRequest,
    interval: Duration,
    duration: Option<Duration>,
) -> Result<i32> {
    let opts = WatchOptions {
        interval,
        duration,
        keep_samples: matches!(a.format, Format::Json | Format::Svg),
        // A table watch's own lines are its progress.
        progress: a.format != Format::Table,
    };
    let system = crate::mem::system::detect();
    let body = match a.format {
        Format::Openmetrics => watch_openmetrics(a, req, &opts, system.page_size)?,
        Format::Table => return watch_table(a, req, &opts, system),
        Format::Jsonl => watch_jsonl(a, req, &opts, &system)?,
        Format::Json | Format::Svg => crate::inspect::watch(req, &opts, |_| Ok(()))?,
    };
    let report: InspectDoc = Envelope::new(system, body);
    let text = match a.format {
        Format::Jsonl | Format::Openmetrics | Format::Table => return Ok(exit_code(&report)),
        Format::Json => output::to_json(&report)?,
        Format::Svg => crate::render::inspect_svg::timeline(&report),
    };
    output::emit(&text, a.out.as_deref())?;
    Ok(exit_code(&report))
}

/// An openmetrics watch: each sample replaces the `--out` file whole (tempfile + rename), so
/// a collector reading it at any moment sees one complete exposition.
fn watch_openmetrics(
    a: &Args,
    req: &InspectRequest,
    opts: &WatchOptions,
    ps: u64,
) -> Result<InspectBody> {
    let Some(out) = a.out.as_deref() else {
        return Err(Error::usage(
            "--format openmetrics with --interval needs --out FILE (replaced atomically \
             at each sample, e.g. in node_exporter's textfile directory); without \
             --interval it prints one exposition to stdout",
        ));
    };
    output::check_out(out)?;
    crate::inspect::watch(req, opts, |rec| {
        let text = crate::render::openmetrics::exposition(&rec.snapshot, ps, unix_now());
        output::write_atomic(out, text.as_bytes())
    })
}

/// A table watch: one line per sample, flushed as it is taken; the last sample's tables at
/// the end.
fn watch_table(
    a: &Args,
    req: &InspectRequest,
    opts: &WatchOptions,
    system: SystemInfo,
) -> Result<i32> {
    let mut sink = output::StreamOut::open(a.out.as_deref())?;
    let ps = system.page_size;
    let body = crate::inspect::watch(req, opts, |rec| {
        let mut line = String::new();
        if rec.seq == 0 {
            line.push_str(&crate::render::inspect_table::watch_header(
                &rec.snapshot,
                opts.interval,
            ));
        }
        line.push_str(&crate::render::inspect_table::sample_line(rec, ps));
        sink.write_record(line.as_bytes())
    })?;
    let report: InspectDoc = Envelope::new(system, body);
    let text = crate::render::inspect_table::report(&report);
    sink.write_record(format!("\n{text}").as_bytes())?;
    sink.finish()?;
    Ok(exit_code(&report))
}

/// A jsonl watch: each record is written whole and flushed as it is taken; a regular --out
/// file is put into place only when the watch ends (see output::StreamOut).
fn watch_jsonl(
    a: &Args,
    req: &InspectRequest,
    opts: &WatchOptions,
    system: &SystemInfo,
) -> Result<InspectBody> {
    let mut sink = output::StreamOut::open(a.out.as_deref())?;
    let body = crate::inspect::watch(req, opts, |rec| {
        let rec: InspectSampleDoc = Envelope::new(system.clone(), rec.clone());
        let mut line = serde_json::to_string(&rec)?;
        line.push('\n');
        sink.write_record(line.as_bytes())
    })?;
    sink.finish()?;
    Ok(body)
}

/// Now, in seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// 3 when the evidence could not prove everything: some page is unproven or a live
/// descendant could not be read, in the snapshot or (for a watch) in any sample; else 0.
pub fn exit_code(r: &InspectDoc) -> i32 {
    let earlier = r
        .body
        .watch
        .as_ref()
        .is_some_and(|w| w.incomplete_samples > 0);
    if earlier || r.body.snapshot.incomplete() {
        EXIT_UNPROVEN
    } else {
        EXIT_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::InspectBody;
    use crate::inspect::model::{Basis, Skipped, Snapshot, WatchInfo, ZeroInfo};

    fn doc(unreadable: bool, watch: Option<WatchInfo>) -> InspectDoc {
        let snapshot = Snapshot {
            pid: 1,
            pfn_visible: true,
            basis: Basis::Pfn,
            freeze: None,
            read_us: 0,
            pairs: Vec::new(),
            pools: Vec::new(),
            processes: Vec::new(),
            skipped: vec![Skipped {
                pid: 2,
                comm: "x".into(),
                reason: "why".into(),
                unreadable,
            }],
            notes: Vec::new(),
        };
        Envelope::new(
            crate::mem::system::detect(),
            InspectBody {
                snapshot,
                zero_page: ZeroInfo::default(),
                range: None,
                watch,
                samples: None,
            },
        )
    }

    fn watched(samples: u64, incomplete_samples: u64) -> Option<WatchInfo> {
        Some(WatchInfo {
            interval_ms: 100,
            duration_ms: None,
            ended_by: "duration".into(),
            samples,
            incomplete_samples,
        })
    }

    #[test]
    fn a_zombie_left_out_is_no_gap_but_an_unreadable_live_process_is() {
        assert_eq!(exit_code(&doc(false, None)), EXIT_OK);
        assert_eq!(exit_code(&doc(true, None)), EXIT_UNPROVEN);
    }

    #[test]
    fn a_pool_whose_frames_were_not_walked_is_a_missing_part_and_exits_3() {
        use crate::inspect::model::{PoolReport, PoolView};
        let mut d = doc(false, None);
        let pool = |incomplete| PoolReport {
            parent: 1,
            members: vec![2, 3],
            parent_pages: 0,
            sharing_histogram: None,
            kpagecount_histogram: None,
            notes: Vec::new(),
            incomplete,
            view: PoolView::default(),
        };
        d.body.snapshot.pools = vec![pool(false)];
        assert_eq!(exit_code(&d), EXIT_OK);
        d.body.snapshot.pools = vec![pool(false), pool(true)];
        assert_eq!(exit_code(&d), EXIT_UNPROVEN);
    }

    #[test]
    fn a_watch_exits_3_when_an_earlier_sample_was_incomplete_though_the_last_is_not() {
        assert_eq!(exit_code(&doc(false, watched(10, 0))), EXIT_OK);
        assert_eq!(exit_code(&doc(false, watched(10, 1))), EXIT_UNPROVEN);
    }
}
