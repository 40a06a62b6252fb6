//! Running one scenario: set up the arena, fork the subjects, sample, release, judge.

use std::time::{Duration, Instant};

use super::child::{self, ChildOp, TAG_COW_NS, TAG_OWNED_NS, TAG_PID, side};
use super::classify::{self, Basis, ClassCounts, OtherVma, PageClass, PageWitness};
use super::observe::{self, ProcessSample};
use super::subject::{self, ExitInfo, NotReady, Subject, SubjectPipes};
use super::{
    ContentChecks, Dumps, ExpectedSmaps, ForkReportOptions, PageRow, ProcessEvidence,
    ScenarioConfig, ScenarioResult, SmapsFigures, ThpFacts, Timing, Verdict,
};
use crate::arena::{Advice, Arena, ArenaConfig};
use crate::error::{Error, Result};
use crate::fork::scenarios::{ForkAdvice, Mapping, ProcessPlan, Scenario};
use crate::mem::system::SystemInfo;

const THP_SIZE: usize = 2 << 20;
/// Bytes of each page read back for the content check (stamp + marker + timing bytes).
const HEAD: usize = 64;
/// Page rows are listed for arenas up to this many pages.
const MAX_PAGE_ROWS: usize = 64;
/// Pages timed per timing run.
const TIMED_PAGES: usize = 64;

/// The 09a strings (the seed's 09a writes these into three 64-byte blocks).
const SEED_09A: [&str; 3] = [
    "Hello arena",
    "Scoped allocator is born",
    "This is not malloc",
];
const SEED_BLOCK: usize = 64;

/// Build the arena a scenario asks for.
fn make_arena(s: &Scenario, page_size: usize) -> Result<Arena> {
    let bytes = s
        .pages
        .checked_mul(page_size)
        .ok_or_else(|| Error::usage(format!("{} pages overflow the address space", s.pages)))?;
    let mut cfg = ArenaConfig::new(bytes);
    if s.mapping == Mapping::Shared {
        cfg = cfg.shared();
    }
    match s.advice {
        ForkAdvice::WipeOnFork => cfg = cfg.advise(Advice::WipeOnFork),
        ForkAdvice::DontFork => cfg = cfg.advise(Advice::DontFork),
        ForkAdvice::None => {}
    }
    if s.thp {
        cfg = cfg.align(THP_SIZE).advise(Advice::HugePage);
    }
    Ok(Arena::new(cfg)?)
}

/// A process of the scenario, by its position: `[]` parent, `[i]` child i, `[i, 0]` its child.
#[derive(Debug)]
struct Proc {
    path: Vec<usize>,
    role: String,
    subject: Option<Subject>,
    pid: i32,
    ready: bool,
    not_ready: Option<NotReady>,
}

fn role(path: &[usize]) -> String {
    match path {
        [] => "parent".into(),
        [0] => "child".into(),
        [i] => format!("child-{}", i + 1),
        [0, _] => "grandchild".into(),
        [i, _] => format!("grandchild-{}", i + 1),
        _ => "descendant".into(),
    }
}

/// The memory actions of a plan, as child ops (no fds involved).
fn action_ops(
    plan: &ProcessPlan,
    base: usize,
    page_size: usize,
    side: u8,
    pages: usize,
) -> Vec<ChildOp<'static>> {
    let mut ops = Vec::new();
    for &p in &plan.writes {
        ops.push(ChildOp::Stamp {
            addr: base + p * page_size,
            first_index: p,
            pages: 1,
            page_size,
            side,
        });
    }
    for &p in &plan.writes_one_byte {
        ops.push(ChildOp::WriteByte {
            addr: base + p * page_size + HEAD / 2,
            byte: side,
        });
    }
    if plan.reads_all {
        ops.push(ChildOp::ReadPages {
            addr: base,
            pages,
            page_size,
        });
    }
    if let Some(text) = plan.overwrite_second_message {
        let at = base + SEED_BLOCK;
        for (k, b) in text
            .bytes()
            .chain(std::iter::once(0))
            .enumerate()
            .take(SEED_BLOCK)
        {
            ops.push(ChildOp::WriteByte {
                addr: at + k,
                byte: b,
            });
        }
    }
    ops
}

