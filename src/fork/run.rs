//! Running one scenario as a pipeline of stages, each a function over its own type:
//!
//! ```text
//! prepare (memory.rs) -> Memory      map the kind, prove it formed, before-fork steps
//! spawn               -> Spawned     fork every subject, run the after-fork steps in order
//! observe             -> Observed    page tables of every live process, then content
//! reap                -> Reaped      release and reap every subject
//! judge  (judge.rs)   -> Judgement   pure: classes, witnesses, expectations, findings
//! report              -> ScenarioResult
//! ```

use std::time::{Duration, Instant};

use super::child::{self, ChildOp, TAG_COW_NS, TAG_OWNED_NS, TAG_PID, side};
use super::evidence::{Evidence, HEAD, PfnMap, ProcessSeen};
use super::judge::{self, Judgement, Verdict};
use super::memory::{self, Allow, Memory, Prepared};
use super::observe::{self, ProcessSample};
use super::scenarios::{ForkAdvice, MemoryKind, Op, ProcessPlan, Scenario, ThpLayout, role};
use super::subject::{self, ExitInfo, NotReady, Subject, SubjectPipes};
use super::{
    ContentChecks, Dumps, ForkReportOptions, PageRow, PhaseTimes, ProcessEvidence, ScenarioConfig,
    ScenarioResult, ThpFacts, Timing,
};
use crate::arena::{Advice, Arena, ArenaConfig};
use crate::error::{Error, Result};
use crate::mem::system::SystemInfo;
use crate::progress::Progress;

/// Page rows are listed for arenas up to this many pages.
const MAX_PAGE_ROWS: usize = 64;
/// Pages timed per timing run.
const TIMED_PAGES: usize = 64;

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
    run_scenario_with(s, sys, opts, &Progress::hidden())
}

/// [`run_scenario`], saying on `progress` which stage it is in.
///
/// # Errors
/// As [`run_scenario`], and [`Error::Interrupted`] when a stop signal (deferred by the
/// command) arrived: the scenario's subjects are killed and reaped, its memory unmapped and
/// every setting it changed restored before this returns.
pub fn run_scenario_with(
    s: &Scenario,
    sys: &SystemInfo,
    opts: &ForkReportOptions,
    progress: &Progress,
) -> Result<ScenarioResult> {
    progress.phase("setup");
    let t_setup = Instant::now();
    let allow = Allow {
        sysfs: opts.allow_sysfs,
    };
    let mut mem = match memory::prepare(s, sys, allow)? {
        Prepared::Skip(reason) => return Ok(skipped(s, sys, reason)),
        Prepared::Ready(m) => m,
    };
    let mut phases = PhaseTimes {
        setup_us: us(t_setup),
        ..Default::default()
    };
    stop_check()?;
    let self_pid = nix::unistd::getpid().as_raw();
    let before = observe::sample(self_pid, mem.base as u64, s.pages, mem.page_size)?;

    // A stop signal (SIGINT/SIGTERM, deferred by the command) is honoured between stages,
    // and inside the waits for subjects: `?` drops what the scenario holds, and the drops
    // do the cleanup (Subject kills and reaps its child, Memory unmaps and restores).
    stop_check()?;
    let t = Instant::now();
    let mut spawned = spawn(s, sys, &mem, opts, progress)?;
    phases.fork_and_writes_us = us(t);
    stop_check()?;

    progress.phase("evidence");
    let t = Instant::now();
    let observed = observe_all(s, sys, &mem, &spawned, &before)?;
    phases.evidence_us = observed.evidence_us;
    phases.content_us = us(t).saturating_sub(observed.evidence_us);
    stop_check()?;

    progress.phase("reap");
    let t = Instant::now();
    let reaped = reap(&mut spawned, opts.timeout);
    phases.reap_us = us(t);
    stop_check()?;

    progress.phase("judge");
    let t = Instant::now();
    let evidence = observed.into_evidence(s, sys, &mem, &spawned, reaped);
    let judgement = judge::judge(s, &evidence);
    phases.judge_us = us(t);
    progress.pages_judged(s.pages as u64);
    stop_check()?;

    let restore_failures = mem.restore();
    let t = Instant::now();
    let config = config(s, sys, mem.base);
    let anon_huge_before = mem.anon_huge_kb_before;
    let changed = std::mem::take(&mut mem.changed);
    drop(mem);
    phases.unmap_us = us(t);
    progress.phase("timing");
    let mut timing = timing_runs(s, sys.page_size as usize, opts, spawned.fork_ns_observed)?;
    timing.phases_us = Some(phases);
    Ok(report(
        s,
        config,
        evidence,
        judgement,
        timing,
        anon_huge_before,
        changed,
        restore_failures,
    ))
}

