//! The fork orchestrator: scenario -> arena -> fork -> the children run their programs
//! (`child.rs`, the only code that runs after fork) -> the parent samples every process while
//! all are alive -> content -> release and reap -> classify every page -> verdict.

pub mod child;
pub mod classify;
pub mod evidence;
pub mod judge;
pub mod memory;
pub mod observe;
pub mod run;
pub mod scenario_file;
pub mod scenarios;
pub mod subject;

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mem::system::SystemInfo;
use classify::{ClassCounts, PageClass};
pub use evidence::SmapsFigures;
pub use judge::{ExpectedSmaps, Finding, Verdict, VerdictState};
use subject::ExitInfo;

/// What `fork-report` was asked.
#[derive(Debug, Clone)]
pub struct ForkReportOptions {
    /// Scenario names; empty means the whole catalogue.
    pub scenarios: Vec<String>,
    /// Scale the 16-page scenarios.
    pub pages: Option<usize>,
    /// Kill a child that has not reported by then.
    pub timeout: Duration,
    /// Timing runs per scenario.
    pub runs: usize,
    /// Change (and restore) THP, hugetlb and swap settings a scenario needs (root).
    pub allow_sysfs: bool,
    /// Scenarios from a file instead of the catalogue.
    pub scenario_file: Option<std::path::PathBuf>,
}

impl Default for ForkReportOptions {
    fn default() -> Self {
        ForkReportOptions {
            scenarios: Vec::new(),
            pages: None,
            timeout: Duration::from_secs(10),
            runs: 5,
            allow_sysfs: false,
            scenario_file: None,
        }
    }
}

/// Largest `--pages`: just under 1 TiB of 4 KiB pages, the most one arena holds
/// ([`crate::arena::MAX_CAPACITY`]; with larger pages the scenario refuses what the arena
/// cannot hold). The real bound is the memory the machine has available now
/// ([`check_memory`]); this one only keeps sizes sane.
pub const MAX_PAGES: usize = (1 << 28) - 1;
/// Largest `--runs`.
pub const MAX_RUNS: usize = 1000;

/// The body of a fork report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ForkReportBody {
    /// One entry per scenario run, in catalogue order.
    pub scenarios: Vec<ScenarioResult>,
}

impl ForkReportBody {
    /// Whether every scenario's verdict held (skips count as holding).
    pub fn all_verdicts_hold(&self) -> bool {
        self.scenarios.iter().all(|s| s.verdict.holds)
    }

    /// The exit code of the run: 0 every verdict held (or was skipped), 1 at least one
    /// failed, 3 none failed but at least one could not be proven.
    pub fn exit_code(&self) -> i32 {
        let states = || self.scenarios.iter().map(|s| s.verdict.state);
        if states().any(|x| x == VerdictState::Failed) {
            crate::error::EXIT_VERDICT_FAILED
        } else if states().any(|x| x == VerdictState::Unproven) {
            crate::error::EXIT_UNPROVEN
        } else {
            crate::error::EXIT_OK
        }
    }
}

/// A run of consecutive pages with one class (per-process page maps stay small for large
/// arenas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClassRun {
    /// The class.
    pub class: PageClass,
    /// How many consecutive pages have it.
    pub pages: u64,
}

impl ClassRun {
    /// Run-length encode per-page classes.
    pub fn runs(classes: &[PageClass]) -> Vec<ClassRun> {
        let mut v: Vec<ClassRun> = Vec::new();
        for &c in classes {
            match v.last_mut() {
                Some(r) if r.class == c => r.pages += 1,
                _ => v.push(ClassRun { class: c, pages: 1 }),
            }
        }
        v
    }
}

/// How a scenario was set up.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ScenarioConfig {
    /// Arena size in pages.
    pub pages: u64,
    /// Page size in bytes.
    pub page_size: u64,
    /// The memory kind (`anon`, `thp`, `hugetlb-2048k`, `file`, ...).
    #[serde(default)]
    pub memory: String,
    /// `private` or `shared`.
    pub mapping: String,
    /// `none`, `wipeonfork` or `dontfork`.
    pub advice: String,
    /// 2 MiB aligned with MADV_HUGEPAGE.
    pub thp: bool,
    /// Number of processes forked directly by the parent.
    pub children: u64,
    /// Arena base address (hex), in every process.
    pub arena_addr: String,
}

