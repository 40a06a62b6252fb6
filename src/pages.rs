//! `cowscope pages`: the evidence for a range (or every VMA) of one process, as JSON.
//!
//! Data flow: smaps (the VMAs) -> per VMA∩range span: PAGEMAP_SCAN for `huge` (or kpageflags
//! in the fallback) -> pagemap in 64 Ki-entry chunks -> with visible PFNs, kpagecount and
//! kpageflags of the present frames -> counts, histograms, optional rows.
//!
//! Without visible PFNs every `pfn`, `mapcount` and `flags` is `null` and the histograms are
//! absent: PFN 0 would mean "unknown", never "same page".

use std::collections::{BTreeMap, HashMap};
use std::io;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mem::kpage::{Kpage, KpageFlags};
use crate::mem::pagemap::{Pagemap, PagemapEntry};
use crate::mem::privilege::{self, Privilege};
use crate::mem::scan::{self, HugeDetector, ScanMethod};
use crate::mem::smaps::{self, SmapsEntry};

/// Most rows `--per-page` will emit.
pub const MAX_PER_PAGE_ROWS: u64 = 1 << 20;
/// Pagemap entries per batch (2 MiB of entries, 1 GiB of address space): one `pread` of
/// pagemap, and one sorted pass over the batch's frames in the kpage files. Bigger batches
/// find longer PFN runs, so fewer kpage `pread`s.
const CHUNK: usize = 1 << 18;

/// What `cowscope pages` was asked.
#[derive(Debug, Clone)]
pub struct PagesRequest {
    /// The process.
    pub pid: i32,
    /// `[start, end)` in bytes, or every VMA.
    pub range: Option<(u64, u64)>,
    /// Add a row per page.
    pub per_page: bool,
    /// Never use PAGEMAP_SCAN.
    pub force_fallback: bool,
}

/// Page counts over a span. `huge` is `None` where it cannot be known (no PAGEMAP_SCAN and
/// no kpageflags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PageCounts {
    /// Pages in the span.
    pub pages: u64,
    /// Pages of the span inside no VMA.
    pub unmapped: u64,
    /// Present in RAM (bit 63).
    pub present: u64,
    /// In swap (bit 62).
    pub swapped: u64,
    /// Mapped exactly once (bit 56).
    pub exclusive: u64,
    /// File page or shared anonymous page (bit 61).
    pub file_or_shared: u64,
    /// Soft-dirty (bit 55).
    pub soft_dirty: u64,
    /// uffd-wp protected (bit 57).
    pub uffd_wp: u64,
    /// Guard region (bit 58).
    pub guard: u64,
    /// PMD-mapped THP or hugetlb, when known.
    pub huge: Option<u64>,
    /// Whether the PFNs behind these counts were visible.
    pub pfn_visible: bool,
}

impl PageCounts {
    fn add(&mut self, o: &PageCounts) {
        self.pages += o.pages;
        self.unmapped += o.unmapped;
        self.present += o.present;
        self.swapped += o.swapped;
        self.exclusive += o.exclusive;
        self.file_or_shared += o.file_or_shared;
        self.soft_dirty += o.soft_dirty;
        self.uffd_wp += o.uffd_wp;
        self.guard += o.guard;
        self.huge = match (self.huge, o.huge) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }

    #[inline(always)]
    fn count(&mut self, e: PagemapEntry) {
        self.present += e.present() as u64;
        self.swapped += e.swapped() as u64;
        self.exclusive += e.exclusive() as u64;
        self.file_or_shared += e.file_or_shared() as u64;
        self.soft_dirty += e.soft_dirty() as u64;
        self.uffd_wp += e.uffd_wp() as u64;
        self.guard += e.guard() as u64;
    }
}

