//! The history of one pair's copies from the write-fault stream: when each side copied a
//! page and when it released it, so a copy freed between two samples is not lost. Pure: the
//! faults come through a lookup, the releases as a list, the pages from the baseline
//! ([`PageHistory`]).
//!
//! The rules (kernel facts: mm/memory.c `do_wp_page`, `wp_can_reuse_anon_folio`):
//! - A side copies a page at its first write fault there after the fork, if the page was
//!   still shared then: neither side had released it nor the other side copied it first
//!   (a write to a page the other side no longer maps finds it exclusive and reuses it). One
//!   copy per page and pair, by the first writer.
//! - With the `exceptions:page_fault_user` tracepoint the error code says whether the page
//!   was present (bit 0): a write at a present page that is still shared is copy-on-write; a
//!   write at a missing anonymous page is a swap-in or a refault, not a copy, while at a
//!   page-cache page of a private file mapping (fork copied no page table there) it copies
//!   the page from the page cache. (Without `--stacks` the kernel drops faults at missing
//!   pages before they are recorded: the first touches of new memory are most of an
//!   allocating program's faults. Such a page-cache copy is then seen by the samples only.) With the software event (no error code, read or write
//!   unknown) only anonymous pages count: a page present in both at the fork faults only on
//!   a write.
//! - A fault at or after the side's own release of the page is a refault, not a copy.
//! - A copy is held from its fault to its side's first release of the page (tracked
//!   releases only); the peak is the most held at once.
//! - The side began to exit at its exit stop (PTRACE_EVENT_EXIT: after `exit_group`, memory
//!   still mapped), else when the pair ended. Before that, a shutdown that frees memory is a
//!   *release storm*: when the pages it released after its last copy reach a quarter of its
//!   peak ([`STORM_SHARE`]), the side began to exit right after that last copy, and what it
//!   held then is "before exit"; else "before exit" is what it held at the exit stop.

use std::collections::HashMap;

use super::faults::FirstWrite;
use super::relation::PageHistory;

/// A release storm: pages released after the last copy, at least this share of the peak
/// (numerator, denominator).
pub const STORM_SHARE: (u64, u64) = (1, 4);

/// One tracked release of a side (the ranges of one syscall that succeeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// CLOCK_MONOTONIC ns.
    pub time: u64,
    /// The child released it (else the parent).
    pub by_child: bool,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Copied pages held at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    /// Pages.
    pub pages: u64,
    /// CLOCK_MONOTONIC ns.
    pub at_ns: u64,
}

/// Where a side's exit began (see the module's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitBegan {
    /// Its PTRACE_EVENT_EXIT stop.
    ExitStop,
    /// Right after its last copy: a shutdown released a quarter of its peak or more after it.
    ReleaseStorm,
    /// No exit stop was seen: the pair's end (death, exec, detach, end of tracing).
    PairEnd,
}

impl ExitBegan {
    /// As the report names it.
    pub fn name(self) -> &'static str {
        match self {
            ExitBegan::ExitStop => "exit_stop",
            ExitBegan::ReleaseStorm => "release_storm",
            ExitBegan::PairEnd => "pair_end",
        }
    }
}

/// One side's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideHistory {
    /// Pages it copied.
    pub copies: u64,
    /// Of them, pages it released later.
    pub copied_then_released: u64,
    /// The most copies it held at once (the first moment it held them).
    pub peak: Held,
    /// What it held just before it began to exit.
    pub before_exit: Held,
    /// How the beginning of its exit was found.
    pub exit_began: ExitBegan,
}

/// A pair's history from the fault stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// The parent's copies.
    pub parent: SideHistory,
    /// The child's copies.
    pub child: SideHistory,
    /// Pages the final sample called released by a side that the faults show it copied
    /// first: they are `copied_then_released_by_*`.
    pub copied_then_released: Vec<Reclass>,
}

