//! The named scenario catalogue. Names are stable: tests, results and scripts use them.
//!
//! A scenario is data: how the arena is mapped, who writes which pages after the fork, and
//! from that, by first principles, which class every page must end in. The orchestrator
//! (`crate::fork`) runs it and compares what the kernel shows with [`Scenario::expected_class`].

use crate::fork::classify::PageClass;

/// How the arena is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// MAP_PRIVATE | MAP_ANONYMOUS: copy-on-write after fork.
    Private,
    /// MAP_SHARED | MAP_ANONYMOUS: one set of pages for every process.
    Shared,
}

/// Fork-related advice on the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkAdvice {
    /// No advice.
    None,
    /// MADV_WIPEONFORK.
    WipeOnFork,
    /// MADV_DONTFORK.
    DontFork,
}

/// What one forked process does to the arena before it reports ready.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessPlan {
    /// Pages it stamps whole (index + side marker).
    pub writes: Vec<usize>,
    /// Pages it writes exactly one byte of (offset 0 stays the stamp; the byte goes at 64).
    pub writes_one_byte: Vec<usize>,
    /// It reads one byte of every page.
    pub reads_all: bool,
    /// Page it touches *after* being released (sampling happens before; used by `dontfork`,
    /// whose child has no mapping there and dies of SIGSEGV).
    pub touches_after_release: Option<usize>,
    /// A grandchild it forks, with its own plan.
    pub grandchild: Option<Box<ProcessPlan>>,
    /// It blocks forever before reporting ready (tests of the timeout path).
    pub hangs: bool,
    /// seed-09c: overwrite the 09a arena's second message with this text.
    pub overwrite_second_message: Option<&'static str>,
}

/// One scenario of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Stable name.
    pub name: &'static str,
    /// One line for `--list` and the table.
    pub summary: &'static str,
    /// Arena size in pages.
    pub pages: usize,
    /// Whether `--pages N` rescales it.
    pub scalable: bool,
    /// Private or shared.
    pub mapping: Mapping,
    /// Fork advice.
    pub advice: ForkAdvice,
    /// 2 MiB aligned, MADV_HUGEPAGE, must come up as a THP.
    pub thp: bool,
    /// The 09a arena and strings instead of page stamps.
    pub seed_09c: bool,
    /// The parent stamps every page before the fork.
    pub populate: bool,
    /// The forked children, in fork order.
    pub children: Vec<ProcessPlan>,
    /// Pages the parent stamps after every child reported ready.
    pub parent_writes: Vec<usize>,
}

/// The second message of the seed's 09a, and what seed-09c's child writes over it.
pub const SEED_09C_CHILD_TEXT: &str = "Child rewrote this!";

/// The 16-page default of the scalable scenarios.
pub const DEFAULT_PAGES: usize = 16;

fn base(name: &'static str, summary: &'static str) -> Scenario {
    Scenario {
        name,
        summary,
        pages: DEFAULT_PAGES,
        scalable: true,
        mapping: Mapping::Private,
        advice: ForkAdvice::None,
        thp: false,
        seed_09c: false,
        populate: true,
        children: vec![ProcessPlan::default()],
        parent_writes: Vec::new(),
    }
}

fn child_writing(pages: std::ops::Range<usize>) -> ProcessPlan {
    ProcessPlan {
        writes: pages.collect(),
        ..Default::default()
    }
}

/// The whole catalogue, in report order.
pub fn catalogue() -> Vec<Scenario> {
    vec![
        base(
            "private-idle",
            "16 private pages written before fork; nobody writes after",
        ),
        Scenario {
            children: vec![child_writing(0..4)],
            ..base(
                "private-child-writes",
                "16 private pages; the child writes pages 0-3",
            )
        },
        Scenario {
            parent_writes: (0..4).collect(),
            ..base(
                "private-parent-writes",
                "16 private pages; the parent writes pages 0-3",
            )
        },
        Scenario {
            children: vec![child_writing(0..1)],
            parent_writes: vec![0],
            ..base(
                "private-both-write",
                "the child writes page 0, then the parent writes page 0",
            )
        },
        Scenario {
            mapping: Mapping::Shared,
            children: vec![child_writing(0..4)],
            ..base(
                "shared-child-writes",
                "16 MAP_SHARED pages; the child writes pages 0-3",
            )
        },
        Scenario {
            advice: ForkAdvice::WipeOnFork,
            children: vec![ProcessPlan {
                reads_all: true,
                ..Default::default()
            }],
            ..base(
                "wipeonfork",
                "16 pages with MADV_WIPEONFORK; the child reads every page",
            )
        },
        Scenario {
            advice: ForkAdvice::DontFork,
            children: vec![ProcessPlan {
                touches_after_release: Some(0),
                ..Default::default()
            }],
            ..base(
                "dontfork",
                "16 pages with MADV_DONTFORK; the child touches page 0",
            )
        },
        Scenario {
            pages: 512,
            scalable: false,
            thp: true,
            children: vec![ProcessPlan {
                writes_one_byte: vec![0],
                ..Default::default()
            }],
            ..base(
                "thp-child-writes",
                "one 2 MiB THP (512 pages); the child writes one byte of page 0",
            )
        },
        Scenario {
            children: (0..4).map(|i| child_writing(i..i + 1)).collect(),
            ..base(
                "many-children",
                "16 pages, 4 children; child i writes page i",
            )
        },
        Scenario {
            children: vec![ProcessPlan {
                grandchild: Some(Box::new(child_writing(0..1))),
                ..Default::default()
            }],
            ..base(
                "fork-chain",
                "16 pages; the child forks a grandchild, which writes page 0",
            )
        },
        Scenario {
            pages: 1,
            scalable: false,
            seed_09c: true,
            populate: false,
            children: vec![ProcessPlan {
                overwrite_second_message: Some(SEED_09C_CHILD_TEXT),
                ..Default::default()
            }],
            ..base(
                "seed-09c",
                "the 09a arena and strings; the child overwrites the second message",
            )
        },
    ]
}