/// Run one scenario end to end.
///
/// # Errors
/// Only when memory cannot be set up at all (mmap failing); everything that goes wrong with
/// a subject is reported in the scenario's verdict instead.
pub fn run_scenario(
    s: &Scenario,
    sys: &SystemInfo,
    opts: &ForkReportOptions,
) -> Result<ScenarioResult> {
    let page_size = sys.page_size as usize;
    let mut verdict = Verdict::default();
    let config = |addr: usize| ScenarioConfig {
        pages: s.pages as u64,
        page_size: page_size as u64,
        mapping: match s.mapping {
            Mapping::Private => "private".into(),
            Mapping::Shared => "shared".into(),
        },
        advice: match s.advice {
            ForkAdvice::None => "none".into(),
            ForkAdvice::WipeOnFork => "wipeonfork".into(),
            ForkAdvice::DontFork => "dontfork".into(),
        },
        thp: s.thp,
        children: s.children.len() as u64,
        arena_addr: format!("{addr:#x}"),
    };
    if s.thp && (sys.thp_enabled == "never" || sys.thp_enabled == "unavailable") {
        return Ok(skipped(
            s,
            config(0),
            format!("THP is '{}' on this kernel", sys.thp_enabled),
        ));
    }

    let t_setup = Instant::now();
    let mut arena = make_arena(s, page_size)?;
    let base = arena.base_addr();
    let pages = s.pages;
    if s.populate && !s.thp {
        populate_write(&arena);
    }

    // Populate: the 09a strings, or a stamp on every page naming its index and the parent.
    if s.seed_09c {
        for text in SEED_09A {
            let b = arena.alloc(SEED_BLOCK)?;
            let mut bytes = text.as_bytes().to_vec();
            bytes.push(0);
            arena.write(&b, 0, &bytes)?;
        }
    } else if s.populate {
        for i in 0..pages {
            if s.thp {
                // Whole pages, so the first touch of the 2 MiB range faults in a huge page.
                // SAFETY: page i lies inside the arena's readable, writable mapping.
                unsafe {
                    child::stamp_page(base + i * page_size, i, page_size, side::PARENT_BEFORE)
                };
            } else {
                // SAFETY: as above; populate_write already faulted every page in.
                unsafe { child::stamp_head(base + i * page_size, i, side::PARENT_BEFORE) };
            }
        }
    }

    let mut thp = None;
    if s.thp {
        let huge = crate::mem::smaps::vma_containing(nix::unistd::getpid().as_raw(), base as u64)
            .map(|v| v.anon_huge_pages_kb)
            .unwrap_or(0);
        if huge < (THP_SIZE / 1024) as u64 {
            return Ok(skipped(
                s,
                config(base),
                format!(
                    "no THP formed: AnonHugePages is {huge} kB after populating a 2 MiB-aligned MADV_HUGEPAGE range"
                ),
            ));
        }
        thp = Some(ThpFacts {
            parent_anon_huge_kb_before: huge,
            bytes_copied_by_one_write: 0,
        });
    }

    let self_pid = nix::unistd::getpid().as_raw();
    let before = observe::sample(self_pid, base as u64, pages, page_size)?;
    // With soft-dirty tracking, every process's bit 55 says which pages it wrote after fork.
    let track_writes = sys.soft_dirty && s.advice == ForkAdvice::None;

    let mut phases = super::PhaseTimes {
        setup_us: us(t_setup),
        ..Default::default()
    };
    let t_fork = Instant::now();
    // ── fork the subjects ────────────────────────────────────────────────────────────────
    let deadline_for = |t: Duration| Instant::now() + t;
    let mut procs: Vec<Proc> = Vec::new();
    let mut fork_ns_observed = None;
    for (i, plan) in s.children.iter().enumerate() {
        let pipes = SubjectPipes::new()?;
        let mut ops: Vec<ChildOp<'_>> = pipes.prologue().to_vec();
        if track_writes {
            // Wait until the parent has cleared our soft-dirty bits, then write.
            ops.push(ChildOp::Wait(pipes.child_release_fd()));
        }
        ops.extend(action_ops(plan, base, page_size, side::CHILD, pages));
        // The grandchild, if any: its pipes exist before the child is forked.
        let gc_pipes = match &plan.grandchild {
            Some(_) => Some(SubjectPipes::new()?),
            None => None,
        };
        let gc_ops: Vec<ChildOp<'_>>;
        if let (Some(gplan), Some(gp)) = (&plan.grandchild, &gc_pipes) {
            let mut g = vec![
                ChildOp::Close(pipes.child_report_fd()),
                ChildOp::Close(pipes.child_release_fd()),
                ChildOp::DieWithParent,
            ];
            g.extend(action_ops(gplan, base, page_size, side::GRANDCHILD, pages));
            g.extend(gp.epilogue());
            gc_ops = g;
            let [a, b] = gp.parent_fds();
            ops.push(ChildOp::Close(a));
            ops.push(ChildOp::Close(b));
        } else {
            gc_ops = Vec::new();
        }
        if let Some(gp) = &gc_pipes {
            ops.push(ChildOp::Fork {
                ops: &gc_ops,
                fd: pipes.child_report_fd(),
            });
            ops.push(ChildOp::Close(gp.child_report_fd()));
            ops.push(ChildOp::Close(gp.child_release_fd()));
        }
        if plan.hangs {
            // Block before reporting ready: only the timeout ends this child.
            ops.push(ChildOp::Wait(pipes.child_release_fd()));
        }
        let [ready, wait, reap, exit] = pipes.epilogue();
        ops.extend([ready, wait]);
        if let Some(p) = plan.touches_after_release {
            ops.push(ChildOp::WriteByte {
                addr: base + p * page_size,
                byte: side::CHILD,
            });
        }
        ops.extend([reap, exit]);

        let (mut subj, took) = subject::spawn(pipes, &ops)?;
        if i == 0 {
            fork_ns_observed = Some(took.as_nanos() as u64);
        }
        if track_writes {
            if let Err(e) = crate::kernel::clear_soft_dirty(subj.pid().as_raw()) {
                verdict.notes.push(format!(
                    "could not clear the soft-dirty bits of {}: {e}",
                    role(&[i])
                ));
            }
            subj.open_gate();
        }
        let pid = subj.pid().as_raw();
        let res = subj.wait_ready(deadline_for(opts.timeout));
        let mut gc = None;
        match res {
            Ok(msgs) => {
                if let Some(gp) = gc_pipes {
                    let gpid = msgs
                        .iter()
                        .find(|m| m.tag == TAG_PID)
                        .map(|m| m.value as i32);
                    match gpid {
                        Some(gpid) => {
                            let mut g = Subject::adopt(gp, gpid);
                            let r = g.wait_ready(deadline_for(opts.timeout));
                            gc = Some((g, r));
                        }
                        None => verdict
                            .notes
                            .push(format!("{} reported no grandchild pid", role(&[i]))),
                    }
                }
                procs.push(Proc {
                    path: vec![i],
                    role: role(&[i]),
                    subject: Some(subj),
                    pid,
                    ready: true,
                    not_ready: None,
                });
            }
            Err(nr) => {
                procs.push(Proc {
                    path: vec![i],
                    role: role(&[i]),
                    subject: Some(subj),
                    pid,
                    ready: false,
                    not_ready: Some(nr),
                });
            }
        }
        if let Some((g, r)) = gc {
            let gpid = g.pid().as_raw();
            let (ready, not_ready) = match r {
                Ok(_) => (true, None),
                Err(nr) => (false, Some(nr)),
            };
            procs.push(Proc {
                path: vec![i, 0],
                role: role(&[i, 0]),
                subject: Some(g),
                pid: gpid,
                ready,
                not_ready,
            });
        }
    }

    if track_writes {
        if let Err(e) = crate::kernel::clear_soft_dirty(self_pid) {
            verdict
                .notes
                .push(format!("could not clear the parent's soft-dirty bits: {e}"));
        }
    }
    // The parent's own writes come after every subject did its part.
    for &p in &s.parent_writes {
        // SAFETY: page p < pages (checked by `select`), inside the writable arena.
        unsafe { child::stamp_page(base + p * page_size, p, page_size, side::PARENT_AFTER) };
    }

    phases.fork_and_writes_us = us(t_fork);
    // ── sample: page tables of every live process, then content ─────────────────────────
    let t_evidence = Instant::now();
    let parent_sample = observe::sample(self_pid, base as u64, pages, page_size)?;
    let mut samples: Vec<Option<ProcessSample>> = Vec::new();
    for p in &procs {
        samples.push(if p.ready {
            observe::sample(p.pid, base as u64, pages, page_size).ok()
        } else {
            None
        });
    }
    let mut all: Vec<&ProcessSample> = vec![&parent_sample];
    all.extend(samples.iter().flatten());
    let (counts, flags) = observe::kpage_facts(&all, sys.pfn_visible && sys.kpage_readable);

    phases.evidence_us = us(t_evidence);
    let t_content = Instant::now();
    let heads: Vec<Option<Vec<u8>>> = procs
        .iter()
        .zip(&samples)
        .map(|(p, smp)| match smp {
            Some(sm) if sm.vma.is_some() => {
                observe::read_heads(p.pid, base as u64, pages, page_size, HEAD)
            }
            _ => None,
        })
        .collect();
    // Reading content must not have changed the page tables (principle 7): re-read them.
    let mut moved_by_reading = 0u64;
    for (p, smp) in procs.iter().zip(&samples) {
        if let (Some(smp), true) = (smp, sys.pfn_visible) {
            if let Ok(again) = observe::sample(p.pid, base as u64, pages, page_size) {
                moved_by_reading += smp
                    .entries
                    .iter()
                    .zip(&again.entries)
                    .filter(|(a, b)| a.present() && b.present() && a.pfn() != b.pfn())
                    .count() as u64;
            }
        }
    }
    let child_dump = if s.seed_09c {
        procs
            .first()
            .filter(|p| p.ready)
            .and_then(|p| observe::read_bytes(p.pid, base as u64, arena.used()))
    } else {
        None
    };

    phases.content_us = us(t_content);
    let t_reap = Instant::now();
    // ── release and reap (grandchildren first: their parents reap them) ─────────────────
    let mut exits: Vec<Option<ExitInfo>> = vec![None; procs.len()];
    for idx in (0..procs.len()).rev() {
        if procs[idx].path.len() > 1 {
            if let Some(sj) = procs[idx].subject.as_mut() {
                sj.release();
            }
        }
    }
    for (idx, p) in procs.iter_mut().enumerate() {
        if let Some(nr) = &p.not_ready {
            exits[idx] = Some(match nr {
                NotReady::Died(e) | NotReady::TimedOut(e) => e.clone(),
            });
            continue;
        }
        if p.path.len() == 1 {
            if let Some(sj) = p.subject.as_mut() {
                exits[idx] = Some(sj.finish(deadline_for(opts.timeout)));
            }
        }
    }
    // Grandchildren were reaped by their parents; their exit is not ours to see.
    for p in procs.iter_mut().filter(|p| p.path.len() > 1) {
        if let Some(mut sj) = p.subject.take() {
            sj.forget();
        }
    }

    phases.reap_us = us(t_reap);
    let t_judge = Instant::now();
    // ── judge ───────────────────────────────────────────────────────────────────────────
    let pfn_ok = sys.pfn_visible;
    // Every witness is computed once: the judging below looks each page up several times.
    let witnesses = |smp: &ProcessSample| -> Vec<PageWitness> {
        (0..pages)
            .map(|i| observe::witness(smp, i, pfn_ok, &counts, &flags))
            .collect()
    };
    let by_pid: Vec<(i32, Vec<PageWitness>)> =
        all.iter().map(|smp| (smp.pid, witnesses(smp))).collect();
    let w = |smp: &ProcessSample, i: usize| -> PageWitness {
        by_pid
            .iter()
            .find(|(pid, _)| *pid == smp.pid)
            .map(|(_, v)| v[i])
            .unwrap_or_default()
    };
    let parent_w: Vec<PageWitness> = by_pid[0].1.clone();
    let before_w: Vec<PageWitness> = witnesses(&before);

    let mut aggregate = vec![None::<PageClass>; pages];
    let mut bases = std::collections::BTreeSet::new();
    let mut proc_reports = vec![process_report(
        "parent",
        self_pid,
        &parent_sample,
        None,
        None,
        None,
    )];
    let mut mismatched_expectations = Vec::new();
    let mut new_pfn_mismatch = Vec::new();

    // PFN -> how many of our processes map it (for kpagecount, bit 56 and smaps checks).
    let mut mappers: observe::PfnMap<u64> = observe::PfnMap::default();
    for smp in &all {
        for i in 0..pages {
            if let Some(pfn) = w(smp, i).pfn {
                if w(smp, i).zero_page != Some(true) {
                    *mappers.entry(pfn).or_default() += 1;
                }
            }
        }
    }

    for (idx, p) in procs.iter().enumerate() {
        let Some(smp) = &samples[idx] else {
            let mut r = ProcessEvidence::without_evidence(&p.role, p.pid);
            if !p.ready {
                verdict.notes.push(format!(
                    "{} never reported ready (exit: {})",
                    p.role,
                    describe_exit(exits[idx].as_ref())
                ));
            }
            r.exit = exits[idx].clone();
            proc_reports.push(r);
            continue;
        };
        let vma = OtherVma {
            exists: smp.vma.is_some(),
            rss_zero: smp.vma.as_ref().is_some_and(|v| v.rss_kb == 0),
            wipe_on_fork: s.advice == ForkAdvice::WipeOnFork,
            two_processes: procs.len() == 1,
            shared_mapping: smp.vma.as_ref().is_some_and(|v| v.has_flag("sh"))
                && parent_sample.vma.as_ref().is_some_and(|v| v.has_flag("sh")),
        };
        let mut cc = ClassCounts::default();
        let mut new_pfns = 0u64;
        for i in 0..pages {
            let ow = w(smp, i);
            let (class, basis) = classify::classify(&parent_w[i], &ow, vma);
            cc.add(class);
            bases.insert(basis);
            let expected = s.expected_class(&p.path, i);
            if class != PageClass::Unproven && class != expected {
                mismatched_expectations.push(format!(
                    "{} page {i}: {class:?}, expected {expected:?}",
                    p.role
                ));
            }
            aggregate[i] = Some(match (aggregate[i], class) {
                (_, PageClass::Copied) | (Some(PageClass::Copied), _) => PageClass::Copied,
                (Some(PageClass::Unproven), _) | (_, PageClass::Unproven) => PageClass::Unproven,
                _ => class,
            });
            if pfn_ok
                && ow.present
                && before_w[i].pfn.is_some()
                && vma.exists
                && s.advice == ForkAdvice::None
            {
                let moved = ow.pfn != before_w[i].pfn;
                new_pfns += u64::from(moved);
                if moved != s.expects_new_pfn(&p.path, i) {
                    new_pfn_mismatch.push(format!(
                        "{} page {i}: PFN {} the pre-fork one",
                        p.role,
                        if moved { "differs from" } else { "is still" }
                    ));
                }
            }
        }
        let expected_smaps =
            expected_smaps(smp, pages, page_size, &|i| w(smp, i), &mappers, pfn_ok);
        proc_reports.push(process_report(
            &p.role,
            p.pid,
            smp,
            Some(cc),
            (pfn_ok && s.advice == ForkAdvice::None).then_some(new_pfns),
            exits[idx].clone(),
        ));
        if let Some(r) = proc_reports.last_mut() {
            r.expected_smaps = expected_smaps;
        }
    }
    // The parent's own PFN movement.
    if pfn_ok && s.advice == ForkAdvice::None {
        let mut moved_total = 0;
        for i in 0..pages {
            if let (Some(a), Some(b)) = (before_w[i].pfn, parent_w[i].pfn) {
                let moved = a != b;
                moved_total += u64::from(moved);
                if moved != s.expects_new_pfn(&[], i) {
                    new_pfn_mismatch.push(format!(
                        "parent page {i}: PFN {} the pre-fork one",
                        if moved { "differs from" } else { "is still" }
                    ));
                }
            }
        }
        proc_reports[0].new_pfns = Some(moved_total);
    }
    proc_reports[0].expected_smaps = expected_smaps(
        &parent_sample,
        pages,
        page_size,
        &|i| parent_w[i],
        &mappers,
        pfn_ok,
    );

    let mut pages_cc = ClassCounts::default();
    for c in aggregate.iter().flatten() {
        pages_cc.add(*c);
    }

    // ── witnesses: do they agree? ───────────────────────────────────────────────────────
    let mut evidence = std::collections::BTreeSet::new();
    if pfn_ok {
        evidence.insert("pfn");
    }
    for b in &bases {
        match b {
            Basis::Pfn if pfn_ok => {
                evidence.insert("pfn");
            }
            Basis::ExclusiveBit => {
                evidence.insert("exclusive_bit");
            }
            Basis::SharedBit => {
                evidence.insert("shared_bit");
            }
            Basis::Smaps => {
                evidence.insert("smaps");
            }
            Basis::Kpageflags => {
                evidence.insert("kpageflags");
            }
            Basis::Vma | Basis::SharedMapping => {
                evidence.insert("vma");
            }
            _ => {}
        }
    }
    let mut disagreements = Vec::new();
    // kpagecount: each PFN is mapped by exactly as many of our processes as the kernel counts.
    if !counts.is_empty() {
        evidence.insert("kpagecount");
        for (pfn, n) in &mappers {
            if let Some(&kc) = counts.get(pfn) {
                if kc != *n {
                    disagreements.push(format!(
                        "kpagecount of PFN {pfn:#x} is {kc}, but {n} of our processes map it"
                    ));
                }
            }
        }
    }
    // Bit 56: set exactly when a single process maps the page (CONFIG_PAGE_MAPCOUNT
    // semantics). One documented exception: for a PMD-mapped THP, some kernels derive every
    // subpage's bit from the head page (pagemap_pmd_range uses `page_mapcount(page)` before
    // 6.10, and `__folio_page_mapped_exclusively(folio, page)` with `page`, not `page + idx`,
    // since 6.15); where that rule and only that rule explains the bit, it is a quirk, not a
    // disagreement.
    evidence.insert("exclusive_bit");
    let mut head_rule_pages = 0u64;
    for smp in &all {
        let pmd_mapped = smp.vma.as_ref().is_some_and(|v| v.anon_huge_pages_kb > 0);
        for i in 0..pages {
            let wi = w(smp, i);
            let Some(pfn) = wi.pfn else { continue };
            if wi.zero_page == Some(true) {
                continue;
            }
            let n = mappers.get(&pfn).copied().unwrap_or(0);
            if wi.exclusive == (n == 1) {
                continue;
            }
            if pmd_mapped && wi.thp == Some(true) {
                let head = i & !(THP_SIZE / page_size - 1);
                let head_n = w(smp, head)
                    .pfn
                    .and_then(|p| mappers.get(&p).copied())
                    .unwrap_or(0);
                if wi.exclusive == (head_n == 1) {
                    head_rule_pages += 1;
                    continue;
                }
            }
            disagreements.push(format!(
                "pid {} page {i}: exclusive bit {} but {n} of our processes map PFN {pfn:#x}",
                smp.pid,
                if wi.exclusive { "set" } else { "clear" }
            ));
        }
    }
    if head_rule_pages > 0 {
        verdict.kernel_quirks.push(format!(
            "pagemap bit 56 of {head_rule_pages} PMD-mapped THP subpages follows the THP's head page, not the subpage \
             (kpagecount shows the subpage's true mapcount)"
        ));
    }
    // Soft-dirty (bit 55): exactly the pages each process wrote after the fork.
    if track_writes {
        evidence.insert("soft_dirty");
        let mut paths: Vec<(&[usize], &ProcessSample, usize)> = vec![(&[], &parent_sample, 0)];
        for (idx, (p, smp)) in procs.iter().zip(&samples).enumerate() {
            if let Some(smp) = smp {
                paths.push((&p.path, smp, idx + 1));
            }
        }
        for (path, smp, report_idx) in paths {
            let dirty: Vec<usize> = (0..pages)
                .filter(|&i| {
                    smp.entries
                        .get(i)
                        .is_some_and(|e| e.present() && e.soft_dirty())
                })
                .collect();
            let mut wrote = s.written_by(path);
            wrote.sort_unstable();
            wrote.dedup();
            if let Some(r) = proc_reports.get_mut(report_idx) {
                r.written_since_fork = Some(dirty.len() as u64);
            }
            // A write into a THP can mark the whole huge page soft-dirty (seen on 6.12: the
            // child's one-byte write left all 512 subpages dirty). Accept exactly that, and say so.
            let thp_pages = THP_SIZE / page_size;
            let mut whole_thps: Vec<usize> = wrote
                .iter()
                .flat_map(|&p| (p / thp_pages * thp_pages)..((p / thp_pages + 1) * thp_pages))
                .collect();
            whole_thps.dedup();
            if s.thp && dirty != wrote && dirty == whole_thps {
                verdict.kernel_quirks.push(format!(
                    "soft-dirty: {}'s write to {} page(s) of a THP marked all {} pages of that THP soft-dirty",
                    role(path),
                    wrote.len(),
                    dirty.len()
                ));
            } else if dirty != wrote {
                let shown: Vec<usize> = dirty.iter().copied().take(8).collect();
                disagreements.push(format!(
                    "{}: soft-dirty pages {shown:?}{} but it wrote {wrote:?}",
                    role(path),
                    if dirty.len() > 8 { ".." } else { "" }
                ));
            }
        }
    }
    // smaps: the VMA's figures match what the page witnesses predict.
    evidence.insert("smaps");
    for r in &proc_reports {
        if let (Some(got), Some(exp)) = (&r.smaps, &r.expected_smaps) {
            let shared = got.shared_clean_kb + got.shared_dirty_kb;
            let private = got.private_clean_kb + got.private_dirty_kb;
            let mut bad = Vec::new();
            if got.rss_kb != exp.rss_kb {
                bad.push(format!("Rss {} kB vs {} kB", got.rss_kb, exp.rss_kb));
            }
            if shared != exp.shared_kb {
                bad.push(format!("Shared {shared} kB vs {} kB", exp.shared_kb));
            }
            if private != exp.private_kb {
                bad.push(format!("Private {private} kB vs {} kB", exp.private_kb));
            }
            if let Some(pss) = exp.pss_kb {
                if got.pss_kb.abs_diff(pss) > 1 {
                    bad.push(format!("Pss {} kB vs {pss} kB", got.pss_kb));
                }
            }
            if !bad.is_empty() {
                disagreements.push(format!(
                    "{} smaps disagrees with its pages: {}",
                    r.role,
                    bad.join(", ")
                ));
            }
        }
    }

    // ── content (last) ──────────────────────────────────────────────────────────────────
    let mut content = ContentChecks {
        pages_moved_by_reading: sys.pfn_visible.then_some(moved_by_reading),
        ..Default::default()
    };
    let parent_bytes = arena.bytes();
    let mut mismatches = Vec::new();
    if !s.seed_09c && s.populate {
        for i in 0..pages {
            let expect = expected_marker(s, &[], i);
            if !stamp_ok(
                &parent_bytes[i * page_size..i * page_size + HEAD],
                i,
                expect,
            ) {
                mismatches.push(format!("parent:{i}"));
            }
        }
        for (idx, p) in procs.iter().enumerate() {
            let Some(h) = &heads[idx] else { continue };
            if s.advice == ForkAdvice::WipeOnFork {
                continue;
            }
            for i in 0..pages {
                let expect = expected_marker(s, &p.path, i);
                let head = &h[i * HEAD..(i + 1) * HEAD];
                let one_byte_ok =
                    one_byte_marker(s, &p.path, i).is_none_or(|m| head[HEAD / 2] == m);
                if !stamp_ok(head, i, expect) || !one_byte_ok {
                    mismatches.push(format!("{}:{i}", p.role));
                }
            }
        }
        content.stamps_match = Some(mismatches.is_empty());
        mismatches.truncate(16);
        content.mismatches = mismatches;
    }
    let child_wrote: Vec<usize> = (0..s.children.len())
        .flat_map(|i| s.written_by(&[i]))
        .collect();
    if !child_wrote.is_empty() && !s.seed_09c {
        content.parent_sees_child_writes = Some(child_wrote.iter().any(|&pg| {
            let off = pg * page_size;
            parent_bytes[off + child::STAMP_SIDE_OFFSET] == side::CHILD
                || parent_bytes[off + HEAD / 2] == side::CHILD
        }));
    }
    if !s.parent_writes.is_empty() {
        content.child_sees_parent_writes = heads.first().and_then(|h| h.as_ref()).map(|h| {
            s.parent_writes
                .iter()
                .any(|&pg| h[pg * HEAD + child::STAMP_SIDE_OFFSET] == side::PARENT_AFTER)
        });
    }
    if let Some(Some(h)) = heads.first() {
        content.child_reads_zero = Some(h.iter().all(|&b| b == 0));
    }
    let dumps = child_dump.map(|c| Dumps {
        parent: crate::arena::render_seed(arena.used_bytes()),
        child: crate::arena::render_seed(&c),
    });
    if let Some(d) = &dumps {
        content.parent_sees_child_writes = Some(
            d.parent
                .contains(crate::fork::scenarios::SEED_09C_CHILD_TEXT),
        );
    }

    if let Some(t) = thp.as_mut() {
        t.bytes_copied_by_one_write = pages_cc.copied * page_size as u64;
    }

    // ── expectations beyond classes: exits and content ──────────────────────────────────
    for (idx, p) in procs.iter().enumerate() {
        if p.path.len() > 1 {
            continue;
        }
        let e = exits[idx].as_ref();
        let want_segv = s.advice == ForkAdvice::DontFork;
        let ok = match e {
            Some(e) if want_segv => e.signal.as_deref() == Some("SIGSEGV"),
            Some(e) => e.code == Some(0),
            None => false,
        };
        if !ok {
            verdict.notes.push(format!(
                "{} ended with {}, expected {}",
                p.role,
                describe_exit(e),
                if want_segv { "SIGSEGV" } else { "exit code 0" }
            ));
        }
    }
    let private = s.mapping == Mapping::Private;
    if content.parent_sees_child_writes == Some(private) {
        verdict.notes.push(format!(
            "the parent {} the child's writes on a {} mapping",
            if private { "sees" } else { "does not see" },
            if private { "private" } else { "shared" }
        ));
    }
    if content.child_sees_parent_writes == Some(true) && private {
        verdict
            .notes
            .push("the child sees the parent's after-fork writes on a private mapping".into());
    }
    if s.advice == ForkAdvice::WipeOnFork && content.child_reads_zero != Some(true) {
        verdict
            .notes
            .push("the WIPEONFORK child does not read zero everywhere".into());
    }
    if moved_by_reading > 0 {
        verdict.notes.push(format!("reading content moved {moved_by_reading} pages: the content check disturbed the evidence"));
    }
    if content.stamps_match == Some(false) {
        verdict
            .notes
            .push("some pages do not carry the stamp of their last writer".into());
    }
    if let Some(d) = &dumps {
        if !d
            .child
            .contains(crate::fork::scenarios::SEED_09C_CHILD_TEXT)
            || !d.parent.contains(SEED_09A[1])
        {
            verdict.notes.push(
                "seed-09c: the dumps do not show the child's rewrite on its side only".into(),
            );
        }
    }
    mismatched_expectations.truncate(16);
    verdict
        .notes
        .extend(mismatched_expectations.iter().cloned());
    new_pfn_mismatch.truncate(16);
    verdict.notes.extend(new_pfn_mismatch.iter().cloned());
    if !pfn_ok {
        verdict.notes.push(
            "PFNs are hidden (no CAP_SYS_ADMIN): classes rest on the exclusive bit, bit 61 and smaps, not on PFN equality"
                .into(),
        );
    }

    disagreements.truncate(32);
    verdict.agree = disagreements.is_empty();
    verdict.disagreements = disagreements;
    verdict.cow_proven = pages_cc.unproven == 0
        && mismatched_expectations.is_empty()
        && new_pfn_mismatch.is_empty()
        && procs.iter().all(|p| p.ready);
    verdict.evidence = evidence.into_iter().map(String::from).collect();
    if !pfn_ok {
        verdict
            .evidence
            .retain(|e| e != "pfn" && e != "kpagecount" && e != "kpageflags");
    }
    verdict.holds = verdict.cow_proven
        && verdict.agree
        && verdict
            .notes
            .iter()
            .all(|n| n.starts_with("PFNs are hidden"));

    let page_rows = if pages <= MAX_PAGE_ROWS {
        (0..pages)
            .map(|i| {
                let mut ws = vec![parent_w[i]];
                ws.extend(samples.iter().flatten().map(|smp| w(smp, i)));
                PageRow {
                    index: i as u64,
                    class: aggregate[i].unwrap_or(PageClass::Unproven),
                    pfns: ws.iter().map(|x| x.pfn.unwrap_or(0)).collect(),
                    mapcounts: ws.iter().map(|x| x.mapcount).collect(),
                    exclusive: ws.iter().map(|x| x.exclusive).collect(),
                }
            })
            .collect()
    } else {
        Vec::new()
    };

    phases.judge_us = us(t_judge);
    // Unmap before the timing runs, so their forks do not copy this arena's page tables.
    let t_unmap = Instant::now();
    drop(arena);
    phases.unmap_us = us(t_unmap);
    let mut timing = timing_runs(s, page_size, opts, fork_ns_observed)?;
    timing.phases_us = Some(phases);

    let parent = proc_reports[0].clone();
    let child = proc_reports.get(1).cloned();
    Ok(ScenarioResult {
        name: s.name.into(),
        summary: s.summary.into(),
        config: config(base),
        pages: pages_cc,
        parent,
        child,
        processes: proc_reports,
        content,
        timing,
        thp,
        dumps,
        page_rows,
        verdict,
    })
}

