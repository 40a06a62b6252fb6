//! `trace --stacks`: the page-fault stream of every traced process after each fork, and for
//! each page the first write fault since each fork with its unwound user stack.
//!
//! ```text
//!  tracer thread                          collector thread (this module)
//!  start:     one ring per CPU (a carrier event on this thread, mapped once)
//!  fork stop: epoch(parent, t), ranges  ─▶ Shared (mutex): per pid, fork times and the
//!             events of every thread of       baseline ranges faults are kept for
//!             parent and child, per CPU,
//!             sent into that CPU's ring
//!             fork-stop stack (regs+bytes) ─▶ channel ─▶ unwound: the copied_at_fork stack
//!  exec:      modules re-read            ─▶
//!  end:       stop                       ─▶ poll(rings) ─▶ drain ─▶ per (pid, page): the first
//!                                           write fault in each interval between the
//!                                           process's forks, unwound once (framehop), interned
//! ```
//!
//! Which event: the `exceptions:page_fault_user` tracepoint where it opens (root or
//! CAP_PERFMON: tracepoint samples are taken in kernel mode), filtered in the kernel to write
//! faults (`error_code & 2`); else the software `page-faults` event (allowed for one's own
//! processes at `perf_event_paranoid` 2), whose samples do not say read or write.
//!
//! Memory is bounded by the baseline pages faulted (one small entry per page and fork
//! interval) and the distinct stacks, not by the faults seen: a fault outside every baseline
//! range is only counted, and a fault at a page that already has an entry for its interval
//! is dropped before it is unwound.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::perf::{self, Config, Field, Record, Source, Stream};
use crate::stacks::Loc;
use crate::stacks::modules::Modules;
use crate::stacks::unwind::{Unwinder, UserRegs};

/// Kernel-mode write faults at user addresses only (x86_64: below the canonical hole).
const KERNEL_FAULT_FILTER: &str = "(error_code & 2) && address < 0x800000000000";
/// The same, at present pages only (the history of copies without `--stacks`).
const KERNEL_PRESENT_FAULT_FILTER: &str =
    "(error_code & 1) && (error_code & 2) && address < 0x800000000000";

/// Bytes of user stack copied per sample by default (`--stack-size`).
pub const DEFAULT_STACK_BYTES: u32 = 16 * 1024;

/// Ring pages per CPU with privilege (CAP_IPC_LOCK lifts the locked-memory limit): 32 MiB
/// hold about 2,000 samples of a 16 KiB stack while the collector catches up (a CPython
/// child iterating 10^6 ints faults ~30,000 times a second; 8 MiB lost 15% of them on a
/// loaded 2-core machine, 32 MiB none). Mapped once at start, not per process.
const RING_PAGES_ROOT: usize = 8192;
/// Without it, `perf_event_mlock_kb` (516 KiB per CPU by default) plus RLIMIT_MEMLOCK (8 MiB
/// on Debian) bound all of a user's rings together; rings are halved from 8 MiB until they
/// fit (4 MiB per CPU on 2 CPUs with those defaults).
const RING_PAGES_USER: usize = 2048;
/// Without stacks a record is ~80 bytes: 4 MiB per CPU hold ~50,000 faults between two
/// drains of the collector (every 20 ms, or sooner at the watermark).
const RING_PAGES_CHEAP: usize = 1024;

/// How faults are recorded on this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `exceptions:page_fault_user`, write faults only.
    Tracepoint,
    /// The software `page-faults` event: every fault, read or write unknown.
    Software,
}

impl Method {
    /// As the report names it.
    pub fn name(self) -> &'static str {
        match self {
            Method::Tracepoint => "tracepoint exceptions:page_fault_user (write faults)",
            Method::Software => "software event page-faults (read or write not known)",
        }
    }
}

/// What the tracer and the collector share: written by the tracer at a fork stop before it
/// resumes the parent, so no fault after the fork is judged against an older fork.
#[derive(Debug, Default)]
struct Shared {
    procs: HashMap<i32, ProcFilter>,
}

#[derive(Debug, Default, Clone)]
struct ProcFilter {
    /// Fork times of this process as a parent (CLOCK_MONOTONIC ns), and for a child its own
    /// creation first.
    epochs: Vec<u64>,
    /// Address ranges faults are kept for (sorted, merged): the baselines it is a side of.
    ranges: Vec<(u64, u64)>,
}

