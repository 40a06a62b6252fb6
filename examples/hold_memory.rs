//! Map and populate N MiB of private anonymous memory, print `PID START-END`, then sleep
//! until killed (or until stdin closes), so other processes can inspect a known range.
//!
//! `cargo run --release --example hold_memory -- 1024`

use std::io::{Read, Write};

fn main() {
    let mib: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 1024,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: hold_memory [MiB > 0]");
            std::process::exit(2);
        }
    };
    let len = mib << 20;
    let map = cowscope::kernel::AnonMap::new(len, libc::PROT_READ | libc::PROT_WRITE, 0)
        .unwrap_or_else(|e| {
            eprintln!("mmap: {e}");
            std::process::exit(1);
        });
    let ps = cowscope::kernel::page_size();
    for off in (0..len).step_by(ps) {
        // SAFETY: off < len, inside the mapping we just created.
        unsafe { std::ptr::write_volatile((map.addr() + off) as *mut u8, 1) };
    }
    let start = map.addr() as u64;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{} {:x}-{:x}",
        std::process::id(),
        start,
        start + len as u64
    );
    let _ = out.flush();
    drop(out);
    // Block until stdin closes (or forever if it is /dev/null: then sleep).
    let mut buf = [0u8; 1];
    if let Ok(0) = std::io::stdin().read(&mut buf) {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