/// Fault every page of the arena in for writing in one call (MADV_POPULATE_WRITE, Linux
/// 5.14+), much faster than one fault per page. Without it, the stamping loop faults the pages
/// in itself, so failure here only costs time.
fn populate_write(arena: &Arena) {
    // SAFETY: the range is exactly the arena's own live read-write mapping; POPULATE_WRITE
    // only faults pages in (it never discards contents).
    unsafe {
        libc::madvise(
            arena.as_ptr().cast(),
            arena.mapped_len(),
            libc::MADV_POPULATE_WRITE,
        );
    }
}

fn skipped(s: &Scenario, config: ScenarioConfig, reason: String) -> ScenarioResult {
    let pid = nix::unistd::getpid().as_raw();
    let parent = ProcessEvidence::without_evidence("parent", pid);
    ScenarioResult {
        name: s.name.into(),
        summary: s.summary.into(),
        config,
        pages: ClassCounts::default(),
        parent: parent.clone(),
        child: None,
        processes: vec![parent],
        content: ContentChecks::default(),
        timing: Timing::default(),
        thp: None,
        dumps: None,
        page_rows: Vec::new(),
        verdict: Verdict {
            holds: true,
            skipped: Some(reason),
            ..Default::default()
        },
    }
}

fn process_report(
    role: &str,
    pid: i32,
    smp: &ProcessSample,
    pages: Option<ClassCounts>,
    new_pfns: Option<u64>,
    exit: Option<ExitInfo>,
) -> ProcessEvidence {
    ProcessEvidence {
        role: role.into(),
        pid,
        vma_present: smp.vma.is_some(),
        smaps: smp.vma.as_ref().map(|v| SmapsFigures {
            rss_kb: v.rss_kb,
            pss_kb: v.pss_kb,
            shared_clean_kb: v.shared_clean_kb,
            shared_dirty_kb: v.shared_dirty_kb,
            private_clean_kb: v.private_clean_kb,
            private_dirty_kb: v.private_dirty_kb,
            anon_huge_kb: v.anon_huge_pages_kb,
        }),
        expected_smaps: None,
        present: smp.entries.iter().filter(|e| e.present()).count() as u64,
        exclusive: smp
            .entries
            .iter()
            .filter(|e| e.present() && e.exclusive())
            .count() as u64,
        pages,
        new_pfns,
        written_since_fork: None,
        exit,
    }
}