/// One VMA touched by the request, with its smaps entry and the counts over the part of it
/// that was examined (`None` when its pagemap cannot be read, e.g. `[vsyscall]`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VmaSummary {
    /// The smaps entry of the whole VMA.
    pub smaps: SmapsEntry,
    /// First byte examined (range ∩ VMA), hex.
    #[serde(with = "crate::mem::hex")]
    #[schemars(with = "String")]
    pub examined_start: u64,
    /// One past the last byte examined, hex.
    #[serde(with = "crate::mem::hex")]
    #[schemars(with = "String")]
    pub examined_end: u64,
    /// Counts over the examined part.
    pub counts: Option<PageCounts>,
    /// Why counts are missing, if they are (a read that failed; not for a VMA without
    /// pagemap entries, which is `no_pagemap`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The VMA has no pagemap entries (`[vsyscall]`, above the user address space): nothing
    /// to count, and nothing wrong.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_pagemap: bool,
}

/// One page, for `--per-page`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PageRow {
    /// Page index from the start of `--range` (without `--range`: from the start of the
    /// page's VMA).
    pub index: u64,
    /// Virtual address, hex.
    #[serde(with = "crate::mem::hex")]
    #[schemars(with = "String")]
    pub address: u64,
    /// Present (bit 63).
    pub present: bool,
    /// Swapped (bit 62).
    pub swapped: bool,
    /// Mapped exactly once (bit 56).
    pub exclusive: bool,
    /// File or shared anonymous (bit 61).
    pub file_or_shared: bool,
    /// Guard region (bit 58).
    pub guard: bool,
    /// The frame, only when present and PFNs are visible.
    pub pfn: Option<u64>,
    /// kpagecount of the frame, only with a visible PFN.
    pub mapcount: Option<u64>,
    /// kpageflags names, only with a visible PFN.
    pub flags: Option<Vec<String>>,
}

/// `[start, end)` in bytes, hex in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AddressRange {
    /// First byte.
    #[serde(with = "crate::mem::hex")]
    #[schemars(with = "String")]
    pub start: u64,
    /// One past the last byte.
    #[serde(with = "crate::mem::hex")]
    #[schemars(with = "String")]
    pub end: u64,
}

/// The body of a pages document.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PagesBody {
    /// The process inspected.
    pub pid: i32,
    /// The examined range (page aligned), or `None` for every VMA.
    pub range: Option<AddressRange>,
    /// Whether PFNs were visible: without them, PFN equality proves nothing.
    pub pfn_visible: bool,
    /// Whether kpagecount/kpageflags were read.
    pub kpage_readable: bool,
    /// How `huge` was determined: `pagemap_scan`, or `pagemap_read` (kpageflags).
    pub huge_method: ScanMethod,
    /// The VMAs covered, in address order.
    pub vmas: Vec<VmaSummary>,
    /// Counts over the whole request.
    pub counts: PageCounts,
    /// kpagecount value -> present pages with it (only with visible PFNs), in numeric order.
    pub mapcount_histogram: Option<BTreeMap<u64, u64>>,
    /// kpageflags combination (`anon|lru|...`) -> present pages with it (only with visible
    /// PFNs).
    pub kpageflags_histogram: Option<BTreeMap<String, u64>>,
    /// One row per page, with `--per-page`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_page: Option<Vec<PageRow>>,
    /// What the evidence cannot show here, in plain words.
    pub notes: Vec<String>,
}

/// Parse `START-END` (hex, `0x` optional).
///
/// # Errors
/// Malformed, overflowing, empty or reversed ranges are usage errors.
pub fn parse_range(s: &str) -> Result<(u64, u64)> {
    let shape = || {
        Error::usage(format!(
            "--range '{s}' must be START-END in hex, e.g. 0x7f0000000000-0x7f0000100000"
        ))
    };
    let (a, b) = s.trim().split_once('-').ok_or_else(shape)?;
    let hex = |t: &str, which: &str| {
        let t = t.trim();
        let digits = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::usage(format!(
                "--range {which} '{t}' is not a hexadecimal address"
            )));
        }
        u64::from_str_radix(digits, 16)
            .map_err(|_| Error::usage(format!("--range {which} '{t}' does not fit in 64 bits")))
    };
    let (start, end) = (hex(a, "start")?, hex(b, "end")?);
    if end <= start {
        return Err(Error::usage(format!(
            "--range '{s}' is empty or reversed: END must be greater than START"
        )));
    }
    Ok((start, end))
}