/// One process of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ProcessEvidence {
    /// `parent`, `child`, `child-2`.., `grandchild`.
    pub role: String,
    /// Its pid.
    pub pid: i32,
    /// Whether it has a VMA at the arena's address.
    pub vma_present: bool,
    /// smaps of the arena VMA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smaps: Option<SmapsFigures>,
    /// smaps as the page witnesses predict it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_smaps: Option<ExpectedSmaps>,
    /// Pages present in its page table.
    pub present: u64,
    /// Pages with the exclusively-mapped bit.
    pub exclusive: u64,
    /// Page classes against the parent (absent for the parent itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<ClassCounts>,
    /// This process's own class of every page, run-length encoded (empty for the parent).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub page_class_runs: Vec<ClassRun>,
    /// Pages whose PFN differs from the parent's PFN before the fork (who got the copy),
    /// when PFNs are visible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_pfns: Option<u64>,
    /// Pages it wrote after the fork by soft-dirty bit 55 (where the kernel tracks it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written_since_fork: Option<u64>,
    /// How it ended (absent for the parent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
}

impl ProcessEvidence {
    /// A process we have no page-table evidence for (it died early, or the scenario was
    /// skipped).
    pub fn without_evidence(role: &str, pid: i32) -> Self {
        ProcessEvidence {
            role: role.into(),
            pid,
            vma_present: false,
            smaps: None,
            expected_smaps: None,
            present: 0,
            exclusive: 0,
            pages: None,
            page_class_runs: Vec::new(),
            new_pfns: None,
            written_since_fork: None,
            exit: None,
        }
    }
}

/// Which side sees which bytes (checked after the page tables).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ContentChecks {
    /// The parent's pages carry a child's stamp (true only for MAP_SHARED).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_sees_child_writes: Option<bool>,
    /// A child's pages carry the parent's after-fork stamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_sees_parent_writes: Option<bool>,
    /// Every page of the (first) child reads zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_reads_zero: Option<bool>,
    /// Every page of every process carries its own index and the marker of its last writer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stamps_match: Option<bool>,
    /// Pages whose PFN changed while the content was read (must be 0: the bytes are read
    /// through /proc/<pid>/mem, which does not unshare pages). Absent when PFNs are hidden.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages_moved_by_reading: Option<u64>,
    /// The pipe the pages were vmspliced into still yields their pre-fork bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipe_reads_pre_fork_data: Option<bool>,
    /// Pages whose stamp did not match (first few), as `process:page`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub mismatches: Vec<String>,
}

/// Timing medians in nanoseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Timing {
    /// Runs the medians are taken over.
    pub runs: u64,
    /// Median `fork()` latency in the parent over the timing runs (arena of at most 64 pages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fork_ns: Option<u64>,
    /// `fork()` latency of the observed run, at the scenario's full size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fork_ns_observed: Option<u64>,
    /// Median of a child's first store to a shared private page (a copy-on-write fault).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cow_fault_ns: Option<u64>,
    /// Median of a second store to the same page, owned by then (no fault).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owned_write_ns: Option<u64>,
    /// New memory one write made the kernel give the writer, in bytes (copied, or zero-filled
    /// for the zero page): 4 KiB for a base page or a PTE-mapped THP, the whole huge page for
    /// hugetlb. The largest over the writing processes; needs visible PFNs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_copied_by_one_write: Option<u64>,
    /// Bytes copied for the children at fork, before anyone wrote (pinned pages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_copied_at_fork: Option<u64>,
    /// Where the observed run spent its time, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases_us: Option<PhaseTimes>,
}

/// Wall-clock time of each phase of the observed run, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
pub struct PhaseTimes {
    /// mmap, populate and stamp the arena.
    pub setup_us: u64,
    /// Fork every subject and wait until each reported ready (includes the children's writes).
    pub fork_and_writes_us: u64,
    /// Read pagemap, smaps, kpagecount and kpageflags of every process.
    pub evidence_us: u64,
    /// Read content back and re-check the page tables.
    pub content_us: u64,
    /// Release and reap the subjects.
    pub reap_us: u64,
    /// Classify, check the witnesses, build the report.
    pub judge_us: u64,
    /// Unmap the arena.
    pub unmap_us: u64,
}

