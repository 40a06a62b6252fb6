//! PAGEMAP_SCAN and the plain-pagemap fallback must agree, page by page, on every category
//! both can see, over ranges whose contents the test controls.

mod mem_support;

use cowscope::mem::pagemap::Pagemap;
use cowscope::mem::scan::{self, PAGE_IS_FILE, PAGE_IS_GUARD, PAGE_IS_HUGE, PAGE_IS_PFNZERO};
use cowscope::mem::scan::{PAGE_IS_PRESENT, ScanMethod};
use mem_support::{Mapping, page_size, thp_window};

fn own() -> Pagemap {
    Pagemap::open(std::process::id() as i32).expect("own pagemap")
}

/// Scan with both paths and compare every page on the categories both know.
/// Returns the per-page categories of the ioctl path.
fn agree(start: u64, end: u64, what: &str) -> Option<Vec<u64>> {
    if !scan::available() {
        eprintln!("SKIP: PAGEMAP_SCAN unavailable (kernel before 6.7)");
        return None;
    }
    let pm = own();
    let fast = scan::scan(&pm, start, end, false).expect("PAGEMAP_SCAN");
    let slow = scan::scan(&pm, start, end, true).expect("fallback");
    assert_eq!(fast.method, ScanMethod::PagemapScan);
    assert_eq!(slow.method, ScanMethod::PagemapRead);
    let common = fast.known & slow.known;
    let (a, b) = (fast.per_page(), slow.per_page());
    assert_eq!(a.len(), b.len());
    for i in 0..a.len() {
        assert_eq!(
            a[i] & common,
            b[i] & common,
            "{what}: page {i} categories differ (ioctl {:#x}, fallback {:#x}, common mask {common:#x})",
            a[i],
            b[i]
        );
    }
    let (ca, cb) = (fast.counts(), slow.counts());
    assert_eq!(
        (ca.pages, ca.present, ca.swapped, ca.file),
        (cb.pages, cb.present, cb.swapped, cb.file)
    );
    Some(a)
}

#[test]
fn populated_unpopulated_and_half_populated_private_memory_agree() {
    let m = Mapping::anon(96, libc::MAP_PRIVATE);
    let ps = page_size();
    for i in (0..32).chain((64..96).step_by(2)) {
        // SAFETY: page i of our own 96-page mapping.
        unsafe { std::ptr::write_volatile(m.ptr.add(i * ps), 1) };
    }
    let Some(c) = agree(m.start(), m.end(), "private") else {
        return;
    };
    assert!(c[..32].iter().all(|&x| x & PAGE_IS_PRESENT != 0));
    assert!(c[32..64].iter().all(|&x| x & PAGE_IS_PRESENT == 0));
    assert_eq!(
        c[64..]
            .iter()
            .filter(|&&x| x & PAGE_IS_PRESENT != 0)
            .count(),
        16
    );
}

#[test]
fn read_faulted_zero_pages_agree() {
    let m = Mapping::anon(16, libc::MAP_PRIVATE);
    for i in (0..m.len).step_by(page_size()) {
        // SAFETY: inside our mapping; a read fault maps the shared zero page.
        unsafe { std::ptr::read_volatile(m.ptr.add(i)) };
    }
    let Some(c) = agree(m.start(), m.end(), "zero pages") else {
        return;
    };
    assert!(c.iter().all(|&x| x & PAGE_IS_PFNZERO != 0), "{c:x?}");
}

#[test]
fn file_backed_and_shared_pages_agree() {
    use std::io::Write;
    let ps = page_size();
    let mut f = tempfile::tempfile().expect("tempfile");
    f.write_all(&vec![0x5a; 16 * ps]).expect("write");
    // SAFETY: a new private read-only mapping of our own temp file.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            16 * ps,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let file = Mapping {
        ptr: p.cast(),
        len: 16 * ps,
    };
    for i in (0..16).step_by(2) {
        // SAFETY: page i of the file mapping; reading maps the page-cache page.
        unsafe { std::ptr::read_volatile(file.ptr.add(i * ps)) };
    }
    let Some(c) = agree(file.start(), file.end(), "file") else {
        return;
    };
    assert!(
        c.iter()
            .step_by(2)
            .all(|&x| x & PAGE_IS_FILE != 0 && x & PAGE_IS_PRESENT != 0)
    );
    let shared = Mapping::anon(16, libc::MAP_SHARED);
    shared.touch_all();
    let Some(c) = agree(shared.start(), shared.end(), "shared anon") else {
        return;
    };
    assert!(c.iter().all(|&x| x & PAGE_IS_FILE != 0));
}

#[test]
fn a_range_spanning_a_hole_between_mappings_agrees() {
    let m = Mapping::anon(48, libc::MAP_PRIVATE);
    m.touch_all();
    let ps = page_size();
    // SAFETY: pages 16..32 of our own mapping; nothing refers to them. Mapping::drop later
    // munmaps the whole range, which is fine for the already-unmapped middle.
    let rc = unsafe { libc::munmap(m.ptr.add(16 * ps).cast(), 16 * ps) };
    assert_eq!(rc, 0);
    let Some(c) = agree(m.start(), m.end(), "hole") else {
        return;
    };
    assert!(c[16..32].iter().all(|&x| x == 0));
}

#[test]
fn guard_regions_agree() {
    const MADV_GUARD_INSTALL: libc::c_int = 102;
    let m = Mapping::anon(16, libc::MAP_PRIVATE);
    m.touch_all();
    let ps = page_size();
    // SAFETY: pages 4..8 of our own mapping; guard install discards their contents, which
    // nothing reads afterwards.
    let rc = unsafe { libc::madvise(m.ptr.add(4 * ps).cast(), 4 * ps, MADV_GUARD_INSTALL) };
    if rc != 0 {
        eprintln!(
            "SKIP: MADV_GUARD_INSTALL unsupported: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let Some(c) = agree(m.start(), m.end(), "guard") else {
        return;
    };
    let pm = own();
    let fast = scan::scan(&pm, m.start(), m.end(), false).expect("scan");
    if fast.known & PAGE_IS_GUARD == 0 {
        eprintln!("SKIP (partly): this kernel's PAGEMAP_SCAN has no PAGE_IS_GUARD");
        return;
    }
    assert!(
        c[4..8]
            .iter()
            .all(|&x| x & PAGE_IS_GUARD != 0 && x & PAGE_IS_PRESENT == 0)
    );
    assert!(c[..4].iter().all(|&x| x & PAGE_IS_GUARD == 0));
}

#[test]
fn a_pmd_mapped_thp_is_huge_on_both_paths() {
    let Some((m, aligned)) = thp_window(3) else {
        return;
    };
    let huge = 2usize << 20;
    let Some(c) = agree(m.start(), m.end(), "thp") else {
        return;
    };
    let first = ((aligned - m.start()) / page_size() as u64) as usize;
    let n = huge / page_size();
    if c[first] & PAGE_IS_HUGE == 0 {
        eprintln!("SKIP: no THP formed");
        return;
    }
    assert!(c[first..first + n].iter().all(|&x| x & PAGE_IS_HUGE != 0));
}