impl ProcFilter {
    fn add_ranges(&mut self, r: &[(u64, u64)]) {
        self.ranges.extend_from_slice(r);
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(a, b) in &self.ranges {
            match merged.last_mut() {
                Some(l) if a <= l.1 => l.1 = l.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.ranges = merged;
    }

    fn contains(&self, addr: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 <= addr);
        self.ranges.get(i).is_some_and(|r| r.0 <= addr)
    }

    /// The interval a fault at `t` belongs to: how many epochs began at or before it.
    fn interval(&self, t: u64) -> usize {
        self.epochs.partition_point(|&e| e <= t)
    }
}

enum Cmd {
    Inherit {
        parent: i32,
        child: i32,
    },
    ReadMaps(i32),
    ForkStack {
        fork: usize,
        pid: i32,
        regs: UserRegs,
        stack: Vec<u8>,
    },
    Stop,
}

/// One kept fault: the first write fault at a page in one interval between forks.
#[derive(Debug, Clone, Copy)]
struct Kept {
    interval: u32,
    time: u64,
    stack: u32,
    /// The tracepoint's `error_code & 1`: the fault was at a present page (a write to a
    /// write-protected page: copy-on-write or reuse) rather than a missing one (`None`: the
    /// software event does not say).
    present: Option<bool>,
}

/// The first write fault a process took at a page after a fork (see
/// [`Collected::first_write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstWrite {
    /// CLOCK_MONOTONIC ns.
    pub time: u64,
    /// At a present page (`error_code` bit 0), where the event says.
    pub present: Option<bool>,
}

/// Per process, what the collector kept.
#[derive(Debug, Default)]
pub struct ProcFaults {
    /// Page address -> the first fault in each interval (few: one per fork it faulted after).
    pages: HashMap<u64, Vec<Kept>>,
    /// Samples at baseline pages, per interval.
    recorded: Vec<u64>,
}

/// What the collector hands back at the end.
#[derive(Debug, Default)]
pub struct Collected {
    /// Per pid.
    pub procs: HashMap<i32, ProcFaults>,
    /// Interned stacks, leaf first (`bool`: the frame is the leaf, looked up at its exact
    /// address; the others are return addresses).
    pub stacks: Vec<Vec<(Loc, bool)>>,
    /// The forking thread's stack at each fork stop, by fork index.
    pub fork_stacks: HashMap<usize, u32>,
    /// The modules every process mapped, for symbolization after the processes are gone.
    pub modules: Modules,
    /// Samples seen in all.
    pub samples: u64,
    /// Samples outside every baseline (first touches of new memory, faults before a fork).
    pub outside: u64,
    /// Records that could not be parsed.
    pub malformed: u64,
    /// LOST records of every ring: (when they were read, records lost). Rings are per
    /// CPU, shared by every traced process, so a loss is charged to every fork before it.
    pub lost: Vec<(u64, u64)>,
    /// Fork times per pid (the epochs), to join faults with forks.
    epochs: HashMap<i32, Vec<u64>>,
}

impl Collected {
    /// The first fault at `page` in `pid` at or after `since` (a fork time): its time and
    /// stack.
    pub fn first_fault(&self, pid: i32, page: u64, since: u64) -> Option<(u64, u32)> {
        let epochs = self.epochs.get(&pid)?;
        let k = epochs.partition_point(|&e| e < since);
        // Entries are per interval; interval index = epochs at or before the fault.
        let want = k + 1;
        self.procs
            .get(&pid)?
            .pages
            .get(&page)?
            .iter()
            .filter(|e| e.interval as usize >= want && e.time >= since)
            .min_by_key(|e| e.interval)
            .map(|e| (e.time, e.stack))
    }

    /// The first write fault (any fault, with the software event) at `page` in `pid` at or
    /// after `since` (a fork time), and whether the page was present.
    pub fn first_write(&self, pid: i32, page: u64, since: u64) -> Option<FirstWrite> {
        let epochs = self.epochs.get(&pid)?;
        let want = epochs.partition_point(|&e| e < since) + 1;
        self.procs
            .get(&pid)?
            .pages
            .get(&page)?
            .iter()
            .filter(|e| e.interval as usize >= want && e.time >= since)
            .min_by_key(|e| e.interval)
            .map(|e| FirstWrite {
                time: e.time,
                present: e.present,
            })
    }

