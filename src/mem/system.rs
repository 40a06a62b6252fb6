//! [`SystemInfo`]: the machine facts that decide what the evidence can prove (privilege,
//! PAGEMAP_SCAN, soft-dirty, THP mode), probed once per process.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::kernel;

/// Facts about the machine that decide what the evidence can prove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SystemInfo {
    /// `uname -r`.
    pub kernel_release: String,
    /// Base page size in bytes.
    pub page_size: u64,
    /// The selected mode of `/sys/kernel/mm/transparent_hugepage/enabled`
    /// (`always`, `madvise`, `never`), or `unavailable`.
    pub thp_enabled: String,
    /// PMD-sized THP in kB (`hpage_pmd_size`), when the kernel has THP.
    pub thp_pmd_size_kb: Option<u64>,
    /// Whether `/proc/<pid>/pagemap` shows real PFNs to us (needs CAP_SYS_ADMIN). When false,
    /// PFN 0 means "unknown" and PFN equality proves nothing.
    pub pfn_visible: bool,
    /// Whether `/proc/kpagecount` and `/proc/kpageflags` can be read.
    pub kpage_readable: bool,
    /// Whether the PAGEMAP_SCAN ioctl (Linux 6.7+) works here and was used: false also under
    /// `--no-scan` (`inspect`, `trace`), which takes the paths of a kernel without it.
    pub pagemap_scan: bool,
    /// Whether soft-dirty tracking works (CONFIG_MEM_SOFT_DIRTY: `clear_refs` 4, then pagemap
    /// bit 55 marks pages written since). When true, fork-report also says which pages each
    /// process wrote after the fork.
    #[serde(default)]
    pub soft_dirty: bool,
    /// Effective user id of the process that collected the evidence.
    pub euid: u32,
}

/// Collect every fact, probing privilege, PAGEMAP_SCAN and soft-dirty support.
pub fn detect() -> SystemInfo {
    let privilege = super::privilege::detect();
    SystemInfo {
        kernel_release: kernel::kernel_release(),
        page_size: kernel::page_size() as u64,
        thp_enabled: kernel::thp_enabled(),
        thp_pmd_size_kb: kernel::thp_pmd_size_kb(),
        pfn_visible: privilege.pfn_visible,
        kpage_readable: privilege.kpage_readable,
        pagemap_scan: super::scan::available(),
        soft_dirty: soft_dirty_works(),
        euid: nix::unistd::geteuid().as_raw(),
    }
}

/// Whether soft-dirty tracking works here; probed once (see [`soft_dirty_probe`]), since the
/// probe clears the soft-dirty bits of this whole process.
pub fn soft_dirty_works() -> bool {
    static PROBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| soft_dirty_probe() == Some(true))
}

/// Probe soft-dirty tracking (pagemap bit 55) on a private page of our own: after
/// `clear_refs` 4 its bit must be clear, and after a write it must be set. Kernels without
/// CONFIG_MEM_SOFT_DIRTY accept the write to clear_refs but never set the bit. `None` when the
/// probe cannot run (no /proc, clear_refs not writable, page not present).
pub fn soft_dirty_probe() -> Option<bool> {
    let ps = kernel::page_size();
    let mut buf = vec![0u8; 3 * ps];
    let base = buf.as_ptr() as usize;
    let off = (ps - base % ps) % ps; // first page-aligned byte inside the buffer
    let addr = (base + off) as u64;
    let pm = super::pagemap::Pagemap::open(std::process::id() as i32).ok()?;
    let entry = |pm: &super::pagemap::Pagemap| {
        pm.read(addr, addr + ps as u64)
            .ok()
            .and_then(|v| v.first().copied())
    };
    buf[off] = 1; // fault the page in before clearing
    kernel::clear_soft_dirty(std::process::id() as i32).ok()?;
    let cleared = entry(&pm)?;
    // black_box keeps the write from being optimised away or moved past the pagemap read.
    *std::hint::black_box(&mut buf[off]) = 2;
    let written = entry(&pm)?;
    std::hint::black_box(&buf);
    if !written.present() {
        return None;
    }
    Some(!cleared.soft_dirty() && written.soft_dirty())
}
