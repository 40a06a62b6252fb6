//! The `trace` report as a table for a terminal (cowscope prints it on stderr, so the traced
//! program's own stdout stays clean).

use std::fmt::Write;

use crate::doc::TraceDoc;
use crate::stacks::symbols::Frame;
use crate::trace::{Counts, FinalSample, ForkRecord, StackRecord};

fn mib(pages: u64, ps: u64) -> f64 {
    (pages * ps) as f64 / (1024.0 * 1024.0)
}

fn rows(c: &Counts) -> [(&'static str, u64); 16] {
    [
        ("shared", c.shared),
        ("zero", c.zero),
        ("copied_by_child", c.copied_by_child),
        ("copied_by_parent", c.copied_by_parent),
        ("copied_at_fork", c.copied_at_fork),
        (
            "copied_then_released_by_child",
            c.copied_then_released_by_child,
        ),
        (
            "copied_then_released_by_parent",
            c.copied_then_released_by_parent,
        ),
        ("released_by_child", c.released_by_child),
        ("released_by_parent", c.released_by_parent),
        ("released_by_both", c.released_by_both),
        ("moved", c.moved),
        ("diverged", c.diverged),
        ("only_parent", c.only_parent),
        ("only_child", c.only_child),
        ("absent", c.absent),
        ("unproven", c.unproven),
    ]
}

/// One class's row: name, pages (singular for one), MiB; the columns stay in line.
fn count_line(name: &str, v: u64, ps: u64) -> String {
    let unit = if v == 1 { "page" } else { "pages" };
    format!("    {name:<30} {v:>10} {unit:<5} {:>10.1} MiB", mib(v, ps))
}

/// One sentence a person can act on. Without PFNs nothing says who copied, so the sentence
/// never names a side's copies (they are 0 by construction, not by proof): it gives what is
/// proven apart (diverged) from what is not (unproven).
fn sentence(f: &ForkRecord, ps: u64, pfn_visible: bool) -> Option<String> {
    let fin = f.final_sample.as_ref()?;
    let mut s = who_copied(f, fin, ps, pfn_visible);
    where_copied(fin, &mut s);
    what_else(&fin.counts, ps, pfn_visible, &mut s);
    s.push('.');
    Some(s)
}

/// The sentence's lead: what each side copied (its peak first, then what it still held at the
/// end), or, without PFNs, what is proven diverged and what is unproven.
fn who_copied(f: &ForkRecord, fin: &FinalSample, ps: u64, pfn_visible: bool) -> String {
    let c = &fin.counts;
    let tracked = f.baseline.as_ref().map_or(c.total, |b| b.pages);
    if !pfn_visible {
        return format!(
            "who copied is unproven (PFNs hidden): of the {:.1} MiB mapped at the fork, {:.1} \
             MiB are proven diverged (no longer the same page) and {:.1} MiB are unproven",
            mib(tracked, ps),
            mib(c.diverged, ps),
            mib(c.unproven, ps)
        );
    }
    let peak = f.peak.as_ref();
    let before = peak.and_then(|p| p.before_exit.as_ref());
    format!(
        "{} and {} of the {:.1} MiB mapped at the fork",
        side_copied(
            "child",
            c.copied_by_child,
            peak.map(|p| &p.child),
            before.map(|b| &b.child),
            fin,
            ps
        ),
        side_copied(
            "parent",
            c.copied_by_parent,
            peak.map(|p| &p.parent),
            before.map(|b| &b.parent),
            fin,
            ps
        ),
        mib(tracked, ps)
    )
}

/// One side's clause: the peak leads (what it held while it ran), then what it held before its
/// exit began where that differs, then what it still held at the end.
fn side_copied(
    who: &str,
    held: u64,
    peak: Option<&crate::trace::Peak>,
    before: Option<&crate::trace::HeldBeforeExit>,
    fin: &FinalSample,
    ps: u64,
) -> String {
    let before = before
        .filter(|b| b.pages != held && b.began != "pair_end")
        .map(|b| {
            format!(
                "{:.1} MiB held before its exit began ({} at {:.3} s); ",
                mib(b.pages, ps),
                b.began.replace('_', " "),
                b.at
            )
        })
        .unwrap_or_default();
    match peak {
        Some(p) if p.pages > held => format!(
            "the {who} copied up to {:.1} MiB while it ran ({:.3} s{}); {before}{:.1} MiB still \
             held at {}",
            mib(p.pages, ps),
            p.at,
            if p.witness == crate::trace::history::BY_FAULTS {
                ", seen by its write faults"
            } else {
                ""
            },
            mib(held, ps),
            fin.trigger
        ),
        _ => format!("the {who} copied {:.1} MiB", mib(held, ps)),
    }
}

/// Where most of the copies are: the mapping with the most copied pages.
fn where_copied(fin: &FinalSample, s: &mut String) {
    let c = &fin.counts;
    let copied = c.copied_by_child + c.copied_by_parent;
    if copied > 0
        && let Some(top) = fin
            .vmas
            .iter()
            .max_by_key(|v| v.counts.copied_by_child + v.counts.copied_by_parent)
    {
        let n = top.counts.copied_by_child + top.counts.copied_by_parent;
        let name = if top.vma.pathname.is_empty() {
            format!("anonymous memory at {}", top.vma.start)
        } else {
            top.vma.pathname.clone()
        };
        let _ = write!(
            s,
            "; {:.0}% of it in {name}",
            100.0 * n as f64 / copied as f64
        );
    }
}

/// The rest of the partition a reader must not mistake for copies: copied and released
/// again, released, diverged without proof of who, unproven.
fn what_else(c: &Counts, ps: u64, pfn_visible: bool, s: &mut String) {
    let freed = c.copied_then_released_by_child + c.copied_then_released_by_parent;
    if freed > 0 {
        let _ = write!(
            s,
            "; {:.1} MiB were copied and released again (child {:.1}, parent {:.1})",
            mib(freed, ps),
            mib(c.copied_then_released_by_child, ps),
            mib(c.copied_then_released_by_parent, ps)
        );
    }
    let rel = c.released_by_child + c.released_by_parent + c.released_by_both;
    if rel > 0 {
        let _ = write!(
            s,
            "; {:.1} MiB were released (child {:.1}, parent {:.1}), not copied",
            mib(rel, ps),
            mib(c.released_by_child, ps),
            mib(c.released_by_parent, ps)
        );
    }
    if pfn_visible && c.diverged > 0 {
        let _ = write!(
            s,
            "; {:.1} MiB diverged without proof of who copied",
            mib(c.diverged, ps)
        );
    }
    if pfn_visible && c.unproven > 0 {
        let _ = write!(
            s,
            "; {:.1} MiB unproven (a page in swap on one side, in RAM on the other)",
            mib(c.unproven, ps)
        );
    }
}

/// The stacks of every fork as the stack renderers take them: one group per fork, named by
/// the forking program (its executable's file name).
fn stack_groups(r: &TraceDoc) -> Vec<super::stacks::StackGroup<'_>> {
    let b = &r.body;
    b.forks
        .iter()
        .filter_map(|f| {
            let stacks = f.stacks.as_ref()?;
            let comm = b
                .processes
                .iter()
                .find(|p| p.pid == f.parent)
                .map_or("?", |p| p.exe.rsplit('/').next().unwrap_or(&p.exe));
            Some(super::stacks::StackGroup {
                comm,
                stacks: stacks
                    .iter()
                    .map(|s| super::stacks::StackLine {
                        who: &s.who,
                        pages: s.pages,
                        frames: &s.frames,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// `--format folded`: the copied pages' stacks of every fork.
pub fn folded(r: &TraceDoc) -> String {
    super::stacks::folded(&stack_groups(r))
}

/// `--format flamegraph`: an SVG of the copied pages' stacks, titled with the program and
/// the kernel; where no copied page has a stack (nothing was copied, or no fault was
/// recorded), an SVG that says so and why, never an empty picture or another format.
pub fn flamegraph(r: &TraceDoc) -> String {
    let program = match &r.body.command {
        Some(c) => c.join(" "),
        None => format!("pid {}", r.body.pid),
    };
    super::stacks::flamegraph(&stack_groups(r), &program, &r.system.kernel_release).unwrap_or_else(
        |_| {
            let why = match &r.body.stacks {
                Some(s) if !s.recorded => format!(
                    "no stacks: page faults could not be recorded ({})",
                    s.reason.as_deref().unwrap_or("perf_event_open refused")
                ),
                _ if r.body.forks.is_empty() => "no stacks: the program never forked".into(),
                _ => "no stacks: no page was copied after a fork".into(),
            };
            let esc = |t: &str| {
                t.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            };
            format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"80\">\
                 <text x=\"10\" y=\"30\" font-family=\"Verdana\" font-size=\"17\">\
                 Pages copied after fork: {}</text><text x=\"10\" y=\"60\" \
                 font-family=\"Verdana\" font-size=\"14\">{}</text></svg>\n",
                esc(&program),
                esc(&why)
            )
        },
    )
}

/// One line over all forks: the sum of each fork's peak per side (what the run's copies cost
/// at their most, fork by fork), beside what was still held at the end.
fn run_summary(forks: &[ForkRecord], ps: u64, pfn_visible: bool) -> Option<String> {
    if !pfn_visible {
        return None;
    }
    let with: Vec<&ForkRecord> = forks.iter().filter(|f| f.peak.is_some()).collect();
    if with.is_empty() {
        return None;
    }
    let sum = |g: fn(&crate::trace::Peaks) -> u64| -> u64 {
        with.iter().filter_map(|f| f.peak.as_ref()).map(g).sum()
    };
    let (pc, pp) = (sum(|p| p.child.pages), sum(|p| p.parent.pages));
    let held: (u64, u64) = with
        .iter()
        .filter_map(|f| f.final_sample.as_ref())
        .fold((0, 0), |(a, b), x| {
            (a + x.counts.copied_by_child, b + x.counts.copied_by_parent)
        });
    Some(format!(
        "all {} fork(s): the children copied up to {:.1} MiB and the parents {:.1} MiB (the sum \
         of each fork's peak); {:.1} MiB and {:.1} MiB still held at the end",
        with.len(),
        mib(pc, ps),
        mib(pp, ps),
        mib(held.0, ps),
        mib(held.1, ps)
    ))
}

/// A module's file name, as frames name it.
fn module_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// A frame as one short word: its function, else module+offset.
fn frame_name(f: &Frame) -> String {
    match &f.function {
        Some(func) => func.clone(),
        None => format!("{}+{}", f.module, f.offset),
    }
}

/// The frames worth showing: the leaf, then the first frames of the program's own code
/// (`own`: its module name) after it, else the next frames; outermost last.
fn short_path(frames: &[Frame], own: &str, keep: usize) -> String {
    let Some(leaf) = frames.first() else {
        return "(no frames)".into();
    };
    let rest = &frames[1..];
    let mut shown: Vec<String> = vec![frame_name(leaf)];
    let owned: Vec<&Frame> = rest.iter().filter(|f| f.module == own).collect();
    let pick: Vec<&Frame> = if owned.is_empty() || leaf.module == own {
        rest.iter().collect()
    } else {
        owned
    };
    shown.extend(pick.iter().take(keep).map(|f| frame_name(f)));
    let mut line = shown.join(" <- ");
    if let (Some(file), Some(l)) = (&leaf.file, leaf.line) {
        let _ = write!(line, "  ({}:{l})", module_name(file));
    }
    line
}

/// `--stacks`: per side, the code behind the copies, most pages first, and one sentence.
fn stack_lines(f: &ForkRecord, own: &str, ps: u64) -> Vec<String> {
    let mut out = Vec::new();
    let Some(stacks) = &f.stacks else {
        return out;
    };
    for who in ["child", "parent"] {
        let mine: Vec<&StackRecord> = stacks.iter().filter(|r| r.who == who).collect();
        let unattr: u64 = f
            .unattributed
            .as_ref()
            .map(|u| {
                u.iter()
                    .filter(|(k, _)| match who {
                        "child" => k.as_str() == "copied_by_child",
                        _ => k.as_str() != "copied_by_child",
                    })
                    .map(|(_, v)| *v)
                    .sum()
            })
            .unwrap_or(0);
        let total: u64 = mine.iter().map(|r| r.pages).sum::<u64>() + unattr;
        if total == 0 {
            continue;
        }
        if let Some(top) = mine.first() {
            // The share of the top stack's leaf function and its first caller of the
            // program's own code.
            let head = short_path(&top.frames, own, 1);
            let head = head.split("  (").next().unwrap_or(&head).to_string();
            let same: u64 = mine
                .iter()
                .filter(|r| short_path(&r.frames, own, 1).starts_with(&head))
                .map(|r| r.pages)
                .sum();
            out.push(format!(
                "  => the {who} copied {:.1} MiB, {:.0}% of it in {head}",
                mib(total, ps),
                100.0 * same as f64 / total as f64
            ));
        }
        out.push(format!("  code behind the {who}'s copies:"));
        for r in mine.iter().take(5) {
            out.push(format!(
                "    {:>8} {:<5} {:>8.1} MiB  {}{}",
                r.pages,
                if r.pages == 1 { "page" } else { "pages" },
                mib(r.pages, ps),
                if r.class == crate::trace::Class::CopiedAtFork {
                    "[at fork] "
                } else {
                    ""
                },
                short_path(&r.frames, own, 3)
            ));
        }
        if mine.len() > 5 {
            let rest: u64 = mine.iter().skip(5).map(|r| r.pages).sum();
            out.push(format!(
                "    {:>8} {:<5} in {} other stacks",
                rest,
                if rest == 1 { "page" } else { "pages" },
                mine.len() - 5
            ));
        }
        if unattr > 0 {
            out.push(format!(
                "    {:>8} {:<5} unattributed (no fault recorded at the page)",
                unattr,
                if unattr == 1 { "page" } else { "pages" }
            ));
        }
    }
    if let Some(ss) = &f.stack_samples
        && ss.lost > 0
    {
        out.push(format!(
            "  {} fault records lost (ring buffer full): their copies are unattributed",
            ss.lost
        ));
    }
    out
}

/// A process as the fork lines name it: pid, `comm`, and its command line where readable
/// (shortened; left out when it only repeats the name).
fn who(b: &crate::trace::TraceBody, pid: i32) -> String {
    let Some(p) = b.processes.iter().find(|p| p.pid == pid) else {
        return pid.to_string();
    };
    let mut s = if p.comm.is_empty() {
        pid.to_string()
    } else {
        format!("{pid} {}", p.comm)
    };
    if let Some(c) = p.cmdline.as_deref().filter(|c| *c != p.comm) {
        let short: String = c.chars().take(60).collect();
        let more = if c.chars().count() > 60 { "..." } else { "" };
        let _ = write!(s, " ({short}{more})");
    }
    s
}

/// How long after its fork a child's exec still counts as "at once" (a shell's `sh -c`, a
/// shim), seconds.
const EXEC_AT_ONCE_S: f64 = 1.0;

/// A fork whose child exec'd within [`EXEC_AT_ONCE_S`] (or shared the parent's memory until
/// its exec: vfork): one line for all of them, unless `--all-forks`.
fn exec_at_once(f: &ForkRecord) -> bool {
    f.ended
        .as_ref()
        .is_some_and(|e| e.by == "child_exec" && (f.shares_mm || e.at - f.at < EXEC_AT_ONCE_S))
}

/// Pages a folded fork's sides copied before the exec (kept or released since).
fn copies_before_exec(f: &ForkRecord) -> u64 {
    f.final_sample.as_ref().map_or(0, |fin| {
        let c = &fin.counts;
        c.copied_by_child
            + c.copied_by_parent
            + c.copied_then_released_by_child
            + c.copied_then_released_by_parent
    })
}

/// Render the report (forks that exec'd at once folded into one line).
pub fn table(r: &TraceDoc) -> String {
    table_with(r, false)
}

/// Render the report; `all_forks`: a section for every fork, also those that exec'd at once.
pub fn table_with(r: &TraceDoc, all_forks: bool) -> String {
    let b = &r.body;
    let ps = r.system.page_size;
    let mut s = String::new();
    header_lines(&mut s, b);
    let folded: Vec<&ForkRecord> = if all_forks {
        Vec::new()
    } else {
        b.forks.iter().filter(|f| exec_at_once(f)).collect()
    };
    for (n, f) in b.forks.iter().enumerate() {
        if !all_forks && exec_at_once(f) {
            continue;
        }
        fork_lines(&mut s, b, n, f, ps);
    }
    if !folded.is_empty() {
        let mut names: Vec<String> = Vec::new();
        for f in &folded {
            let n = b
                .processes
                .iter()
                .find(|p| p.pid == f.child)
                .map(|p| p.comm.clone())
                .unwrap_or_default();
            if !n.is_empty() && !names.contains(&n) {
                names.push(n);
            }
        }
        let more = if names.len() > 5 { ", ..." } else { "" };
        names.truncate(5);
        let copied: u64 = folded.iter().map(|f| copies_before_exec(f)).sum();
        let unsampled = folded
            .iter()
            .filter(|f| !f.shares_mm && f.final_sample.is_none())
            .count();
        let what = match (copied, unsampled) {
            (0, 0) => "nothing copied".to_string(),
            (0, u) => format!("nothing copied where sampled ({u} not sampled before the exec)"),
            (c, 0) => format!("{} copied before their execs", super::svg::pages(c)),
            (c, u) => format!(
                "{} copied before their execs ({u} not sampled before the exec)",
                super::svg::pages(c)
            ),
        };
        let _ = writeln!(
            s,
            "\n{} fork+exec {} ({}{more}): {what} (--all-forks lists them)",
            folded.len(),
            if folded.len() == 1 {
                "child"
            } else {
                "children"
            },
            names.join(", ")
        );
    }
    if b.forks.is_empty() {
        let _ = writeln!(s, "\nno forks seen");
    }
    if let Some(line) = run_summary(&b.forks, ps, b.attribution.pfn_visible) {
        let _ = writeln!(s, "\n{line}");
    }
    if !b.attribution.unproven.is_empty() {
        let _ = writeln!(s);
        for u in &b.attribution.unproven {
            let _ = writeln!(s, "unproven: {u}");
        }
    }
    for n in &b.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

/// The run's first lines: what ran, how it ended, how releases were tracked.
fn header_lines(s: &mut String, b: &crate::trace::TraceBody) {
    let what = match &b.command {
        Some(c) => c.join(" "),
        None => format!("pid {}", b.pid),
    };
    let how = match (&b.exit.code, &b.exit.signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by {sig}"),
        _ => "still running".to_string(),
    };
    let _ = writeln!(
        s,
        "cowscope trace: {what}: {how}, ended by {}, {:.2} s",
        b.ended_by, b.duration_s
    );
    let _ = writeln!(
        s,
        "releases tracked by {} ({} syscall stops, {} releases{}); PFNs {}",
        b.release_tracking.method,
        b.release_tracking.stops,
        b.release_tracking.releases,
        match &b.release_tracking.events {
            Some(e) => format!(", {} syscall records read, {} lost", e.records, e.lost),
            None => String::new(),
        },
        if b.attribution.pfn_visible {
            "visible"
        } else {
            "hidden (who copied is unproven)"
        }
    );
}

/// One fork's section: both processes, the baseline, the final sample, stacks, notes.
fn fork_lines(s: &mut String, b: &crate::trace::TraceBody, n: usize, f: &ForkRecord, ps: u64) {
    let _ = writeln!(
        s,
        "\nfork {}: {} -> {} ({}{}) at {:.3} s, parent held {} µs, child held {} µs",
        n + 1,
        who(b, f.parent),
        who(b, f.child),
        f.kind,
        if f.shares_mm {
            ", shares the parent's memory: no copy-on-write"
        } else {
            ""
        },
        f.at,
        f.pause_us,
        f.child_hold_us
    );
    if let Some(bl) = &f.baseline {
        let _ = writeln!(
            s,
            "  baseline: {} ({:.1} MiB) in {} VMAs{}",
            super::svg::pages(bl.pages),
            mib(bl.pages, ps),
            bl.vmas,
            if bl.copied_at_fork > 0 {
                format!(
                    ", {} already the child's own at its first instruction (its TID page, pinned pages)",
                    bl.copied_at_fork
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(fin) = &f.final_sample {
        final_lines(s, b, f, fin, ps);
    }
    let own = b
        .processes
        .iter()
        .find(|p| p.pid == f.parent)
        .map(|p| module_name(&p.exe))
        .unwrap_or_default();
    for line in stack_lines(f, &own, ps) {
        let _ = writeln!(s, "{line}");
    }
    if let Some(e) = &f.ended {
        let _ = writeln!(s, "  ended: {} at {:.3} s", e.by, e.at);
    }
    for n in &f.notes {
        let _ = writeln!(s, "  note: {n}");
    }
}

/// The final sample: its classes, the VMAs with most change, and the sentence.
fn final_lines(
    s: &mut String,
    b: &crate::trace::TraceBody,
    f: &ForkRecord,
    fin: &crate::trace::FinalSample,
    ps: u64,
) {
    let _ = writeln!(
        s,
        "  final ({} at {:.3} s, {} samples):",
        fin.trigger,
        fin.at,
        f.samples.len()
    );
    for (name, v) in rows(&fin.counts) {
        if v > 0 {
            let _ = writeln!(s, "{}", count_line(name, v, ps));
        }
    }
    let mut top: Vec<_> = fin
        .vmas
        .iter()
        .filter(|v| v.counts.total > v.counts.shared + v.counts.zero)
        .collect();
    top.sort_by_key(|v| std::cmp::Reverse(v.counts.total - v.counts.shared - v.counts.zero));
    if !top.is_empty() {
        let _ = writeln!(s, "  VMAs with most change:");
    }
    for v in top.iter().take(5) {
        let c = &v.counts;
        let (copy_label, copy_c, copy_p) = if b.attribution.pfn_visible {
            ("copied c/p", c.copied_by_child, c.copied_by_parent)
        } else {
            ("diverged/unproven", c.diverged, c.unproven)
        };
        let _ = writeln!(
            s,
            "    {}-{} {} {:<28} {copy_label} {}/{}  released c/p {}/{}  other {}",
            v.vma.start,
            v.vma.end,
            v.vma.perms,
            if v.vma.pathname.is_empty() {
                "[anon]"
            } else {
                &v.vma.pathname
            },
            copy_c,
            copy_p,
            c.released_by_child,
            c.released_by_parent,
            c.total
                - c.shared
                - c.zero
                - copy_c
                - copy_p
                - c.released_by_child
                - c.released_by_parent
        );
    }
    if let Some(line) = sentence(f, ps, b.attribution.pfn_visible) {
        let _ = writeln!(s, "  => {line}");
    }
}

/// One line for a sample as it is taken (`trace --interval --format table`): time, the pair,
/// what triggered it and its main classes in pages.
pub fn sample_line(f: &ForkRecord, s: &crate::trace::Sample) -> String {
    let c = &s.counts;
    format!(
        "cowscope: {:>9.3} s  {} -> {}  {:<12} shared {}  copied by child {}  by parent {}  \
         released {}  diverged {}  unproven {}",
        s.at,
        f.parent,
        f.child,
        s.trigger,
        c.shared,
        c.copied_by_child,
        c.copied_by_parent,
        c.released_by_child + c.released_by_parent + c.released_by_both,
        c.diverged,
        c.unproven
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{FinalSample, PairReleases};

    fn fork(counts: Counts) -> ForkRecord {
        ForkRecord {
            parent: 1,
            child: 2,
            thread: 1,
            kind: "fork".into(),
            shares_mm: false,
            at: 0.0,
            pause_us: 0,
            parent_read_us: 0,
            child_hold_us: 0,
            baseline: None,
            samples: Vec::new(),
            final_sample: Some(FinalSample {
                at: 0.0,
                trigger: "child_exit".into(),
                counts,
                vmas: Vec::new(),
            }),
            peak: None,
            releases: PairReleases::default(),
            ended: None,
            stacks: None,
            unattributed: None,
            stack_samples: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn without_pfns_the_sentence_keeps_proven_diverged_and_unproven_apart_and_names_no_copier() {
        // 2560 pages of 4 KiB = 10 MiB diverged, 1280 = 5 MiB unproven, 40 MiB in all.
        let c = Counts {
            total: 10240,
            shared: 6400,
            diverged: 2560,
            unproven: 1280,
            ..Counts::default()
        };
        let s = sentence(&fork(c), 4096, false).unwrap();
        assert!(!s.contains("copied 0.0"), "{s}");
        assert!(s.contains("who copied is unproven"), "{s}");
        assert!(s.contains("of the 40.0 MiB mapped at the fork"), "{s}");
        assert!(s.contains("10.0 MiB are proven diverged"), "{s}");
        assert!(s.contains("5.0 MiB are unproven"), "{s}");
    }

    #[test]
    fn a_class_row_says_1_page_and_keeps_its_columns() {
        let one = count_line("copied_at_fork", 1, 4096);
        let many = count_line("shared", 2560, 4096);
        assert!(one.contains(" 1 page "), "{one}");
        assert!(!one.contains("pages"), "{one}");
        assert!(many.contains(" 2560 pages "), "{many}");
        assert_eq!(one.find("MiB"), many.find("MiB"), "{one}\n{many}");
        assert!(many.ends_with("10.0 MiB"), "{many}");
    }

    #[test]
    fn forks_that_exec_at_once_are_one_line_unless_all_forks() {
        let mut shim = fork(Counts {
            total: 100,
            shared: 100,
            ..Counts::default()
        });
        shim.ended = Some(crate::trace::PairEnd {
            at: 0.01,
            by: "child_exec".into(),
        });
        let mut worker = fork(Counts {
            total: 100,
            shared: 90,
            copied_by_child: 10,
            ..Counts::default()
        });
        worker.child = 3;
        let mut copied_then_exec = worker.clone();
        copied_then_exec.child = 4;
        copied_then_exec.ended = shim.ended.clone();
        copied_then_exec.ended = Some(crate::trace::PairEnd {
            at: 30.0,
            by: "child_exec".into(),
        });
        assert!(exec_at_once(&shim));
        assert!(!exec_at_once(&worker));
        assert!(
            !exec_at_once(&copied_then_exec),
            "a child that ran for a while before its exec keeps its section"
        );
    }

    #[test]
    fn the_peak_leads_and_what_is_left_at_exit_follows() {
        // 11,553 pages copied at the peak, 2,200 still held at the exit stop.
        let c = Counts {
            total: 30000,
            shared: 27800,
            copied_by_child: 2200,
            ..Counts::default()
        };
        let mut f = fork(c);
        f.peak = Some(crate::trace::Peaks {
            child: crate::trace::Peak {
                pages: 11553,
                at: 4.5,
                witness: "samples".into(),
            },
            parent: crate::trace::Peak {
                pages: 0,
                at: 0.0,
                witness: "samples".into(),
            },
            before_end: None,
            before_exit: None,
        });
        let s = sentence(&f, 4096, true).unwrap();
        assert!(
            s.starts_with("the child copied up to 45.1 MiB while it ran (4.500 s); 8.6 MiB still held at child_exit"),
            "{s}"
        );
        assert!(s.contains("the parent copied 0.0 MiB"), "{s}");
        let two = [f.clone(), f];
        let line = run_summary(&two, 4096, true).unwrap();
        assert!(
            line.contains("all 2 fork(s): the children copied up to 90.3 MiB"),
            "{line}"
        );
        assert!(line.contains("17.2 MiB and 0.0 MiB still held"), "{line}");
    }

    #[test]
    fn with_pfns_diverged_and_unproven_are_not_added_together() {
        let c = Counts {
            total: 10240,
            shared: 2560,
            copied_by_child: 2560,
            diverged: 2560,
            unproven: 2560,
            ..Counts::default()
        };
        let s = sentence(&fork(c), 4096, true).unwrap();
        assert!(s.contains("the child copied 10.0 MiB"), "{s}");
        assert!(s.contains("10.0 MiB diverged without proof"), "{s}");
        assert!(s.contains("10.0 MiB unproven"), "{s}");
        assert!(!s.contains("20.0"), "{s}");
    }
}
