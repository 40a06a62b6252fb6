//! `content` and `pipe`: the bytes read back (each page's head carries its last writer's
//! stamp; who sees whose writes; the seed-09c dumps) and the vmspliced pipe's bytes.

use super::{Finding, Judgement, unit};
use crate::fork::ContentChecks;
use crate::fork::child::{STAMP_SIDE_OFFSET, side};
use crate::fork::evidence::{Evidence, HEAD};
use crate::fork::scenarios::{ExpectedHead, ForkAdvice, Mapping, MemoryKind, Op, Scenario};

pub(super) fn head_ok(head: &[u8], want: ExpectedHead) -> bool {
    head.len() >= HEAD
        && head[..8] == want.index.to_le_bytes()
        && head[STAMP_SIDE_OFFSET] == want.marker
        && want.byte32.is_none_or(|b| head[HEAD / 2] == b)
}

/// What reading every process's page heads showed.
#[derive(Debug, Default)]
struct Stamps {
    /// Pages (`role:index`) whose head is not their last writer's.
    mismatches: Vec<String>,
    /// Some page had an expected head to compare with.
    checked: bool,
    /// Pages whose PFN changed while the content was read, over every process.
    moved: u64,
    /// Processes whose bytes should have been read but could not be.
    unread: Vec<String>,
    /// Processes whose page tables could not be read again after the content.
    not_rechecked: Vec<String>,
}