/// Every scenario name with its summary.
pub fn list() -> Vec<(&'static str, &'static str)> {
    catalogue().iter().map(|s| (s.name, s.summary)).collect()
}

/// Find a scenario by name.
pub fn by_name(name: &str) -> Option<Scenario> {
    catalogue().into_iter().find(|s| s.name == name)
}

impl Scenario {
    /// The plan of the forked process at `path` (`[i]` = child i, `[i, 0]` = its child);
    /// None for the parent (`[]`) or a path the scenario does not have.
    pub fn plan(&self, path: &[usize]) -> Option<&ProcessPlan> {
        let (&first, rest) = path.split_first()?;
        let mut plan = self.children.get(first)?;
        for _ in rest {
            plan = plan.grandchild.as_deref()?;
        }
        Some(plan)
    }

    /// Pages written after the fork by the process at `path` (empty = the parent; `[i]` =
    /// child i; `[i, 0]` = child i's grandchild), whole or one byte.
    pub fn written_by(&self, path: &[usize]) -> Vec<usize> {
        if path.is_empty() {
            return self.parent_writes.clone();
        }
        let Some(plan) = self.plan(path) else {
            return Vec::new();
        };
        let mut pages: Vec<usize> = plan
            .writes
            .iter()
            .chain(&plan.writes_one_byte)
            .copied()
            .collect();
        if plan.overwrite_second_message.is_some() {
            pages.push(0);
        }
        pages
    }

    /// The class a page must have in process `path` compared with the parent, from first
    /// principles: MAP_SHARED never copies; WIPEONFORK children see zero; DONTFORK children
    /// have no mapping; a private page written after the fork by either side is copied, any
    /// other stays shared.
    pub fn expected_class(&self, path: &[usize], page: usize) -> PageClass {
        match self.advice {
            ForkAdvice::DontFork => return PageClass::NotInherited,
            ForkAdvice::WipeOnFork => return PageClass::Wiped,
            ForkAdvice::None => {}
        }
        if self.mapping == Mapping::Shared {
            return PageClass::Shared;
        }
        if self.written_by(path).contains(&page) || self.parent_writes.contains(&page) {
            PageClass::Copied
        } else {
            PageClass::Shared
        }
    }

    /// Whether the process at `path` must get a new physical page for `page` (it wrote a
    /// private page that was shared), as opposed to keeping the pre-fork one.
    pub fn expects_new_pfn(&self, path: &[usize], page: usize) -> bool {
        if self.mapping == Mapping::Shared || self.advice != ForkAdvice::None {
            return false;
        }
        if path.is_empty() {
            // The parent copies a page only if it wrote it while a child still shared it, i.e.
            // no child had copied it away first (private-both-write: the child copied first,
            // so the parent's page is exclusive again and is reused).
            let child_copied_first =
                (0..self.children.len()).any(|i| self.written_by(&[i]).contains(&page));
            self.parent_writes.contains(&page) && !child_copied_first
        } else {
            self.written_by(path).contains(&page)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_stable() {
        let names: Vec<_> = list().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "private-idle",
                "private-child-writes",
                "private-parent-writes",
                "private-both-write",
                "shared-child-writes",
                "wipeonfork",
                "dontfork",
                "thp-child-writes",
                "many-children",
                "fork-chain",
                "seed-09c"
            ]
        );
    }

    #[test]
    fn expectations_follow_from_who_writes() {
        let s = by_name("private-child-writes").unwrap();
        assert_eq!(s.expected_class(&[0], 3), PageClass::Copied);
        assert_eq!(s.expected_class(&[0], 4), PageClass::Shared);
        assert!(s.expects_new_pfn(&[0], 0));
        assert!(!s.expects_new_pfn(&[], 0));

        let s = by_name("private-parent-writes").unwrap();
        assert!(s.expects_new_pfn(&[], 0));
        assert!(!s.expects_new_pfn(&[0], 0));

        let s = by_name("private-both-write").unwrap();
        assert!(s.expects_new_pfn(&[0], 0));
        assert!(
            !s.expects_new_pfn(&[], 0),
            "the parent's page is exclusive again: reused"
        );

        let s = by_name("fork-chain").unwrap();
        assert_eq!(s.expected_class(&[0], 0), PageClass::Shared);
        assert_eq!(s.expected_class(&[0, 0], 0), PageClass::Copied);

        let s = by_name("many-children").unwrap();
        assert_eq!(s.expected_class(&[2], 2), PageClass::Copied);
        assert_eq!(s.expected_class(&[2], 3), PageClass::Shared);
        assert_eq!(
            by_name("shared-child-writes")
                .unwrap()
                .expected_class(&[0], 0),
            PageClass::Shared
        );
    }
}