// ── spawn ────────────────────────────────────────────────────────────────────────────────

/// One forked process of the scenario.
#[derive(Debug)]
struct Proc {
    path: Vec<usize>,
    subject: Option<Subject>,
    pid: i32,
    ready: bool,
    exit: Option<ExitInfo>,
    /// Waits for the parent's after-fork steps before its own second half.
    gated: bool,
}

/// What the spawn stage leaves: the live subjects, in report order.
#[derive(Debug)]
struct Spawned {
    procs: Vec<Proc>,
    fork_ns_observed: Option<u64>,
    /// Whether every subject's soft-dirty bits (and the parent's) were cleared at the fork.
    soft_dirty_tracked: bool,
    notes: Vec<String>,
}

/// The child ops of a plan's steps (a grandchild's steps are its own program).
fn plan_ops(
    plan: &ProcessPlan,
    mem: &Memory,
    report_fd: i32,
    mark: u8,
    until_gate: bool,
) -> Vec<ChildOp<'static>> {
    let mut v = Vec::new();
    let gate = plan.ops.iter().position(|o| *o == Op::AfterParent);
    let (first, second) = plan.ops.split_at(gate.unwrap_or(plan.ops.len()));
    let part = if until_gate { first } else { second };
    for op in part {
        v.extend(memory::ops_for(op, mem, report_fd, mark));
    }
    v
}

/// [`Error::Interrupted`] once a deferred stop signal arrived.
fn stop_check() -> Result<()> {
    match crate::kernel::stop_requested() {
        Some(sig) => Err(Error::Interrupted(sig)),
        None => Ok(()),
    }
}

/// Fork every subject and let each run its steps; the parent's own after-fork steps run once
/// every child reported ready, then children gated on them run their second half.
fn spawn(
    s: &Scenario,
    sys: &SystemInfo,
    mem: &Memory,
    opts: &ForkReportOptions,
    progress: &Progress,
) -> Result<Spawned> {
    let track = sys.soft_dirty && s.advice == ForkAdvice::None;
    let mut out = Spawned {
        procs: Vec::new(),
        fork_ns_observed: None,
        soft_dirty_tracked: track,
        notes: Vec::new(),
    };
    for (i, plan) in s.children.iter().enumerate() {
        stop_check()?;
        progress.phase(&format!("fork {}/{}", i + 1, s.children.len()));
        spawn_child(i, plan, mem, opts, track, &mut out)?;
    }
    if out.soft_dirty_tracked
        && let Err(e) = crate::kernel::clear_soft_dirty(nix::unistd::getpid().as_raw())
    {
        out.notes
            .push(format!("could not clear the parent's soft-dirty bits: {e}"));
        out.soft_dirty_tracked = false;
    }
    // The parent's own steps come after every subject did its first part.
    for op in &s.parent.ops {
        if let Some(n) = memory::do_in_parent(op, mem) {
            out.notes.push(n);
        }
    }
    release_the_gated(&mut out, opts);
    Ok(out)
}