/// Collect the evidence.
///
/// Geometry comes from `/proc/<pid>/maps` (no page walk). smaps (a page walk of its own) and,
/// where smaps shows PMD-mapped memory, PAGEMAP_SCAN for `huge` run on a second thread while
/// this one reads pagemap and the kpage files. The two walks are not one atomic snapshot of
/// the process; neither are any two reads of /proc.
///
/// # Errors
/// Usage errors for a bad pid, an unreadable process, or too many `--per-page` rows; I/O
/// errors if the process changes under us in a way the kernel reports.
pub fn pages(req: &PagesRequest) -> Result<PagesBody> {
    let pid = req.pid;
    let (geometry, pm) = open_process(pid)?;
    let privilege = privilege::detect();
    let kpage = if privilege.pfn_visible && privilege.kpage_readable {
        Kpage::open().ok()
    } else {
        None
    };
    let use_scan = scan::available() && !req.force_fallback;
    let range = page_range(req.range)?;
    let spans = spans_in(geometry, range);
    check_per_page_rows(req, range, &spans)?;

    let mut acc = Collector {
        pm: &pm,
        kpage: kpage.as_ref(),
        privilege,
        huge_from_kpage: !use_scan && kpage.is_some(),
        use_scan,
        rows: req.per_page.then(Vec::new),
        mapcounts: BTreeMap::new(),
        flags: HashMap::new(),
        huge: HugeDetector::default(),
        raw: Vec::new(),
        pfns: Vec::new(),
        origin: range.map(|(s, _)| s),
    };
    // Second thread: smaps, then PAGEMAP_SCAN only where smaps shows PMD-mapped memory.
    let (pagemap_results, smaps_result) = std::thread::scope(|s| {
        let (spans, pm) = (&spans, &pm);
        let side = s.spawn(move || smaps_and_huge(pid, spans, pm, use_scan));
        let mine: Vec<io::Result<PageCounts>> = spans
            .iter()
            .map(|(g, a, b)| {
                if g.has_pagemap() {
                    acc.span(*a, *b)
                } else {
                    Ok(PageCounts::default())
                }
            })
            .collect();
        let side = side
            .join()
            .unwrap_or_else(|_| Err(Error::usage("the smaps reader panicked")));
        (mine, side)
    });
    let (all_smaps, scan_huge) = smaps_result?;
    let read = ReadSpans {
        pid,
        use_scan,
        pfn_visible: privilege.pfn_visible,
    };
    let (vmas, mut total, changed) =
        read.summarise(spans, pagemap_results, scan_huge, &all_smaps)?;
    if let Some((s, e)) = range {
        let ps = crate::kernel::page_size() as u64;
        let covered: u64 = vmas
            .iter()
            .map(|v| (v.examined_end - v.examined_start) / ps)
            .sum();
        let unmapped = (e - s) / ps - covered;
        total.pages += unmapped;
        total.unmapped += unmapped;
        if let Some(rows) = &mut acc.rows {
            fill_unmapped_rows(rows, s, e, ps);
        }
    }
    let notes = notes(&privilege, kpage.is_some(), &total, changed);
    let have_kpage = kpage.is_some();
    let (map_hist, flags_hist) = acc.histograms(have_kpage);
    let body = PagesBody {
        pid,
        range: range.map(|(start, end)| AddressRange { start, end }),
        pfn_visible: privilege.pfn_visible,
        kpage_readable: privilege.kpage_readable,
        huge_method: if use_scan {
            ScanMethod::PagemapScan
        } else {
            ScanMethod::PagemapRead
        },
        vmas,
        counts: total,
        mapcount_histogram: map_hist,
        kpageflags_histogram: flags_hist,
        per_page: acc.rows.take(),
        notes,
    };
    Ok(body)
}

