//! The PAGEMAP_SCAN ioctl (Linux 6.7+).

/// Whether PAGEMAP_SCAN works on this kernel.
pub fn available() -> bool {
    false
}