/// THP facts for the `thp-child-writes` scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ThpFacts {
    /// AnonHugePages of the parent's arena before the fork.
    pub parent_anon_huge_kb_before: u64,
    /// Bytes the child's one-byte write made the kernel copy (copied pages x page size).
    pub bytes_copied_by_one_write: u64,
}

/// The seed's 09c: both sides' dumps in the seed's rendering.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Dumps {
    /// The parent's arena after the child wrote.
    pub parent: String,
    /// The child's arena.
    pub child: String,
}

/// One page, for small arenas.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PageRow {
    /// Page index in the arena.
    pub index: u64,
    /// Aggregate class.
    pub class: classify::PageClass,
    /// Each forked process's own class of this page, in `processes` order after the parent.
    #[serde(default)]
    pub classes: Vec<classify::PageClass>,
    /// PFN in each process (parent first), 0 when hidden or absent.
    pub pfns: Vec<u64>,
    /// kpagecount per process's PFN, when readable.
    pub mapcounts: Vec<Option<u64>>,
    /// Exclusive bit per process.
    pub exclusive: Vec<bool>,
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ScenarioResult {
    /// Stable name.
    pub name: String,
    /// One line.
    pub summary: String,
    /// Setup.
    pub config: ScenarioConfig,
    /// Aggregate page classes (a page copied by any process counts as copied).
    pub pages: ClassCounts,
    /// The parent.
    pub parent: ProcessEvidence,
    /// The first child (convenience; also in `processes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child: Option<ProcessEvidence>,
    /// Every process: parent, children, grandchildren.
    pub processes: Vec<ProcessEvidence>,
    /// Content checks.
    pub content: ContentChecks,
    /// Timing medians.
    pub timing: Timing,
    /// THP facts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thp: Option<ThpFacts>,
    /// The seed's dumps (seed-09c).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dumps: Option<Dumps>,
    /// Per-page rows (arenas of at most 64 pages).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub page_rows: Vec<PageRow>,
    /// The aggregate class of every page, run-length encoded.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub page_class_runs: Vec<ClassRun>,
    /// System settings changed for this scenario (with --allow-sysfs), restored afterwards.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub changed: Vec<String>,
    /// Settings that could NOT be restored (path and error): the machine was left changed.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub restore_failures: Vec<String>,
    /// The verdict.
    pub verdict: Verdict,
}

/// Run the selected scenarios and build the report.
///
/// # Errors
/// Unknown scenario names, absurd sizes (usage), or a failure to set up memory.
pub fn fork_report(opts: &ForkReportOptions, system: &SystemInfo) -> Result<ForkReportBody> {
    fork_report_with(opts, system, &crate::progress::Progress::hidden())
}

/// [`fork_report`], saying on `progress` which scenario (i/N) and stage it is in.
///
/// # Errors
/// As [`fork_report`]; [`Error::Interrupted`] after a stop signal (deferred by the command),
/// honoured between scenarios and inside one (see [`run::run_scenario_with`]).
pub fn fork_report_with(
    opts: &ForkReportOptions,
    system: &SystemInfo,
    progress: &crate::progress::Progress,
) -> Result<ForkReportBody> {
    let scenarios = select(opts)?;
    let mut reports = Vec::with_capacity(scenarios.len());
    let n = scenarios.len();
    for (i, s) in scenarios.iter().enumerate() {
        // A stop signal (deferred by the command) ends the run between scenarios, after the
        // last one restored what it changed.
        if let Some(sig) = crate::kernel::stop_requested() {
            return Err(Error::Interrupted(sig));
        }
        progress.context(format!(
            "scenario {}/{n} {} ({} pages)",
            i + 1,
            s.name,
            s.pages
        ));
        reports.push(run::run_scenario_with(s, system, opts, progress)?);
    }
    if let Some(sig) = crate::kernel::stop_requested() {
        return Err(Error::Interrupted(sig));
    }
    Ok(ForkReportBody { scenarios: reports })
}