/// A page the final sample called released that the faults show was copied first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reclass {
    /// Its baseline VMA.
    pub vma: usize,
    /// The child copied (and released) it; else the parent.
    pub by_child: bool,
    /// The final sample called it `released_by_both` (else `released_by_<side>`).
    pub was_both: bool,
}

impl Reclass {
    /// Move the page from its released class to `copied_then_released_by_*` (the total
    /// stays).
    pub fn apply(&self, c: &mut super::Counts) {
        let from = match (self.was_both, self.by_child) {
            (true, _) => &mut c.released_by_both,
            (false, true) => &mut c.released_by_child,
            (false, false) => &mut c.released_by_parent,
        };
        if *from == 0 {
            return;
        }
        *from -= 1;
        if self.by_child {
            c.copied_then_released_by_child += 1;
        } else {
            c.copied_then_released_by_parent += 1;
        }
    }
}

/// What the timeline is built from.
#[derive(Debug)]
pub struct Input<'a> {
    /// The baseline's pages.
    pub pages: &'a PageHistory,
    /// Tracked releases of both sides (any order).
    pub releases: &'a [Release],
    /// The fork stop (CLOCK_MONOTONIC ns).
    pub fork_ns: u64,
    /// Each side's exit stop, (parent, child).
    pub exit_ns: (Option<u64>, Option<u64>),
    /// When the pair ended.
    pub end_ns: u64,
    /// The faults carry the write and present bits (the tracepoint); else the software
    /// event's faults (read or write unknown).
    pub error_code: bool,
}

/// Build the timeline; `first_write(by_child, addr)` is the side's first write fault at the
/// page after the fork.
pub fn build(inp: &Input<'_>, first_write: impl Fn(bool, u64) -> Option<FirstWrite>) -> Timeline {
    let first_release = first_releases(inp);
    let mut events: [Vec<(u64, i8)>; 2] = [Vec::new(), Vec::new()];
    let mut copies = [0u64; 2];
    let mut then_released = [0u64; 2];
    let mut reclass = Vec::new();
    for p in inp.pages.pages() {
        let rel = [
            first_release[0].get(&p.index).copied(),
            first_release[1].get(&p.index).copied(),
        ];
        // Each side's candidate copy: an eligible write fault before its own release and
        // before the pair ended.
        let cand = [false, true].map(|by_child| {
            let s = usize::from(by_child);
            let f = first_write(by_child, p.addr)?;
            let eligible = if inp.error_code {
                f.present != Some(false) || p.file
            } else {
                !p.file
            };
            (eligible
                && f.time >= inp.fork_ns
                && f.time < inp.end_ns
                && rel[s].is_none_or(|r| f.time < r))
            .then_some(f.time)
        });
        for s in 0..2 {
            let o = 1 - s;
            let Some(t) = cand[s] else { continue };
            // The first writer copies; a write after the other side copied or released
            // finds the page exclusive.
            let first = cand[o].is_none_or(|u| t < u) && rel[o].is_none_or(|r| t < r);
            if !first {
                continue;
            }
            copies[s] += 1;
            events[s].push((t, 1));
            if let Some(r) = rel[s] {
                events[s].push((r, -1));
                then_released[s] += 1;
                let now = if s == 0 {
                    p.released_now.0
                } else {
                    p.released_now.1
                };
                if now {
                    reclass.push(Reclass {
                        vma: p.vma,
                        by_child: s == 1,
                        was_both: p.released_now.0 && p.released_now.1,
                    });
                }
            }
        }
    }
    for ev in &mut events {
        ev.sort_unstable();
    }
    Timeline {
        parent: side_history(
            &events[0],
            inp.exit_ns.0,
            inp.end_ns,
            copies[0],
            then_released[0],
        ),
        child: side_history(
            &events[1],
            inp.exit_ns.1,
            inp.end_ns,
            copies[1],
            then_released[1],
        ),
        copied_then_released: reclass,
    }
}

