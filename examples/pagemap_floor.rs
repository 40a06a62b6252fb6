//! The physical floor for `cowscope pages`: one process, one thread, large `pread`s over the
//! pagemap (64 Ki entries each), counting bits. No JSON, no per-VMA bookkeeping.
//!
//! `pagemap_floor PID START-END [--smaps] [--kpage]`
//!
//! - default: pagemap only (the floor named in issue 3);
//! - `--smaps`: also read `/proc/PID/smaps` whole (the kernel walks the page tables again);
//! - `--kpage`: also read kpagecount and kpageflags for every present frame (sorted, one
//!   `pread` per run of frames at most 4 apart), i.e. the same evidence `cowscope pages`
//!   collects as root, read as simply as possible.

use std::io::Read;
use std::os::unix::fs::FileExt;

fn die(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| {
        let pid: i32 = args.get(1)?.parse().ok()?;
        let (a, b) = args.get(2)?.split_once('-')?;
        let a = u64::from_str_radix(a.trim_start_matches("0x"), 16).ok()?;
        let b = u64::from_str_radix(b.trim_start_matches("0x"), 16).ok()?;
        Some((pid, a, b))
    })();
    let Some((pid, start, end)) = parsed else {
        die("usage: pagemap_floor PID START-END [--smaps] [--kpage]")
    };
    let with_smaps = args.iter().any(|a| a == "--smaps");
    let with_kpage = args.iter().any(|a| a == "--kpage");
    let f = std::fs::File::open(format!("/proc/{pid}/pagemap"))
        .unwrap_or_else(|e| die(&format!("open pagemap: {e}")));
    const CHUNK: usize = 1 << 16;
    let mut buf = vec![0u8; CHUNK * 8];
    let (mut present, mut exclusive, mut pages) = (0u64, 0u64, 0u64);
    let mut pfns: Vec<u64> = Vec::new();
    let mut cur = start / 4096;
    let last = end / 4096;
    while cur < last {
        let n = ((last - cur) as usize).min(CHUNK);
        if let Err(e) = f.read_exact_at(&mut buf[..n * 8], cur * 8) {
            die(&format!("pread: {e}"));
        }
        for w in buf[..n * 8].chunks_exact(8) {
            let e = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            present += e >> 63;
            exclusive += (e >> 56) & 1;
            if with_kpage && e >> 63 == 1 {
                pfns.push(e & ((1 << 55) - 1));
            }
        }
        pages += n as u64;
        cur += n as u64;
    }
    println!("pages {pages} present {present} exclusive {exclusive}");
    if with_smaps {
        let mut s = String::with_capacity(64 << 10);
        std::fs::File::open(format!("/proc/{pid}/smaps"))
            .and_then(|mut f| f.read_to_string(&mut s))
            .unwrap_or_else(|e| die(&format!("smaps: {e}")));
        println!("smaps {} bytes", s.len());
    }
    if with_kpage {
        pfns.sort_unstable();
        let mut sum = [0u64; 2];
        for (k, path) in ["/proc/kpagecount", "/proc/kpageflags"].iter().enumerate() {
            let kf = std::fs::File::open(path).unwrap_or_else(|e| die(&format!("{path}: {e}")));
            let mut i = 0;
            let mut scratch = vec![0u8; 0];
            while i < pfns.len() {
                let first = pfns[i];
                let mut j = i + 1;
                while j < pfns.len() && pfns[j] - pfns[j - 1] <= 4 && pfns[j] - first < 1 << 16 {
                    j += 1;
                }
                let n = (pfns[j - 1] - first + 1) as usize;
                scratch.resize(n * 8, 0);
                if let Err(e) = kf.read_exact_at(&mut scratch, first * 8) {
                    die(&format!("{path}: {e}"));
                }
                for &p in &pfns[i..j] {
                    let o = ((p - first) * 8) as usize;
                    let v = u64::from_ne_bytes(scratch[o..o + 8].try_into().unwrap_or([0; 8]));
                    sum[k] = sum[k].wrapping_add(v);
                }
                i = j;
            }
        }
        println!("kpagecount sum {} kpageflags xsum {}", sum[0], sum[1]);
    }
}
