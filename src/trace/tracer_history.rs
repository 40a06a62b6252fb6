//! The tracer's side of the write-fault stream: opened on every run (cheap records without
//! `--stacks`: time, thread, address, error code), and at the end each ended pair's timeline
//! of copies and tracked releases (timeline.rs) joined with its samples: the peaks, what each
//! side held before its exit began, and `copied_then_released_*` where a fault proves the copy
//! came before a tracked release. With `--stacks` also the stacks (attribute.rs). A child
//! module of `tracer` so that `Tracer` does not grow by what the event stream adds.

use super::super::faults::{Collected, Method, Recorder};
use super::super::relation::PageHistory;
use super::super::timeline::{self, Release, Timeline};
use super::super::{FaultHistory, StacksInfo};
use super::Tracer;

/// An ended pair's page history, kept until the fault stream is read at the end.
#[derive(Debug)]
pub(super) struct Ended {
    fork: usize,
    parent: i32,
    child: i32,
    at_ns: u64,
    end_ns: u64,
    exit_ns: (Option<u64>, Option<u64>),
    pages: PageHistory,
    /// Each baseline VMA's start (as the final sample's rows name it).
    vma_starts: Vec<String>,
    releases: Vec<Release>,
}

impl Tracer<'_> {
    /// Open the fault stream (with `--stacks`, with stack copies for unwinding), or say why
    /// it cannot be: the page classes stand, peaks come from samples only.
    pub(super) fn start_fault_stream(&mut self, stacks: Option<u32>, wanted: bool) {
        let started = if wanted || stacks.is_some() {
            Recorder::start(stacks)
        } else {
            Err("turned off (--no-fault-history)".to_string())
        };
        let (event, reason) = match &started {
            Ok(r) => (Some(r.event_name()), None),
            Err(why) => (None, Some(why.clone())),
        };
        if let Some(stack_bytes) = stacks {
            self.body.stacks = Some(StacksInfo {
                recorded: started.is_ok(),
                event: event.clone(),
                reason: reason.clone(),
                stack_bytes,
                samples: 0,
                outside: 0,
                distinct_stacks: 0,
                problems: Vec::new(),
            });
        }
        if let Some(why) = &reason {
            let what = if wanted || stacks.is_some() {
                format!("the write-fault events could not be opened ({why})")
            } else {
                "the write faults were not recorded (--no-fault-history)".to_string()
            };
            self.body.notes.push(format!(
                "{what}: peaks come from the samples only, and a copy freed between two \
                 samples is not seen (--interval samples more often)"
            ));
        }
        self.body.fault_history = Some(FaultHistory {
            recorded: started.is_ok(),
            event,
            reason,
            faults: 0,
            lost: 0,
        });
        self.faults = started.ok();
    }

    /// A pair is ending (its base still there): keep what the timeline needs.
    pub(super) fn keep_history(&mut self, i: usize) {
        if self.faults.is_none() {
            return;
        }
        let pair = &mut self.pairs[i];
        let Some(base) = pair.base.as_ref() else {
            return;
        };
        self.ended.push(Ended {
            fork: pair.fork,
            parent: pair.parent,
            child: pair.child,
            at_ns: pair.at_ns,
            end_ns: crate::perf::monotonic_ns(),
            exit_ns: pair.exit_ns,
            pages: base.page_history(),
            vma_starts: base.vmas().iter().map(|v| v.start.clone()).collect(),
            releases: std::mem::take(&mut pair.releases),
        });
    }

    /// Stop the fault stream: every ended pair's timeline, then (`--stacks`) the stacks.
    pub(super) fn finish_fault_stream(&mut self) {
        let Some(r) = self.faults.take() else {
            return;
        };
        let error_code = r.method() == Method::Tracepoint;
        let problems = r.failures.clone();
        let collected = r.finish();
        if let Some(h) = self.body.fault_history.as_mut() {
            h.faults = collected.samples;
            h.lost = collected.lost.iter().map(|(_, n)| n).sum();
        }
        for e in std::mem::take(&mut self.ended) {
            let t = timeline_of(&e, &collected, error_code);
            self.apply_timeline(&e, &t, collected.lost_since(e.at_ns));
        }
        if self.body.stacks.is_some() {
            self.attribute_copies(&collected, problems);
        }
    }

    /// The timeline's peaks beside the samples', and its proven copy-then-release pages moved
    /// from `released_by_*` in the final sample (the partition still sums to `total`).
    fn apply_timeline(&mut self, e: &Ended, t: &Timeline, lost: u64) {
        let start_ns =
            crate::perf::monotonic_ns().saturating_sub(self.start.elapsed().as_nanos() as u64);
        let secs = |ns: u64| ns.saturating_sub(start_ns) as f64 / 1e9;
        let rec = &mut self.body.forks[e.fork];
        rec.peak = Some(super::super::history::with_timeline(
            rec.peak.take(),
            t,
            secs,
        ));
        if let Some(fin) = rec.final_sample.as_mut() {
            for m in &t.copied_then_released {
                m.apply(&mut fin.counts);
                let start = e.vma_starts.get(m.vma);
                if let Some(row) = fin.vmas.iter_mut().find(|r| Some(&r.vma.start) == start) {
                    m.apply(&mut row.counts);
                }
            }
        }
        if lost > 0 {
            rec.notes.push(format!(
                "{lost} fault record(s) were lost (a ring buffer was full): the timeline of \
                 copies may miss some, so the peak is at least what it says"
            ));
        }
    }

    /// `--stacks`: give every fork its stacks.
    fn attribute_copies(&mut self, collected: &Collected, problems: Vec<String>) {
        let copies = std::mem::take(&mut self.copies);
        let joins: Vec<_> = copies
            .iter()
            .map(|p| super::super::attribute::join(p, collected))
            .collect();
        let named = super::super::attribute::name(&joins, collected);
        for ((p, j), stacks) in copies.iter().zip(joins).zip(named) {
            let rec = &mut self.body.forks[p.fork];
            if j.samples.lost > 0 {
                rec.notes.push(format!(
                    "{} fault record(s) were lost (a ring buffer was full): a copy whose fault \
                     was lost is unattributed",
                    j.samples.lost
                ));
            }
            rec.stacks = Some(stacks);
            rec.unattributed = Some(j.unattributed);
            rec.stack_samples = Some(j.samples);
        }
        if let Some(info) = self.body.stacks.as_mut() {
            info.samples = collected.samples;
            info.outside = collected.outside;
            info.distinct_stacks = collected.stacks.len() as u64;
            info.problems = problems;
            if collected.malformed > 0 {
                info.problems.push(format!(
                    "{} fault record(s) could not be parsed",
                    collected.malformed
                ));
            }
        }
    }
}

/// One ended pair's timeline from what the collector kept.
fn timeline_of(e: &Ended, c: &Collected, error_code: bool) -> Timeline {
    let inp = timeline::Input {
        pages: &e.pages,
        releases: &e.releases,
        fork_ns: e.at_ns,
        exit_ns: e.exit_ns,
        end_ns: e.end_ns,
        error_code,
    };
    timeline::build(&inp, |by_child, addr| {
        let pid = if by_child { e.child } else { e.parent };
        c.first_write(pid, addr, e.at_ns)
    })
}
