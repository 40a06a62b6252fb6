//! Detect the machine facts in [`SystemInfo`](crate::report::SystemInfo).

use crate::report::SystemInfo;

/// The base page size in bytes.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions; _SC_PAGESIZE is always supported.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

/// The selected THP mode, e.g. `madvise`, or `unavailable` without THP support.
pub fn thp_enabled() -> String {
    read_selected("/sys/kernel/mm/transparent_hugepage/enabled")
        .unwrap_or_else(|| "unavailable".into())
}

/// Read a sysfs "choice" file such as `always [madvise] never` and return the bracketed word.
pub fn read_selected(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    parse_selected(&s)
}

/// Parse `always [madvise] never` into `madvise`.
pub fn parse_selected(s: &str) -> Option<String> {
    s.split_whitespace()
        .find(|w| w.starts_with('[') && w.ends_with(']'))
        .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
}

/// PMD THP size in kB, if the kernel has THP.
pub fn thp_pmd_size_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").ok()?;
    s.trim().parse::<u64>().ok().map(|b| b / 1024)
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Clear the soft-dirty bits of every page of `pid` (`echo 4 > /proc/<pid>/clear_refs`).
///
/// # Errors
/// When the file cannot be written (no permission, process gone).
pub fn clear_soft_dirty(pid: i32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"4")
}

/// Probe soft-dirty tracking on a private page of our own: after `clear_refs` 4 its bit 55
/// must be clear, and after a write it must be set. Kernels without CONFIG_MEM_SOFT_DIRTY
/// accept the write to clear_refs but never set the bit. Cached: the probe clears the
/// soft-dirty bits of this whole process.
pub fn soft_dirty_works() -> bool {
    static PROBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        let Ok(mut arena) =
            crate::arena::Arena::new(crate::arena::ArenaConfig::new(page_size()).ledger(false))
        else {
            return false;
        };
        let pid = nix::unistd::getpid().as_raw();
        let addr = arena.base_addr() as u64;
        let bit = |a: u64| {
            crate::mem::pagemap::Pagemap::open(pid)
                .and_then(|pm| pm.read(a, a + page_size() as u64))
                .ok()
                .and_then(|v| v.first().copied())
                .map(|e| e.soft_dirty())
        };
        arena.bytes_mut()[0] = 1;
        if clear_soft_dirty(pid).is_err() || bit(addr) != Some(false) {
            return false;
        }
        arena.bytes_mut()[0] = 2;
        bit(addr) == Some(true)
    })
}

/// Collect every fact, probing privilege and PAGEMAP_SCAN support.
pub fn detect() -> SystemInfo {
    let privilege = crate::mem::privilege::detect();
    SystemInfo {
        kernel_release: kernel_release(),
        page_size: page_size() as u64,
        thp_enabled: thp_enabled(),
        thp_pmd_size_kb: thp_pmd_size_kb(),
        pfn_visible: privilege.pfn_visible,
        kpage_readable: privilege.kpage_readable,
        pagemap_scan: crate::mem::scan::available(),
        soft_dirty: soft_dirty_works(),
        euid: nix::unistd::geteuid().as_raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_selected_picks_bracketed_word() {
        assert_eq!(
            parse_selected("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(
            parse_selected("[always] madvise never").as_deref(),
            Some("always")
        );
        assert_eq!(parse_selected("always madvise never"), None);
    }
}
