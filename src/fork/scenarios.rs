//! The named scenario catalogue, and the vocabulary a scenario file uses. Names are stable:
//! tests, results and scripts use them.
//!
//! A scenario is data: what memory backs the arena (the memory-kind axis), how it is mapped,
//! what the parent does to it before the fork, what every process does after it, and from
//! that, by first principles, what every page must end as. Every expectation the judge checks
//! is derived here ([`Scenario::expected_class`], [`Scenario::expects_new_frame`],
//! [`Scenario::expected_head`]), or stated explicitly in [`Scenario::expect`]; nothing is
//! derived from what the kernel showed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::classify::PageClass;

/// How the arena is mapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// MAP_PRIVATE: copy-on-write after fork.
    #[default]
    Private,
    /// MAP_SHARED: one set of pages for every process.
    Shared,
}

impl Mapping {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mapping::Private => "private",
            Mapping::Shared => "shared",
        }
    }
}

/// Fork-related advice on the whole arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ForkAdvice {
    /// No advice.
    #[default]
    #[serde(rename = "none")]
    None,
    /// MADV_WIPEONFORK.
    #[serde(rename = "wipeonfork")]
    WipeOnFork,
    /// MADV_DONTFORK.
    #[serde(rename = "dontfork")]
    DontFork,
}

impl ForkAdvice {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ForkAdvice::None => "none",
            ForkAdvice::WipeOnFork => "wipeonfork",
            ForkAdvice::DontFork => "dontfork",
        }
    }
}

/// How a PMD-sized THP is mapped when the parent forks (cow.c's THP backings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ThpLayout {
    /// One PMD maps the whole THP.
    #[default]
    Pmd,
    /// The PMD was split into 512 PTEs (an mprotect of one subpage to read-only and back);
    /// the folio stays one large folio.
    PteMapped,
    /// Only one PTE is left (MADV_DONTNEED of subpages 1..511): one subpage of a large folio.
    SinglePte,
    /// The upper half was mremap()ed to pages 512..767 of the arena (the hole it left,
    /// pages 256..511, is refilled with PROT_NONE): one folio mapped at two places.
    PartialMremap,
}

/// What backs the arena: the memory-kind axis. Every kind-specific decision (alignment,
/// advice, how it is populated, how one proves it formed, what one write copies, which smaps
/// fields count it) is a method of this type, not a branch elsewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum MemoryKind {
    /// Anonymous base pages (MADV_NOHUGEPAGE), or MAP_SHARED|MAP_ANONYMOUS (shmem).
    #[default]
    Anon,
    /// Anonymous pages only read before the fork: the shared zero page.
    ZeroPage,
    /// A PMD-sized, PMD-aligned MADV_HUGEPAGE range only read before the fork: the huge zero
    /// page.
    HugeZeroPage,
    /// A PMD-sized anonymous THP.
    Thp {
        /// How it is mapped at fork time.
        #[serde(default)]
        layout: ThpLayout,
    },
    /// A multi-size THP (an anonymous large folio smaller than a PMD).
    Mthp {
        /// Its size in kB (a `hugepages-<N>kB` size the kernel offers).
        size_kb: u64,
    },
    /// hugetlbfs pages (MAP_HUGETLB).
    Hugetlb {
        /// Huge page size in kB.
        size_kb: u64,
    },
    /// A temporary file on disk, mapped (its pages are page-cache pages).
    File,
    /// A memfd (shmem), mapped.
    Memfd,
    /// The seed's 09a arena with its three strings (seed-09c).
    Seed09a,
}

impl MemoryKind {
    /// The name used in reports.
    pub fn name(self) -> String {
        match self {
            MemoryKind::Anon => "anon".into(),
            MemoryKind::ZeroPage => "zero-page".into(),
            MemoryKind::HugeZeroPage => "huge-zero-page".into(),
            MemoryKind::Thp { layout } => match layout {
                ThpLayout::Pmd => "thp".into(),
                ThpLayout::PteMapped => "thp-pte-mapped".into(),
                ThpLayout::SinglePte => "thp-single-pte".into(),
                ThpLayout::PartialMremap => "thp-partial-mremap".into(),
            },
            MemoryKind::Mthp { size_kb } => format!("mthp-{size_kb}k"),
            MemoryKind::Hugetlb { size_kb } => format!("hugetlb-{size_kb}k"),
            MemoryKind::File => "file".into(),
            MemoryKind::Memfd => "memfd".into(),
            MemoryKind::Seed09a => "seed-09a".into(),
        }
    }

    /// Whether the kind is (or starts as) a transparent huge page of some size.
    pub fn is_thp(self) -> bool {
        matches!(
            self,
            MemoryKind::Thp { .. } | MemoryKind::Mthp { .. } | MemoryKind::HugeZeroPage
        )
    }

    /// Pages a huge unit (THP, mTHP, hugetlb page) spans, when the kind has one.
    pub fn unit_pages(self, page_size: usize, pmd_kb: u64) -> Option<usize> {
        let kb = match self {
            MemoryKind::Thp { .. } | MemoryKind::HugeZeroPage => pmd_kb,
            MemoryKind::Mthp { size_kb } | MemoryKind::Hugetlb { size_kb } => size_kb,
            _ => return None,
        };
        Some((kb as usize * 1024 / page_size).max(1))
    }

    /// Whether the parent only reads the arena before the fork (the zero-page kinds).
    pub fn read_only_before_fork(self) -> bool {
        matches!(self, MemoryKind::ZeroPage | MemoryKind::HugeZeroPage)
    }