/// Refuse `--pages` whose arena would not fit in the memory the kernel says is available now
/// (`MemAvailable`), before anything is mapped: each scalable scenario populates every page of
/// its arena (and the children copy a few more), so a larger arena would push the machine
/// into swap or the OOM killer instead of producing a report. `None` (no /proc/meminfo):
/// nothing to check against.
///
/// # Errors
/// [`Error::Usage`] with both figures.
pub fn check_memory(pages: usize, page_size: usize, mem_available_kb: Option<u64>) -> Result<()> {
    let Some(avail_kb) = mem_available_kb else {
        return Ok(());
    };
    let need_kb = (pages as u64).saturating_mul(page_size as u64) / 1024;
    if need_kb > avail_kb {
        return Err(Error::usage(format!(
            "--pages {pages} needs {} of memory for one arena, but only {} is available \
             (MemAvailable {avail_kb} kB); choose at most --pages {}",
            human_kb(need_kb),
            human_kb(avail_kb),
            avail_kb * 1024 / page_size as u64
        )));
    }
    Ok(())
}

fn human_kb(kb: u64) -> String {
    if kb >= 1 << 20 {
        format!("{:.1} GiB", kb as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} MiB", kb as f64 / 1024.0)
    }
}

/// Resolve names, a scenario file and `--pages` into scenarios.
///
/// # Errors
/// Unknown names, duplicate names, `--pages` 0, above [`MAX_PAGES`] or above the available
/// memory, `--runs` 0 or above [`MAX_RUNS`], a zero timeout, a scenario file that cannot be
/// read or does not fit the schema (the error names the JSON path), a plan that names a page
/// the arena lacks.
pub fn select(opts: &ForkReportOptions) -> Result<Vec<scenarios::Scenario>> {
    use scenarios::{by_name, catalogue, list};
    if opts.runs == 0 || opts.runs > MAX_RUNS {
        return Err(Error::usage(format!(
            "--runs must be between 1 and {MAX_RUNS}, got {}",
            opts.runs
        )));
    }
    if opts.timeout.is_zero() {
        return Err(Error::usage("--timeout must be at least 1 second"));
    }
    let pool = match &opts.scenario_file {
        Some(path) => scenario_file::load(path)?,
        None => catalogue(),
    };
    let mut chosen = if opts.scenarios.is_empty() {
        pool
    } else {
        let mut v: Vec<scenarios::Scenario> = Vec::new();
        for n in &opts.scenarios {
            let s = pool
                .iter()
                .find(|s| &s.name == n)
                .cloned()
                .or_else(|| opts.scenario_file.is_none().then(|| by_name(n)).flatten())
                .ok_or_else(|| {
                    let names: Vec<String> = match &opts.scenario_file {
                        Some(_) => pool.iter().map(|s| s.name.clone()).collect(),
                        None => list().into_iter().map(|(n, _)| n).collect(),
                    };
                    Error::usage(format!(
                        "unknown scenario '{n}'; expected one of: {}",
                        names.join(", ")
                    ))
                })?;
            if v.iter().any(|x| x.name == s.name) {
                return Err(Error::usage(format!("scenario '{n}' given twice")));
            }
            v.push(s);
        }
        v
    };
    if let Some(p) = opts.pages {
        if p == 0 || p > MAX_PAGES {
            return Err(Error::usage(format!(
                "--pages must be between 1 and {MAX_PAGES}, got {p}"
            )));
        }
        let page = crate::kernel::page_size();
        if p.checked_mul(page).is_none() {
            return Err(Error::usage(format!(
                "--pages {p} overflows the address space"
            )));
        }
        check_memory(p, page, crate::kernel::meminfo_kb("MemAvailable"))?;
        for s in &mut chosen {
            if s.scalable {
                s.pages = p;
            }
        }
    }
    // Every page a plan names must exist in the (possibly shrunk) arena.
    for s in &chosen {
        if let Some(m) = s.max_named_page()
            && m >= s.pages
        {
            return Err(Error::usage(format!(
                "scenario '{}' names page {m}, so it needs --pages of at least {}",
                s.name,
                m + 1
            )));
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arena_larger_than_mem_available_is_refused_with_both_figures() {
        // 1 GiB available, 4 KiB pages: 262144 pages fit exactly, one more does not.
        let avail = Some(1 << 20);
        assert!(check_memory(262_144, 4096, avail).is_ok());
        let e = check_memory(262_145, 4096, avail).unwrap_err().to_string();
        assert!(e.contains("MemAvailable 1048576 kB"), "{e}");
        assert!(e.contains("at most --pages 262144"), "{e}");
        assert!(
            check_memory(usize::MAX, 4096, None).is_ok(),
            "nothing to check against"
        );
    }
}