/// What smaps must say for this process's arena VMA, from its pages: a present page mapped
/// by n processes adds page_size to Rss, to Shared (n > 1) or Private (n == 1), and
/// page_size / n to Pss. The zero page is not counted. Without PFNs, n comes from the
/// exclusive bit (1 when set; unknown otherwise, so Pss is not predicted).
fn expected_smaps(
    smp: &ProcessSample,
    pages: usize,
    page_size: usize,
    w: &dyn Fn(usize) -> PageWitness,
    mappers: &observe::PfnMap<u64>,
    pfn_ok: bool,
) -> Option<ExpectedSmaps> {
    smp.vma.as_ref()?;
    let kb = (page_size / 1024) as u64;
    let mut e = ExpectedSmaps {
        pss_kb: Some(0),
        ..Default::default()
    };
    let mut pss_bytes_x = 0u128; // in units of 1/420 of a page: exact for 1..=7 mappers
    let mut pss_known = true;
    for i in 0..pages {
        let wi = w(i);
        if !wi.present || wi.zero_page == Some(true) {
            continue;
        }
        let n = match wi.pfn {
            Some(pfn) if pfn_ok => mappers.get(&pfn).copied(),
            _ if wi.exclusive => Some(1),
            _ => None,
        };
        if !pfn_ok && smp.vma.as_ref().is_some_and(|v| v.rss_kb == 0) {
            // Present but not in Rss: the zero page (WIPEONFORK child after a read).
            continue;
        }
        e.rss_kb += kb;
        match n {
            Some(1) => e.private_kb += kb,
            Some(_) => e.shared_kb += kb,
            None => e.shared_kb += kb,
        }
        match n {
            Some(n) if n > 0 => pss_bytes_x += u128::from(kb) * 420 / u128::from(n),
            _ => pss_known = false,
        }
    }
    e.pss_kb = pss_known.then_some((pss_bytes_x / 420) as u64);
    Some(e)
}

