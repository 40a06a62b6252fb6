//! What the kernel will show us: real PFNs (CAP_SYS_ADMIN) and the kpage files.
//!
//! Probed, not inferred from the uid: the kernel decides per open file
//! (`file_ns_capable(CAP_SYS_ADMIN)` when pagemap is opened), and containers or `setpriv` can
//! make root powerless or a non-root user capable. The probe runs once per process.

use std::sync::OnceLock;

use super::pagemap::Pagemap;

/// The privilege-dependent facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privilege {
    /// PFNs in pagemap are real (not zeroed by the kernel).
    pub pfn_visible: bool,
    /// /proc/kpagecount and /proc/kpageflags are readable.
    pub kpage_readable: bool,
}

/// Probe the running process's privileges (once; later calls return the cached answer).
pub fn detect() -> Privilege {
    static CACHE: OnceLock<Privilege> = OnceLock::new();
    *CACHE.get_or_init(|| Privilege {
        pfn_visible: probe_pfn_visible(),
        kpage_readable: probe_kpage_readable(),
    })
}

/// Read our own pagemap entry for a stack page we have just written (so it is present):
/// a present entry with PFN 0 means the kernel hides PFNs from us.
fn probe_pfn_visible() -> bool {
    let mut probe = [0u8; 64];
    // Write through a volatile so the page is certainly faulted in and the store is kept.
    // SAFETY: `probe` is a live, writable local array; index 0 is in bounds.
    unsafe { std::ptr::write_volatile(probe.as_mut_ptr(), 1) };
    let ps = crate::kernel::page_size() as u64;
    let page = (probe.as_ptr() as u64) & !(ps - 1);
    let Ok(pm) = Pagemap::open(std::process::id() as i32) else {
        return false;
    };
    let mut e = [0u64; 1];
    if pm.read_into(page, &mut e).is_err() {
        return false;
    }
    std::hint::black_box(&probe);
    let entry = super::pagemap::PagemapEntry(e[0]);
    entry.present() && entry.pfn() != 0
}

fn probe_kpage_readable() -> bool {
    super::kpage::Kpage::open()
        .and_then(|k| k.counts(&[0]).map(|_| ()))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_sees_pfns_and_kpage_files() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: not root, cannot check that PFNs are visible");
            return;
        }
        let p = detect();
        assert!(p.pfn_visible, "root should see PFNs");
        assert!(p.kpage_readable, "root should read /proc/kpagecount");
    }
}
