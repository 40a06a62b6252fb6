//! `trace --stacks`: join the pages each pair copied with the faults that copied them, then
//! name the code (symbols once per distinct address, after the run).
//!
//! The rule (design.md, "Perf events" 2): the copy of a page is the first write fault at it
//! in the copying process after the fork. A `copied_by_child` page takes the child's first
//! fault there, a `copied_by_parent` page the parent's first fault there after this fork's
//! time; a `copied_at_fork` page (fork copied it before the child ran: pinned pages, the TID
//! word) takes the parent's stack at its fork stop. A `diverged` page (the frames differ but
//! pagemap cannot say who moved: PFNs hidden) takes the earlier of the two sides' first
//! faults there since the fork: the first write to a page both map copies it, and a later
//! write by the other side finds its page exclusive and copies nothing. Faults at pages
//! that were not copied never count; a copied page without a fault is `unattributed`, per
//! class.

use std::collections::{BTreeMap, HashMap};

use super::faults::Collected;
use super::{Class, StackRecord, StackSamples};
use crate::stacks::Loc;
use crate::stacks::symbols::Frame;

/// One pair's copied pages, as the tracer kept them when the pair ended.
#[derive(Debug, Clone)]
pub struct PairCopies {
    /// Index into `forks`.
    pub fork: usize,
    /// The parent.
    pub parent: i32,
    /// The child.
    pub child: i32,
    /// The fork stop's CLOCK_MONOTONIC time.
    pub at_ns: u64,
    /// Every page any sample called copied, with the class (see
    /// [`super::relation::Baseline::copied_pages`]).
    pub pages: Vec<(u64, Class)>,
}

/// One fork's result before symbols: (who, class, stack id) -> pages.
#[derive(Debug, Default)]
pub struct Joined {
    /// Pages per (who, class, stack).
    pub by_stack: BTreeMap<(&'static str, ClassKey, u32), u64>,
    /// Copied pages without a fault, per class.
    pub unattributed: BTreeMap<String, u64>,
    /// Samples and losses.
    pub samples: StackSamples,
}

/// A class as a sortable key.
pub type ClassKey = u8;

fn key(c: Class) -> ClassKey {
    match c {
        Class::CopiedByChild => 0,
        Class::CopiedByParent => 1,
        Class::CopiedAtFork => 2,
        _ => 3,
    }
}

fn class_of(k: ClassKey) -> Class {
    match k {
        0 => Class::CopiedByChild,
        1 => Class::CopiedByParent,
        2 => Class::CopiedAtFork,
        _ => Class::Diverged,
    }
}

fn class_name(c: Class) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Join one pair's copied pages with the faults.
pub fn join(p: &PairCopies, c: &Collected) -> Joined {
    let mut j = Joined::default();
    for &(page, class) in &p.pages {
        let (who, stack) = match class {
            Class::CopiedByChild => ("child", c.first_fault(p.child, page, p.at_ns).map(|f| f.1)),
            Class::CopiedByParent => (
                "parent",
                c.first_fault(p.parent, page, p.at_ns).map(|f| f.1),
            ),
            Class::CopiedAtFork => ("parent", c.fork_stacks.get(&p.fork).copied()),
            Class::Diverged => {
                let fc = c.first_fault(p.child, page, p.at_ns);
                let fp = c.first_fault(p.parent, page, p.at_ns);
                match (fc, fp) {
                    (Some(x), Some(y)) if y.0 < x.0 => ("parent", Some(y.1)),
                    (Some(x), _) => ("child", Some(x.1)),
                    (None, Some(y)) => ("parent", Some(y.1)),
                    (None, None) => ("child", None),
                }
            }
            _ => continue,
        };
        match stack {
            Some(s) => *j.by_stack.entry((who, key(class), s)).or_default() += 1,
            None => *j.unattributed.entry(class_name(class)).or_default() += 1,
        }
    }
    j.samples = StackSamples {
        recorded: c.recorded_since(p.child, p.at_ns) + c.recorded_since(p.parent, p.at_ns),
        lost: c.lost_since(p.at_ns),
    };
    j
}

/// Name every stack the joins use: symbols once per distinct address, then a record per
/// (who, class, stack), most pages first.
pub fn name(joins: &[Joined], c: &Collected) -> Vec<Vec<StackRecord>> {
    let mut locs: Vec<(Loc, bool)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for j in joins {
        for &(_, _, s) in j.by_stack.keys() {
            if let Some(st) = c.stacks.get(s as usize) {
                for &l in st {
                    if seen.insert(l) {
                        locs.push(l);
                    }
                }
            }
        }
    }
    let names: HashMap<(Loc, bool), Vec<Frame>> =
        crate::stacks::symbols::symbolize(&c.modules, &locs);
    joins
        .iter()
        .map(|j| {
            let mut recs: Vec<StackRecord> = j
                .by_stack
                .iter()
                .map(|(&(who, k, s), &pages)| StackRecord {
                    who: who.to_string(),
                    class: class_of(k),
                    pages,
                    frames: c
                        .stacks
                        .get(s as usize)
                        .map(|st| {
                            st.iter()
                                .flat_map(|l| names.get(l).cloned().unwrap_or_default())
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect();
            merge_same_frames(&mut recs);
            recs.sort_by(|a, b| b.pages.cmp(&a.pages).then(a.who.cmp(&b.who)));
            recs
        })
        .collect()
}

/// Two stacks that differ only in addresses symbolization does not tell apart (two return
/// addresses in one line of one function) are one record.
fn merge_same_frames(recs: &mut Vec<StackRecord>) {
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    let mut out: Vec<StackRecord> = Vec::with_capacity(recs.len());
    for r in recs.drain(..) {
        let ident = serde_json::to_string(&r.frames).unwrap_or_default();
        let k = (r.who.clone(), class_name(r.class), ident);
        match index.get(&k) {
            Some(&i) => out[i].pages += r.pages,
            None => {
                index.insert(k, out.len());
                out.push(r);
            }
        }
    }
    *recs = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(f: &str) -> Frame {
        Frame {
            function: Some(f.into()),
            module: "m".into(),
            offset: "0x1".into(),
            file: None,
            line: None,
        }
    }

    #[test]
    fn records_with_the_same_named_frames_are_one() {
        let mut v = vec![
            StackRecord {
                who: "child".into(),
                class: Class::CopiedByChild,
                pages: 3,
                frames: vec![frame("a"), frame("main")],
            },
            StackRecord {
                who: "child".into(),
                class: Class::CopiedByChild,
                pages: 4,
                frames: vec![frame("a"), frame("main")],
            },
            StackRecord {
                who: "parent".into(),
                class: Class::CopiedByParent,
                pages: 1,
                frames: vec![frame("a"), frame("main")],
            },
        ];
        merge_same_frames(&mut v);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].pages, 7);
        assert_eq!(v[1].who, "parent");
    }
}