    /// Whether a write copies the whole huge unit (hugetlb), may or may not (the huge zero
    /// page: 6.13+ replace it by a whole new THP, older kernels split it and allocate one
    /// page), or copies one base page (everything else, THPs of every size included).
    pub fn write_unit(self) -> WriteUnit {
        match self {
            MemoryKind::Hugetlb { .. } => WriteUnit::Huge,
            MemoryKind::HugeZeroPage => WriteUnit::BaseOrHuge,
            _ => WriteUnit::Base,
        }
    }

    /// Pages that are holes of this kind's layout (mapped by nobody at fork time).
    pub fn is_hole(self, page: usize, unit: usize) -> bool {
        match self {
            MemoryKind::Thp {
                layout: ThpLayout::SinglePte,
            } => !page.is_multiple_of(unit),
            MemoryKind::Thp {
                layout: ThpLayout::PartialMremap,
            } => (unit / 2..unit).contains(&page),
            _ => false,
        }
    }
}

/// How much one write makes the kernel copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteUnit {
    /// One base page.
    Base,
    /// The whole huge page the written byte lies in.
    Huge,
    /// Either; the evidence says which (and the judge names it).
    BaseOrHuge,
}

/// What the parent does to the arena after populating it and before the fork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Prep {
    /// MADV_FREE over the arena (lazily freed, still mapped until reclaim).
    MadvFree,
    /// MADV_PAGEOUT over the arena: every page must end up in swap.
    PageOut,
    /// vmsplice these pages into a pipe (the pipe keeps a reference to each page).
    Vmsplice {
        /// Page indices (in a scenario file also a range: see [`PageList`]).
        #[schemars(with = "PageList")]
        pages: Vec<usize>,
    },
    /// Register the whole arena as an io_uring fixed buffer (a long-term R/W pin).
    RegisterFixedBuffer,
}

/// One step of a process's program after the fork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Stamp these whole pages (index + the writer's side marker).
    Write {
        /// Page indices (in a scenario file also a range: see [`PageList`]).
        #[schemars(with = "PageList")]
        pages: Vec<usize>,
    },
    /// Write one byte of each of these pages (at offset 32; the stamp stays intact).
    WriteByte {
        /// Page indices (in a scenario file also a range: see [`PageList`]).
        #[schemars(with = "PageList")]
        pages: Vec<usize>,
    },
    /// Read one byte of every page.
    ReadAll,
    /// mprotect(PROT_READ) then mprotect(PROT_READ|PROT_WRITE) over the whole arena.
    MprotectCycle,
    /// vmsplice these pages into the scenario's pipe.
    Vmsplice {
        /// Page indices (in a scenario file also a range: see [`PageList`]).
        #[schemars(with = "PageList")]
        pages: Vec<usize>,
    },
    /// munmap these pages.
    Munmap {
        /// Page indices (in a scenario file also a range: see [`PageList`]).
        #[schemars(with = "PageList")]
        pages: Vec<usize>,
    },
    /// An O_DIRECT read from a temporary file on disk into these pages.
    ODirectRead {
        /// Page indices (in a scenario file also a range: see [`PageList`]).
        #[schemars(with = "PageList")]
        pages: Vec<usize>,
    },
    /// Children only: wait until the parent has done its own after-fork steps (without it,
    /// every child finishes its steps before the parent starts).
    AfterParent,
    /// Fork a grandchild that runs these steps.
    Fork {
        /// The grandchild's program.
        ops: Vec<Op>,
    },
    /// Block forever before reporting ready (tests of the timeout path).
    Hang,
    /// Store one byte into this page after being released (sampling happens before; the
    /// dontfork child dies of SIGSEGV here).
    TouchAfterRelease {
        /// Page index.
        page: usize,
    },
    /// seed-09c: overwrite the 09a arena's second message with this text.
    OverwriteSecondMessage {
        /// The text.
        text: String,
    },
}

/// What one process does after the fork.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessPlan {
    /// Its steps, in order.
    #[serde(default)]
    pub ops: Vec<Op>,
}

impl ProcessPlan {
    /// A plan of these steps.
    pub fn of(ops: Vec<Op>) -> Self {
        ProcessPlan { ops }
    }

    /// The grandchild's plan, if this process forks one.
    pub fn grandchild(&self) -> Option<ProcessPlan> {
        self.ops.iter().find_map(|o| match o {
            Op::Fork { ops } => Some(ProcessPlan { ops: ops.clone() }),
            _ => None,
        })
    }

    /// Whether it blocks before reporting ready.
    pub fn hangs(&self) -> bool {
        self.ops.contains(&Op::Hang)
    }

