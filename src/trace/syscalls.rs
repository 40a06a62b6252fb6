//! The syscalls that release memory (or end a copy-on-write relation), the seccomp filter that
//! stops on exactly those, and the decoding of their arguments into released ranges.
//!
//! Released ranges: `munmap`; `madvise` with MADV_DONTNEED, MADV_FREE, MADV_REMOVE,
//! MADV_DONTNEED_LOCKED or MADV_GUARD_INSTALL (all zap the range's page tables);
//! `mremap` (the old range when the mapping moved, the tail when it shrank, the target of
//! MREMAP_FIXED); `brk` shrinking; `mmap` with MAP_FIXED (it replaces whatever was mapped);
//! `remap_file_pages` (emulated by an internal MAP_FIXED mmap). `execve`/`execveat` end the
//! relation: the filter stops there so the last sample is taken while the old memory is still
//! mapped. The filter lets every other syscall (and every other madvise/mmap) run without a
//! stop.

/// A syscall the tracer acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Traced {
    /// `munmap(addr, len)`.
    Munmap = 1,
    /// `mremap(old, old_len, new_len, flags, new_addr)`.
    Mremap = 2,
    /// `brk(addr)`.
    Brk = 3,
    /// `madvise(addr, len, advice)` with a releasing advice.
    Madvise = 4,
    /// `mmap(addr, len, prot, flags, fd, off)` with MAP_FIXED.
    MmapFixed = 5,
    /// `remap_file_pages(start, size, ...)`.
    RemapFilePages = 6,
    /// `execve` / `execveat`.
    Exec = 7,
}

impl Traced {
    /// From the filter's SECCOMP_RET_DATA.
    pub fn from_data(d: u32) -> Option<Traced> {
        Some(match d {
            1 => Traced::Munmap,
            2 => Traced::Mremap,
            3 => Traced::Brk,
            4 => Traced::Madvise,
            5 => Traced::MmapFixed,
            6 => Traced::RemapFilePages,
            7 => Traced::Exec,
            _ => return None,
        })
    }

    /// The syscall's name, for the report.
    pub fn name(self) -> &'static str {
        match self {
            Traced::Munmap => "munmap",
            Traced::Mremap => "mremap",
            Traced::Brk => "brk",
            Traced::Madvise => "madvise",
            Traced::MmapFixed => "mmap_fixed",
            Traced::RemapFilePages => "remap_file_pages",
            Traced::Exec => "execve",
        }
    }
}

/// AUDIT_ARCH of the native syscall ABI.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_ARCH: u32 = 0xC000_003E;
/// AUDIT_ARCH of the native syscall ABI.
#[cfg(target_arch = "aarch64")]
pub const NATIVE_ARCH: u32 = 0xC000_00B7;

/// The x32 ABI bit in x86_64 syscall numbers (same AUDIT_ARCH as x86_64).
#[cfg(target_arch = "x86_64")]
const X32_BIT: u32 = 0x4000_0000;

/// madvise advices that zap page tables.
pub const RELEASING_ADVICE: [u64; 5] = [
    4,   // MADV_DONTNEED
    8,   // MADV_FREE
    9,   // MADV_REMOVE
    24,  // MADV_DONTNEED_LOCKED
    102, // MADV_GUARD_INSTALL
];
const MAP_FIXED: u64 = 0x10;
const MREMAP_FIXED: u64 = 2;

/// (syscall number, what it is) for the native ABI. mmap and madvise are listed, but only
/// some of their calls matter: see [`matters`].
pub fn table() -> Vec<(u32, Traced)> {
    let mut t = vec![
        (libc::SYS_munmap as u32, Traced::Munmap),
        (libc::SYS_mremap as u32, Traced::Mremap),
        (libc::SYS_brk as u32, Traced::Brk),
        (libc::SYS_madvise as u32, Traced::Madvise),
        (libc::SYS_mmap as u32, Traced::MmapFixed),
        (libc::SYS_remap_file_pages as u32, Traced::RemapFilePages),
        (libc::SYS_execve as u32, Traced::Exec),
        (libc::SYS_execveat as u32, Traced::Exec),
    ];
    // x32 has its own execve/execveat numbers (520, 545); the rest share x86_64's.
    #[cfg(target_arch = "x86_64")]
    t.extend([(520, Traced::Exec), (545, Traced::Exec)]);
    t
}

