//! What the kernel will show us: real PFNs (CAP_SYS_ADMIN) and the kpage files.

/// The privilege-dependent facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privilege {
    /// PFNs in pagemap are real (not zeroed by the kernel).
    pub pfn_visible: bool,
    /// /proc/kpagecount and /proc/kpageflags are readable.
    pub kpage_readable: bool,
}

/// Probe the running process's privileges.
pub fn detect() -> Privilege {
    Privilege {
        pfn_visible: false,
        kpage_readable: false,
    }
}