    fn pages_of(&self, pick: impl Fn(&Op) -> Option<&Vec<usize>>) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .ops
            .iter()
            .filter_map(pick)
            .flatten()
            .copied()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Pages it stores into (stamps, single bytes, O_DIRECT reads, the seed's rewrite).
    pub fn written(&self) -> Vec<usize> {
        let mut v = self.pages_of(|o| match o {
            Op::Write { pages } | Op::WriteByte { pages } | Op::ODirectRead { pages } => {
                Some(pages)
            }
            _ => None,
        });
        if self
            .ops
            .iter()
            .any(|o| matches!(o, Op::OverwriteSecondMessage { .. }))
        {
            v.push(0);
            v.dedup();
        }
        v
    }

    /// Pages it stamps whole.
    pub fn stamped(&self) -> Vec<usize> {
        self.pages_of(|o| match o {
            Op::Write { pages } => Some(pages),
            _ => None,
        })
    }

    /// Pages it writes one byte of.
    pub fn one_byte(&self) -> Vec<usize> {
        self.pages_of(|o| match o {
            Op::WriteByte { pages } => Some(pages),
            _ => None,
        })
    }

    /// Pages an O_DIRECT read fills.
    pub fn direct_read(&self) -> Vec<usize> {
        self.pages_of(|o| match o {
            Op::ODirectRead { pages } => Some(pages),
            _ => None,
        })
    }

    /// Pages it unmaps.
    pub fn unmapped(&self) -> Vec<usize> {
        self.pages_of(|o| match o {
            Op::Munmap { pages } => Some(pages),
            _ => None,
        })
    }

    /// Pages it vmsplices into the pipe.
    pub fn vmspliced(&self) -> Vec<usize> {
        self.pages_of(|o| match o {
            Op::Vmsplice { pages } => Some(pages),
            _ => None,
        })
    }

    /// Every page index the plan names (for the size check), grandchildren included.
    pub fn named_pages(&self) -> Vec<usize> {
        let mut v = Vec::new();
        for o in &self.ops {
            match o {
                Op::Write { pages }
                | Op::WriteByte { pages }
                | Op::Vmsplice { pages }
                | Op::Munmap { pages }
                | Op::ODirectRead { pages } => v.extend(pages),
                Op::TouchAfterRelease { page } => v.push(*page),
                Op::Fork { ops } => v.extend(ProcessPlan { ops: ops.clone() }.named_pages()),
                _ => {}
            }
        }
        v
    }
}

/// An explicit expectation for some pages of one process, overriding what the scenario's
/// steps imply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// `parent`, `child`, `child-2`, ..., `grandchild`, `grandchild-2`, ...
    pub process: String,
    /// Page indices it covers (in a scenario file also a range: see [`PageList`]).
    #[schemars(with = "PageList")]
    pub pages: Vec<usize>,
    /// The class these pages must have against the parent (not for `parent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<PageClass>,
    /// Whether the process must hold a different frame than the parent held before the fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_frame: Option<bool>,
}

/// How a scenario file names pages (the schema of every `pages` list of a step or an
/// expectation). A file is read with every form expanded to the list of indices
/// (`scenario_file::expand_page_lists`); documents always carry the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PageList {
    /// The page indices, e.g. `[0, 2, 5]`.
    List(Vec<usize>),
    /// `"all"`: every page of the arena; or `"A-B"`: pages A to B, both included
    /// (`"0-99"` is 100 pages).
    Text(String),
    /// `{"from": A, "to": B, "step": S}`: A, A+S, A+2S, ... below B (`to` is excluded, as
    /// in Rust's `A..B` or Python's `range`; `step` defaults to 1).
    Span {
        /// The first page.
        from: usize,
        /// The end: the first page NOT included.
        to: usize,
        /// The distance between pages (at least 1).
        #[serde(default = "one")]
        step: usize,
    },
}

fn one() -> usize {
    1
}

/// One scenario of the catalogue (or of a scenario file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Stable name.
    pub name: String,
    /// One line for `--list` and the table.
    pub summary: String,
    /// What backs the arena.
    #[serde(default)]
    pub memory: MemoryKind,
    /// Arena size in pages.
    pub pages: usize,
    /// Whether `--pages N` rescales it.
    #[serde(default)]
    pub scalable: bool,
    /// Private or shared.
    #[serde(default)]
    pub mapping: Mapping,
    /// Fork advice over the whole arena.
    #[serde(default)]
    pub advice: ForkAdvice,
    /// The parent stamps (or, for the zero-page kinds, reads) every page before the fork.
    #[serde(default = "yes")]
    pub populate: bool,
    /// What the parent does to the populated arena before the fork.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prepare: Vec<Prep>,
    /// The forked children, in fork order.
    #[serde(default)]
    pub children: Vec<ProcessPlan>,
    /// What the parent does after every child reported ready.
    #[serde(default)]
    pub parent: ProcessPlan,
    /// Explicit expectations (they override the ones the steps imply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<Expectation>,
}

fn yes() -> bool {
    true
}

/// The second message of the seed's 09a, and what seed-09c's child writes over it.
pub const SEED_09C_CHILD_TEXT: &str = "Child rewrote this!";

/// The 16-page default of the scalable scenarios.
pub const DEFAULT_PAGES: usize = 16;

/// PMD-sized THP in pages on x86-64 with 4 KiB pages (the catalogue's default; the runner
/// uses the kernel's `hpage_pmd_size`).
const PMD_PAGES: usize = 512;

fn base(name: &str, summary: &str) -> Scenario {
    Scenario {
        name: name.into(),
        summary: summary.into(),
        memory: MemoryKind::Anon,
        pages: DEFAULT_PAGES,
        scalable: true,
        mapping: Mapping::Private,
        advice: ForkAdvice::None,
        populate: true,
        prepare: Vec::new(),
        children: vec![ProcessPlan::default()],
        parent: ProcessPlan::default(),
        expect: Vec::new(),
    }
}

fn write(pages: std::ops::Range<usize>) -> Op {
    Op::Write {
        pages: pages.collect(),
    }
}

fn write_byte(pages: &[usize]) -> Op {
    Op::WriteByte {
        pages: pages.to_vec(),
    }
}

fn child(ops: Vec<Op>) -> Vec<ProcessPlan> {
    vec![ProcessPlan::of(ops)]
}

fn thp(name: &str, summary: &str, layout: ThpLayout, pages: usize) -> Scenario {
    Scenario {
        memory: MemoryKind::Thp { layout },
        pages,
        scalable: false,
        children: child(vec![write_byte(&[0])]),
        ..base(name, summary)
    }
}

/// The anonymous mTHP sizes (kB) the running kernel offers below the PMD size, always
/// including 64 kB (the named case; it skips where the kernel lacks it).
pub fn mthp_sizes_kb() -> Vec<u64> {
    let pmd = crate::kernel::thp_pmd_size_kb().unwrap_or(2048);
    let mut v: Vec<u64> = std::fs::read_dir("/sys/kernel/mm/transparent_hugepage")
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("enabled").is_file())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()
                })
                .filter(|&kb| kb < pmd)
                .collect()
        })
        .unwrap_or_default();
    v.push(64);
    v.sort_unstable();
    v.dedup();
    v
}

