//! Kernel facts about memory this test controls, read through cowscope's evidence readers.
//! Each case is named after what it proves (cf. the kernel's selftests/mm/cow.c).

mod mem_support;

use cowscope::mem::kpage::Kpage;
use cowscope::mem::pagemap::Pagemap;
use cowscope::mem::privilege;
use cowscope::mem::smaps;
use mem_support::{BlockedChild, Mapping, page_size};

const PAGES: usize = 64;

fn own() -> Pagemap {
    Pagemap::open(std::process::id() as i32).expect("open own pagemap")
}

#[test]
fn populated_private_mapping_is_present_and_exclusive_in_every_page() {
    let m = Mapping::anon(PAGES, libc::MAP_PRIVATE);
    m.touch_all();
    let e = own().read(m.start(), m.end()).expect("read pagemap");
    assert_eq!(e.len(), PAGES);
    for (i, p) in e.iter().enumerate() {
        assert!(p.present(), "page {i} not present: {p:?}");
        assert!(p.exclusive(), "page {i} not exclusive: {p:?}");
        assert!(
            !p.file_or_shared(),
            "page {i} is private anon, not file/shared"
        );
        assert!(!p.swapped(), "page {i} swapped");
    }
    if privilege::detect().pfn_visible {
        let mut pfns: Vec<u64> = e.iter().map(|p| p.pfn()).collect();
        assert!(pfns.iter().all(|&p| p != 0));
        pfns.sort_unstable();
        pfns.dedup();
        assert_eq!(pfns.len(), PAGES, "every private page has its own frame");
    }
}

#[test]
fn unpopulated_mapping_is_not_present() {
    let m = Mapping::anon(PAGES, libc::MAP_PRIVATE);
    let e = own().read(m.start(), m.end()).expect("read pagemap");
    assert!(
        e.iter()
            .all(|p| !p.present() && !p.swapped() && p.pfn() == 0)
    );
}

#[test]
fn after_fork_untouched_pages_share_frames_with_mapcount_2() {
    let p = privilege::detect();
    if !p.pfn_visible || !p.kpage_readable {
        eprintln!("SKIP: PFNs not visible or kpage files unreadable (need CAP_SYS_ADMIN)");
        return;
    }
    let m = Mapping::anon(PAGES, libc::MAP_PRIVATE);
    m.touch_all();
    let child = BlockedChild::fork();
    // Opened after the fork, per pid: a handle opened before would read the parent.
    let parent = own().read(m.start(), m.end()).expect("parent pagemap");
    let kid = Pagemap::open(child.pid)
        .expect("child pagemap")
        .read(m.start(), m.end())
        .expect("read child pagemap");
    let pfns: Vec<u64> = parent.iter().map(|e| e.pfn()).collect();
    for i in 0..PAGES {
        assert!(
            parent[i].present() && kid[i].present(),
            "page {i} not present in both"
        );
        assert_eq!(
            parent[i].pfn(),
            kid[i].pfn(),
            "page {i}: parent and child frames differ"
        );
        assert!(
            !parent[i].exclusive() && !kid[i].exclusive(),
            "page {i} still exclusive"
        );
    }
    let counts = Kpage::open()
        .expect("kpage")
        .counts(&pfns)
        .expect("kpagecount");
    assert!(
        counts.iter().all(|&c| c == 2),
        "kpagecount not 2: {counts:?}"
    );
    let flags = Kpage::open()
        .expect("kpage")
        .flags(&pfns)
        .expect("kpageflags");
    assert!(
        flags.iter().all(|f| f.anon()),
        "shared COW pages are anonymous"
    );
    drop(child);
}

