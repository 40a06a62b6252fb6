//! What a pair's samples say over time: per side the most copied memory seen (the peak) and
//! the last sample before the pair's end began. Pure functions over the samples a fork record
//! already holds; the classes are classify.rs's.
//!
//! Why: the final sample is taken at an exit stop, after the program's own shutdown may have
//! freed most of what it copied (CPython frees its objects at exit). What a worker cost is the
//! most it held while it ran.

use super::timeline::{SideHistory, Timeline};
use super::{BeforeExit, HeldBeforeExit, Peak, Peaks, Sample};

/// The witness of a peak a sample saw.
pub const BY_SAMPLES: &str = "samples";
/// The witness of a peak only the write-fault timeline saw.
pub const BY_FAULTS: &str = "faults";

fn is_end(trigger: &str) -> bool {
    matches!(
        trigger,
        "child_exit" | "parent_exit" | "child_exec" | "parent_exec" | "end"
    )
}

/// The peaks of `samples` (in time order), or `None` without samples.
pub fn peaks(samples: &[Sample]) -> Option<Peaks> {
    let first = samples.first()?;
    let mut child = Peak {
        pages: first.counts.copied_by_child,
        at: first.at,
        witness: BY_SAMPLES.into(),
    };
    let mut parent = Peak {
        pages: first.counts.copied_by_parent,
        at: first.at,
        witness: BY_SAMPLES.into(),
    };
    for s in samples {
        if s.counts.copied_by_child > child.pages {
            child = Peak {
                pages: s.counts.copied_by_child,
                at: s.at,
                witness: BY_SAMPLES.into(),
            };
        }
        if s.counts.copied_by_parent > parent.pages {
            parent = Peak {
                pages: s.counts.copied_by_parent,
                at: s.at,
                witness: BY_SAMPLES.into(),
            };
        }
    }
    let before_end = samples.iter().rev().find(|s| !is_end(&s.trigger)).cloned();
    Some(Peaks {
        child,
        parent,
        before_end,
        before_exit: None,
    })
}

/// The peaks over the samples and the fault timeline together: per side the larger, with its
/// witness (a tie keeps the sample's), and what each side held before its exit began.
/// `secs` turns a CLOCK_MONOTONIC time into seconds since the start.
pub fn with_timeline(samples: Option<Peaks>, t: &Timeline, secs: impl Fn(u64) -> f64) -> Peaks {
    let pick = |from_samples: Option<Peak>, h: &SideHistory| match from_samples {
        Some(p) if p.pages >= h.peak.pages => p,
        _ => Peak {
            pages: h.peak.pages,
            at: secs(h.peak.at_ns),
            witness: BY_FAULTS.into(),
        },
    };
    let held = |h: &SideHistory| HeldBeforeExit {
        pages: h.before_exit.pages,
        at: secs(h.before_exit.at_ns),
        began: h.exit_began.name().into(),
    };
    let (c, p, before_end) = match samples {
        Some(s) => (Some(s.child), Some(s.parent), s.before_end),
        None => (None, None, None),
    };
    Peaks {
        child: pick(c, &t.child),
        parent: pick(p, &t.parent),
        before_end,
        before_exit: Some(BeforeExit {
            child: held(&t.child),
            parent: held(&t.parent),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Counts;

    fn s(at: f64, trigger: &str, child: u64, parent: u64) -> Sample {
        Sample {
            at,
            trigger: trigger.into(),
            counts: Counts {
                total: 1000,
                shared: 1000 - child - parent,
                copied_by_child: child,
                copied_by_parent: parent,
                ..Counts::default()
            },
        }
    }

    #[test]
    fn the_peak_is_the_most_each_side_held_not_what_is_left_at_exit() {
        let p = peaks(&[
            s(0.1, "interval", 10, 0),
            s(0.2, "interval", 400, 5),
            s(0.3, "interval", 120, 7),
            s(0.35, "child_exit", 30, 7),
        ])
        .unwrap();
        assert_eq!((p.child.pages, p.child.at), (400, 0.2));
        assert_eq!((p.parent.pages, p.parent.at), (7, 0.3));
        let b = p.before_end.unwrap();
        assert_eq!((b.at, b.counts.copied_by_child), (0.3, 120));
    }

    #[test]
    fn without_interval_samples_the_exit_sample_is_the_peak_and_nothing_came_before() {
        let p = peaks(&[s(0.5, "child_exit", 3, 2)]).unwrap();
        assert_eq!(p.child.pages, 3);
        assert!(p.before_end.is_none());
        assert!(peaks(&[]).is_none());
    }
}
