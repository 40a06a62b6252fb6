//! Costs of the stack stages on a real stack: Debian's python3 asleep in `time.sleep` (about 15
//! frames through its stripped binary, unwound with `.eh_frame` CFI). The registers and 64 KiB
//! of its stack are captured once at a ptrace stop and the process is killed; the benches
//! unwind that copy (what a perf sample carries) and symbolize its frames.
//!
//! `cargo bench --bench stacks` (root, or ptrace permission over its own children).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use cowscope::stacks::Loc;
use cowscope::stacks::modules::Modules;
use cowscope::stacks::symbols::symbolize;
use cowscope::stacks::unwind::{Unwinder, UserRegs};
use nix::sys::ptrace;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

struct Captured {
    pid: i32,
    regs: UserRegs,
    stack: Vec<u8>,
    maps: Vec<cowscope::mem::smaps::SmapsEntry>,
    locs: Vec<(Loc, bool)>,
    modules: std::sync::Mutex<Modules>,
}

fn captured() -> &'static Captured {
    static C: OnceLock<Captured> = OnceLock::new();
    C.get_or_init(|| {
        let mut child = Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import time; print('ready', flush=True); time.sleep(600)",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let pid = Pid::from_raw(child.id() as i32);
        ptrace::seize(pid, ptrace::Options::empty()).expect("seize");
        ptrace::interrupt(pid).expect("interrupt");
        waitpid(pid, Some(WaitPidFlag::__WALL)).expect("wait");
        let r = ptrace::getregs(pid).expect("regs");
        let regs = UserRegs {
            ip: r.rip,
            sp: r.rsp,
            bp: r.rbp,
        };
        let len = 64 * 1024;
        let mut stack = vec![0u8; len];
        let n = process_vm_readv(
            pid,
            &mut [std::io::IoSliceMut::new(&mut stack)],
            &[RemoteIoVec {
                base: regs.sp as usize,
                len,
            }],
        )
        .expect("stack");
        stack.truncate(n);
        let maps = cowscope::mem::smaps::vma_bounds(pid.as_raw()).expect("maps");
        let _ = child.kill();
        let _ = child.wait();
        let mut modules = Modules::new();
        modules.set_process(pid.as_raw(), &maps);
        let mut locs = Vec::new();
        Unwinder::new().unwind(&mut modules, pid.as_raw(), regs, &stack, &mut locs);
        eprintln!("captured python3 stack: {} frames", locs.len());
        Captured {
            pid: pid.as_raw(),
            regs,
            stack,
            maps,
            locs,
            modules: std::sync::Mutex::new(modules),
        }
    })
}

fn main() {
    captured();
    divan::main();
}

/// One sample's unwind with warm caches (the steady state of a trace).
#[divan::bench]
fn unwind_warm(b: divan::Bencher) {
    let c = captured();
    let mut modules = c.modules.lock().unwrap();
    let mut u = Unwinder::new();
    let mut out = Vec::new();
    u.unwind(&mut modules, c.pid, c.regs, &c.stack, &mut out);
    b.bench_local(|| {
        u.unwind(&mut modules, c.pid, c.regs, &c.stack, &mut out);
        out.len()
    });
}

/// Reading the maps and every module's headers and unwind sections, then one unwind: the cost
/// of a new process (once per attach or exec).
#[divan::bench(sample_count = 20)]
fn new_process_then_unwind(b: divan::Bencher) {
    let c = captured();
    b.bench_local(|| {
        let mut modules = Modules::new();
        modules.set_process(c.pid, &c.maps);
        let mut out = Vec::new();
        Unwinder::new().unwind(&mut modules, c.pid, c.regs, &c.stack, &mut out);
        out.len()
    });
}

/// Symbolizing the stack's distinct locations from scratch (blazesym opens the ELF files and
/// the separate debug files): the end-of-run cost for one such stack.
#[divan::bench(sample_count = 10)]
fn symbolize_stack_cold(b: divan::Bencher) {
    let c = captured();
    let modules = c.modules.lock().unwrap();
    b.bench_local(|| symbolize(&modules, &c.locs).len());
}