    /// Samples at baseline pages of `pid` at or after `since`.
    pub fn recorded_since(&self, pid: i32, since: u64) -> u64 {
        let Some(p) = self.procs.get(&pid) else {
            return 0;
        };
        let k = self
            .epochs
            .get(&pid)
            .map_or(0, |e| e.partition_point(|&x| x < since));
        p.recorded.iter().skip(k + 1).sum()
    }

    /// Records lost (on any ring) since `since`.
    pub fn lost_since(&self, since: u64) -> u64 {
        self.lost
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The tracer's handle on the fault stream.
#[derive(Debug)]
pub struct Recorder {
    cfg: Config,
    /// The kernel-mode write-fault tracepoint, sent into the same rings.
    kernel_cfg: Option<Config>,
    /// A descriptor of each CPU's ring (the collector drains them).
    ring_fds: Vec<(i32, std::os::fd::OwnedFd)>,
    /// The events of every traced thread, per CPU: open until the end.
    events: Vec<std::os::fd::OwnedFd>,
    method: Method,
    tx: Sender<CmdBox>,
    wake: std::os::fd::OwnedFd,
    shared: Arc<Mutex<Shared>>,
    handle: Option<JoinHandle<Collected>>,
    /// Threads with an event.
    opened: std::collections::HashSet<i32>,
    /// Threads whose event could not be opened, and why.
    pub failures: Vec<String>,
    stack_bytes: u32,
    /// Stacks are unwound (`--stacks`); else the records are cheap (time, tid, address,
    /// error code): the history of copies only.
    stacks: bool,
}

/// Commands are boxed so the channel's item stays small.
struct CmdBox(Box<Cmd>);

impl std::fmt::Debug for CmdBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

/// The write-fault tracepoints: `page_fault_user` (its id and the fields address, ip,
/// error_code) and, where the kernel has it, `page_fault_kernel` (a fault the kernel took at
/// a user address on the process's behalf: a `read()` into an inherited buffer).
fn write_fault_fields() -> io::Result<(u64, Field, Field, Field, Option<u64>)> {
    let mut tps = perf::tracefs::tracepoints(&[
        ("exceptions", "page_fault_user"),
        ("exceptions", "page_fault_kernel"),
    ])?
    .into_iter();
    let tp = tps
        .next()
        .ok_or_else(|| io::Error::other("no tracepoint"))??;
    let kernel = tps.next().and_then(|k| k.ok()).map(|k| k.id);
    let f = |n: &str| {
        tp.field(n).cloned().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} has no field {n}", tp.name),
            )
        })
    };
    Ok((tp.id, f("address")?, f("ip")?, f("error_code")?, kernel))
}

/// The online CPUs (`/sys/devices/system/cpu/online`: "0-3,5").
fn online_cpus() -> Vec<i32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            out.extend(a..=b);
        }
    }
    if out.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
        out.extend(0..n);
    }
    out
}