/// Which side marker page `page` of process `path` must carry: the last writer it sees.
fn expected_marker(s: &Scenario, path: &[usize], page: usize) -> u8 {
    let shared = s.mapping == Mapping::Shared;
    if shared {
        // One page for all: the last writer anywhere. Children write before the parent's
        // after-fork writes.
        if s.parent_writes.contains(&page) {
            return side::PARENT_AFTER;
        }
        if (0..s.children.len()).any(|i| stamped_by(s, &[i]).contains(&page)) {
            return side::CHILD;
        }
        return side::PARENT_BEFORE;
    }
    if path.is_empty() {
        if s.parent_writes.contains(&page) {
            return side::PARENT_AFTER;
        }
        return side::PARENT_BEFORE;
    }
    if stamped_by(s, path).contains(&page) {
        return if path.len() > 1 {
            side::GRANDCHILD
        } else {
            side::CHILD
        };
    }
    side::PARENT_BEFORE
}

/// Pages the process at `path` (non-empty) stamps whole.
fn stamped_by(s: &Scenario, path: &[usize]) -> Vec<usize> {
    s.plan(path).map(|p| p.writes.clone()).unwrap_or_default()
}

/// The byte a one-byte write left at offset HEAD/2 of page `page` in process `path`, if any.
fn one_byte_marker(s: &Scenario, path: &[usize], page: usize) -> Option<u8> {
    let plan = s.plan(path)?;
    (path.len() == 1 && plan.writes_one_byte.contains(&page)).then_some(side::CHILD)
}