/// What a syscall number of `arch` is, if the tracer acts on it.
pub fn lookup(arch: u32, nr: u64) -> Option<Traced> {
    if arch != NATIVE_ARCH {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    let nr = nr & !u64::from(X32_BIT);
    table()
        .into_iter()
        .find(|&(n, _)| u64::from(n) == nr)
        .map(|(_, t)| t)
}

/// Whether this call of `t` releases memory or ends the relation (the same test the filter
/// makes: mmap only with MAP_FIXED, madvise only with a releasing advice).
pub fn matters(t: Traced, args: &[u64; 6]) -> bool {
    match t {
        Traced::MmapFixed => args[3] & MAP_FIXED != 0,
        Traced::Madvise => RELEASING_ADVICE.contains(&(args[2] & 0xffff_ffff)),
        _ => true,
    }
}

/// A half-open page-aligned range of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

fn page_up(x: u64, ps: u64) -> u64 {
    x.checked_add(ps - 1).map_or(!(ps - 1), |v| v & !(ps - 1))
}

fn range(start: u64, len: u64, ps: u64) -> Option<Range> {
    let end = start.checked_add(page_up(len, ps))?;
    (end > start).then_some(Range {
        start: start & !(ps - 1),
        end,
    })
}

/// The ranges a successful call released. `rval` is the syscall's return value (the new brk,
/// mremap's new address); `old_brk` the program break before a `brk` call.
pub fn released(
    t: Traced,
    args: &[u64; 6],
    rval: i64,
    is_error: bool,
    old_brk: Option<u64>,
    ps: u64,
) -> Vec<Range> {
    let enomem = is_error && rval == -(libc::ENOMEM as i64);
    match t {
        Traced::Munmap if !is_error => range(args[0], args[1], ps).into_iter().collect(),
        // madvise applies the advice to every mapped part and then reports ENOMEM for a hole.
        Traced::Madvise if !is_error || enomem => range(args[0], args[1], ps).into_iter().collect(),
        Traced::MmapFixed | Traced::RemapFilePages if !is_error => {
            range(args[0], args[1], ps).into_iter().collect()
        }
        Traced::Mremap if !is_error => {
            let (old, old_len, new_len, flags) = (args[0], args[1], args[2], args[3]);
            let new = rval as u64;
            let mut out = Vec::new();
            if old_len == 0 {
                // Duplicating a shared mapping releases nothing.
            } else if new != old {
                out.extend(range(old, old_len, ps));
            } else if page_up(new_len, ps) < page_up(old_len, ps) {
                out.extend(range(
                    old + page_up(new_len, ps),
                    page_up(old_len, ps) - page_up(new_len, ps),
                    ps,
                ));
            }
            if flags & MREMAP_FIXED != 0 {
                out.extend(range(new, new_len, ps));
            }
            out
        }
        Traced::Brk => {
            let new = rval as u64;
            match old_brk {
                Some(old) if page_up(new, ps) < page_up(old, ps) => {
                    vec![Range {
                        start: page_up(new, ps),
                        end: page_up(old, ps),
                    }]
                }
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// One BPF instruction (`struct sock_filter`).
fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
#[cfg(target_arch = "x86_64")]
const BPF_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data` (little-endian: the low word of an argument first).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn off_arg(i: u32) -> u32 {
    16 + 8 * i
}

/// The filter: SECCOMP_RET_TRACE (with a [`Traced`] code as data) for exactly the calls
/// [`matters`] selects on the native ABI, SECCOMP_RET_ALLOW for everything else. Calls of a
/// foreign ABI (32-bit x86 programs) pass untracked; the report says so when such a program
/// is exec'd.
pub fn filter() -> Vec<libc::sock_filter> {
    let allow = libc::SECCOMP_RET_ALLOW;
    let trace = |t: Traced| libc::SECCOMP_RET_TRACE | t as u32;
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, NATIVE_ARCH, 1, 0),
        stmt(BPF_RET_K, allow),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.push(stmt(BPF_AND_K, !X32_BIT));
    for (nr, t) in table() {
        match t {
            Traced::MmapFixed => {
                // nr? -> load flags; MAP_FIXED? -> trace : allow
                p.push(jump(BPF_JEQ_K, nr, 0, 4));
                p.push(stmt(BPF_LD_W_ABS, off_arg(3)));
                p.push(jump(BPF_JSET_K, MAP_FIXED as u32, 0, 1));
                p.push(stmt(BPF_RET_K, trace(t)));
                p.push(stmt(BPF_RET_K, allow));
            }
            Traced::Madvise => {
                let n = RELEASING_ADVICE.len() as u8;
                p.push(jump(BPF_JEQ_K, nr, 0, n + 3));
                p.push(stmt(BPF_LD_W_ABS, off_arg(2)));
                for (i, &a) in RELEASING_ADVICE.iter().enumerate() {
                    let to_trace = n - 1 - i as u8;
                    let jf = if i as u8 == n - 1 { 1 } else { 0 };
                    p.push(jump(BPF_JEQ_K, a as u32, to_trace, jf));
                }
                p.push(stmt(BPF_RET_K, trace(t)));
                p.push(stmt(BPF_RET_K, allow));
            }
            _ => {
                p.push(jump(BPF_JEQ_K, nr, 0, 1));
                p.push(stmt(BPF_RET_K, trace(t)));
            }
        }
    }
    p.push(stmt(BPF_RET_K, allow));
    p
}

/// Run a filter over one syscall, as the kernel would (the subset of classic BPF that
/// [`filter`] emits). For tests and for checking the program before it is installed.
pub fn run_filter(prog: &[libc::sock_filter], arch: u32, nr: u32, args: &[u64; 6]) -> Option<u32> {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    while let Some(ins) = prog.get(pc) {
        pc += 1;
        match ins.code {
            BPF_LD_W_ABS => {
                let o = ins.k as usize;
                let w = data.get(o..o + 4)?;
                acc = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            }
            #[cfg(target_arch = "x86_64")]
            BPF_AND_K => acc &= ins.k,
            BPF_JEQ_K => pc += usize::from(if acc == ins.k { ins.jt } else { ins.jf }),
            BPF_JSET_K => pc += usize::from(if acc & ins.k != 0 { ins.jt } else { ins.jf }),
            BPF_RET_K => return Some(ins.k),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const PS: u64 = 4096;

    fn verdict(nr: i64, args: [u64; 6]) -> u32 {
        run_filter(&filter(), NATIVE_ARCH, nr as u32, &args).expect("filter returns")
    }
    fn traced(t: Traced) -> u32 {
        libc::SECCOMP_RET_TRACE | t as u32
    }

    #[rstest]
    #[case::munmap(libc::SYS_munmap, [0x1000, 4096, 0, 0, 0, 0], traced(Traced::Munmap))]
    #[case::mremap(libc::SYS_mremap, [0; 6], traced(Traced::Mremap))]
    #[case::brk(libc::SYS_brk, [0; 6], traced(Traced::Brk))]
    #[case::madvise_dontneed(libc::SYS_madvise, [0, 0, 4, 0, 0, 0], traced(Traced::Madvise))]
    #[case::madvise_free(libc::SYS_madvise, [0, 0, 8, 0, 0, 0], traced(Traced::Madvise))]
    #[case::madvise_remove(libc::SYS_madvise, [0, 0, 9, 0, 0, 0], traced(Traced::Madvise))]
    #[case::madvise_dontneed_locked(libc::SYS_madvise, [0, 0, 24, 0, 0, 0], traced(Traced::Madvise))]
    #[case::madvise_guard_install(libc::SYS_madvise, [0, 0, 102, 0, 0, 0], traced(Traced::Madvise))]
    #[case::madvise_hugepage_runs_free(libc::SYS_madvise, [0, 0, 14, 0, 0, 0], libc::SECCOMP_RET_ALLOW)]
    #[case::madvise_collapse_is_no_release(libc::SYS_madvise, [0, 0, 25, 0, 0, 0], libc::SECCOMP_RET_ALLOW)]
    #[case::mmap_fixed(libc::SYS_mmap, [0, 0, 3, 0x32, 0, 0], traced(Traced::MmapFixed))]
    #[case::mmap_anywhere_runs_free(libc::SYS_mmap, [0, 0, 3, 0x22, 0, 0], libc::SECCOMP_RET_ALLOW)]
    #[case::mmap_fixed_noreplace_runs_free(libc::SYS_mmap, [0, 0, 3, 0x100022, 0, 0], libc::SECCOMP_RET_ALLOW)]
    #[case::execve(libc::SYS_execve, [0; 6], traced(Traced::Exec))]
    #[case::execveat(libc::SYS_execveat, [0; 6], traced(Traced::Exec))]
    #[case::read_runs_free(libc::SYS_read, [0; 6], libc::SECCOMP_RET_ALLOW)]
    #[case::mprotect_runs_free(libc::SYS_mprotect, [0; 6], libc::SECCOMP_RET_ALLOW)]
    fn the_filter_stops_on_exactly_the_releasing_calls(
        #[case] nr: i64,
        #[case] args: [u64; 6],
        #[case] want: u32,
    ) {
        assert_eq!(verdict(nr, args), want);
        // The decoder the tracer uses in --syscalls mode agrees with the filter.
        let by_table = lookup(NATIVE_ARCH, nr as u64).filter(|&t| matters(t, &args));
        assert_eq!(
            by_table.map(traced),
            (want != libc::SECCOMP_RET_ALLOW).then_some(want)
        );
    }

    #[test]
    fn a_foreign_abi_passes() {
        let i386 = 0x4000_0003;
        assert_eq!(
            run_filter(&filter(), i386, 91, &[0; 6]),
            Some(libc::SECCOMP_RET_ALLOW)
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_are_traced_too() {
        let nr = (libc::SYS_munmap as u32) | X32_BIT;
        assert_eq!(
            run_filter(&filter(), NATIVE_ARCH, nr, &[0; 6]),
            Some(traced(Traced::Munmap))
        );
        assert_eq!(lookup(NATIVE_ARCH, u64::from(nr)), Some(Traced::Munmap));
    }

    fn r(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    #[rstest]
    #[case::munmap_rounds_the_length_up(Traced::Munmap, [0x10000, 5000, 0, 0, 0, 0], 0, false, None, vec![r(0x10000, 0x12000)])]
    #[case::failed_munmap_released_nothing(Traced::Munmap, [0x10000, 4096, 0, 0, 0, 0], -22, true, None, vec![])]
    #[case::madvise_over_a_hole_still_released(Traced::Madvise, [0x10000, 8192, 4, 0, 0, 0], -12, true, None, vec![r(0x10000, 0x12000)])]
    #[case::mremap_shrink_releases_the_tail(Traced::Mremap, [0x10000, 0x4000, 0x1000, 0, 0, 0], 0x10000, false, None, vec![r(0x11000, 0x14000)])]
    #[case::mremap_move_releases_the_old_range(Traced::Mremap, [0x10000, 0x2000, 0x4000, 1, 0, 0], 0x90000, false, None, vec![r(0x10000, 0x12000)])]
    #[case::mremap_fixed_also_replaced_the_target(Traced::Mremap, [0x10000, 0x1000, 0x1000, 3, 0x50000, 0], 0x50000, false, None, vec![r(0x10000, 0x11000), r(0x50000, 0x51000)])]
    #[case::mremap_grow_in_place_releases_nothing(Traced::Mremap, [0x10000, 0x1000, 0x3000, 0, 0, 0], 0x10000, false, None, vec![])]
    #[case::brk_shrink(Traced::Brk, [0x20800, 0, 0, 0, 0, 0], 0x20800, false, Some(0x25000), vec![r(0x21000, 0x25000)])]
    #[case::brk_grow(Traced::Brk, [0x30000, 0, 0, 0, 0, 0], 0x30000, false, Some(0x25000), vec![])]
    #[case::brk_unknown_before(Traced::Brk, [0x20000, 0, 0, 0, 0, 0], 0x20000, false, None, vec![])]
    #[case::mmap_fixed(Traced::MmapFixed, [0x40000, 4096, 3, 0x32, 0, 0], 0x40000, false, None, vec![r(0x40000, 0x41000)])]
    #[case::exec_releases_nothing_itself(Traced::Exec, [0; 6], 0, false, None, vec![])]
    fn released_ranges(
        #[case] t: Traced,
        #[case] args: [u64; 6],
        #[case] rval: i64,
        #[case] is_error: bool,
        #[case] old_brk: Option<u64>,
        #[case] want: Vec<Range>,
    ) {
        assert_eq!(released(t, &args, rval, is_error, old_brk, PS), want);
    }
}