/// The whole catalogue, in report order (the mTHP cases depend on the sizes the running
/// kernel offers).
pub fn catalogue() -> Vec<Scenario> {
    let mut v = vec![
        base(
            "private-idle",
            "16 private pages written before fork; nobody writes after",
        ),
        Scenario {
            children: child(vec![write(0..4)]),
            ..base(
                "private-child-writes",
                "16 private pages; the child writes pages 0-3",
            )
        },
        Scenario {
            parent: ProcessPlan::of(vec![write(0..4)]),
            ..base(
                "private-parent-writes",
                "16 private pages; the parent writes pages 0-3",
            )
        },
        Scenario {
            children: child(vec![write(0..1)]),
            parent: ProcessPlan::of(vec![write(0..1)]),
            ..base(
                "private-both-write",
                "the child writes page 0, then the parent writes page 0",
            )
        },
        Scenario {
            mapping: Mapping::Shared,
            children: child(vec![write(0..4)]),
            ..base(
                "shared-child-writes",
                "16 MAP_SHARED pages; the child writes pages 0-3",
            )
        },
        Scenario {
            advice: ForkAdvice::WipeOnFork,
            children: child(vec![Op::ReadAll]),
            ..base(
                "wipeonfork",
                "16 pages with MADV_WIPEONFORK; the child reads every page",
            )
        },
        Scenario {
            advice: ForkAdvice::DontFork,
            children: child(vec![Op::TouchAfterRelease { page: 0 }]),
            ..base(
                "dontfork",
                "16 pages with MADV_DONTFORK; the child touches page 0",
            )
        },
        thp(
            "thp-child-writes",
            "one 2 MiB THP (512 pages); the child writes one byte of page 0",
            ThpLayout::Pmd,
            PMD_PAGES,
        ),
        Scenario {
            children: (0..4)
                .map(|i| ProcessPlan::of(vec![write(i..i + 1)]))
                .collect(),
            ..base(
                "many-children",
                "16 pages, 4 children; child i writes page i",
            )
        },
        Scenario {
            children: child(vec![Op::Fork {
                ops: vec![write(0..1)],
            }]),
            ..base(
                "fork-chain",
                "16 pages; the child forks a grandchild, which writes page 0",
            )
        },
        Scenario {
            memory: MemoryKind::Seed09a,
            pages: 1,
            scalable: false,
            populate: false,
            children: child(vec![Op::OverwriteSecondMessage {
                text: SEED_09C_CHILD_TEXT.into(),
            }]),
            ..base(
                "seed-09c",
                "the 09a arena and strings; the child overwrites the second message",
            )
        },
        // ── memory kinds ───────────────────────────────────────────────────────────────────
        Scenario {
            memory: MemoryKind::ZeroPage,
            children: child(vec![Op::ReadAll, write(0..4)]),
            ..base(
                "zero-page-child-writes",
                "16 pages only read before fork (the shared zero page); the child writes pages 0-3",
            )
        },
        Scenario {
            memory: MemoryKind::HugeZeroPage,
            pages: PMD_PAGES,
            scalable: false,
            children: child(vec![write_byte(&[0])]),
            ..base(
                "huge-zero-page-child-writes",
                "a 2 MiB range only read before fork (the huge zero page); the child writes one byte",
            )
        },
        Scenario {
            children: vec![ProcessPlan::default()],
            parent: ProcessPlan::of(vec![write_byte(&[0])]),
            ..thp(
                "thp-parent-writes",
                "one 2 MiB THP; the parent writes one byte of page 0",
                ThpLayout::Pmd,
                PMD_PAGES,
            )
        },
        thp(
            "thp-pte-mapped-child-writes",
            "a 2 MiB THP mapped by 512 PTEs; the child writes one byte of page 0",
            ThpLayout::PteMapped,
            PMD_PAGES,
        ),
        thp(
            "thp-single-pte-child-writes",
            "one PTE left of a 2 MiB THP (page 0); the child writes one byte of it",
            ThpLayout::SinglePte,
            PMD_PAGES,
        ),
        Scenario {
            children: child(vec![write_byte(&[0, PMD_PAGES])]),
            ..thp(
                "thp-partial-mremap-child-writes",
                "a 2 MiB THP whose upper half was mremap()ed to pages 512-767; the child writes one byte of pages 0 and 512",
                ThpLayout::PartialMremap,
                PMD_PAGES + PMD_PAGES / 2,
            )
        },
    ];
    for kb in mthp_sizes_kb() {
        v.push(Scenario {
            memory: MemoryKind::Mthp { size_kb: kb },
            pages: (kb / 4) as usize,
            scalable: false,
            children: child(vec![write_byte(&[0])]),
            ..base(
                &format!("mthp-{kb}k-child-writes"),
                &format!("one {kb} kB multi-size THP; the child writes one byte of page 0"),
            )
        });
    }
    v.extend([
        Scenario {
            memory: MemoryKind::Hugetlb { size_kb: 2048 },
            pages: PMD_PAGES,
            scalable: false,
            children: child(vec![write_byte(&[0])]),
            ..base(
                "hugetlb-2m-child-writes",
                "one 2 MiB hugetlb page; the child writes one byte of page 0",
            )
        },
        Scenario {
            memory: MemoryKind::File,
            scalable: false,
            children: child(vec![Op::ReadAll, write(0..4)]),
            ..base(
                "file-private-child-writes",
                "16 pages of a file on disk, MAP_PRIVATE, read before fork; the child writes pages 0-3",
            )
        },
        Scenario {
            memory: MemoryKind::Memfd,
            mapping: Mapping::Shared,
            children: child(vec![write(0..4)]),
            ..base(
                "memfd-shared-child-writes",
                "16 pages of a memfd, MAP_SHARED; the child writes pages 0-3",
            )
        },
        Scenario {
            prepare: vec![Prep::MadvFree],
            children: child(vec![write(0..4)]),
            ..base(
                "madv-free-child-writes",
                "16 private pages freed with MADV_FREE before fork; the child writes pages 0-3",
            )
        },
        Scenario {
            scalable: false,
            prepare: vec![Prep::PageOut],
            children: child(vec![write(0..4)]),
            ..base(
                "swapped-child-writes",
                "16 private pages swapped out (MADV_PAGEOUT) before fork; the child writes pages 0-3",
            )
        },
        // ── actions and pins ───────────────────────────────────────────────────────────────
        Scenario {
            children: child(vec![Op::MprotectCycle, write(0..4)]),
            ..base(
                "mprotect-cycle-child-writes",
                "16 private pages; the child mprotects them read-only and back, then writes pages 0-3",
            )
        },
        Scenario {
            scalable: false,
            children: child(vec![
                Op::Vmsplice {
                    pages: (0..4).collect(),
                },
                Op::Munmap {
                    pages: (0..4).collect(),
                },
            ]),
            parent: ProcessPlan::of(vec![write(0..4)]),
            ..base(
                "vmsplice-child-unmap",
                "the child vmsplices pages 0-3 into a pipe and unmaps them; the parent writes them (CVE-2020-29374)",
            )
        },
        Scenario {
            scalable: false,
            prepare: vec![Prep::Vmsplice {
                pages: (0..4).collect(),
            }],
            children: child(vec![Op::AfterParent, write(0..4)]),
            parent: ProcessPlan::of(vec![Op::Munmap {
                pages: (0..4).collect(),
            }]),
            ..base(
                "vmsplice-before-fork-parent-unmap",
                "the parent vmsplices pages 0-3 before fork and unmaps them after; the child writes them",
            )
        },
        Scenario {
            scalable: false,
            prepare: vec![Prep::RegisterFixedBuffer],
            children: vec![ProcessPlan::default()],
            parent: ProcessPlan::of(vec![write(0..1)]),
            ..base(
                "iouring-fixed-buffer-fork",
                "16 pages registered as an io_uring fixed buffer (a R/W long-term pin); fork; the parent writes page 0",
            )
        },
        Scenario {
            prepare: vec![Prep::RegisterFixedBuffer],
            children: vec![ProcessPlan::default()],
            parent: ProcessPlan::of(vec![write_byte(&[0])]),
            ..thp(
                "iouring-fixed-buffer-thp-fork",
                "a 2 MiB THP registered as an io_uring fixed buffer; fork; the parent writes one byte of page 0",
                ThpLayout::Pmd,
                PMD_PAGES,
            )
        },
        Scenario {
            scalable: false,
            children: child(vec![Op::ODirectRead {
                pages: (0..4).collect(),
            }]),
            ..base(
                "o-direct-read-after-fork",
                "16 private pages; after fork the child reads a disk file into pages 0-3 with O_DIRECT",
            )
        },
    ]);
    v
}

