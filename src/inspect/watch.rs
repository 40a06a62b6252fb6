//! `--interval`: the same snapshot again and again, as a time series, until the children exit,
//! `--duration` runs out, or a signal (Ctrl-C) ends it with what was collected.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::access;
use super::interrupt;
use super::model::{InspectBody, SampleLine, SampleSummary, Snapshot, WatchInfo, hex_range};
use super::sample::{Context, InspectRequest, Plan, plan, plan_pairs, take_snapshot};
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

/// How the watch ends after a failed re-plan or read, decided from the processes themselves.
enum Next {
    /// The watch is over: `parent_exited` or `children_exited`.
    End(&'static str),
    /// Plan again now (the pairs read have gone; others may have appeared).
    Replan,
}

/// Plan the next sample: the `--child` processes still alive and still descending from
/// `--pid` (a child that exited, or whose parent did, leaves the watch), or every live
/// descendant. `Ok(Err(reason))` when nothing is left to watch.
fn replan(req: &InspectRequest, first: &Plan) -> Result<std::result::Result<Plan, &'static str>> {
    if !access::still_alive(&first.root) {
        return Ok(Err("parent_exited"));
    }
    let mut r = req.clone();
    if first.explicit {
        r.children = first
            .pairs
            .iter()
            .map(|(_, c)| c)
            .filter(|c| req.children.contains(&c.pid))
            .filter(|c| {
                access::still_alive(c) && super::proc::ancestors_of(c.pid).contains(&first.root.pid)
            })
            .map(|c| c.pid)
            .collect();
        if r.children.is_empty() {
            return Ok(Err("children_exited"));
        }
    }
    match plan_pairs(&r) {
        Ok(p) if p.pairs.is_empty() => Ok(Err(if access::still_alive(&first.root) {
            "children_exited"
        } else {
            "parent_exited"
        })),
        Ok(p) => Ok(Ok(p)),
        Err(_) if !access::still_alive(&first.root) => Ok(Err("parent_exited")),
        // A `--child` that exited between the check above and the plan.
        Err(_)
            if first.explicit
                && r.children.iter().any(|&c| {
                    first
                        .pairs
                        .iter()
                        .any(|(_, s)| s.pid == c && !access::still_alive(s))
                }) =>
        {
            replan(req, first)
        }
        Err(e) => Err(e),
    }
}

/// After a read failed: the watch ends (or plans again) only when the failure is a real exit;
/// `None` means the processes are alive and the error is real.
fn after_failed_read(current: &Plan) -> Option<Next> {
    // A process that is exiting is not a zombie yet for a moment: look again briefly.
    for attempt in 0..10 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !access::still_alive(&current.root) {
            return Some(Next::End("parent_exited"));
        }
        // Every pair lost: fine when a process of each is really gone.
        let all_gone = current
            .pairs
            .iter()
            .all(|(p, c)| !access::still_alive(p) || !access::still_alive(c));
        if all_gone {
            return Some(Next::Replan);
        }
    }
    None
}

