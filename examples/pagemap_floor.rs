//! The physical floor for `cowscope pages`: one process, one large `pread` per 64 Ki pagemap
//! entries, counting bits. No smaps, no kpage files, no JSON.
//!
//! `pagemap_floor PID START-END` (hex)

use std::os::unix::fs::FileExt;

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
        eprintln!("usage: pagemap_floor PID START-END");
        std::process::exit(2);
    };
    let f = match std::fs::File::open(format!("/proc/{pid}/pagemap")) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("open pagemap: {e}");
            std::process::exit(2);
        }
    };
    const CHUNK: usize = 1 << 16;
    let mut buf = vec![0u8; CHUNK * 8];
    let (mut present, mut exclusive, mut pages) = (0u64, 0u64, 0u64);
    let mut cur = start / 4096;
    let last = end / 4096;
    while cur < last {
        let n = ((last - cur) as usize).min(CHUNK);
        if let Err(e) = f.read_exact_at(&mut buf[..n * 8], cur * 8) {
            eprintln!("pread: {e}");
            std::process::exit(1);
        }
        for w in buf[..n * 8].chunks_exact(8) {
            let e = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            present += e >> 63;
            exclusive += (e >> 56) & 1;
        }
        pages += n as u64;
        cur += n as u64;
    }
    println!("pages {pages} present {present} exclusive {exclusive}");
}