/// Every scenario name with its summary.
pub fn list() -> Vec<(String, String)> {
    catalogue()
        .into_iter()
        .map(|s| (s.name, s.summary))
        .collect()
}

/// Find a scenario by name.
pub fn by_name(name: &str) -> Option<Scenario> {
    catalogue().into_iter().find(|s| s.name == name)
}

/// What the head of a page must read (its first 64 bytes): the stamp's index and side marker,
/// and the byte a one-byte write left at offset 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedHead {
    /// The u64 at offset 0 (the page index for stamped pages, 0 for zero pages).
    pub index: u64,
    /// The byte at offset 8 (the side marker; 0 for zero pages).
    pub marker: u8,
    /// The byte at offset 32, when a one-byte write put one there.
    pub byte32: Option<u8>,
}

pub use super::child::side;

/// The role name of the process at `path`: `[]` parent, `[i]` child i, `[i, 0]` its child.
pub fn role(path: &[usize]) -> String {
    match path {
        [] => "parent".into(),
        [0] => "child".into(),
        [i] => format!("child-{}", i + 1),
        [0, _] => "grandchild".into(),
        [i, _] => format!("grandchild-{}", i + 1),
        _ => "descendant".into(),
    }
}

impl Scenario {
    /// The plan of the process at `path` (`[]` = the parent, `[i]` = child i, `[i, 0]` = its
    /// child); None for a path the scenario does not have.
    pub fn plan(&self, path: &[usize]) -> Option<ProcessPlan> {
        let Some((&first, rest)) = path.split_first() else {
            return Some(self.parent.clone());
        };
        let mut plan = self.children.get(first)?.clone();
        for _ in rest {
            plan = plan.grandchild()?;
        }
        Some(plan)
    }

    /// The largest page index any step names (for the size check).
    pub fn max_named_page(&self) -> Option<usize> {
        let prep = self.prepare.iter().flat_map(|p| match p {
            Prep::Vmsplice { pages } => pages.clone(),
            _ => Vec::new(),
        });
        self.children
            .iter()
            .chain(std::iter::once(&self.parent))
            .flat_map(ProcessPlan::named_pages)
            .chain(prep)
            .chain(self.expect.iter().flat_map(|e| e.pages.clone()))
            .max()
    }

    /// Every process path of the scenario after the parent, in fork order (each child, then
    /// its grandchild).
    pub fn paths(&self) -> Vec<Vec<usize>> {
        let mut v = Vec::new();
        for (i, c) in self.children.iter().enumerate() {
            v.push(vec![i]);
            if c.grandchild().is_some() {
                v.push(vec![i, 0]);
            }
        }
        v
    }