/// Content (read last): every page of every process carries the head its last writer left.
pub(super) fn every_page_reads_its_last_writer(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    let stamps = read_the_stamps(s, e);
    let c = &mut j.content;
    c.pages_moved_by_reading = e.pfn_visible.then_some(stamps.moved);
    if stamps.checked {
        c.stamps_match = Some(stamps.mismatches.is_empty());
    }
    who_sees_whose_writes(s, e, c);
    if let Some(dumps) = &e.dumps {
        the_dumps_show_the_rewrite_on_one_side(s, dumps, j);
    }
    let mut found = visibility_disagreements(s, &j.content);
    file_what_the_read_could_not_prove(e, &stamps, j);
    let mut mismatches = stamps.mismatches;
    if !mismatches.is_empty() {
        found.push(format!(
            "pages that do not carry the head of their last writer: {}",
            mismatches
                .iter()
                .take(16)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    mismatches.truncate(16);
    j.content.mismatches = mismatches;
    for f in found {
        j.file(Finding::disagree("content", f));
    }
}

/// Every page head read back against the head its last writer left, per process.
fn read_the_stamps(s: &Scenario, e: &Evidence) -> Stamps {
    let unit = unit(s, e);
    let mut st = Stamps::default();
    for p in &e.procs {
        match p.moved_by_reading {
            Some(n) => st.moved += n,
            None if p.sampled && p.heads.is_some() && e.pfn_visible => {
                st.not_rechecked.push(p.role.clone())
            }
            None => {}
        }
        let expect = s.expect_for(&p.path, unit);
        let expects_content = p.sampled && (0..p.pages.len()).any(|i| expect.head(i).is_some());
        let Some(h) = &p.heads else {
            // A process whose pages should carry known bytes, but whose memory could not be
            // read (`/proc/<pid>/mem` refused, or it is gone): its content is unproven.
            if expects_content && p.smaps.is_some() {
                st.unread.push(p.role.clone());
            }
            continue;
        };
        for i in 0..h.len() / HEAD {
            let Some(want) = expect.head(i) else {
                continue;
            };
            st.checked = true;
            if !head_ok(&h[i * HEAD..(i + 1) * HEAD], want) {
                st.mismatches.push(format!("{}:{i}", p.role));
            }
        }
    }
    st
}

/// Which side sees whose writes (first child vs parent), and whether a WIPEONFORK child
/// reads zero.
fn who_sees_whose_writes(s: &Scenario, e: &Evidence, c: &mut ContentChecks) {
    let par = e.procs.first().and_then(|p| p.heads.as_ref());
    let first_child = e.procs.get(1).and_then(|p| p.heads.as_ref());
    let child_wrote: Vec<usize> = (0..s.children.len())
        .flat_map(|i| s.written_by(&[i]))
        .collect();
    if let Some(ph) = par
        && !child_wrote.is_empty()
        && s.memory != MemoryKind::Seed09a
    {
        c.parent_sees_child_writes = Some(child_wrote.iter().any(|&pg| {
            pg * HEAD + HEAD <= ph.len()
                && (ph[pg * HEAD + STAMP_SIDE_OFFSET] == side::CHILD
                    || ph[pg * HEAD + HEAD / 2] == side::CHILD)
        }));
    }
    let parent_wrote = s.written_by(&[]);
    if let Some(ch) = first_child {
        if !parent_wrote.is_empty() {
            c.child_sees_parent_writes = Some(parent_wrote.iter().any(|&pg| {
                pg * HEAD + HEAD <= ch.len()
                    && ch[pg * HEAD + STAMP_SIDE_OFFSET] == side::PARENT_AFTER
            }));
        }
        if s.advice == ForkAdvice::WipeOnFork {
            c.child_reads_zero = Some(ch.iter().all(|&b| b == 0));
        }
    }
}

/// seed-09c: the child's rewrite of the second message shows in its own dump only.
fn the_dumps_show_the_rewrite_on_one_side(
    s: &Scenario,
    dumps: &(String, String),
    j: &mut Judgement,
) {
    let (pd, cd) = dumps;
    let text = s
        .plan(&[0])
        .and_then(|pl| {
            pl.ops.iter().find_map(|o| match o {
                Op::OverwriteSecondMessage { text } => Some(text.clone()),
                _ => None,
            })
        })
        .unwrap_or_default();
    j.content.parent_sees_child_writes = Some(pd.contains(&text));
    if !cd.contains(&text) || pd.contains(&text) {
        j.findings.push(Finding::disagree(
            "content",
            "seed-09c: the dumps do not show the child's rewrite on its side only",
        ));
    }
}

/// What the mapping makes wrong: a private mapping whose sides see each other's writes, a
/// shared one whose parent does not see the child's, a WIPEONFORK child reading non-zero.
fn visibility_disagreements(s: &Scenario, c: &ContentChecks) -> Vec<String> {
    let private = s.mapping == Mapping::Private;
    let mut found = Vec::new();
    if c.parent_sees_child_writes == Some(private) {
        found.push(format!(
            "the parent {} the child's writes on a {} mapping",
            if private { "sees" } else { "does not see" },
            s.mapping.name()
        ));
    }
    if c.child_sees_parent_writes == Some(true) && private {
        found.push("the child sees the parent's after-fork writes on a private mapping".into());
    }
    if s.advice == ForkAdvice::WipeOnFork && c.child_reads_zero != Some(true) {
        found.push("the WIPEONFORK child does not read zero everywhere".into());
    }
    found
}

/// Unproven content: bytes that could not be read, page tables not read again after them,
/// frames that moved while they were read.
fn file_what_the_read_could_not_prove(e: &Evidence, st: &Stamps, j: &mut Judgement) {
    if !st.unread.is_empty() {
        j.file(Finding::unproven(
            "content",
            format!(
                "the bytes of {} could not be read (/proc/<pid>/mem refused or the process was gone), so the content check did not run there",
                st.unread.join(", ")
            ),
        ));
    }
    if !st.not_rechecked.is_empty() {
        j.file(Finding::unproven(
            "content",
            format!(
                "the page tables of {} could not be read again after the content, so nothing shows the read left them alone",
                st.not_rechecked.join(", ")
            ),
        ));
    }
    let moved = st.moved;
    if moved > 0 && e.pfn_visible {
        // Either the read disturbed the evidence (it must not: /proc/<pid>/mem does not pin)
        // or the kernel migrated pages meanwhile (compaction): the sample is not of one
        // moment, so nothing can be proven from it.
        j.file(Finding::unproven(
            "content",
            format!(
                "{moved} page(s) changed frame while the content was read (page migration, or the read disturbed the evidence): the sample is not of one moment"
            ),
        ));
    }
}

/// vmsplice cases: the pipe must still yield the bytes the pages held before the fork
/// (CVE-2020-29374: a missed COW break lets a write leak into the pipe).
pub(super) fn the_pipe_keeps_the_pre_fork_bytes(_s: &Scenario, e: &Evidence, j: &mut Judgement) {
    let (Some(got), Some(want)) = (&e.pipe, &e.pipe_expected) else {
        return;
    };
    let same = got == want;
    j.content.pipe_reads_pre_fork_data = Some(same);
    if !same {
        j.file(Finding::disagree(
            "pipe",
            format!(
                "the pipe yields {} bytes that differ from the pre-fork bytes ({} read, {} expected)",
                got.iter().zip(want).filter(|(a, b)| a != b).count()
                    + got.len().abs_diff(want.len()),
                got.len(),
                want.len()
            ),
        ));
    }
}
