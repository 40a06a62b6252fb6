//! `cowscope inspect` over VMA layouts built by `family layout` (tests/inspect_support/family.c):
//! one-sided VMAs first, last, alone, several in a row, on both sides at once, holes between,
//! in named cases and in seeded random layouts. Every expected count follows from the layout
//! itself (which pages each process wrote, which it mapped or unmapped), never from cowscope.
//!
//! The layout sits at 256 MiB, below the executable and every library, so its first slot is
//! the first VMA of the pair in address order: the case that once panicked the pair walk
//! (`range end index .. out of range for slice of length 0`) every time.

mod inspect_support;

use inspect_support::*;
use rstest::rstest;
use serde_json::Value;

/// Where family.c puts the layout (`LAYOUT_BASE`).
const BASE: usize = 0x1000_0000;
/// Pages per slot.
const PAGES: u64 = 4;

/// One slot of a layout, as family.c's arguments describe it.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Mapped and written (`pre` pages) by the parent before the fork; the child writes `cw`.
    Common { pre: u64, cw: u64 },
    /// Mapped and written before the fork, unmapped by the child.
    UnmappedByChild { pre: u64 },
    /// A hole at the fork; the parent maps it afterwards and writes `pw` pages.
    ParentAfter { pw: u64 },
    /// A hole at the fork; the child maps it and writes `cw` pages.
    ChildOnly { cw: u64 },
    /// A hole at the fork; the parent maps it shared, the child private: two different
    /// mappings at the same addresses, both one-sided.
    Both { pw: u64, cw: u64 },
    /// Nothing mapped in either.
    Hole,
}

impl Slot {
    fn arg(self) -> String {
        match self {
            Slot::Common { pre, cw } => format!("C:{pre}:{cw}"),
            Slot::UnmappedByChild { pre } => format!("P:{pre}"),
            Slot::ParentAfter { pw } => format!("A:{pw}"),
            Slot::ChildOnly { cw } => format!("K:{cw}"),
            Slot::Both { pw, cw } => format!("B:{pw}:{cw}"),
            Slot::Hole => "H".into(),
        }
    }

    /// (shared, diverged, only_parent, only_child, zero, unproven, neither) from first
    /// principles. A page written before the fork is shared until one side writes it again
    /// (then the writer has a copy: diverged); a page only one side has is that side's; a
    /// page of a mapping one side alone has counts once for that side (present) or as
    /// neither (not present), a slot with two different mappings once per side.
    fn expected(self) -> [u64; 7] {
        match self {
            Slot::Common { pre, cw } => {
                let diverged = pre.min(cw);
                [
                    pre - diverged,
                    diverged,
                    0,
                    cw.saturating_sub(pre),
                    0,
                    0,
                    PAGES - pre.max(cw),
                ]
            }
            Slot::UnmappedByChild { pre: w } | Slot::ParentAfter { pw: w } => {
                [0, 0, w, 0, 0, 0, PAGES - w]
            }
            Slot::ChildOnly { cw } => [0, 0, 0, cw, 0, 0, PAGES - cw],
            Slot::Both { pw, cw } => [0, 0, pw, cw, 0, 0, 2 * PAGES - pw - cw],
            Slot::Hole => [0; 7],
        }
    }

    /// Whether the child has a mapping here that the parent does not share.
    fn child_one_sided(self) -> bool {
        matches!(self, Slot::ChildOnly { .. } | Slot::Both { .. })
    }
}

fn totals(v: &Value) -> [u64; 7] {
    [
        "shared",
        "diverged",
        "only_parent",
        "only_child",
        "zero",
        "unproven",
        "neither",
    ]
    .map(|k| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}")))
}