    /// Pages written after the fork by the process at `path`.
    pub fn written_by(&self, path: &[usize]) -> Vec<usize> {
        self.plan(path).map(|p| p.written()).unwrap_or_default()
    }

    /// Pages the process at `path` unmapped after the fork.
    pub fn unmapped_by(&self, path: &[usize]) -> Vec<usize> {
        self.plan(path).map(|p| p.unmapped()).unwrap_or_default()
    }

    /// The pages a pipe holds a reference to (vmspliced before or after the fork).
    pub fn vmspliced(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .prepare
            .iter()
            .filter_map(|p| match p {
                Prep::Vmsplice { pages } => Some(pages.clone()),
                _ => None,
            })
            .flatten()
            .chain(self.parent.vmspliced())
            .chain(self.paths().iter().flat_map(|p| self.spliced_by(p)))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn spliced_by(&self, path: &[usize]) -> Vec<usize> {
        self.plan(path).map(|p| p.vmspliced()).unwrap_or_default()
    }

    /// Whether the parent pins the arena (an io_uring fixed buffer) before the fork.
    pub fn pinned(&self) -> bool {
        self.prepare.contains(&Prep::RegisterFixedBuffer)
    }

    /// Whether any step needs the scenario's pipe.
    pub fn uses_pipe(&self) -> bool {
        !self.vmspliced().is_empty()
    }

    /// Whether any process reads a disk file with O_DIRECT.
    pub fn uses_direct_file(&self) -> bool {
        std::iter::once(Vec::new()).chain(self.paths()).any(|p| {
            !self
                .plan(&p)
                .map(|x| x.direct_read())
                .unwrap_or_default()
                .is_empty()
        })
    }

    /// Pages per huge unit of the memory kind (1 for base pages).
    pub fn unit(&self, page_size: usize, pmd_kb: u64) -> usize {
        self.memory.unit_pages(page_size, pmd_kb).unwrap_or(1)
    }

    /// The expectations of the process at `path`, with every page set it needs computed
    /// once: asking it about each page costs a binary search, not a walk of the scenario's
    /// steps (which made judging an arena quadratic in its pages: 262,144 written pages took
    /// over ten minutes).
    pub fn expect_for(&self, path: &[usize], unit: usize) -> ProcessExpect<'_> {
        ProcessExpect::new(self, path, unit)
    }

    /// The class page `page` must have in the process at `path` compared with the parent:
    /// [`ProcessExpect::class`] (for one page; use [`Scenario::expect_for`] for many).
    pub fn expected_class(&self, path: &[usize], page: usize, unit: usize) -> PageClass {
        self.expect_for(path, unit).class(page)
    }

    /// Whether the process at `path` must hold a new frame for `page`:
    /// [`ProcessExpect::new_frame`] (for one page; use [`Scenario::expect_for`] for many).
    pub fn expects_new_frame(&self, path: &[usize], page: usize, unit: usize) -> Option<bool> {
        self.expect_for(path, unit).new_frame(page)
    }

    /// What the first bytes of `page` must read in the process at `path`:
    /// [`ProcessExpect::head`] (for one page; use [`Scenario::expect_for`] for many).
    pub fn expected_head(&self, path: &[usize], page: usize, unit: usize) -> Option<ExpectedHead> {
        self.expect_for(path, unit).head(page)
    }
}

/// A sorted set of page indices: membership and "any page of this huge unit" by binary search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSet(Vec<usize>);

impl PageSet {
    /// The set of these pages (any order, duplicates allowed).
    pub fn of(mut pages: Vec<usize>) -> Self {
        pages.sort_unstable();
        pages.dedup();
        PageSet(pages)
    }

    /// Whether `page` is in the set.
    pub fn contains(&self, page: usize) -> bool {
        self.0.binary_search(&page).is_ok()
    }

    /// Whether any page of the huge unit holding `page` (units of `unit` pages) is in the set.
    pub fn any_in_unit(&self, page: usize, unit: usize) -> bool {
        let first = page / unit * unit;
        let i = self.0.partition_point(|&p| p < first);
        self.0.get(i).is_some_and(|&p| p / unit == page / unit)
    }

    /// The pages, ascending.
    pub fn as_slice(&self) -> &[usize] {
        &self.0
    }

    /// How many pages.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What one process's plan does to its pages, as sets.
#[derive(Debug, Clone, Default)]
struct PlanSets {
    written: PageSet,
    unmapped: PageSet,
    stamped: PageSet,
    one_byte: PageSet,
    direct_read: PageSet,
}

impl PlanSets {
    fn of(plan: Option<ProcessPlan>) -> Self {
        let Some(p) = plan else {
            return PlanSets::default();
        };
        PlanSets {
            written: PageSet::of(p.written()),
            unmapped: PageSet::of(p.unmapped()),
            stamped: PageSet::of(p.stamped()),
            one_byte: PageSet::of(p.one_byte()),
            direct_read: PageSet::of(p.direct_read()),
        }
    }
}

/// The expectations of one process of a scenario, derived from first principles (see the
/// module docs), with the page sets of every plan they depend on computed once.
#[derive(Debug, Clone)]
pub struct ProcessExpect<'a> {
    s: &'a Scenario,
    path: Vec<usize>,
    unit: usize,
    /// Explicit expectations for this process, in file order, with their page sets.
    explicit: Vec<(&'a Expectation, PageSet)>,
    own: PlanSets,
    parent: PlanSets,
    /// Each child's sets (the parent's new-frame rule asks all of them).
    children: Vec<PlanSets>,
    /// Every process's sets with its path (the last writer on a shared mapping).
    all: Vec<(Vec<usize>, PlanSets)>,
    vmspliced: PageSet,
    pinned: bool,
}

impl<'a> ProcessExpect<'a> {
    fn new(s: &'a Scenario, path: &[usize], unit: usize) -> Self {
        let who = role(path);
        let explicit = s
            .expect
            .iter()
            .filter(|e| e.process == who)
            .map(|e| (e, PageSet::of(e.pages.clone())))
            .collect();
        let own = PlanSets::of(s.plan(path));
        let parent = PlanSets::of(s.plan(&[]));
        let children = if path.is_empty() {
            (0..s.children.len())
                .map(|i| PlanSets::of(s.plan(&[i])))
                .collect()
        } else {
            Vec::new()
        };
        let all = if s.mapping == Mapping::Shared {
            s.paths()
                .into_iter()
                .chain(std::iter::once(Vec::new()))
                .map(|p| {
                    let sets = PlanSets::of(s.plan(&p));
                    (p, sets)
                })
                .collect()
        } else {
            vec![(path.to_vec(), own.clone())]
        };
        ProcessExpect {
            s,
            path: path.to_vec(),
            unit,
            explicit,
            own,
            parent,
            children,
            all,
            vmspliced: PageSet::of(s.vmspliced()),
            pinned: s.pinned(),
        }
    }