/// Fork child `i` (and its grandchild, if its plan forks one), clear its soft-dirty bits
/// when tracked, and wait until it and the grandchild report ready; both join `out.procs`.
fn spawn_child(
    i: usize,
    plan: &ProcessPlan,
    mem: &Memory,
    opts: &ForkReportOptions,
    track: bool,
    out: &mut Spawned,
) -> Result<()> {
    let deadline = || Instant::now() + opts.timeout;
    let path = vec![i];
    let pipes = SubjectPipes::new()?;
    // The grandchild, if any: its pipes exist before the child is forked.
    let gplan = plan.grandchild();
    let gc_pipes = match &gplan {
        Some(_) => Some(SubjectPipes::new()?),
        None => None,
    };
    let gc_ops = match (&gplan, &gc_pipes) {
        (Some(gp), Some(g)) => grandchild_program(gp, mem, &pipes, g),
        _ => Vec::new(),
    };
    let ops = child_program(plan, mem, track, &pipes, gc_pipes.as_ref(), &gc_ops);
    let gated = plan.ops.contains(&Op::AfterParent);

    let (mut subj, took) = subject::spawn(pipes, &ops)?;
    if i == 0 {
        out.fork_ns_observed = Some(took.as_nanos() as u64);
    }
    if track {
        if let Err(e) = crate::kernel::clear_soft_dirty(subj.pid().as_raw()) {
            out.notes.push(format!(
                "could not clear the soft-dirty bits of {}: {e}",
                role(&path)
            ));
            out.soft_dirty_tracked = false;
        }
        subj.open_gate();
    }
    let pid = subj.pid().as_raw();
    let mut gc = None;
    let (ready, exit) = match subj.wait_ready(deadline()) {
        Ok(msgs) => {
            if let Some(g) = gc_pipes {
                match msgs
                    .iter()
                    .find(|m| m.tag == TAG_PID)
                    .map(|m| m.value as i32)
                {
                    Some(gpid) => {
                        let mut gs = Subject::adopt(g, gpid);
                        let r = gs.wait_ready(deadline());
                        gc = Some((gs, r));
                    }
                    None => out
                        .notes
                        .push(format!("{} reported no grandchild pid", role(&path))),
                }
            }
            (true, None)
        }
        Err(NotReady::Died(e) | NotReady::TimedOut(e)) => (false, Some(e)),
    };
    out.procs.push(Proc {
        path,
        subject: Some(subj),
        pid,
        ready,
        exit,
        gated,
    });
    if let Some((g, r)) = gc {
        let gpid = g.pid().as_raw();
        let (ready, exit) = match r {
            Ok(_) => (true, None),
            Err(NotReady::Died(e) | NotReady::TimedOut(e)) => (false, Some(e)),
        };
        out.procs.push(Proc {
            path: vec![i, 0],
            subject: Some(g),
            pid: gpid,
            ready,
            exit,
            gated: false,
        });
    }
    Ok(())
}

/// The grandchild's program: close the child's pipe ends, die with the child, its own steps,
/// then its report and release.
fn grandchild_program(
    gp: &ProcessPlan,
    mem: &Memory,
    pipes: &SubjectPipes,
    g: &SubjectPipes,
) -> Vec<ChildOp<'static>> {
    let mut v = vec![
        ChildOp::Close(pipes.child_report_fd()),
        ChildOp::Close(pipes.child_release_fd()),
        ChildOp::DieWithParent,
    ];
    v.extend(plan_ops(
        gp,
        mem,
        g.child_report_fd(),
        side::GRANDCHILD,
        true,
    ));
    v.extend(g.epilogue());
    v
}