/// Check `pid` and open what is read first: its VMAs' geometry and its pagemap.
fn open_process(pid: i32) -> Result<(Vec<SmapsEntry>, Pagemap)> {
    if pid <= 0 {
        return Err(Error::usage(format!(
            "--pid must be a positive process id, got {pid}"
        )));
    }
    crate::mem::process::user_process(pid)?;
    let geometry = smaps::vma_bounds(pid).map_err(|e| Error::process_io(pid, "maps", e))?;
    let pm = Pagemap::open(pid).map_err(|e| Error::process_io(pid, "pagemap", e))?;
    Ok((geometry, pm))
}

/// `--range` aligned outward to whole pages.
fn page_range(range: Option<(u64, u64)>) -> Result<Option<(u64, u64)>> {
    let ps = crate::kernel::page_size() as u64;
    let Some((s, e)) = range else {
        return Ok(None);
    };
    let start = s & !(ps - 1);
    let end = e
        .checked_next_multiple_of(ps)
        .ok_or_else(|| Error::usage(format!("--range end {e:#x} is past the last page")))?;
    Ok(Some((start, end)))
}

/// Each VMA with the part of it to examine: all of it, or its overlap with the range.
fn spans_in(geometry: Vec<SmapsEntry>, range: Option<(u64, u64)>) -> Vec<(SmapsEntry, u64, u64)> {
    geometry
        .into_iter()
        .filter_map(|v| match range {
            Some((s, e)) => {
                let (a, b) = (v.start.max(s), v.end.min(e));
                (a < b).then_some((v, a, b))
            }
            None => {
                let (a, b) = (v.start, v.end);
                Some((v, a, b))
            }
        })
        .collect()
}

/// Refuse `--per-page` over more than [`MAX_PER_PAGE_ROWS`] pages.
fn check_per_page_rows(
    req: &PagesRequest,
    range: Option<(u64, u64)>,
    spans: &[(SmapsEntry, u64, u64)],
) -> Result<()> {
    let ps = crate::kernel::page_size() as u64;
    let total_pages = match range {
        Some((s, e)) => (e - s) / ps,
        None => spans.iter().map(|(_, a, b)| (b - a) / ps).sum(),
    };
    if req.per_page && total_pages > MAX_PER_PAGE_ROWS {
        return Err(Error::usage(format!(
            "--per-page over {total_pages} pages is too many (limit {MAX_PER_PAGE_ROWS}); narrow --range"
        )));
    }
    Ok(())
}

/// The side thread's read: every VMA's smaps, then per span the pages mapped by a PMD
/// (PAGEMAP_SCAN only where smaps shows PMD-mapped memory; `None` without PAGEMAP_SCAN).
fn smaps_and_huge(
    pid: i32,
    spans: &[(SmapsEntry, u64, u64)],
    pm: &Pagemap,
    use_scan: bool,
) -> Result<(Vec<SmapsEntry>, Vec<Option<u64>>)> {
    let all = smaps::all_vmas(pid).map_err(|e| Error::process_io(pid, "smaps", e))?;
    let mut huge = Vec::with_capacity(spans.len());
    for (g, a, b) in spans {
        let entry = all.iter().find(|v| v.contains(g.start));
        huge.push(match entry {
            _ if !use_scan => None,
            Some(v) if !smaps::has_pmd_mapped_memory(v) => Some(0),
            _ => scan::scan(pm, *a, *b, false)
                .ok()
                .and_then(|sc| sc.counts().huge),
        });
    }
    Ok((all, huge))
}

/// How the spans were read: what their summaries depend on.
struct ReadSpans {
    pid: i32,
    use_scan: bool,
    pfn_visible: bool,
}