    fn explicit(&self, page: usize) -> Option<&'a Expectation> {
        self.explicit
            .iter()
            .rev()
            .find(|(_, set)| set.contains(page))
            .map(|(e, _)| *e)
    }

    /// Whether `page` is written after the fork by a process with these sets, counting a
    /// write anywhere in a huge unit as a write of the whole unit where the kind copies whole
    /// units.
    fn written_in_unit(&self, sets: &PlanSets, page: usize) -> bool {
        match self.s.memory.write_unit() {
            WriteUnit::Huge => sets.written.any_in_unit(page, self.unit),
            _ => sets.written.contains(page),
        }
    }

    /// Whether this process wrote any page of the huge unit holding `page` (the huge zero
    /// page: a write may replace the whole unit).
    pub fn wrote_in_unit_of(&self, page: usize) -> bool {
        self.own.written.any_in_unit(page, self.unit)
    }

    /// The pages this process writes after the fork.
    pub fn written(&self) -> &PageSet {
        &self.own.written
    }

    /// The class `page` must have in this process compared with the parent, from first
    /// principles: MAP_SHARED never copies; WIPEONFORK children see zero; DONTFORK children,
    /// and a process that unmapped the page, have no mapping; holes of the layout are absent;
    /// a pinned private page is copied at fork; a private page written after the fork by
    /// either side is copied (a hugetlb write copies the whole huge page); any other stays
    /// shared. For the huge zero page, the rest of a written huge page may move too: see
    /// [`MemoryKind::write_unit`].
    pub fn class(&self, page: usize) -> PageClass {
        let s = self.s;
        if let Some(c) = self.explicit(page).and_then(|e| e.class) {
            return c;
        }
        match s.advice {
            ForkAdvice::DontFork => return PageClass::NotInherited,
            ForkAdvice::WipeOnFork => return PageClass::Wiped,
            ForkAdvice::None => {}
        }
        if s.memory.is_hole(page, self.unit) {
            return PageClass::Absent;
        }
        if self.own.unmapped.contains(page) {
            return PageClass::NotInherited;
        }
        if s.mapping == Mapping::Shared {
            return PageClass::Shared;
        }
        if self.pinned
            || self.written_in_unit(&self.own, page)
            || (self.written_in_unit(&self.parent, page) && !self.parent.unmapped.contains(page))
        {
            PageClass::Copied
        } else {
            PageClass::Shared
        }
    }

    /// Whether this process must hold a different frame for `page` than the parent held
    /// before the fork (it got the copy), or must still hold that frame; None where the
    /// question does not apply (fork advice, holes, unmapped pages).
    pub fn new_frame(&self, page: usize) -> Option<bool> {
        let s = self.s;
        if let Some(n) = self.explicit(page).and_then(|e| e.new_frame) {
            return Some(n);
        }
        if s.advice != ForkAdvice::None
            || s.memory.is_hole(page, self.unit)
            || self.own.unmapped.contains(page)
        {
            return None;
        }
        if s.mapping == Mapping::Shared {
            return Some(false);
        }
        if !self.path.is_empty() {
            return Some(self.pinned || self.written_in_unit(&self.own, page));
        }
        // The parent copies a page only if it wrote it while someone else still held it: a
        // child that has not copied it away (private-both-write: the child copied first, so
        // the parent's page is exclusive again and is reused), or a pipe (vmsplice: the
        // kernel never reuses a page something else holds a reference to). A pinned page
        // was copied for the child at fork, so the parent's stays its own.
        let wrote = self.written_in_unit(&self.own, page);
        let child_copied_first = self
            .children
            .iter()
            .all(|c| self.written_in_unit(c, page) || c.unmapped.contains(page));
        let piped = self.vmspliced.contains(page);
        Some(wrote && !self.pinned && (piped || !child_copied_first))
    }