/// Watch: take a snapshot every `opts.interval`, hand each to `on_sample` (a JSON Lines
/// record's body), and return the final document's body (the last snapshot, plus `samples[]` when
/// `keep_samples`).
///
/// The watch ends when `--duration` runs out, on a stop signal (Ctrl-C), when the `--pid`
/// process exits, or when no child is left to compare with. Nothing else ends it quietly: a
/// read that fails while its processes are alive (permission, I/O) is an error.
///
/// # Errors
/// The errors of [`plan`] before the first sample (no such pid, no children, ...), and any
/// read error of a sample whose processes are still alive. Errors of `on_sample` (e.g. a
/// closed stdout) end it too.
pub fn watch(
    req: &InspectRequest,
    opts: &WatchOptions,
    mut on_sample: impl FnMut(&SampleLine) -> Result<()>,
) -> Result<InspectBody> {
    let ctx = Context::detect();
    let page_size = crate::kernel::page_size() as u64;
    let first = plan(req)?;
    let mut current = first.clone();
    let t0 = Instant::now();
    let mut kept = Kept::default();
    let ended_by;
    let progress = opts.progress && std::io::stderr().is_terminal();
    let mut need_plan = false;
    loop {
        if interrupt::requested().is_some() {
            ended_by = "interrupted";
            break;
        }
        // Also when reads keep failing to exits (no sample reaches the check below).
        if opts.duration.is_some_and(|d| t0.elapsed() >= d) {
            ended_by = "duration";
            break;
        }
        if need_plan {
            match replan(req, &first)? {
                Ok(p) => current = p,
                Err(why) => {
                    ended_by = why;
                    break;
                }
            }
        }
        need_plan = true;
        let t_ms = t0.elapsed().as_millis() as u64;
        // A sample whose pairs all exited mid-read (also the first: workers come and go)
        // plans again; one that fails while its processes live is an error.
        let snap = match take_snapshot(&current, req, &ctx) {
            Ok(s) => s,
            Err(e) => match after_failed_read(&current) {
                Some(Next::End(why)) => {
                    ended_by = why;
                    break;
                }
                // Those pairs are gone: plan again at once (new workers may have come).
                Some(Next::Replan) => continue,
                None => return Err(e),
            },
        };
        let record = SampleLine {
            seq: kept.seq,
            t_ms,
            snapshot: snap,
        };
        on_sample(&record)?;
        if progress {
            show_progress(&record, page_size);
        }
        kept.keep(record, opts.keep_samples);
        if let Some(why) = wait_for_next(opts, t0, kept.seq) {
            ended_by = why;
            break;
        }
    }
    if progress {
        eprintln!();
    }
    kept.into_body(req, opts, &ctx, ended_by)
}

/// What a watch keeps of its samples: the last one whole, totals of each when asked.
#[derive(Default)]
struct Kept {
    /// Samples taken.
    seq: u64,
    /// Samples that could not prove everything.
    incomplete: u64,
    summaries: Vec<SampleSummary>,
    last: Option<Snapshot>,
}

impl Kept {
    fn keep(&mut self, record: SampleLine, keep_samples: bool) {
        let snap = record.snapshot;
        if snap.incomplete() {
            self.incomplete += 1;
        }
        if keep_samples {
            self.summaries.push(snap.summary(record.seq, record.t_ms));
        }
        self.last = Some(snap);
        self.seq += 1;
    }

    /// The watch's document body: the last snapshot, how the watch ran, the samples kept.
    ///
    /// # Errors
    /// The watch ended before its first sample.
    fn into_body(
        self,
        req: &InspectRequest,
        opts: &WatchOptions,
        ctx: &Context,
        ended_by: &str,
    ) -> Result<InspectBody> {
        let Some(snapshot) = self.last else {
            return Err(Error::usage(format!(
                "the watch ended ({ended_by}) before the first sample"
            )));
        };
        Ok(InspectBody {
            snapshot,
            zero_page: ctx.zero_info(),
            range: req.range.map(hex_range),
            watch: Some(WatchInfo {
                interval_ms: opts.interval.as_millis() as u64,
                duration_ms: opts.duration.map(|d| d.as_millis() as u64),
                ended_by: ended_by.into(),
                samples: self.seq,
                incomplete_samples: self.incomplete,
            }),
            samples: opts.keep_samples.then_some(self.summaries),
        })
    }
}

/// One progress line on stderr, rewritten in place.
fn show_progress(record: &SampleLine, page_size: u64) {
    let snap = &record.snapshot;
    let diverged: u64 = snap.pairs.iter().map(|p| p.totals.diverged).sum();
    let mib = diverged as f64 * page_size as f64 / (1 << 20) as f64;
    let mut e = std::io::stderr().lock();
    let _ = write!(
        e,
        "\rcowscope: sample {} at {:.1} s, {} pair{}, {:.1} MiB diverged   ",
        record.seq + 1,
        record.t_ms as f64 / 1000.0,
        snap.pairs.len(),
        if snap.pairs.len() == 1 { "" } else { "s" },
        mib
    );
    let _ = e.flush();
}

/// Sleep until sample `seq` is due; why the watch ends instead, if it does (`--duration`
/// reached before it, or a stop signal during the sleep).
fn wait_for_next(opts: &WatchOptions, t0: Instant, seq: u64) -> Option<&'static str> {
    let next = opts.interval.saturating_mul(seq as u32);
    if opts.duration.is_some_and(|d| next >= d) {
        return Some("duration");
    }
    let wait = next.saturating_sub(t0.elapsed());
    interrupt::sleep(wait).then_some("interrupted")
}
