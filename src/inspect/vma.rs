//! VMAs of a (parent, child) pair: what kind each is, which ones are "the same mapping" in
//! both processes, and the segments a pair walk covers.
//!
//! After `fork()` the child has a copy of every VMA of the parent (except `MADV_DONTFORK`
//! ones) at the same address. Later either side can map, unmap, move (`mremap`), grow
//! (`brk`, stack) or split (`mprotect`) VMAs. Two VMAs are the *same mapping* when they
//! overlap and have the same identity: device, inode, and (for files) the same file offset at
//! the same address; for anonymous memory, the same name (`[heap]`, `[stack]`, `[anon:x]` or
//! none) and the same private/shared flavour. Their overlap is a *common* segment, walked page
//! by page; what either side has beyond it is a *one-sided* segment.
//!
//! [`match_vmas`] and [`kind_of`] are small and pure so the `trace` command can reuse them.

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mem::smaps::SmapsEntry;

/// What a VMA is, from its path, flavour and filesystem.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum VmaKind {
    /// `[heap]`: the brk area.
    #[serde(rename = "heap")]
    Heap,
    /// `[stack]`: the main thread's stack.
    #[serde(rename = "stack")]
    Stack,
    /// Private anonymous memory (mmap'd malloc arenas, thread stacks, `[anon:name]`).
    #[serde(rename = "anon")]
    Anon,
    /// A file mapped `MAP_PRIVATE` (program text and data, libraries): written pages become
    /// anonymous copies.
    #[serde(rename = "file-private")]
    FilePrivate,
    /// A file mapped `MAP_SHARED`: writes go to the page cache, seen by every mapper.
    #[serde(rename = "file-shared")]
    FileShared,
    /// Shared memory on tmpfs/shmem: `MAP_SHARED|MAP_ANONYMOUS` (`/dev/zero (deleted)`),
    /// memfd, SysV shm, POSIX shm in `/dev/shm`.
    #[serde(rename = "shmem")]
    Shmem,
    /// hugetlbfs or `MAP_HUGETLB` memory.
    #[serde(rename = "hugetlb")]
    Hugetlb,
    /// `[vdso]`.
    #[serde(rename = "vdso")]
    Vdso,
    /// `[vvar]` / `[vvar_vclock]`: kernel data mapped read-only.
    #[serde(rename = "vvar")]
    Vvar,
    /// `[vsyscall]`: the legacy page, not in the process's page tables.
    #[serde(rename = "vsyscall")]
    Vsyscall,
    /// Another kernel-named mapping (`[uprobes]`, ...).
    #[serde(rename = "special")]
    Special,
}

impl VmaKind {
    /// Every kind, in display order.
    pub const ALL: [VmaKind; 11] = [
        VmaKind::Heap,
        VmaKind::Stack,
        VmaKind::Anon,
        VmaKind::FilePrivate,
        VmaKind::FileShared,
        VmaKind::Shmem,
        VmaKind::Hugetlb,
        VmaKind::Vdso,
        VmaKind::Vvar,
        VmaKind::Vsyscall,
        VmaKind::Special,
    ];

    /// The name used in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            VmaKind::Heap => "heap",
            VmaKind::Stack => "stack",
            VmaKind::Anon => "anon",
            VmaKind::FilePrivate => "file-private",
            VmaKind::FileShared => "file-shared",
            VmaKind::Shmem => "shmem",
            VmaKind::Hugetlb => "hugetlb",
            VmaKind::Vdso => "vdso",
            VmaKind::Vvar => "vvar",
            VmaKind::Vsyscall => "vsyscall",
            VmaKind::Special => "special",
        }
    }

    /// Memory that is copied on write between parent and child (private mappings).
    pub fn is_private(self) -> bool {
        matches!(
            self,
            VmaKind::Heap | VmaKind::Stack | VmaKind::Anon | VmaKind::FilePrivate
        )
    }
}

/// Device numbers of the filesystems whose files are shared memory (tmpfs) or huge pages
/// (hugetlbfs), from the target's `/proc/<pid>/mountinfo` (its mount namespace).
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    tmpfs: HashSet<(u32, u32)>,
    hugetlbfs: HashSet<(u32, u32)>,
}

impl Mounts {
    /// Read `/proc/<pid>/mountinfo`; an unreadable one gives an empty table (then only the
    /// kernel's own shmem names are recognised as shmem).
    pub fn of(pid: i32) -> Mounts {
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .map(|s| Mounts::parse(&s))
            .unwrap_or_default()
    }