    /// What the first bytes of `page` must read in this process; None where no content is
    /// expected (wiped or unmapped pages, holes).
    pub fn head(&self, page: usize) -> Option<ExpectedHead> {
        let s = self.s;
        if s.advice != ForkAdvice::None && !self.path.is_empty()
            || s.memory.is_hole(page, self.unit)
            || self.own.unmapped.contains(page)
            || s.memory == MemoryKind::Seed09a
        {
            return None;
        }
        let stamp = |marker: u8| ExpectedHead {
            index: page as u64,
            marker,
            byte32: None,
        };
        let zero = ExpectedHead {
            index: 0,
            marker: 0,
            byte32: None,
        };
        let before = if !s.populate || s.memory.read_only_before_fork() {
            zero
        } else {
            stamp(side::PARENT_BEFORE)
        };
        let mark = |p: &[usize]| match p.len() {
            0 => side::PARENT_AFTER,
            1 => side::CHILD,
            _ => side::GRANDCHILD,
        };
        // Who stored into this page last, as this process sees it: on a shared mapping every
        // process (children before the parent), else only itself.
        let mut head = before;
        for (w, sets) in &self.all {
            if sets.stamped.contains(page) {
                head = stamp(mark(w));
            }
            if sets.direct_read.contains(page) {
                head = stamp(side::DIRECT_FILE);
            }
            if sets.one_byte.contains(page) {
                head.byte32 = Some(mark(w));
            }
        }
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_stable() {
        let names: Vec<String> = list().into_iter().map(|(n, _)| n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "names are unique");
        for n in [
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
            "seed-09c",
            "zero-page-child-writes",
            "huge-zero-page-child-writes",
            "thp-parent-writes",
            "thp-pte-mapped-child-writes",
            "thp-single-pte-child-writes",
            "thp-partial-mremap-child-writes",
            "mthp-64k-child-writes",
            "hugetlb-2m-child-writes",
            "file-private-child-writes",
            "memfd-shared-child-writes",
            "madv-free-child-writes",
            "swapped-child-writes",
            "mprotect-cycle-child-writes",
            "vmsplice-child-unmap",
            "vmsplice-before-fork-parent-unmap",
            "iouring-fixed-buffer-fork",
            "o-direct-read-after-fork",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} is in the catalogue");
        }
        assert_eq!(names[..11].last().map(String::as_str), Some("seed-09c"));
    }

    #[test]
    fn expectations_follow_from_who_writes() {
        let s = by_name("private-child-writes").unwrap();
        assert_eq!(s.expected_class(&[0], 3, 1), PageClass::Copied);
        assert_eq!(s.expected_class(&[0], 4, 1), PageClass::Shared);
        assert_eq!(s.expects_new_frame(&[0], 0, 1), Some(true));
        assert_eq!(s.expects_new_frame(&[], 0, 1), Some(false));

        let s = by_name("private-parent-writes").unwrap();
        assert_eq!(s.expects_new_frame(&[], 0, 1), Some(true));
        assert_eq!(s.expects_new_frame(&[0], 0, 1), Some(false));

        let s = by_name("private-both-write").unwrap();
        assert_eq!(s.expects_new_frame(&[0], 0, 1), Some(true));
        assert_eq!(
            s.expects_new_frame(&[], 0, 1),
            Some(false),
            "the parent's page is exclusive again: reused"
        );

        let s = by_name("fork-chain").unwrap();
        assert_eq!(s.expected_class(&[0], 0, 1), PageClass::Shared);
        assert_eq!(s.expected_class(&[0, 0], 0, 1), PageClass::Copied);

        let s = by_name("many-children").unwrap();
        assert_eq!(s.expected_class(&[2], 2, 1), PageClass::Copied);
        assert_eq!(s.expected_class(&[2], 3, 1), PageClass::Shared);
        assert_eq!(
            by_name("shared-child-writes")
                .unwrap()
                .expected_class(&[0], 0, 1),
            PageClass::Shared
        );
    }

    #[test]
    fn pins_pipes_and_units_change_who_copies() {
        let s = by_name("iouring-fixed-buffer-fork").unwrap();
        assert_eq!(
            s.expects_new_frame(&[0], 5, 1),
            Some(true),
            "copied at fork"
        );
        assert_eq!(
            s.expects_new_frame(&[], 0, 1),
            Some(false),
            "the pinned page stays"
        );

        let s = by_name("vmsplice-child-unmap").unwrap();
        assert_eq!(
            s.expects_new_frame(&[], 0, 1),
            Some(true),
            "the pipe's reference forces a copy although the parent maps it alone"
        );
        assert_eq!(s.expected_class(&[0], 0, 1), PageClass::NotInherited);
        assert_eq!(s.expected_class(&[0], 4, 1), PageClass::Shared);

        let s = by_name("hugetlb-2m-child-writes").unwrap();
        assert_eq!(s.expected_class(&[0], 511, 512), PageClass::Copied);
        assert_eq!(s.expects_new_frame(&[0], 300, 512), Some(true));

        let s = by_name("thp-child-writes").unwrap();
        assert_eq!(
            s.expected_class(&[0], 1, 512),
            PageClass::Shared,
            "4 KiB COW"
        );

        let s = by_name("thp-single-pte-child-writes").unwrap();
        assert_eq!(s.expected_class(&[0], 7, 512), PageClass::Absent);
    }

    #[test]
    fn heads_name_the_last_writer() {
        let s = by_name("private-both-write").unwrap();
        assert_eq!(s.expected_head(&[0], 0, 1).unwrap().marker, side::CHILD);
        assert_eq!(
            s.expected_head(&[], 0, 1).unwrap().marker,
            side::PARENT_AFTER
        );
        let s = by_name("shared-child-writes").unwrap();
        assert_eq!(s.expected_head(&[], 1, 1).unwrap().marker, side::CHILD);
        let s = by_name("zero-page-child-writes").unwrap();
        assert_eq!(s.expected_head(&[], 1, 1).unwrap().marker, 0);
        let s = by_name("thp-child-writes").unwrap();
        assert_eq!(
            s.expected_head(&[0], 0, 512).unwrap().byte32,
            Some(side::CHILD)
        );
        let s = by_name("o-direct-read-after-fork").unwrap();
        assert_eq!(
            s.expected_head(&[0], 2, 1).unwrap().marker,
            side::DIRECT_FILE
        );
    }
}
