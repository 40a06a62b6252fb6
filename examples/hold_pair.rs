//! A forked pair to inspect: map and populate N MiB of private anonymous memory, fork a child
//! (through `fork::subject::spawn`) that writes one byte into every K-th page (copy-on-write
//! copies those pages), print `PARENT CHILD START-END`, then hold both until stdin closes (or sends a byte).
//!
//! `cargo run --release --example hold_pair -- 1024 10` (1 GiB, the child writes every 10th
//! page: 10% diverged). Used by `scripts/bench-inspect.sh`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use cowscope::fork::child::ChildOp;
use cowscope::fork::subject::{SubjectPipes, spawn};

fn arg(n: usize, default: usize, what: &str) -> usize {
    match std::env::args().nth(n).map(|s| s.parse()) {
        None => default,
        Some(Ok(v)) if v > 0 => v,
        Some(_) => {
            eprintln!(
                "usage: hold_pair [MiB > 0] [every K-th page written by the child, K > 0] ({what})"
            );
            std::process::exit(2);
        }
    }
}

fn main() {
    let mib = arg(1, 1024, "MiB");
    let every = arg(2, 10, "K");
    let len = mib << 20;
    let ps = cowscope::kernel::page_size();
    let map = cowscope::kernel::AnonMap::new(len, libc::PROT_READ | libc::PROT_WRITE, 0)
        .unwrap_or_else(|e| {
            eprintln!("mmap: {e}");
            std::process::exit(1);
        });
    let base = map.addr();
    for off in (0..len).step_by(ps) {
        // SAFETY: off < len, inside the mapping we just created.
        unsafe { std::ptr::write_volatile((base + off) as *mut u8, 1) };
    }
    let pipes = SubjectPipes::new().expect("pipes");
    let mut ops = pipes.prologue().to_vec();
    ops.extend((0..len / ps).step_by(every).map(|i| ChildOp::WriteByte {
        addr: base + i * ps,
        byte: 2,
    }));
    ops.extend(pipes.epilogue());
    let (mut child, _) = spawn(pipes, &ops).expect("fork");
    drop(ops);
    child
        .wait_ready(Instant::now() + Duration::from_secs(120))
        .expect("child ready");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{} {} {:x}-{:x}",
        std::process::id(),
        child.pid(),
        base,
        base + len
    );
    let _ = out.flush();
    drop(out);
    // Hold until stdin says anything or closes (feed it from a pipe or fifo).
    let mut buf = [0u8; 1];
    let _ = std::io::stdin().read(&mut buf);
    child.finish(Instant::now() + Duration::from_secs(10));
}
