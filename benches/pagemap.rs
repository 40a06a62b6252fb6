//! In-process costs over one populated 1 GiB private range (262,144 pages) of this process:
//! cowscope's bulk pagemap read, procfs's `PageMap::get_range_info`, PAGEMAP_SCAN, the
//! fallback scan, kpagecount/kpageflags for the range's frames, and the smaps read.
//!
//! `cargo bench --bench pagemap` (root for the kpage benches).

use std::sync::OnceLock;

use cowscope::mem::kpage::Kpage;
use cowscope::mem::pagemap::{Pagemap, PagemapEntry};
use cowscope::mem::{privilege, scan, smaps};

const LEN: usize = 1 << 30;

struct Region {
    start: u64,
    end: u64,
    pfns: Vec<u64>,
}

fn region() -> &'static Region {
    static R: OnceLock<Region> = OnceLock::new();
    R.get_or_init(|| {
        // SAFETY: a fresh private anonymous mapping; it is never unmapped (lives for the run).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap 1 GiB");
        let start = p as u64;
        let end = start + LEN as u64;
        let pm = own();
        let pfns = pm
            .read(start, end)
            .expect("pagemap")
            .into_iter()
            .map(PagemapEntry::pfn)
            .collect();
        Region { start, end, pfns }
    })
}

fn own() -> Pagemap {
    Pagemap::open(std::process::id() as i32).expect("own pagemap")
}

fn main() {
    let _ = region();
    divan::main();
}

#[divan::bench(sample_count = 20)]
fn cowscope_read_into(b: divan::Bencher) {
    let r = region();
    let pm = own();
    let mut buf = vec![0u64; LEN / 4096];
    b.bench_local(|| {
        pm.read_into(r.start, &mut buf).expect("read");
        buf.iter().filter(|&&e| PagemapEntry(e).present()).count()
    });
}

#[divan::bench(sample_count = 20)]
fn procfs_get_range_info(b: divan::Bencher) {
    let r = region();
    let me = procfs::process::Process::myself().expect("procfs self");
    let mut pm = me.pagemap().expect("procfs pagemap");
    let (a, e) = ((r.start / 4096) as usize, (r.end / 4096) as usize);
    b.bench_local(|| pm.get_range_info(a..e).expect("get_range_info").len());
}

#[divan::bench(sample_count = 20)]
fn pagemap_scan_ioctl(b: divan::Bencher) {
    if !scan::available() {
        eprintln!("SKIP: PAGEMAP_SCAN unavailable");
        return;
    }
    let r = region();
    let pm = own();
    b.bench_local(|| {
        scan::scan(&pm, r.start, r.end, false)
            .expect("scan")
            .regions
            .len()
    });
}

#[divan::bench(sample_count = 10)]
fn scan_fallback(b: divan::Bencher) {
    let r = region();
    let pm = own();
    b.bench_local(|| {
        scan::scan(&pm, r.start, r.end, true)
            .expect("scan")
            .regions
            .len()
    });
}

/// The kpage files, or `None` (said on stderr) where they are closed to this process.
fn kpage() -> Option<Kpage> {
    let p = privilege::detect();
    if !p.pfn_visible || !p.kpage_readable {
        eprintln!("SKIP: kpage files need CAP_SYS_ADMIN");
        return None;
    }
    Some(Kpage::open().expect("kpage"))
}

#[divan::bench(sample_count = 10)]
fn kpagecount_of_range(b: divan::Bencher) {
    let Some(k) = kpage() else { return };
    let r = region();
    b.bench_local(|| k.counts(&r.pfns).expect("counts").len());
}

#[divan::bench(sample_count = 10)]
fn kpageflags_of_range(b: divan::Bencher) {
    let Some(k) = kpage() else { return };
    let r = region();
    b.bench_local(|| k.flags(&r.pfns).expect("flags").len());
}

#[divan::bench(sample_count = 10)]
fn smaps_of_own_process(b: divan::Bencher) {
    let r = region();
    b.bench_local(|| smaps::vma_containing(std::process::id() as i32, r.start).expect("smaps"));
}
