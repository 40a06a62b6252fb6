//! `/proc/<pid>/smaps`: the ONE parser of this format in cowscope.
//!
//! Parsed directly rather than through `procfs`: procfs 0.18 maps `VmFlags` onto a fixed
//! bitflags set and silently drops every abbreviation it does not know (e.g. `gu`, `sl`,
//! `bt`, `wp` on recent kernels), and it stores kB fields converted to bytes in an untyped map.
//! Here every VmFlags abbreviation is kept as a string, every kB field keeps its kB value, and
//! fields this version does not know land in [`SmapsEntry::other`] instead of being lost.

use std::collections::BTreeMap;
use std::io;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One VMA as smaps describes it. Sizes are in kB, as the kernel prints them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SmapsEntry {
    /// First byte of the VMA (hex in JSON, as /proc prints it).
    #[serde(with = "super::hex")]
    #[schemars(with = "String")]
    pub start: u64,
    /// One past the last byte (hex in JSON).
    #[serde(with = "super::hex")]
    #[schemars(with = "String")]
    pub end: u64,
    /// `rwxp` / `rwxs` as printed.
    pub perms: String,
    /// File offset in bytes (hex in JSON, as /proc prints it).
    #[serde(with = "super::hex")]
    #[schemars(with = "String")]
    pub offset: u64,
    /// Device `major:minor` as printed.
    pub dev: String,
    /// Inode number (0 for anonymous memory).
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`...); empty for anonymous mappings.
    pub pathname: String,
    /// Size.
    pub size_kb: u64,
    /// KernelPageSize.
    pub kernel_page_size_kb: u64,
    /// MMUPageSize.
    pub mmu_page_size_kb: u64,
    /// Resident set.
    pub rss_kb: u64,
    /// Proportional set size.
    pub pss_kb: u64,
    /// Proportional share of dirty pages (since 6.0; 0 when absent).
    pub pss_dirty_kb: u64,
    /// Resident, mapped elsewhere too, clean.
    pub shared_clean_kb: u64,
    /// Resident, mapped elsewhere too, dirty.
    pub shared_dirty_kb: u64,
    /// Resident, mapped only here, clean.
    pub private_clean_kb: u64,
    /// Resident, mapped only here, dirty.
    pub private_dirty_kb: u64,
    /// Referenced.
    pub referenced_kb: u64,
    /// Anonymous memory.
    pub anonymous_kb: u64,
    /// KSM-merged memory (since 6.x; 0 when absent).
    pub ksm_kb: u64,
    /// MADV_FREE'd memory not yet reclaimed.
    pub lazy_free_kb: u64,
    /// Anonymous memory mapped by PMD-sized THPs.
    pub anon_huge_pages_kb: u64,
    /// Shmem mapped by PMDs.
    pub shmem_pmd_mapped_kb: u64,
    /// File memory mapped by PMDs.
    pub file_pmd_mapped_kb: u64,
    /// HugeTLB shared.
    pub shared_hugetlb_kb: u64,
    /// HugeTLB private.
    pub private_hugetlb_kb: u64,
    /// Swapped out.
    pub swap_kb: u64,
    /// Proportional swap.
    pub swap_pss_kb: u64,
    /// mlocked.
    pub locked_kb: u64,
    /// THPeligible (None when the kernel does not print it).
    pub thp_eligible: Option<bool>,
    /// ProtectionKey (x86 with PKU only).
    pub protection_key: Option<u64>,
    /// Every VmFlags abbreviation, in kernel order, including ones unknown to cowscope.
    pub vm_flags: Vec<String>,
    /// Any other `Name: value` line, keyed by the kernel's name, value as printed.
    pub other: BTreeMap<String, String>,
}

impl SmapsEntry {
    /// Whether `/proc/<pid>/pagemap` has entries for this VMA. It covers the user address
    /// space only (up to TASK_SIZE); the legacy `[vsyscall]` page (0xffffffffff600000) lies
    /// above it, in no process's own page tables, and a read there ends at EOF.
    pub fn has_pagemap(&self) -> bool {
        self.pathname != "[vsyscall]"
    }

    /// Whether `addr` lies in `[start, end)`.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
    /// Whether VmFlags contains `flag` (e.g. `"hg"`, `"wf"`, `"dc"`).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.vm_flags.iter().any(|f| f == flag)
    }
}

/// Parse a whole smaps file. Lines that fit no known shape are kept in `other` of the VMA they
/// follow (or ignored before the first header), never fatal: the kernel adds fields over time.
pub fn parse(text: &str) -> Vec<SmapsEntry> {
    let mut out: Vec<SmapsEntry> = Vec::new();
    for line in text.lines() {
        if let Some(h) = parse_header(line) {
            out.push(h);
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name == "VmFlags" {
            cur.vm_flags = value.split_whitespace().map(str::to_owned).collect();
            continue;
        }
        let slot: Option<&mut u64> = match name {
            "Size" => Some(&mut cur.size_kb),
            "KernelPageSize" => Some(&mut cur.kernel_page_size_kb),
            "MMUPageSize" => Some(&mut cur.mmu_page_size_kb),
            "Rss" => Some(&mut cur.rss_kb),
            "Pss" => Some(&mut cur.pss_kb),
            "Pss_Dirty" => Some(&mut cur.pss_dirty_kb),
            "Shared_Clean" => Some(&mut cur.shared_clean_kb),
            "Shared_Dirty" => Some(&mut cur.shared_dirty_kb),
            "Private_Clean" => Some(&mut cur.private_clean_kb),
            "Private_Dirty" => Some(&mut cur.private_dirty_kb),
            "Referenced" => Some(&mut cur.referenced_kb),
            "Anonymous" => Some(&mut cur.anonymous_kb),
            "KSM" => Some(&mut cur.ksm_kb),
            "LazyFree" => Some(&mut cur.lazy_free_kb),
            "AnonHugePages" => Some(&mut cur.anon_huge_pages_kb),
            "ShmemPmdMapped" => Some(&mut cur.shmem_pmd_mapped_kb),
            "FilePmdMapped" => Some(&mut cur.file_pmd_mapped_kb),
            "Shared_Hugetlb" => Some(&mut cur.shared_hugetlb_kb),
            "Private_Hugetlb" => Some(&mut cur.private_hugetlb_kb),
            "Swap" => Some(&mut cur.swap_kb),
            "SwapPss" => Some(&mut cur.swap_pss_kb),
            "Locked" => Some(&mut cur.locked_kb),
            _ => None,
        };
        match (slot, parse_kb(value)) {
            (Some(slot), Some(kb)) => *slot = kb,
            _ => match name {
                "THPeligible" => cur.thp_eligible = value.parse::<u8>().ok().map(|v| v != 0),
                "ProtectionKey" => cur.protection_key = value.parse().ok(),
                _ => {
                    cur.other.insert(name.to_owned(), value.to_owned());
                }
            },
        }
    }
    out
}

/// `1234 kB` -> 1234.
fn parse_kb(v: &str) -> Option<u64> {
    let num = v.strip_suffix("kB")?.trim_end();
    num.parse().ok()
}

/// `start-end perms offset dev inode   pathname`
fn parse_header(line: &str) -> Option<SmapsEntry> {
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start_matches(' ');
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        f
    };
    let range = field();
    let perms = field();
    let offset = field();
    let dev = field();
    let inode = field();
    let (s, e) = range.split_once('-')?;
    let start = u64::from_str_radix(s, 16).ok()?;
    let end = u64::from_str_radix(e, 16).ok()?;
    if perms.len() != 4 || !dev.contains(':') {
        return None;
    }
    Some(SmapsEntry {
        start,
        end,
        perms: perms.to_owned(),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: dev.to_owned(),
        inode: inode.parse().ok()?,
        pathname: rest.trim_start_matches(' ').to_owned(),
        ..SmapsEntry::default()
    })
}

fn read_smaps(pid: i32) -> io::Result<String> {
    read_proc(&format!("/proc/{pid}/smaps"))
}

/// Read a /proc text file with a large first buffer: procfs files report size 0, so
/// `read_to_string` would start with tiny reads, and each read re-enters the seq_file.
fn read_proc(path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut s = String::with_capacity(64 << 10);
    f.read_to_string(&mut s)?;
    Ok(s)
}

/// The VMAs of `pid` from `/proc/<pid>/maps`: bounds, perms, offset, dev, inode and path
/// only (every kB field 0, no VmFlags). `maps` lines are exactly smaps header lines, so the
/// same parser reads them; unlike smaps, reading maps walks no page tables (microseconds).
///
/// # Errors
/// The OS error reading `/proc/<pid>/maps` (ESRCH or ENOENT once the process is gone).
pub fn vma_bounds(pid: i32) -> io::Result<Vec<SmapsEntry>> {
    Ok(parse(&read_proc(&format!("/proc/{pid}/maps"))?))
}

/// Whether smaps shows any PMD-mapped or hugetlb memory in this VMA (the only memory
/// PAGEMAP_SCAN calls `PAGE_IS_HUGE`).
pub fn has_pmd_mapped_memory(v: &SmapsEntry) -> bool {
    v.anon_huge_pages_kb
        + v.shmem_pmd_mapped_kb
        + v.file_pmd_mapped_kb
        + v.shared_hugetlb_kb
        + v.private_hugetlb_kb
        > 0
}

/// Every VMA of `pid`.
///
/// # Errors
/// The OS error reading `/proc/<pid>/smaps` when the process is gone or unreadable.
pub fn all_vmas(pid: i32) -> io::Result<Vec<SmapsEntry>> {
    Ok(parse(&read_smaps(pid)?))
}

/// The VMA of `pid` that contains `addr`.
///
/// # Errors
/// The OS error when `/proc/<pid>/smaps` cannot be read, or kind `NotFound` when no VMA
/// contains `addr`.
pub fn vma_containing(pid: i32, addr: u64) -> io::Result<SmapsEntry> {
    all_vmas(pid)?
        .into_iter()
        .find(|v| v.contains(addr))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no VMA of process {pid} contains {addr:#x}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
5643d98b9000-5643d98bb000 r--p 00001000 fe:00 247282                     /usr/bin/my prog (deleted)
Size:                  8 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   8 kB
Pss:                   4 kB
Pss_Dirty:             0 kB
Shared_Clean:          8 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:            8 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
FutureField:          17 kB
VmFlags: rd mr mw me zz 
7f0000000000-7f0000200000 rw-p 00000000 00:00 0 
Size:               2048 kB
Rss:                2048 kB
AnonHugePages:      2048 kB
THPeligible:           1
VmFlags: rd wr mr mw me ac hg gu 
";

    #[test]
    fn parses_every_field_and_keeps_unknown_ones() {
        let v = parse(SAMPLE);
        assert_eq!(v.len(), 2);
        let a = &v[0];
        assert_eq!((a.start, a.end), (0x5643d98b9000, 0x5643d98bb000));
        assert_eq!(a.perms, "r--p");
        assert_eq!(a.offset, 0x1000);
        assert_eq!(a.dev, "fe:00");
        assert_eq!(a.inode, 247282);
        assert_eq!(a.pathname, "/usr/bin/my prog (deleted)");
        assert_eq!(
            (a.size_kb, a.rss_kb, a.pss_kb, a.shared_clean_kb),
            (8, 8, 4, 8)
        );
        assert_eq!(a.thp_eligible, Some(false));
        assert_eq!(a.vm_flags, ["rd", "mr", "mw", "me", "zz"]);
        assert_eq!(
            a.other.get("FutureField").map(String::as_str),
            Some("17 kB")
        );
        let b = &v[1];
        assert_eq!(b.pathname, "");
        assert_eq!(b.anon_huge_pages_kb, 2048);
        assert_eq!(b.thp_eligible, Some(true));
        assert!(b.has_flag("hg") && b.has_flag("gu"));
    }

    #[test]
    fn own_smaps_has_a_vma_for_a_stack_variable() {
        let x = 5u64;
        let addr = std::ptr::addr_of!(x) as u64;
        let v = vma_containing(std::process::id() as i32, addr).expect("own smaps");
        assert!(v.contains(addr));
        assert!(v.perms.starts_with("rw"));
        assert!(vma_containing(std::process::id() as i32, 0).is_err());
    }
}