/// A child's program: its steps up to the gate (after the soft-dirty clear, when tracked),
/// the grandchild's fork, ready and wait; the second half after the gate; the touch after
/// release (DONTFORK); reap and exit.
fn child_program<'a>(
    plan: &ProcessPlan,
    mem: &Memory,
    track: bool,
    pipes: &SubjectPipes,
    gc_pipes: Option<&SubjectPipes>,
    gc_ops: &'a [ChildOp<'a>],
) -> Vec<ChildOp<'a>> {
    let report = pipes.child_report_fd();
    let mut ops: Vec<ChildOp<'_>> = pipes.prologue().to_vec();
    if track {
        // Wait until the parent has cleared our soft-dirty bits, then write.
        ops.push(ChildOp::Wait(pipes.child_release_fd()));
    }
    ops.extend(plan_ops(plan, mem, report, side::CHILD, true));
    if let Some(g) = gc_pipes {
        let [a, b] = g.parent_fds();
        ops.push(ChildOp::Close(a));
        ops.push(ChildOp::Close(b));
        ops.push(ChildOp::Fork {
            ops: gc_ops,
            fd: report,
        });
        ops.push(ChildOp::Close(g.child_report_fd()));
        ops.push(ChildOp::Close(g.child_release_fd()));
    }
    if plan.hangs() {
        // Block before reporting ready: only the timeout ends this child.
        ops.push(ChildOp::Wait(pipes.child_release_fd()));
    }
    let [ready, wait, reap, exit] = pipes.epilogue();
    if plan.ops.contains(&Op::AfterParent) {
        ops.extend([ready, wait]);
        ops.extend(plan_ops(plan, mem, report, side::CHILD, false));
    }
    ops.extend([ready, wait]);
    for op in &plan.ops {
        if let Op::TouchAfterRelease { page } = op {
            ops.push(ChildOp::WriteByte {
                addr: mem.base + page * mem.page_size,
                byte: side::CHILD,
            });
        }
    }
    ops.extend([reap, exit]);
    ops
}

/// Children gated on the parent's steps run their second half now; each must report ready
/// again.
fn release_the_gated(out: &mut Spawned, opts: &ForkReportOptions) {
    for p in out.procs.iter_mut().filter(|p| p.gated && p.ready) {
        if let Some(subj) = p.subject.as_mut() {
            subj.open_gate();
            let deadline = Instant::now() + opts.timeout;
            if let Err(NotReady::Died(e) | NotReady::TimedOut(e)) = subj.wait_ready(deadline) {
                p.ready = false;
                p.exit = Some(e);
            }
        }
    }
}

// ── observe ──────────────────────────────────────────────────────────────────────────────

/// What the observe stage saw: page tables first, content last.
#[derive(Debug)]
struct Observed {
    parent: ProcessSample,
    samples: Vec<Option<ProcessSample>>,
    counts: PfnMap<u64>,
    flags: PfnMap<crate::mem::kpage::KpageFlags>,
    before: ProcessSample,
    heads: Vec<Option<Vec<u8>>>,
    parent_heads: Option<Vec<u8>>,
    parent_moved_by_reading: Option<u64>,
    moved_by_reading: Vec<Option<u64>>,
    pipe: Option<Vec<u8>>,
    child_dump: Option<Vec<u8>>,
    evidence_us: u64,
}