impl ReadSpans {
    /// One summary per span from its pagemap counts, its smaps entry and its PMD count; the
    /// total; whether the VMAs changed between the maps and smaps reads.
    ///
    /// # Errors
    /// A pagemap read that failed in a VMA where it should not.
    fn summarise(
        &self,
        spans: Vec<(SmapsEntry, u64, u64)>,
        pagemap_results: Vec<io::Result<PageCounts>>,
        scan_huge: Vec<Option<u64>>,
        all_smaps: &[SmapsEntry],
    ) -> Result<(Vec<VmaSummary>, PageCounts, bool)> {
        let mut total = PageCounts {
            huge: Some(0),
            pfn_visible: self.pfn_visible,
            ..PageCounts::default()
        };
        let mut vmas = Vec::with_capacity(spans.len());
        let mut changed = false;
        for (((g, a, b), res), huge) in spans.into_iter().zip(pagemap_results).zip(scan_huge) {
            let smaps_entry = all_smaps
                .iter()
                .find(|v| v.start == g.start && v.end == g.end)
                .cloned();
            changed |= smaps_entry.is_none();
            let no_pagemap = !g.has_pagemap();
            let (counts, error) = match res {
                _ if no_pagemap => (None, None),
                Ok(mut c) => {
                    if self.use_scan {
                        c.huge = huge;
                    }
                    (Some(c), None)
                }
                Err(e) if vmas_unreadable(&g, &e) => (None, Some(e.to_string())),
                Err(e) => return Err(Error::process_io(self.pid, "pagemap", e)),
            };
            if let Some(c) = &counts {
                total.add(c);
            }
            vmas.push(VmaSummary {
                smaps: smaps_entry.unwrap_or(g),
                examined_start: a,
                examined_end: b,
                counts,
                error,
                no_pagemap,
            });
        }
        Ok((vmas, total, changed))
    }
}

/// What the document cannot say here, as notes.
fn notes(
    privilege: &Privilege,
    have_kpage: bool,
    total: &PageCounts,
    changed: bool,
) -> Vec<String> {
    let mut notes = Vec::new();
    if !privilege.pfn_visible {
        notes.push(
            "PFNs are hidden (no CAP_SYS_ADMIN): pfn, mapcount and flags are null and PFN \
             equality proves nothing; rely on the exclusive bit and smaps."
                .to_string(),
        );
    } else if !have_kpage {
        notes.push("kpagecount/kpageflags unreadable: no mapcount or flags.".to_string());
    }
    if total.huge.is_none() {
        notes
            .push("huge is unknown: no PAGEMAP_SCAN (or --no-scan) and no kpageflags.".to_string());
    }
    if changed {
        notes.push(
            "the process's VMAs changed while it was read: a VMA without smaps figures has \
             only its /proc/<pid>/maps fields."
                .to_string(),
        );
    }
    notes
}

/// A special VMA whose pagemap read ends early: report, do not fail.
fn vmas_unreadable(v: &SmapsEntry, e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::UnexpectedEof || !v.has_pagemap()
}

/// Rows for pages of the range inside no VMA, then everything sorted by address.
fn fill_unmapped_rows(rows: &mut Vec<PageRow>, s: u64, e: u64, ps: u64) {
    let n = ((e - s) / ps) as usize;
    if rows.len() == n {
        return;
    }
    let mut have = vec![false; n];
    for r in rows.iter() {
        have[r.index as usize] = true;
    }
    for (i, h) in have.iter().enumerate() {
        if !h {
            rows.push(PageRow {
                index: i as u64,
                address: s + i as u64 * ps,
                present: false,
                swapped: false,
                exclusive: false,
                file_or_shared: false,
                guard: false,
                pfn: None,
                mapcount: None,
                flags: None,
            });
        }
    }
    rows.sort_unstable_by_key(|r| r.index);
}

/// Accumulates counts, histograms and rows over spans, reusing its buffers.
struct Collector<'a> {
    pm: &'a Pagemap,
    kpage: Option<&'a Kpage>,
    privilege: Privilege,
    /// Count `huge` here from kpageflags (the `--no-scan` path as root).
    huge_from_kpage: bool,
    /// PAGEMAP_SCAN may be used to skip the empty parts of big spans.
    use_scan: bool,
    rows: Option<Vec<PageRow>>,
    mapcounts: BTreeMap<u64, u64>,
    flags: HashMap<u64, u64>,
    huge: HugeDetector,
    raw: Vec<u64>,
    pfns: Vec<u64>,
    /// Row indexes count from here (the range start), or from each VMA's start.
    origin: Option<u64>,
}