/// One ring per online CPU, and a test event of `cfg` on our own thread sent into the
/// first: what works here. Rings are halved while the locked-memory limit refuses them.
fn open_rings(cfg: &mut Config) -> io::Result<Vec<(i32, Stream)>> {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    loop {
        let attempt = (|| -> io::Result<Vec<(i32, Stream)>> {
            let mut rings = Vec::new();
            for cpu in online_cpus() {
                rings.push((cpu, Stream::open_ring(cfg, cpu)?));
            }
            let (cpu0, first) = rings
                .first()
                .ok_or_else(|| io::Error::other("no online CPU"))?;
            drop(Stream::redirect(&first.ring_fd()?, cfg, me, *cpu0, None)?);
            Ok(rings)
        })();
        match attempt {
            Ok(r) => return Ok(r),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && cfg.ring_pages > 8 => {
                cfg.ring_pages /= 2;
            }
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::E2BIG))
                    && cfg.inherit_threads =>
            {
                // Kernels before 5.13 have no inherit_thread: every thread then gets its
                // own events at its clone stop.
                cfg.inherit_threads = false;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The rings of the best write-fault event this process may open: the `page_fault_user`
/// tracepoint (with `page_fault_kernel` joined where it exists), else the software
/// page-faults event.
struct Opened {
    cfg: Config,
    kernel_cfg: Option<Config>,
    method: Method,
    fields: Option<(Field, Field, Field)>,
    rings: Vec<(i32, Stream)>,
}

impl Opened {
    fn best(stacks: Option<u32>) -> Result<Opened, String> {
        let privileged = nix::unistd::geteuid().is_root();
        let base = |source, kernel| Config {
            source,
            stack_bytes: stacks.unwrap_or(0),
            user_regs: stacks.is_some(),
            kernel,
            inherit_threads: true,
            ring_pages: match (stacks.is_some(), privileged) {
                (false, _) => RING_PAGES_CHEAP,
                (true, true) => RING_PAGES_ROOT,
                (true, false) => RING_PAGES_USER,
            },
        };
        let mut errors = Vec::new();
        match write_fault_fields() {
            Ok((id, addr, ip, ec, kernel_id)) => {
                let mut cfg = base(Source::Tracepoint(id), true);
                match open_rings(&mut cfg) {
                    Ok(rings) => {
                        return Ok(Opened {
                            kernel_cfg: kernel_id.map(|id| Config {
                                source: Source::Tracepoint(id),
                                ..cfg
                            }),
                            cfg,
                            method: Method::Tracepoint,
                            fields: Some((addr, ip, ec)),
                            rings,
                        });
                    }
                    Err(e) => errors.push(format!("the page_fault_user tracepoint: {e}")),
                }
            }
            Err(e) => errors.push(format!("the page_fault_user tracepoint: {e}")),
        }
        let mut cfg = base(Source::SoftwarePageFaults, false);
        match open_rings(&mut cfg) {
            Ok(rings) => {
                return Ok(Opened {
                    cfg,
                    kernel_cfg: None,
                    method: Method::Software,
                    fields: None,
                    rings,
                });
            }
            Err(e) => errors.push(format!("the software page-fault event: {e}")),
        }
        Err(format!(
            "perf_event_open refused every page-fault event ({}); perf_event_paranoid is {}",
            errors.join("; "),
            std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        ))
    }
}

impl Recorder {
    /// Choose the event (the write-fault tracepoint, else software page faults), check it
    /// opens here, and start the collector thread. `stacks`: the bytes of user stack to copy
    /// per fault for unwinding (`--stacks`); `None`: cheap records, no unwinding (the
    /// history of copies only).
    ///
    /// # Errors
    /// Neither event can be opened (`perf_event_open` refused): the sentence says why.
    pub fn start(stacks: Option<u32>) -> Result<Recorder, String> {
        let stack_bytes = stacks.unwrap_or(0);
        let Opened {
            cfg,
            kernel_cfg,
            method,
            fields,
            rings,
        } = Opened::best(stacks)?;
        let (tx, rx) = channel::<CmdBox>();
        let wake = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(|e| format!("eventfd: {e}"))?;
        let wake: std::os::fd::OwnedFd = wake.into();
        let wake_rx = wake.try_clone().map_err(|e| format!("dup: {e}"))?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut ring_fds = Vec::new();
        for (cpu, r) in &rings {
            ring_fds.push((*cpu, r.ring_fd().map_err(|e| format!("dup: {e}"))?));
        }
        raise_fd_limit();
        let collector = Collector {
            rx,
            wake: wake_rx,
            shared: shared.clone(),
            streams: rings,
            fields,
            out: Collected::default(),
            unwinder: Unwinder::new(),
            scratch: Vec::new(),
            last_reread: HashMap::new(),
            page_mask: !(crate::kernel::page_size() as u64 - 1),
            stacks: stacks.is_some(),
        };
        let handle = std::thread::Builder::new()
            .name("cowscope-faults".into())
            .spawn(move || collector.run())
            .map_err(|e| format!("cannot start the fault collector: {e}"))?;
        Ok(Recorder {
            cfg,
            kernel_cfg,
            ring_fds,
            events: Vec::new(),
            method,
            tx,
            wake,
            shared,
            handle: Some(handle),
            opened: Default::default(),
            failures: Vec::new(),
            stack_bytes,
            stacks: stacks.is_some(),
        })
    }

    /// Which event is used.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The events, as the report names them.
    pub fn event_name(&self) -> String {
        match (self.method, self.kernel_cfg.is_some()) {
            (Method::Tracepoint, true) => "tracepoints exceptions:page_fault_user and \
                 exceptions:page_fault_kernel (write faults; the kernel's writes into user \
                 memory for a syscall carry the syscall's user stack)"
                .into(),
            (m, _) => m.name().into(),
        }
    }

    /// Bytes of stack per sample.
    pub fn stack_bytes(&self) -> u32 {
        self.stack_bytes
    }

    fn send(&self, c: Cmd) {
        let _ = self.tx.send(CmdBox(Box::new(c)));
        let _ = nix::unistd::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Open events on the threads of `pid` that have none (call while the process is held
    /// at a ptrace stop, before it runs on). Threads created later inherit them.
    pub fn open_process(&mut self, pid: i32, threads: &[i32]) {
        // Without stacks only a write at a present page can be a copy the timeline counts
        // (first touches of new memory, the bulk of an allocating program's faults, are at
        // missing pages): the kernel drops the rest before a record is written.
        let (user, kernel) = if self.stacks {
            ("error_code & 2", KERNEL_FAULT_FILTER)
        } else {
            (
                "(error_code & 1) && (error_code & 2)",
                KERNEL_PRESENT_FAULT_FILTER,
            )
        };
        let user_filter = matches!(self.cfg.source, Source::Tracepoint(_)).then_some(user);
        for &tid in threads {
            if self.opened.contains(&tid) {
                continue;
            }
            let mut ok = false;
            for (cpu, ring) in &self.ring_fds {
                match Stream::redirect(ring, &self.cfg, tid, *cpu, user_filter) {
                    Ok(fd) => {
                        ok = true;
                        self.events.push(fd);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => break,
                    Err(e) => {
                        self.failures.push(format!(
                            "thread {tid} of pid {pid} on CPU {cpu}: perf_event_open: {e}"
                        ));
                        continue;
                    }
                }
                if let Some(kc) = &self.kernel_cfg {
                    match Stream::redirect(ring, kc, tid, *cpu, Some(kernel)) {
                        Ok(fd) => self.events.push(fd),
                        Err(e) => self.failures.push(format!(
                            "thread {tid} on CPU {cpu}: the page_fault_kernel tracepoint did \
                             not open ({e}): pages the kernel copied for a syscall are \
                             unattributed"
                        )),
                    }
                }
            }
            if ok {
                self.opened.insert(tid);
            }
        }
    }

    /// A new thread of a traced process: on kernels without `inherit_thread` (before 5.13)
    /// it gets its own events, if its process has them (it forked, or was forked).
    pub fn new_thread(&mut self, pid: i32, tid: i32) {
        if self.cfg.inherit_threads {
            return;
        }
        let known = self
            .shared
            .lock()
            .map(|s| s.procs.contains_key(&pid))
            .unwrap_or(false);
        if known {
            self.open_process(pid, &[tid]);
        }
    }

    /// A fork stop: the parent's new interval begins now; both sides keep faults at the
    /// baseline's ranges. Call before resuming the parent.
    pub fn fork(&mut self, parent: i32, child: i32, at_ns: u64, ranges: &[(u64, u64)]) {
        if let Ok(mut s) = self.shared.lock() {
            let p = s.procs.entry(parent).or_default();
            p.epochs.push(at_ns);
            p.add_ranges(ranges);
            let c = s.procs.entry(child).or_default();
            c.epochs.push(at_ns);
            c.add_ranges(ranges);
        }
        if !self.stacks {
            return;
        }
        // The parent's modules now (it may have loaded some since), then the child's: the
        // same at the fork.
        self.send(Cmd::ReadMaps(parent));
        self.send(Cmd::Inherit { parent, child });
    }

    /// The process's code may have changed (exec, a module loaded): read its maps again.
    pub fn reread_maps(&self, pid: i32) {
        if self.stacks {
            self.send(Cmd::ReadMaps(pid));
        }
    }

    /// The forking thread's user stack at its fork stop, for the pages fork itself copied.
    pub fn fork_stack(&self, fork: usize, pid: i32, tid: i32) {
        if !self.stacks {
            return;
        }
        if let Some((regs, stack)) = stopped_stack(tid, self.stack_bytes as usize) {
            self.send(Cmd::ForkStack {
                fork,
                pid,
                regs,
                stack,
            });
        }
    }

    /// Stop the collector after a last drain of every ring; what it kept.
    pub fn finish(mut self) -> Collected {
        self.send(Cmd::Stop);
        let mut c = self
            .handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if let Ok(s) = self.shared.lock() {
            c.epochs = s
                .procs
                .iter()
                .map(|(&p, f)| (p, f.epochs.clone()))
                .collect();
        }
        c
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.tx.send(CmdBox(Box::new(Cmd::Stop)));
            let _ = nix::unistd::write(&self.wake, &1u64.to_ne_bytes());
            let _ = h.join();
        }
    }
}

/// A stopped thread's registers (PTRACE_GETREGS) and the top of its user stack
/// (`/proc/<tid>/mem`: no page is pinned, faulted in or copied by the read).
#[cfg(target_arch = "x86_64")]
fn stopped_stack(tid: i32, bytes: usize) -> Option<(UserRegs, Vec<u8>)> {
    use std::os::unix::fs::FileExt;
    let mut r = std::mem::MaybeUninit::<libc::user_regs_struct>::uninit();
    // SAFETY: PTRACE_GETREGS writes one user_regs_struct into the buffer we pass; the caller
    // holds the thread in a ptrace stop (the tracer thread is its tracer).
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            r.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return None;
    }
    // SAFETY: the call succeeded, so the kernel filled the struct.
    let r = unsafe { r.assume_init() };
    let regs = UserRegs {
        ip: r.rip,
        sp: r.rsp,
        bp: r.rbp,
    };
    let mem = std::fs::File::open(format!("/proc/{tid}/mem")).ok()?;
    let mut buf = vec![0u8; bytes];
    let mut got = 0;
    // Page by page: the stack VMA may end before `bytes`.
    while got < bytes {
        let ps = crate::kernel::page_size();
        let end = ((regs.sp as usize + got) / ps + 1) * ps - regs.sp as usize;
        let end = end.min(bytes);
        match mem.read_at(&mut buf[got..end], regs.sp + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf.truncate(got);
    Some((regs, buf))
}

#[cfg(not(target_arch = "x86_64"))]
fn stopped_stack(_tid: i32, _bytes: usize) -> Option<(UserRegs, Vec<u8>)> {
    None
}

struct Collector {
    rx: Receiver<CmdBox>,
    wake: std::os::fd::OwnedFd,
    shared: Arc<Mutex<Shared>>,
    streams: Vec<(i32, Stream)>,
    fields: Option<(Field, Field, Field)>,
    out: Collected,
    unwinder: Unwinder,
    scratch: Vec<(Loc, bool)>,
    last_reread: HashMap<i32, std::time::Instant>,
    page_mask: u64,
    stacks: bool,
}

/// One fault as the collector judges it.
struct Fault<'a> {
    pid: i32,
    time: u64,
    addr: u64,
    ip: u64,
    write: Option<bool>,
    present: Option<bool>,
    regs: Option<UserRegs>,
    stack: &'a [u8],
}

impl Collector {
    fn run(mut self) -> Collected {
        let mut interned: HashMap<Vec<(Loc, bool)>, u32> = HashMap::new();
        let mut stop = false;
        while !stop {
            self.wait();
            while let Ok(CmdBox(c)) = self.rx.try_recv() {
                match *c {
                    Cmd::Inherit { parent, child } => self.out.modules.inherit(parent, child),
                    Cmd::ReadMaps(pid) => {
                        let _ = self.out.modules.read_process(pid);
                    }
                    Cmd::ForkStack {
                        fork,
                        pid,
                        regs,
                        stack,
                    } => {
                        self.scratch.clear();
                        self.unwinder.unwind(
                            &mut self.out.modules,
                            pid,
                            regs,
                            &stack,
                            &mut self.scratch,
                        );
                        let id = intern(&mut interned, &mut self.out.stacks, &self.scratch);
                        self.out.fork_stacks.insert(fork, id);
                    }
                    Cmd::Stop => stop = true,
                }
            }
            self.drain_all(&mut interned);
        }
        self.drain_all(&mut interned);
        for (_, s) in &self.streams {
            self.out.malformed += s.malformed;
        }
        self.out
    }

    /// Sleep until a ring passes its watermark, a command arrives, or 20 ms pass.
    fn wait(&mut self) {
        use std::os::fd::AsFd;
        let mut fds: Vec<nix::poll::PollFd<'_>> = Vec::with_capacity(self.streams.len() + 1);
        fds.push(nix::poll::PollFd::new(
            self.wake.as_fd(),
            nix::poll::PollFlags::POLLIN,
        ));
        for (_, s) in &self.streams {
            fds.push(nix::poll::PollFd::new(
                s.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
        }
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20u8));
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(&self.wake, &mut buf);
    }

    fn drain_all(&mut self, interned: &mut HashMap<Vec<(Loc, bool)>, u32>) {
        let mut streams = std::mem::take(&mut self.streams);
        for (_, s) in &mut streams {
            s.drain(|r| match r {
                Record::Lost(n) => {
                    self.out.lost.push((perf::monotonic_ns(), n));
                }
                Record::Sample(smp) => {
                    self.out.samples += 1;
                    let Some(pid) = smp.pid else { return };
                    let (addr, ip, ec) = match (&self.fields, smp.raw) {
                        (Some((a, i, ec)), Some(raw)) => (
                            perf::field_u64(&raw, a).unwrap_or(0),
                            perf::field_u64(&raw, i).unwrap_or(0),
                            perf::field_u64(&raw, ec),
                        ),
                        _ => (smp.addr.unwrap_or(0), smp.ip.unwrap_or(0), None),
                    };
                    // x86 page-fault error code: bit 0 present, bit 1 write.
                    let (write, present) = (ec.map(|e| e & 2 != 0), ec.map(|e| e & 1 != 0));
                    let regs = smp.user_regs.as_ref().and_then(|r| {
                        Some(UserRegs {
                            bp: r.get(6)?,
                            sp: r.get(7)?,
                            ip: r.get(8)?,
                        })
                    });
                    // A kernel-mode fault (page_fault_kernel: the kernel wrote into user
                    // memory for a syscall): its ip is the kernel's; the user stack is the
                    // syscall's, from the user registers.
                    let ip = if ip >= 1 << 63 {
                        regs.map_or(0, |r| r.ip)
                    } else {
                        ip
                    };
                    let stack = smp
                        .user_stack
                        .as_ref()
                        .map(|(d, dyn_size)| {
                            let n = (*dyn_size as usize).min(d.len());
                            d.get(0..n).map(|x| x.as_slice())
                        })
                        .and_then(|x| x);
                    let stack_bytes: std::borrow::Cow<'_, [u8]> =
                        stack.unwrap_or(std::borrow::Cow::Borrowed(&[]));
                    self.on_fault(
                        Fault {
                            pid,
                            time: smp.timestamp.unwrap_or(0),
                            addr,
                            ip,
                            write,
                            present,
                            regs,
                            stack: &stack_bytes,
                        },
                        interned,
                    );
                }
            });
        }
        self.streams = streams;
    }

    fn on_fault(&mut self, f: Fault<'_>, interned: &mut HashMap<Vec<(Loc, bool)>, u32>) {
        if f.write == Some(false) {
            return;
        }
        let page = f.addr & self.page_mask;
        let interval = {
            let Ok(s) = self.shared.lock() else { return };
            let Some(p) = s.procs.get(&f.pid) else {
                self.out.outside += 1;
                return;
            };
            if !p.contains(page) {
                self.out.outside += 1;
                return;
            }
            p.interval(f.time)
        };
        if interval == 0 {
            // Before the process's first fork (or its own creation): not after a fork.
            self.out.outside += 1;
            return;
        }
        let pf = self.out.procs.entry(f.pid).or_default();
        if pf.recorded.len() <= interval {
            pf.recorded.resize(interval + 1, 0);
        }
        pf.recorded[interval] += 1;
        let entries = pf.pages.entry(page).or_default();
        if let Some(e) = entries.iter().find(|e| e.interval as usize == interval)
            && e.time <= f.time
        {
            return;
        }
        if !self.stacks {
            let k = Kept {
                interval: interval as u32,
                time: f.time,
                stack: 0,
                present: f.present,
            };
            match entries.iter_mut().find(|e| e.interval as usize == interval) {
                Some(e) => *e = k,
                None => entries.push(k),
            }
            return;
        }
        // The first fault at this page in this interval: unwind it.
        let regs = f.regs.unwrap_or(UserRegs {
            ip: f.ip,
            sp: 0,
            bp: 0,
        });
        let regs = UserRegs { ip: f.ip, ..regs };
        if self.out.modules.locate(f.pid, f.ip).is_none() {
            let due = self
                .last_reread
                .get(&f.pid)
                .is_none_or(|t| t.elapsed() > std::time::Duration::from_millis(100));
            if due {
                let _ = self.out.modules.read_process(f.pid);
                self.last_reread.insert(f.pid, std::time::Instant::now());
            }
        }
        self.scratch.clear();
        self.unwinder.unwind(
            &mut self.out.modules,
            f.pid,
            regs,
            f.stack,
            &mut self.scratch,
        );
        let stack = intern(interned, &mut self.out.stacks, &self.scratch);
        let pf = self.out.procs.entry(f.pid).or_default();
        let entries = pf.pages.entry(page).or_default();
        let k = Kept {
            interval: interval as u32,
            time: f.time,
            stack,
            present: f.present,
        };
        match entries.iter_mut().find(|e| e.interval as usize == interval) {
            Some(e) => *e = k,
            None => entries.push(k),
        }
    }
}

/// Every traced thread holds one event per CPU (two with the kernel-fault tracepoint): raise
/// the soft limit on open files to the hard one, as perf does.
fn raise_fd_limit() {
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn intern(
    map: &mut HashMap<Vec<(Loc, bool)>, u32>,
    stacks: &mut Vec<Vec<(Loc, bool)>>,
    s: &[(Loc, bool)],
) -> u32 {
    if let Some(&id) = map.get(s) {
        return id;
    }
    let id = stacks.len() as u32;
    stacks.push(s.to_vec());
    map.insert(s.to_vec(), id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_contain_only_their_pages() {
        let mut f = ProcFilter::default();
        f.add_ranges(&[(0x3000, 0x5000), (0x1000, 0x2000)]);
        f.add_ranges(&[(0x2000, 0x3000)]);
        assert_eq!(f.ranges, vec![(0x1000, 0x5000)]);
        assert!(f.contains(0x1000));
        assert!(f.contains(0x4fff));
        assert!(!f.contains(0x5000));
        assert!(!f.contains(0xfff));
    }

    #[test]
    fn a_fault_belongs_to_the_interval_after_the_last_fork_before_it() {
        let f = ProcFilter {
            epochs: vec![100, 200],
            ranges: vec![],
        };
        assert_eq!(f.interval(50), 0, "before the first fork");
        assert_eq!(f.interval(100), 1);
        assert_eq!(f.interval(199), 1);
        assert_eq!(f.interval(250), 2);
    }

    fn collected(entries: Vec<Kept>, epochs: Vec<u64>) -> Collected {
        let mut c = Collected::default();
        let mut pf = ProcFaults::default();
        pf.pages.insert(0x1000, entries);
        c.procs.insert(7, pf);
        c.epochs.insert(7, epochs);
        c
    }

    #[test]
    fn each_fork_gets_the_first_fault_after_it_not_an_earlier_forks() {
        let c = collected(
            vec![
                Kept {
                    interval: 1,
                    time: 150,
                    stack: 1,
                    present: None,
                },
                Kept {
                    interval: 2,
                    time: 260,
                    stack: 2,
                    present: None,
                },
            ],
            vec![100, 200],
        );
        assert_eq!(c.first_fault(7, 0x1000, 100), Some((150, 1)));
        assert_eq!(c.first_fault(7, 0x1000, 200), Some((260, 2)));
        assert_eq!(c.first_fault(7, 0x2000, 100), None, "no fault at that page");
    }

    #[test]
    fn a_fork_whose_interval_has_no_fault_takes_the_next_intervals_first() {
        let c = collected(
            vec![Kept {
                interval: 3,
                time: 350,
                stack: 9,
                present: None,
            }],
            vec![100, 200, 300],
        );
        assert_eq!(c.first_fault(7, 0x1000, 100), Some((350, 9)));
        assert_eq!(c.first_fault(7, 0x1000, 200), Some((350, 9)));
    }
}
