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
