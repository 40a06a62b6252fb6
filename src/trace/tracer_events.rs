//! The tracer's side of the release stream (`trace --pid`): open the syscall tracepoints
//! of every traced thread (at attach, and for a new process while it is held at its fork
//! stop), and apply what they record to the live pairs before every sample. A child module
//! of `tracer` so that `Tracer` does not grow by what the event stream adds; the reading
//! and decoding is `releases_perf.rs`.

use std::time::Duration;

use super::super::Attribution;
use super::super::releases_perf::{Event, ReleaseEvents};
use super::{Tracer, Tracking, heap_end, thread_ids};

/// The tracker for `--pid` without `--syscalls`: the tracepoints where they open, else no
/// tracking and a note saying why (the third value).
pub(super) fn start(tracking: Tracking) -> (Tracking, Option<ReleaseEvents>, Option<String>) {
    if tracking != Tracking::Tracepoints {
        return (tracking, None, None);
    }
    match ReleaseEvents::start() {
        Ok(r) => (Tracking::Tracepoints, Some(r), None),
        Err(why) => (
            Tracking::None,
            None,
            Some(format!(
                "releases could not be streamed from the syscall tracepoints ({why}): they \
                 are not tracked; --syscalls tracks them with a ptrace stop per syscall"
            )),
        ),
    }
}

/// What the attribution says about tracepoint-tracked releases.
pub(super) fn attribution(a: &mut Attribution, rel: Option<&ReleaseEvents>) {
    a.proven.push(
        "released_by_child / released_by_parent come from the syscalls themselves, read \
         from the kernel's syscall tracepoints without stopping the program (munmap, madvise \
         DONTNEED/FREE/REMOVE/DONTNEED_LOCKED/GUARD_INSTALL, mremap, brk shrinking, MAP_FIXED \
         mmap, remap_file_pages), recorded when they succeed and applied before every \
         sample taken after them; a page released and touched again is a release, not a copy"
            .into(),
    );
    if let Some(r) = rel
        && r.lost > 0
    {
        a.unproven.push(format!(
            "{} syscall record(s) were lost (a ring buffer was full): on the pairs they \
             belong to, a page of a side whose release may be among them is `diverged`, never \
             its copy, unless a sample saw it still shared after the loss was found",
            r.lost
        ));
    } else if let Some(r) = rel
        && r.full > 0
    {
        a.unproven.push(
            "a syscall ring buffer was found full (records may have been dropped that the \
             kernel had not reported yet): on the pairs it belongs to, a page of that side not \
             seen shared since then is `diverged`, never its copy"
                .into(),
        );
    }
}

impl Tracer<'_> {
    /// Open the tracepoints on every thread of the attached process `pid`.
    pub(super) fn open_release_events(&mut self, pid: i32) {
        let Some(r) = self.rel.as_mut() else { return };
        let threads: Vec<i32> = self
            .procs
            .get(&pid)
            .map(|p| p.threads.iter().copied().collect())
            .unwrap_or_else(|| vec![pid]);
        r.open_process(pid, &threads, heap_end(pid));
        self.report_release_failures();
    }

    /// A new process held at its fork stop: its events before its first instruction.
    pub(super) fn open_release_events_child(&mut self, parent: i32, child: i32) {
        let Some(r) = self.rel.as_mut() else { return };
        r.open_process(child, &[child], None);
        r.inherit_brk(parent, child);
        self.report_release_failures();
    }

    /// A new thread (kernels without `inherit_thread` only: elsewhere it inherits the
    /// events of the thread that made it).
    pub(super) fn release_events_new_thread(&mut self, pid: i32, tid: i32) {
        let Some(r) = self.rel.as_mut() else { return };
        if r.threads_need_own_events() {
            r.open_process(pid, &[tid], None);
            self.report_release_failures();
        }
    }

    /// After an exec the program break is the new program's.
    pub(super) fn release_events_exec(&mut self, pid: i32) {
        let Some(r) = self.rel.as_mut() else { return };
        r.forget(pid);
        let threads = thread_ids(pid);
        r.open_process(pid, &threads, heap_end(pid));
    }

    /// A process is gone: its rings are read one last time and closed.
    pub(super) fn release_events_gone(&mut self, pid: i32) {
        if let Some(r) = self.rel.as_mut() {
            r.close_process(pid);
        }
    }

    fn report_release_failures(&mut self) {
        if let Some(r) = self.rel.as_mut() {
            self.body.notes.append(&mut r.failures);
        }
    }

    /// How long the loop may sleep: rings must be drained before they fill.
    pub(super) fn longest_wait(&self) -> Duration {
        if self.rel.is_some() {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        }
    }

    /// Apply every release recorded before now to the live pairs.
    pub(super) fn sync_releases(&mut self) {
        let Some(r) = self.rel.as_mut() else { return };
        let now = crate::perf::monotonic_ns();
        let events = r.collect(now);
        let (records, lost) = (r.records, r.lost);
        let info = self.body.release_tracking.events.get_or_insert_default();
        info.records = records;
        info.lost = lost;
        for ev in events {
            match ev {
                Event::Release {
                    time,
                    pid,
                    t,
                    ranges,
                } => {
                    let mm = self.procs.get(&pid).map_or(pid, |p| p.mm);
                    self.apply_ranges(mm, t, &ranges, Some(time));
                }
                Event::Lost { time, pid, records } => {
                    let mm = self.procs.get(&pid).map_or(pid, |p| p.mm);
                    for i in self.members(mm) {
                        let pair = &mut self.pairs[i];
                        if time < pair.at_ns {
                            continue;
                        }
                        let until = if pair.child == mm {
                            &mut pair.lost_until.1
                        } else {
                            &mut pair.lost_until.0
                        };
                        *until = Some(until.map_or(time, |u| u.max(time)));
                        let fork = pair.fork;
                        let at = time.saturating_sub(pair.at_ns) as f64 / 1e9;
                        if records == 0 {
                            // A full ring: the count comes with the LOST record, if ever.
                            let note = format!(
                                "the syscall ring buffer of pid {pid} was found full \
                                 ({at:.3} s after the fork): release records may have been \
                                 dropped, so that side's pages not seen shared since then \
                                 count as diverged, never as its copies"
                            );
                            let notes = &mut self.body.forks[fork].notes;
                            if !notes.iter().any(|n| n.contains("was found full")) {
                                notes.push(note);
                            }
                            continue;
                        }
                        self.body.forks[fork].notes.push(format!(
                            "{records} syscall record(s) of pid {pid} were lost (its ring \
                             buffer was full; found {at:.3} s after the fork): a release among \
                             them cannot be placed, so that side's pages not seen shared since \
                             then count as diverged, never as its copies; pages it copied later \
                             keep their class"
                        ));
                    }
                }
            }
        }
    }
}