/// A page head carries its index and the expected marker (one-byte writes at offset 32 keep
/// the stamp at offsets 0..9 intact).
fn stamp_ok(head: &[u8], index: usize, marker: u8) -> bool {
    head.len() > child::STAMP_SIDE_OFFSET
        && head[..8] == (index as u64).to_le_bytes()
        && head[child::STAMP_SIDE_OFFSET] == marker
}

fn describe_exit(e: Option<&ExitInfo>) -> String {
    match e {
        Some(ExitInfo {
            killed_on_timeout: true,
            ..
        }) => "killed after the timeout".into(),
        Some(ExitInfo {
            signal: Some(s), ..
        }) => format!("signal {s}"),
        Some(ExitInfo { code: Some(c), .. }) => format!("exit code {c}"),
        _ => "unknown".into(),
    }
}

fn us(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// Separate, small runs for timing: fork latency, and per-page first-write (COW fault) vs
/// second-write (owned) cost in the child, for private scenarios without fork advice.
fn timing_runs(
    s: &Scenario,
    page_size: usize,
    opts: &ForkReportOptions,
    observed: Option<u64>,
) -> Result<Timing> {
    let mut forks = Vec::new();
    let mut cows = Vec::new();
    let mut owned = Vec::new();
    let cow_case = s.mapping == Mapping::Private && s.advice == ForkAdvice::None;
    let small = Scenario {
        pages: if s.thp {
            s.pages
        } else {
            s.pages.min(TIMED_PAGES)
        },
        ..s.clone()
    };
    for _ in 0..opts.runs {
        let arena = make_arena(&small, page_size)?;
        let base = arena.base_addr();
        for i in 0..small.pages {
            // SAFETY: page i is inside the arena's writable mapping.
            unsafe { child::stamp_page(base + i * page_size, i, page_size, side::PARENT_BEFORE) };
        }
        let pipes = SubjectPipes::new()?;
        let mut ops = pipes.prologue().to_vec();
        if cow_case {
            let timed = if s.thp { 1 } else { small.pages };
            ops.push(ChildOp::TimeWrites {
                addr: base,
                pages: timed,
                page_size,
                fd: pipes.child_report_fd(),
            });
        }
        ops.extend(pipes.epilogue());
        let (mut subj, took) = subject::spawn(pipes, &ops)?;
        forks.push(took.as_nanos() as u64);
        if let Ok(msgs) = subj.wait_ready(Instant::now() + opts.timeout) {
            cows.extend(msgs.iter().filter(|m| m.tag == TAG_COW_NS).map(|m| m.value));
            owned.extend(
                msgs.iter()
                    .filter(|m| m.tag == TAG_OWNED_NS)
                    .map(|m| m.value),
            );
        }
        subj.finish(Instant::now() + opts.timeout);
    }
    Ok(Timing {
        runs: opts.runs as u64,
        fork_ns: median(&mut forks),
        fork_ns_observed: observed,
        cow_fault_ns: median(&mut cows),
        owned_write_ns: median(&mut owned),
        phases_us: None,
    })
}