impl Collector<'_> {
    /// The mapcount and kpageflags histograms, when the kpage files were read.
    #[allow(clippy::type_complexity)]
    fn histograms(
        &self,
        have_kpage: bool,
    ) -> (Option<BTreeMap<u64, u64>>, Option<BTreeMap<String, u64>>) {
        let flags_hist = have_kpage.then(|| {
            let mut h = BTreeMap::new();
            for (f, n) in &self.flags {
                *h.entry(KpageFlags(*f).key()).or_insert(0) += n;
            }
            h
        });
        let map_hist = have_kpage.then(|| {
            self.mapcounts
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect::<BTreeMap<u64, u64>>()
        });
        (map_hist, flags_hist)
    }

    fn span(&mut self, a: u64, b: u64) -> io::Result<PageCounts> {
        let ps = crate::kernel::page_size() as u64;
        let mut c = PageCounts {
            pages: (b - a) / ps,
            pfn_visible: self.privilege.pfn_visible,
            ..PageCounts::default()
        };
        // `huge`: counted here from kpageflags, or filled in by the smaps thread.
        c.huge = self.huge_from_kpage.then_some(0);
        let origin = self.origin.unwrap_or(a);
        if self.use_scan && self.rows.is_none() && c.pages > MAX_PER_PAGE_ROWS {
            // A big span (reservations of GiBs or TiBs are common): let PAGEMAP_SCAN find
            // the populated parts, read pagemap only there, and take the categories of the
            // empty parts (soft-dirty, guard) from the scan's regions.
            let sc = scan::scan(self.pm, a, b, false)?;
            for r in &sc.regions {
                if r.categories & (scan::PAGE_IS_PRESENT | scan::PAGE_IS_SWAPPED) != 0 {
                    self.dense(r.start, r.end, &mut c, origin)?;
                } else {
                    let n = (r.end - r.start) / ps;
                    if r.categories & scan::PAGE_IS_SOFT_DIRTY != 0 {
                        c.soft_dirty += n;
                    }
                    if r.categories & scan::PAGE_IS_GUARD != 0 {
                        c.guard += n;
                    }
                }
            }
            return Ok(c);
        }
        self.dense(a, b, &mut c, origin)?;
        Ok(c)
    }

    /// Read every pagemap entry of `[a, b)` in batches of [`CHUNK`].
    fn dense(&mut self, a: u64, b: u64, c: &mut PageCounts, origin: u64) -> io::Result<()> {
        let ps = crate::kernel::page_size() as u64;
        if self.raw.len() < CHUNK {
            self.raw.resize(CHUNK, 0);
        }
        let mut cur = a;
        while cur < b {
            let n = (((b - cur) / ps) as usize).min(CHUNK);
            let mut raw = std::mem::take(&mut self.raw);
            let res = self.chunk(cur, &mut raw[..n], c, origin);
            self.raw = raw;
            res?;
            cur += n as u64 * ps;
        }
        Ok(())
    }

    fn chunk(
        &mut self,
        cur: u64,
        raw: &mut [u64],
        c: &mut PageCounts,
        origin: u64,
    ) -> io::Result<()> {
        let ps = crate::kernel::page_size() as u64;
        self.pm.read_into(cur, raw)?;
        for &e in raw.iter() {
            c.count(PagemapEntry(e));
        }
        let (counts, flags) = match self.kpage {
            Some(k) => {
                self.pfns.clear();
                self.pfns.extend(
                    raw.iter()
                        .map(|&e| PagemapEntry(e))
                        .filter(|e| e.present())
                        .map(|e| e.pfn()),
                );
                k.counts_and_flags(&self.pfns)?
            }
            None => (Vec::new(), Vec::new()),
        };
        // Neighbouring pages mostly share a mapcount and a flag set: count runs, and touch
        // the maps once per run instead of once per page.
        let mut run: Option<(u64, u64, u64)> = None; // (mapcount, flags, pages)
        for (&m, f) in counts.iter().zip(&flags) {
            match &mut run {
                Some((rm, rf, n)) if *rm == m && *rf == f.0 => *n += 1,
                _ => {
                    if let Some((rm, rf, n)) = run.replace((m, f.0, 1)) {
                        *self.mapcounts.entry(rm).or_insert(0) += n;
                        *self.flags.entry(rf).or_insert(0) += n;
                    }
                }
            }
        }
        if let Some((rm, rf, n)) = run {
            *self.mapcounts.entry(rm).or_insert(0) += n;
            *self.flags.entry(rf).or_insert(0) += n;
        }
        let need_huge = self.huge_from_kpage;
        if !need_huge && self.rows.is_none() {
            return Ok(());
        }
        let mut j = 0; // index into counts/flags (present pages only)
        for (i, &e) in raw.iter().enumerate() {
            let e = PagemapEntry(e);
            let addr = cur + i as u64 * ps;
            let (m, f) = if e.present() && j < flags.len() {
                j += 1;
                (Some(counts[j - 1]), Some(flags[j - 1]))
            } else {
                (None, None)
            };
            if need_huge
                && let (Some(k), Some(f)) = (self.kpage, f)
                && self.huge.is_huge(self.pm, k, addr, f)?
            {
                c.huge = Some(c.huge.unwrap_or(0) + 1);
            }
            if let Some(rows) = &mut self.rows {
                let visible = self.privilege.pfn_visible && e.present();
                rows.push(PageRow {
                    index: (addr - origin) / ps,
                    address: addr,
                    present: e.present(),
                    swapped: e.swapped(),
                    exclusive: e.exclusive(),
                    file_or_shared: e.file_or_shared(),
                    guard: e.guard(),
                    pfn: visible.then(|| e.pfn()),
                    mapcount: m,
                    flags: f.map(|f| f.names().into_iter().map(str::to_owned).collect()),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapcount_histogram_keys_are_in_numeric_order() {
        let h: BTreeMap<u64, u64> = [(10, 1), (2, 5), (1, 7)].into_iter().collect();
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"1":7,"2":5,"10":1}"#,
            "10 sorts after 2, not between 1 and 2"
        );
    }
    use rstest::rstest;

    #[rstest]
    #[case::with_prefix("0x1000-0x3000", 0x1000, 0x3000)]
    #[case::without_prefix("1000-3000", 0x1000, 0x3000)]
    #[case::mixed_case_and_spaces(" 7f00AB000-0X7f00ac000 ", 0x7f00ab000, 0x7f00ac000)]
    #[case::unaligned_is_kept_for_pages_to_round("1001-1002", 0x1001, 0x1002)]
    fn parse_range_accepts_hex(#[case] s: &str, #[case] start: u64, #[case] end: u64) {
        assert_eq!(parse_range(s).ok(), Some((start, end)));
    }

    #[rstest]
    #[case::empty("", "START-END")]
    #[case::one_address("0x1000", "START-END")]
    #[case::no_start("-0x1000", "not a hexadecimal address")]
    #[case::no_end("0x1000-", "not a hexadecimal address")]
    #[case::not_hex("0xzz-0x1000", "not a hexadecimal address")]
    #[case::bare_prefix("0x-0x10", "not a hexadecimal address")]
    #[case::double_dash("1000--2000", "not a hexadecimal address")]
    #[case::reversed("0x2000-0x1000", "reversed")]
    #[case::empty_range("0x1000-0x1000", "reversed")]
    #[case::overflow("10000000000000000-10000000000000001", "64 bits")]
    fn parse_range_rejects_with_a_usage_error(#[case] s: &str, #[case] says: &str) {
        match parse_range(s) {
            Err(Error::Usage(msg)) => {
                assert!(
                    msg.contains("--range") && msg.contains(says),
                    "{s:?}: {msg}"
                )
            }
            other => panic!("{s:?} should be a usage error, got {other:?}"),
        }
    }
}