/// Per side, each page's first release (ns).
fn first_releases(inp: &Input<'_>) -> [HashMap<usize, u64>; 2] {
    let mut order: Vec<&Release> = inp
        .releases
        .iter()
        .filter(|r| r.time >= inp.fork_ns)
        .collect();
    order.sort_by_key(|r| r.time);
    let mut out = [HashMap::new(), HashMap::new()];
    for r in order {
        let m = &mut out[usize::from(r.by_child)];
        for (a, b) in inp.pages.ranges(r.start, r.end) {
            for i in a..b {
                m.entry(i).or_insert(r.time);
            }
        }
    }
    out
}

/// Copies held over time (`events`: (time, +1 copy / -1 release), sorted, releases first at
/// one instant): the peak and what was held before the exit began.
fn side_history(
    events: &[(u64, i8)],
    exit: Option<u64>,
    end_ns: u64,
    copies: u64,
    copied_then_released: u64,
) -> SideHistory {
    let mut held = 0i64;
    let mut peak = Held::default();
    for &(t, d) in events {
        held += i64::from(d);
        if held as u64 > peak.pages {
            peak = Held {
                pages: held as u64,
                at_ns: t,
            };
        }
    }
    let (e, began) = match exit {
        Some(x) if x <= end_ns => (x, ExitBegan::ExitStop),
        _ => (end_ns, ExitBegan::PairEnd),
    };
    let held_through = |t: u64| -> u64 {
        events
            .iter()
            .take_while(|(u, _)| *u <= t)
            .map(|(_, d)| i64::from(*d))
            .sum::<i64>()
            .max(0) as u64
    };
    let last_copy = events
        .iter()
        .filter(|(t, d)| *d > 0 && *t < e)
        .map(|(t, _)| *t)
        .max();
    let storm = last_copy.filter(|&lc| {
        let released = events
            .iter()
            .filter(|(t, d)| *d < 0 && *t > lc && *t < e)
            .count() as u64;
        released > 0 && released * STORM_SHARE.1 >= peak.pages * STORM_SHARE.0
    });
    let (before_exit, exit_began) = match storm {
        Some(lc) => (
            Held {
                pages: held_through(lc),
                at_ns: lc,
            },
            ExitBegan::ReleaseStorm,
        ),
        None => (
            Held {
                pages: held_through(e.saturating_sub(1)),
                at_ns: e,
            },
            began,
        ),
    };
    SideHistory {
        copies,
        copied_then_released,
        peak,
        before_exit,
        exit_began,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: u64 = 4096;
    const BASE: u64 = 0x10000;

    fn addr(i: usize) -> u64 {
        BASE + i as u64 * PS
    }

    fn fw(time: u64, present: bool) -> Option<FirstWrite> {
        Some(FirstWrite {
            time,
            present: Some(present),
        })
    }

    fn rel(time: u64, by_child: bool, a: usize, b: usize) -> Release {
        Release {
            time,
            by_child,
            start: addr(a),
            end: addr(b),
        }
    }

    fn input<'a>(pages: &'a PageHistory, releases: &'a [Release]) -> Input<'a> {
        Input {
            pages,
            releases,
            fork_ns: 100,
            exit_ns: (None, Some(10_000)),
            end_ns: 20_000,
            error_code: true,
        }
    }

    #[test]
    fn a_copy_freed_between_two_samples_is_still_the_peak() {
        if crate::kernel::page_size() as u64 != PS {
            return;
        }
        // The child copies pages 0..10 at 200..209, releases them all at 500; nothing else.
        let pages =
            PageHistory::from_parts(&[(BASE, 16, 0)], &[], &[], &(0..10).collect::<Vec<_>>());
        let releases = [rel(500, true, 0, 10)];
        let t = build(&input(&pages, &releases), |c, a| {
            let i = ((a - BASE) / PS) as usize;
            (c && i < 10).then(|| fw(200 + i as u64, true)).flatten()
        });
        assert_eq!(t.child.copies, 10);
        assert_eq!(
            t.child.peak,
            Held {
                pages: 10,
                at_ns: 209
            }
        );
        assert_eq!(t.child.copied_then_released, 10);
        assert_eq!(
            t.copied_then_released.len(),
            10,
            "released_by_child -> copied_then_released"
        );
        assert_eq!(t.parent.copies, 0);
        // All of the peak released after the last copy: a release storm.
        assert_eq!(t.child.exit_began, ExitBegan::ReleaseStorm);
        assert_eq!(t.child.before_exit.pages, 10);
    }

    #[test]
    fn the_first_writer_copies_and_the_other_reuses() {
        if crate::kernel::page_size() as u64 != PS {
            return;
        }
        let pages = PageHistory::from_parts(&[(BASE, 4, 0)], &[], &[], &[]);
        let t = build(&input(&pages, &[]), |c, a| {
            let i = (a - BASE) / PS;
            // Page 0: parent first; page 1: child first; page 2: only the child.
            match (i, c) {
                (0, false) => fw(150, true),
                (0, true) => fw(160, true),
                (1, false) => fw(170, true),
                (1, true) => fw(165, true),
                (2, true) => fw(180, true),
                _ => None,
            }
        });
        assert_eq!((t.parent.copies, t.child.copies), (1, 2));
    }

    #[test]
    fn refaults_swap_ins_and_faults_before_the_fork_or_after_the_end_are_not_copies() {
        if crate::kernel::page_size() as u64 != PS {
            return;
        }
        // Page 3 is a page-cache page of a private file mapping.
        let pages = PageHistory::from_parts(&[(BASE, 5, 0)], &[3], &[], &[1]);
        let releases = [rel(300, true, 1, 2)];
        let t = build(&input(&pages, &releases), |c, a| {
            let i = (a - BASE) / PS;
            if !c {
                return None;
            }
            match i {
                0 => fw(50, true),     // before the fork
                1 => fw(400, true),    // after its own release: a refault
                2 => fw(200, false),   // a missing anonymous page: swap-in
                3 => fw(200, false),   // a missing page-cache page: copied from the cache
                4 => fw(30_000, true), // after the pair ended
                _ => None,
            }
        });
        assert_eq!(t.child.copies, 1, "only the page-cache page");
        assert_eq!(t.child.copied_then_released, 0);
        assert!(t.copied_then_released.is_empty());
    }

    #[test]
    fn with_the_software_event_only_anonymous_pages_count() {
        if crate::kernel::page_size() as u64 != PS {
            return;
        }
        let pages = PageHistory::from_parts(&[(BASE, 2, 0)], &[1], &[], &[]);
        let mut inp = input(&pages, &[]);
        inp.error_code = false;
        let t = build(&inp, |c, _| {
            c.then_some(FirstWrite {
                time: 200,
                present: None,
            })
        });
        assert_eq!(
            t.child.copies, 1,
            "a read fault at a page-cache page is no copy"
        );
    }

    #[test]
    fn before_exit_is_what_was_held_at_the_exit_stop_without_a_storm() {
        if crate::kernel::page_size() as u64 != PS {
            return;
        }
        // 8 copies at 200..207, 1 released at 600 (1/8 of the peak: no storm), exit 10,000.
        let pages = PageHistory::from_parts(&[(BASE, 8, 0)], &[], &[], &[0]);
        let releases = [rel(600, true, 0, 1)];
        let t = build(&input(&pages, &releases), |c, a| {
            c.then(|| fw(200 + (a - BASE) / PS, true)).flatten()
        });
        assert_eq!(t.child.peak.pages, 8);
        assert_eq!(t.child.exit_began, ExitBegan::ExitStop);
        assert_eq!(
            t.child.before_exit,
            Held {
                pages: 7,
                at_ns: 10_000
            }
        );
        // The parent had no exit stop: its exit began at the pair's end.
        assert_eq!(t.parent.exit_began, ExitBegan::PairEnd);
    }
}