    /// Parse mountinfo text: `ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS...] - FSTYPE SOURCE SUPER`.
    pub fn parse(text: &str) -> Mounts {
        let mut m = Mounts::default();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let Some(dev) = f.nth(2).and_then(parse_dev_decimal) else {
                continue;
            };
            let Some(fstype) = line
                .split(" - ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            else {
                continue;
            };
            match fstype {
                "tmpfs" | "shmem" => {
                    m.tmpfs.insert(dev);
                }
                "hugetlbfs" => {
                    m.hugetlbfs.insert(dev);
                }
                _ => {}
            }
        }
        m
    }
}

fn parse_dev_decimal(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `fe:01` as maps prints it (hex) -> (254, 1).
fn parse_dev_hex(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((
        u32::from_str_radix(a, 16).ok()?,
        u32::from_str_radix(b, 16).ok()?,
    ))
}

/// Whether the VMA is `MAP_SHARED` (`s` in the fourth perms column).
pub fn is_shared(v: &SmapsEntry) -> bool {
    v.perms.as_bytes().get(3) == Some(&b's')
}

/// The kind of a VMA.
pub fn kind_of(v: &SmapsEntry, mounts: &Mounts) -> VmaKind {
    let p = v.pathname.as_str();
    let shared = is_shared(v);
    match p {
        "[heap]" => return VmaKind::Heap,
        "[vdso]" => return VmaKind::Vdso,
        "[vvar]" | "[vvar_vclock]" => return VmaKind::Vvar,
        "[vsyscall]" => return VmaKind::Vsyscall,
        "" => {
            return if shared {
                VmaKind::Shmem
            } else {
                VmaKind::Anon
            };
        }
        _ => {}
    }
    if p == "[stack]" || p.starts_with("[stack:") {
        return VmaKind::Stack;
    }
    if p.starts_with("[anon_shmem:") {
        return VmaKind::Shmem;
    }
    if p.starts_with("[anon:") {
        return if shared {
            VmaKind::Shmem
        } else {
            VmaKind::Anon
        };
    }
    if p.starts_with('[') {
        return VmaKind::Special;
    }
    let dev = parse_dev_hex(&v.dev);
    if p.starts_with("/anon_hugepage") || dev.is_some_and(|d| mounts.hugetlbfs.contains(&d)) {
        return VmaKind::Hugetlb;
    }
    if !shared {
        return VmaKind::FilePrivate;
    }
    let kernel_shmem = p.starts_with("/dev/zero")
        || p.starts_with("/SYSV")
        || p.starts_with("/memfd:")
        || p.starts_with("/dev/shm/");
    if kernel_shmem || dev.is_some_and(|d| mounts.tmpfs.contains(&d)) {
        VmaKind::Shmem
    } else {
        VmaKind::FileShared
    }
}

fn strip_deleted(p: &str) -> &str {
    p.strip_suffix(" (deleted)").unwrap_or(p)
}

/// Whether `p` (a parent VMA) and `c` (a child VMA) are the same mapping where they
/// overlap: same device and inode, same private/shared flavour, same name, and for files the
/// same file offset at the same address. Permissions may differ (either side may have called
/// `mprotect`).
pub fn same_identity(p: &SmapsEntry, c: &SmapsEntry) -> bool {
    if p.dev != c.dev
        || p.inode != c.inode
        || is_shared(p) != is_shared(c)
        || strip_deleted(&p.pathname) != strip_deleted(&c.pathname)
    {
        return false;
    }
    let file_backed = p.inode != 0 || p.pathname.starts_with('/');
    if !file_backed {
        return true;
    }
    // The file offset mapped at address a is offset + (a - start); equal for every a in the
    // overlap iff offset - start agrees.
    i128::from(p.offset) - i128::from(p.start) == i128::from(c.offset) - i128::from(c.start)
}

/// One piece of a pair's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// `[start, end)` is mapped by parent VMA `p` and child VMA `c`, the same mapping.
    Common {
        /// Index into the parent's VMA list.
        p: usize,
        /// Index into the child's VMA list.
        c: usize,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// `[start, end)` of parent VMA `p` has no counterpart in the child.
    ParentOnly {
        /// Index into the parent's VMA list.
        p: usize,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// `[start, end)` of child VMA `c` has no counterpart in the parent.
    ChildOnly {
        /// Index into the child's VMA list.
        c: usize,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
}

impl Segment {
    /// `(start, end)`.
    pub fn range(&self) -> (u64, u64) {
        match *self {
            Segment::Common { start, end, .. }
            | Segment::ParentOnly { start, end, .. }
            | Segment::ChildOnly { start, end, .. } => (start, end),
        }
    }
}

/// Split a pair's address space into common and one-sided segments, in address order (a
/// parent-only and a child-only segment may cover the same addresses: different mappings).
/// Both lists must be sorted by address and non-overlapping, as `/proc/<pid>/maps` is.
pub fn match_vmas(parent: &[SmapsEntry], child: &[SmapsEntry]) -> Vec<Segment> {
    let mut common: Vec<Segment> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < parent.len() && j < child.len() {
        let (p, c) = (&parent[i], &child[j]);
        let (a, b) = (p.start.max(c.start), p.end.min(c.end));
        if a < b && same_identity(p, c) {
            common.push(Segment::Common {
                p: i,
                c: j,
                start: a,
                end: b,
            });
        }
        if p.end <= c.end {
            i += 1;
        } else {
            j += 1;
        }
    }
    let mut out = common.clone();
    // Whatever of each VMA no common segment covers is one-sided.
    let uncovered = |v: &SmapsEntry, covered: &mut dyn Iterator<Item = (u64, u64)>| {
        let mut pieces = Vec::new();
        let mut cur = v.start;
        for (a, b) in covered {
            if a > cur {
                pieces.push((cur, a));
            }
            cur = cur.max(b);
        }
        if cur < v.end {
            pieces.push((cur, v.end));
        }
        pieces
    };
    for (k, v) in parent.iter().enumerate() {
        let mut cov = common.iter().filter_map(|s| match *s {
            Segment::Common { p, start, end, .. } if p == k => Some((start, end)),
            _ => None,
        });
        for (start, end) in uncovered(v, &mut cov) {
            out.push(Segment::ParentOnly { p: k, start, end });
        }
    }
    for (k, v) in child.iter().enumerate() {
        let mut cov = common.iter().filter_map(|s| match *s {
            Segment::Common { c, start, end, .. } if c == k => Some((start, end)),
            _ => None,
        });
        for (start, end) in uncovered(v, &mut cov) {
            out.push(Segment::ChildOnly { c: k, start, end });
        }
    }
    let order = |s: &Segment| match s {
        Segment::Common { .. } => 0,
        Segment::ParentOnly { .. } => 1,
        Segment::ChildOnly { .. } => 2,
    };
    out.sort_by_key(|s| (s.range().0, order(s)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn vma(start: u64, end: u64, perms: &str, inode: u64, offset: u64, path: &str) -> SmapsEntry {
        SmapsEntry {
            start,
            end,
            perms: perms.into(),
            offset,
            dev: if inode == 0 {
                "00:00".into()
            } else {
                "fe:01".into()
            },
            inode,
            pathname: path.into(),
            ..SmapsEntry::default()
        }
    }

    #[rstest]
    #[case::heap("rw-p", 0, "[heap]", VmaKind::Heap)]
    #[case::stack("rw-p", 0, "[stack]", VmaKind::Stack)]
    #[case::private_anon("rw-p", 0, "", VmaKind::Anon)]
    #[case::named_anon("rw-p", 0, "[anon:jemalloc]", VmaKind::Anon)]
    #[case::shared_anon_is_shmem("rw-s", 5, "/dev/zero (deleted)", VmaKind::Shmem)]
    #[case::memfd_shared("rw-s", 5, "/memfd:pool (deleted)", VmaKind::Shmem)]
    #[case::memfd_private_is_a_private_file_mapping(
        "rw-p",
        5,
        "/memfd:pool (deleted)",
        VmaKind::FilePrivate
    )]
    #[case::sysv("rw-s", 5, "/SYSV00000000 (deleted)", VmaKind::Shmem)]
    #[case::library_text("r-xp", 9, "/usr/lib/libc.so.6", VmaKind::FilePrivate)]
    #[case::shared_file("rw-s", 9, "/var/lib/db/data", VmaKind::FileShared)]
    #[case::anon_hugetlb("rw-p", 9, "/anon_hugepage (deleted)", VmaKind::Hugetlb)]
    #[case::vdso("r-xp", 0, "[vdso]", VmaKind::Vdso)]
    #[case::vvar("r--p", 0, "[vvar]", VmaKind::Vvar)]
    #[case::vsyscall("--xp", 0, "[vsyscall]", VmaKind::Vsyscall)]
    #[case::uprobes("r-xp", 0, "[uprobes]", VmaKind::Special)]
    fn kinds_follow_path_and_flavour(
        #[case] perms: &str,
        #[case] inode: u64,
        #[case] path: &str,
        #[case] kind: VmaKind,
    ) {
        assert_eq!(
            kind_of(&vma(0, 4096, perms, inode, 0, path), &Mounts::default()),
            kind
        );
    }

    #[test]
    fn a_file_on_a_tmpfs_mount_is_shmem_when_shared() {
        let m = Mounts::parse(
            "30 1 0:26 / /dev/shm rw,nosuid - tmpfs tmpfs rw\n31 1 254:1 / / rw - ext4 /dev/vda1 rw\n",
        );
        let mut v = vma(0, 4096, "rw-s", 7, 0, "/run/app/seg");
        v.dev = "00:1a".into(); // 0x1a = 26
        assert_eq!(kind_of(&v, &m), VmaKind::Shmem);
        v.dev = "fe:01".into();
        assert_eq!(kind_of(&v, &m), VmaKind::FileShared);
    }

    #[test]
    fn identical_maps_are_all_common() {
        let p = [
            vma(0x1000, 0x3000, "r-xp", 9, 0, "/bin/x"),
            vma(0x5000, 0x9000, "rw-p", 0, 0, "[heap]"),
        ];
        let s = match_vmas(&p, &p);
        assert_eq!(
            s,
            [
                Segment::Common {
                    p: 0,
                    c: 0,
                    start: 0x1000,
                    end: 0x3000
                },
                Segment::Common {
                    p: 1,
                    c: 1,
                    start: 0x5000,
                    end: 0x9000
                }
            ]
        );
    }

    #[test]
    fn a_heap_grown_in_the_parent_is_common_up_to_the_childs_end_and_one_sided_beyond() {
        let p = [vma(0x5000, 0x9000, "rw-p", 0, 0, "[heap]")];
        let c = [vma(0x5000, 0x7000, "rw-p", 0, 0, "[heap]")];
        assert_eq!(
            match_vmas(&p, &c),
            [
                Segment::Common {
                    p: 0,
                    c: 0,
                    start: 0x5000,
                    end: 0x7000
                },
                Segment::ParentOnly {
                    p: 0,
                    start: 0x7000,
                    end: 0x9000
                }
            ]
        );
    }

    #[test]
    fn an_mprotect_split_in_the_child_stays_common_piece_by_piece() {
        let p = [vma(0x10000, 0x14000, "rw-p", 0, 0, "")];
        let c = [
            vma(0x10000, 0x11000, "rw-p", 0, 0, ""),
            vma(0x11000, 0x12000, "r--p", 0, 0, ""),
            vma(0x12000, 0x14000, "rw-p", 0, 0, ""),
        ];
        let s = match_vmas(&p, &c);
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|x| matches!(x, Segment::Common { .. })));
        let covered: u64 = s.iter().map(|x| x.range().1 - x.range().0).sum();
        assert_eq!(covered, 0x4000);
    }

    #[rstest]
    #[case::different_file(
        vma(0x1000, 0x2000, "r--p", 9, 0, "/a"),
        vma(0x1000, 0x2000, "r--p", 8, 0, "/b")
    )]
    #[case::same_file_other_offset(
        vma(0x1000, 0x2000, "r--p", 9, 0, "/a"),
        vma(0x1000, 0x2000, "r--p", 9, 0x1000, "/a")
    )]
    #[case::private_vs_shared_anon(
        vma(0x1000, 0x2000, "rw-p", 0, 0, ""),
        vma(0x1000, 0x2000, "rw-s", 0, 0, "")
    )]
    #[case::anon_vs_file(
        vma(0x1000, 0x2000, "rw-p", 0, 0, ""),
        vma(0x1000, 0x2000, "rw-p", 9, 0, "/a")
    )]
    fn a_different_mapping_at_the_same_address_is_one_sided_on_both_sides(
        #[case] p: SmapsEntry,
        #[case] c: SmapsEntry,
    ) {
        let s = match_vmas(std::slice::from_ref(&p), std::slice::from_ref(&c));
        assert_eq!(
            s,
            [
                Segment::ParentOnly {
                    p: 0,
                    start: 0x1000,
                    end: 0x2000
                },
                Segment::ChildOnly {
                    c: 0,
                    start: 0x1000,
                    end: 0x2000
                }
            ]
        );
    }

    #[test]
    fn a_deleted_file_still_matches_itself() {
        let p = vma(0x1000, 0x2000, "r-xp", 9, 0, "/usr/bin/x");
        let c = vma(0x1000, 0x2000, "r-xp", 9, 0, "/usr/bin/x (deleted)");
        assert!(same_identity(&p, &c));
    }
}