fn observe_all(
    s: &Scenario,
    sys: &SystemInfo,
    mem: &Memory,
    sp: &Spawned,
    before: &ProcessSample,
) -> Result<Observed> {
    let t = Instant::now();
    let (base, pages, page) = (mem.base as u64, s.pages, mem.page_size);
    // Each read of a 1 GiB arena takes about half a second: a stop signal is looked for
    // between them.
    let parent = observe::sample(nix::unistd::getpid().as_raw(), base, pages, page)?;
    let mut samples: Vec<Option<ProcessSample>> = Vec::with_capacity(sp.procs.len());
    for p in &sp.procs {
        stop_check()?;
        samples.push(
            p.ready
                .then(|| observe::sample(p.pid, base, pages, page).ok())
                .flatten(),
        );
    }
    stop_check()?;
    let mut all: Vec<&ProcessSample> = vec![&parent, before];
    all.extend(samples.iter().flatten());
    let (counts, flags) = observe::kpage_facts(&all, sys.pfn_visible && sys.kpage_readable);
    let evidence_us = us(t);
    stop_check()?;

    // Content last: it can fault pages in (principle 7). Then the page tables again.
    let mut heads: Vec<Option<Vec<u8>>> = Vec::with_capacity(sp.procs.len());
    for (p, smp) in sp.procs.iter().zip(&samples) {
        stop_check()?;
        heads.push(match smp {
            Some(sm) if !sm.vmas.is_empty() => observe::read_heads(p.pid, base, pages, page, HEAD),
            _ => None,
        });
    }
    stop_check()?;
    let self_pid = nix::unistd::getpid().as_raw();
    let parent_heads = observe::read_heads(self_pid, base, pages, page, HEAD);
    // The parent's page tables again too: reading does not pin, but the kernel may migrate.
    stop_check()?;
    let parent_moved_by_reading = if sys.pfn_visible {
        observe::sample(self_pid, base, pages, page)
            .ok()
            .map(|again| moved_frames(&parent, &again))
    } else {
        Some(0)
    };
    let moved_by_reading = sp
        .procs
        .iter()
        .zip(&samples)
        .map(|(p, smp)| match (smp, sys.pfn_visible) {
            (Some(smp), true) => observe::sample(p.pid, base, pages, page)
                .map(|again| moved_frames(smp, &again))
                .ok(),
            _ => Some(0),
        })
        .collect();
    let pipe = mem.pipe.as_ref().map(|(r, _)| {
        let want = mem.pipe_expected.as_ref().map_or(0, Vec::len);
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            match nix::unistd::read(r, &mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        buf.truncate(got);
        buf
    });
    let child_dump = (s.memory == MemoryKind::Seed09a)
        .then(|| {
            sp.procs.first().filter(|p| p.ready).and_then(|p| {
                observe::read_bytes(p.pid, base, mem.arena.as_ref().map_or(0, Arena::used))
            })
        })
        .flatten();
    Ok(Observed {
        parent,
        samples,
        counts,
        flags,
        before: before.clone(),
        heads,
        parent_heads,
        parent_moved_by_reading,
        moved_by_reading,
        pipe,
        child_dump,
        evidence_us,
    })
}

/// Pages present in both samples whose frame changed between them.
fn moved_frames(first: &ProcessSample, again: &ProcessSample) -> u64 {
    first
        .entries
        .iter()
        .zip(&again.entries)
        .filter(|(a, b)| a.present() && b.present() && a.pfn() != b.pfn())
        .count() as u64
}

// ── reap ─────────────────────────────────────────────────────────────────────────────────

/// How every subject ended (index as in `Spawned::procs`; None for a grandchild, whose exit
/// its own parent sees).
#[derive(Debug)]
struct Reaped {
    exits: Vec<Option<ExitInfo>>,
}

/// Release and reap every subject (grandchildren first: their parents reap them).
fn reap(sp: &mut Spawned, timeout: Duration) -> Reaped {
    let mut exits = vec![None; sp.procs.len()];
    for p in sp.procs.iter_mut().rev().filter(|p| p.path.len() > 1) {
        if let Some(sj) = p.subject.as_mut() {
            sj.release();
        }
    }
    for (idx, p) in sp.procs.iter_mut().enumerate() {
        if let Some(e) = &p.exit {
            exits[idx] = Some(e.clone());
            continue;
        }
        if p.path.len() == 1
            && let Some(sj) = p.subject.as_mut()
        {
            exits[idx] = Some(sj.finish(Instant::now() + timeout));
        }
    }
    for p in sp.procs.iter_mut().filter(|p| p.path.len() > 1) {
        if let Some(mut sj) = p.subject.take() {
            sj.forget();
        }
    }
    Reaped { exits }
}

impl Observed {
    /// Evidence for the judge: witnesses per page, smaps, exits and content, per process.
    fn into_evidence(
        self,
        s: &Scenario,
        sys: &SystemInfo,
        mem: &Memory,
        sp: &Spawned,
        reaped: Reaped,
    ) -> Evidence {
        let pfn = sys.pfn_visible;
        let witnesses = |smp: &ProcessSample| -> Vec<_> {
            (0..s.pages)
                .map(|i| observe::witness(smp, i, pfn, &self.counts, &self.flags))
                .collect()
        };
        let mut procs = vec![ProcessSeen {
            path: Vec::new(),
            role: "parent".into(),
            pid: self.parent.pid,
            sampled: true,
            smaps: self.parent.figures(),
            shared_vma: self.parent.all_shared(),
            pages: witnesses(&self.parent),
            heads: if s.memory == MemoryKind::Seed09a {
                None
            } else {
                self.parent_heads
            },
            moved_by_reading: self.parent_moved_by_reading,
            ..Default::default()
        }];
        for (idx, p) in sp.procs.iter().enumerate() {
            let smp = self.samples[idx].as_ref();
            procs.push(ProcessSeen {
                path: p.path.clone(),
                role: role(&p.path),
                pid: p.pid,
                sampled: smp.is_some(),
                exit: reaped.exits[idx].clone(),
                exit_visible: p.path.len() == 1,
                smaps: smp.and_then(ProcessSample::figures),
                shared_vma: smp.is_some_and(ProcessSample::all_shared),
                pages: smp.map(witnesses).unwrap_or_default(),
                heads: if s.memory == MemoryKind::Seed09a {
                    None
                } else {
                    self.heads[idx].clone()
                },
                moved_by_reading: self.moved_by_reading[idx],
            });
        }
        let mut pipeline_notes = sp.notes.clone();
        pipeline_notes.extend(mem.notes.iter().cloned());
        let dumps = self.child_dump.map(|c| {
            let parent = mem
                .arena
                .as_ref()
                .map(|a| crate::arena::render_seed(a.used_bytes()))
                .unwrap_or_default();
            (parent, crate::arena::render_seed(&c))
        });
        Evidence {
            page_size: mem.page_size,
            pmd_pages: (sys.thp_pmd_size_kb.unwrap_or(2048) as usize * 1024 / mem.page_size).max(1),
            pfn_visible: pfn,
            kpage_readable: sys.kpage_readable && pfn,
            soft_dirty_tracked: sp.soft_dirty_tracked,
            before: witnesses(&self.before),
            procs,
            pipe: self.pipe,
            pipe_expected: mem.pipe_expected.clone(),
            dumps,
            unproven_setup: mem.unproven.clone(),
            pipeline_notes,
        }
    }
}

// ── report ───────────────────────────────────────────────────────────────────────────────

fn config(s: &Scenario, sys: &SystemInfo, addr: usize) -> ScenarioConfig {
    ScenarioConfig {
        pages: s.pages as u64,
        page_size: sys.page_size,
        memory: s.memory.name(),
        mapping: s.mapping.name().into(),
        advice: s.advice.name().into(),
        thp: s.memory.is_thp(),
        children: s.children.len() as u64,
        arena_addr: format!("{addr:#x}"),
    }
}

fn skipped(s: &Scenario, sys: &SystemInfo, reason: String) -> ScenarioResult {
    let parent = ProcessEvidence::without_evidence("parent", nix::unistd::getpid().as_raw());
    ScenarioResult {
        name: s.name.clone(),
        summary: s.summary.clone(),
        config: config(s, sys, 0),
        pages: Default::default(),
        parent: parent.clone(),
        child: None,
        processes: vec![parent],
        content: ContentChecks::default(),
        timing: Timing::default(),
        thp: None,
        dumps: None,
        page_rows: Vec::new(),
        page_class_runs: Vec::new(),
        changed: Vec::new(),
        restore_failures: Vec::new(),
        verdict: Verdict::skip(reason),
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    s: &Scenario,
    config: ScenarioConfig,
    e: Evidence,
    j: Judgement,
    mut timing: Timing,
    anon_huge_before: Option<u64>,
    changed: Vec<String>,
    restore_failures: Vec<String>,
) -> ScenarioResult {
    let mut verdict = j.verdict();
    if !restore_failures.is_empty() {
        verdict.notes.extend(restore_failures.iter().cloned());
    }
    let processes: Vec<ProcessEvidence> = e
        .procs
        .iter()
        .enumerate()
        .map(|(idx, p)| process_report(p, &j, idx))
        .collect();
    timing.bytes_copied_by_one_write = j.bytes_copied_by_one_write;
    timing.bytes_copied_at_fork = j.bytes_copied_at_fork;
    let thp = anon_huge_before.map(|kb| ThpFacts {
        parent_anon_huge_kb_before: kb,
        bytes_copied_by_one_write: j.bytes_copied_by_one_write.unwrap_or(0),
    });
    let page_rows = if s.pages <= MAX_PAGE_ROWS {
        (0..s.pages)
            .map(|i| PageRow {
                index: i as u64,
                class: j.aggregate[i],
                classes: j
                    .classes
                    .iter()
                    .skip(1)
                    .map(|c| {
                        c.get(i)
                            .copied()
                            .unwrap_or(super::classify::PageClass::Unproven)
                    })
                    .collect(),
                pfns: e
                    .procs
                    .iter()
                    .map(|p| p.pages.get(i).and_then(|w| w.pfn).unwrap_or(0))
                    .collect(),
                mapcounts: e
                    .procs
                    .iter()
                    .map(|p| p.pages.get(i).and_then(|w| w.mapcount))
                    .collect(),
                exclusive: e
                    .procs
                    .iter()
                    .map(|p| p.pages.get(i).is_some_and(|w| w.exclusive))
                    .collect(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let dumps = e
        .dumps
        .clone()
        .map(|(parent, child)| Dumps { parent, child });
    let parent = processes[0].clone();
    let child = processes.get(1).cloned();
    ScenarioResult {
        name: s.name.clone(),
        summary: s.summary.clone(),
        config,
        pages: judge::counts(&j.aggregate),
        parent,
        child,
        processes,
        content: j.content.clone(),
        timing,
        thp,
        dumps,
        page_rows,
        page_class_runs: super::ClassRun::runs(&j.aggregate),
        changed,
        restore_failures,
        verdict,
    }
}

fn process_report(p: &ProcessSeen, j: &Judgement, idx: usize) -> ProcessEvidence {
    let classes = &j.classes[idx];
    ProcessEvidence {
        role: p.role.clone(),
        pid: p.pid,
        vma_present: p.smaps.is_some(),
        smaps: p.smaps,
        expected_smaps: j.expected_smaps[idx],
        present: p.pages.iter().filter(|w| w.present).count() as u64,
        exclusive: p.pages.iter().filter(|w| w.present && w.exclusive).count() as u64,
        pages: (idx > 0 && p.sampled).then(|| judge::counts(classes)),
        page_class_runs: if idx > 0 {
            super::ClassRun::runs(classes)
        } else {
            Vec::new()
        },
        new_pfns: j.new_frames[idx],
        written_since_fork: j.written_since_fork[idx],
        exit: p.exit.clone(),
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
/// second-write (owned) cost in the child, for private anonymous scenarios (4 KiB pages or a
/// PMD THP) without fork advice. Other kinds report fork latency only.
fn timing_runs(
    s: &Scenario,
    page_size: usize,
    opts: &ForkReportOptions,
    observed: Option<u64>,
) -> Result<Timing> {
    let mut forks = Vec::new();
    let mut cows = Vec::new();
    let mut owned = Vec::new();
    let thp = s.memory
        == MemoryKind::Thp {
            layout: ThpLayout::Pmd,
        };
    let cow_case = s.mapping == super::scenarios::Mapping::Private
        && s.advice == ForkAdvice::None
        && (s.memory == MemoryKind::Anon || thp)
        && s.prepare.is_empty();
    let pages = if thp {
        s.pages
    } else {
        s.pages.min(TIMED_PAGES)
    };
    for _ in 0..opts.runs {
        stop_check()?;
        let mut cfg = ArenaConfig::new(pages * page_size);
        if thp {
            cfg = cfg.align(pages * page_size).advise(Advice::HugePage);
        }
        let arena = Arena::new(cfg)?;
        let base = arena.base_addr();
        for i in 0..pages {
            // SAFETY: page i is inside the arena's writable mapping.
            unsafe { child::stamp_page(base + i * page_size, i, page_size, side::PARENT_BEFORE) };
        }
        let pipes = SubjectPipes::new()?;
        let mut ops = pipes.prologue().to_vec();
        if cow_case {
            ops.push(ChildOp::TimeWrites {
                addr: base,
                pages: if thp { 1 } else { pages },
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
        ..Default::default()
    })
}