/// Run `family layout` with `slots`, inspect the pair over the layout's range and over the
/// whole address spaces, and check the range's counts exactly.
fn check_layout(slots: &[Slot]) {
    let mut args: Vec<String> = vec!["layout".into(), PAGES.to_string()];
    args.extend(slots.iter().map(|s| s.arg()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut fam = CFamily::start(&[], &args);
    let child = fam.c1;
    let end = BASE + slots.len() * PAGES as usize * ps();
    let range = format!("{BASE:#x}-{end:#x}");
    let pid = fam.parent.to_string();

    let mut want = [0u64; 7];
    for s in slots {
        for (w, e) in want.iter_mut().zip(s.expected()) {
            *w += e;
        }
    }
    // Both ways (with PAGEMAP_SCAN and --no-scan), compared page for page.
    let doc = inspect_json(&["--pid", &pid, "--range", &range], 0);
    assert_eq!(
        totals(&pair(&doc, child)["totals"]),
        want,
        "layout {args:?}: (shared, diverged, only_parent, only_child, zero, unproven, neither)"
    );

    // The whole address spaces: the layout's first slot is the pair's first VMA.
    let (rc, out, err) = inspect(&["--pid", &pid]);
    assert!(!err.contains("panicked"), "layout {args:?} panicked: {err}");
    assert_eq!(
        rc, 0,
        "layout {args:?} (whole address space): stderr: {err}"
    );
    let doc: Value = serde_json::from_str(&out).unwrap();
    let p = pair(&doc, child);
    if let Some(first) = slots.first().filter(|s| s.child_one_sided()) {
        let one_sided = p["one_sided"].as_array().unwrap();
        let lowest = one_sided
            .iter()
            .find(|o| o["side"] == "child")
            .unwrap_or_else(|| panic!("no child-only VMA: {one_sided:?}"));
        assert_eq!(
            lowest["start"],
            format!("{BASE:#x}").as_str(),
            "{first:?} is the child's first VMA"
        );
    }
    assert!(fam.end().is_some_and(|s| s.success()), "family exits 0");
}

use Slot::*;

#[rstest]
#[case::child_only_vma_first(&[ChildOnly { cw: 3 }, Common { pre: 4, cw: 2 }])]
#[case::parent_only_vma_first(&[UnmappedByChild { pre: 2 }, Common { pre: 4, cw: 1 }])]
#[case::parent_mapped_after_fork_first(&[ParentAfter { pw: 3 }, Common { pre: 3, cw: 3 }])]
#[case::both_sides_one_sided_first(&[Both { pw: 2, cw: 3 }, Common { pre: 3, cw: 1 }])]
#[case::one_sided_vma_last(&[Common { pre: 4, cw: 2 }, ChildOnly { cw: 2 }])]
#[case::one_sided_vma_only(&[ChildOnly { cw: 3 }])]
#[case::parent_only_vma_only(&[ParentAfter { pw: 2 }])]
#[case::both_sides_one_sided_only(&[Both { pw: 4, cw: 4 }])]
#[case::several_one_sided_in_a_row(&[
    ChildOnly { cw: 1 },
    UnmappedByChild { pre: 3 },
    ParentAfter { pw: 2 },
    ChildOnly { cw: 4 },
    Both { pw: 1, cw: 0 },
    Common { pre: 4, cw: 4 },
])]
#[case::holes_between(&[
    ChildOnly { cw: 2 },
    Hole,
    Common { pre: 4, cw: 0 },
    Hole,
    UnmappedByChild { pre: 4 },
])]
#[case::child_writes_past_what_the_parent_touched(&[Common { pre: 1, cw: 4 }, ChildOnly { cw: 0 }])]
fn one_sided_vmas_anywhere_count_exactly(#[case] slots: &[Slot]) {
    if !is_root() {
        eprintln!("SKIP: exact shared/diverged counts need visible PFNs (run as root)");
        return;
    }
    check_layout(slots);
}

/// Random layouts of 1-8 slots, seeded (the seed is printed; set COWSCOPE_LAYOUT_SEED to
/// replay one).
#[test]
fn random_layouts_count_exactly() {
    if !is_root() {
        eprintln!("SKIP: exact shared/diverged counts need visible PFNs (run as root)");
        return;
    }
    let seed = std::env::var("COWSCOPE_LAYOUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("random layouts: seed {seed} (replay with COWSCOPE_LAYOUT_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let w = |rng: &mut fastrand::Rng| rng.u64(0..=PAGES);
    for _ in 0..24 {
        let n = rng.usize(1..=8);
        let slots: Vec<Slot> = (0..n)
            .map(|_| match rng.u8(0..6) {
                0 => Common {
                    pre: w(&mut rng),
                    cw: w(&mut rng),
                },
                1 => UnmappedByChild { pre: w(&mut rng) },
                2 => ParentAfter { pw: w(&mut rng) },
                3 => ChildOnly { cw: w(&mut rng) },
                4 => Both {
                    pw: w(&mut rng),
                    cw: w(&mut rng),
                },
                _ => Hole,
            })
            .collect();
        if slots.iter().all(|s| matches!(s, Hole)) {
            continue; // no pair at all in the range: nothing to count
        }
        check_layout(&slots);
    }
}