#[test]
fn map_shared_page_mapped_twice_is_not_exclusive() {
    // Two MAP_SHARED views of one memfd: each shmem page is then mapped by two page tables.
    // (A fork would not do: fork copies no page tables for shared VMAs, the child faults
    // them in lazily, so the parent's pages would stay exclusive.)
    let len = PAGES * page_size();
    // SAFETY: the name is a valid NUL-terminated string; flags are plain constants.
    let fd = unsafe { libc::memfd_create(c"cowscope-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is the memfd we just created.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    nix::unistd::ftruncate(&fd, len as i64).expect("ftruncate");
    let map = || {
        // SAFETY: a new shared mapping of our own memfd at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Mapping { ptr: p.cast(), len }
    };
    let a = map();
    let b = map();
    a.touch_all();
    let once = own().read(a.start(), a.end()).expect("pagemap a");
    assert!(once.iter().all(|e| e.present() && e.file_or_shared()));
    for i in (0..len).step_by(page_size()) {
        // SAFETY: i < len inside mapping b; reading faults in the existing shmem page.
        unsafe { std::ptr::read_volatile(b.ptr.add(i)) };
    }
    let ea = own().read(a.start(), a.end()).expect("pagemap a");
    let eb = own().read(b.start(), b.end()).expect("pagemap b");
    for i in 0..PAGES {
        assert!(
            ea[i].present() && eb[i].present(),
            "page {i} not present in both views"
        );
        assert!(
            ea[i].file_or_shared() && eb[i].file_or_shared(),
            "page {i} lacks bit 61"
        );
        assert!(
            !ea[i].exclusive() && !eb[i].exclusive(),
            "page {i} mapped twice but exclusive"
        );
        if privilege::detect().pfn_visible {
            assert_eq!(ea[i].pfn(), eb[i].pfn(), "page {i}: two views, two frames");
        }
    }
}

#[test]
fn madv_hugepage_range_is_one_thp_with_anon_huge_pages_2048_kb() {
    let mode = cowscope::kernel::thp_enabled();
    if mode == "never" || mode == "unavailable" {
        eprintln!("SKIP: THP is {mode}");
        return;
    }
    let huge = 2 << 20;
    let m = Mapping::anon(2 * huge / page_size(), libc::MAP_PRIVATE);
    let aligned = (m.start() + huge as u64 - 1) & !(huge as u64 - 1);
    // SAFETY: [aligned, aligned + 2 MiB) lies inside our own 4 MiB mapping; MADV_HUGEPAGE only
    // changes how future faults are served.
    let rc = unsafe { libc::madvise(aligned as *mut libc::c_void, huge, libc::MADV_HUGEPAGE) };
    assert_eq!(rc, 0, "madvise: {}", std::io::Error::last_os_error());
    for off in (0..huge).step_by(page_size()) {
        // SAFETY: inside the aligned 2 MiB window of our mapping.
        unsafe { std::ptr::write_volatile((aligned as *mut u8).add(off), 7) };
    }
    let v = smaps::vma_containing(std::process::id() as i32, aligned).expect("smaps");
    if v.anon_huge_pages_kb == 0 {
        eprintln!("SKIP: no THP formed (memory fragmented?); AnonHugePages 0 kB");
        return;
    }
    assert_eq!(v.anon_huge_pages_kb, 2048, "{v:?}");
    assert!(
        v.has_flag("hg"),
        "MADV_HUGEPAGE VMA lacks the hg flag: {:?}",
        v.vm_flags
    );
    let e = own().read(aligned, aligned + huge as u64).expect("pagemap");
    assert!(e.iter().all(|p| p.present() && p.exclusive()));
    let p = privilege::detect();
    if !p.pfn_visible || !p.kpage_readable {
        eprintln!("SKIP (partly): no PFNs/kpageflags, cannot check the thp flag");
        return;
    }
    let pfns: Vec<u64> = e.iter().map(|p| p.pfn()).collect();
    assert!(
        pfns.windows(2).all(|w| w[1] == w[0] + 1),
        "THP frames are contiguous"
    );
    let flags = Kpage::open().expect("kpage").flags(&pfns).expect("flags");
    assert!(
        flags.iter().all(|f| f.thp() && f.anon()),
        "every page carries thp"
    );
    assert!(flags[0].compound_head());
    assert!(flags[1..].iter().all(|f| f.compound_tail()));
}

#[test]
fn kpage_reads_preserve_input_order_across_runs() {
    let p = privilege::detect();
    if !p.pfn_visible || !p.kpage_readable {
        eprintln!("SKIP: PFNs not visible or kpage files unreadable");
        return;
    }
    let m = Mapping::anon(PAGES, libc::MAP_PRIVATE);
    m.touch_all();
    let e = own().read(m.start(), m.end()).expect("pagemap");
    let mut pfns: Vec<u64> = e.iter().map(|p| p.pfn()).collect();
    pfns.reverse();
    pfns.push(pfns[0]); // a duplicate
    let k = Kpage::open().expect("kpage");
    let bulk = k.counts(&pfns).expect("counts");
    for (i, &pfn) in pfns.iter().enumerate() {
        assert_eq!(bulk[i], k.counts(&[pfn]).expect("one")[0], "entry {i}");
    }
}
