//! Releases of an attached program (`trace --pid`) from the kernel's syscall tracepoints,
//! read from perf ring buffers: no ptrace stop per syscall.
//!
//! ```text
//!  per traced thread: one ring (src/perf) fed by syscalls:sys_enter_X and sys_exit_X for
//!  X in munmap, madvise (releasing advice only, filtered in the kernel), mremap, brk,
//!  mmap (MAP_FIXED only, filtered), remap_file_pages
//!        │
//!  collect(until)   drain every ring; pair each thread's enter with its exit; the exit's
//!                   return value decides the released ranges (syscalls::released, the
//!                   same decoding the seccomp and --syscalls paths use); LOST records,
//!                   and rings found full, become Lost events, handed back at once;
//!                   releases at or after `until` wait for the next call
//!        │
//!  tracer           marks the ranges on every live pair the process is a side of, for
//!                   pairs forked before the event (one clock: CLOCK_MONOTONIC)
//! ```
//!
//! A sample must see every release made before it: the tracer calls [`ReleaseEvents::collect`]
//! with the sample's start time right before it reads pagemap. A release whose record was
//! lost cannot be placed: the side's later "copies" are `diverged` (the tracer says so per
//! pair), never a copy.
//!
//! The ring is drained by the tracer thread itself (at every sample and every turn of its
//! loop, at most 100 ms apart): decoding a syscall record is a few field reads, and the
//! tracer is the only one that may apply a release to a baseline.

use std::collections::{HashMap, HashSet};
use std::io;

use super::syscalls::{self, Range, Traced};
use crate::perf::{self, Config, Field, Record, Source, Stream};

/// Ring pages per thread (root: CAP_IPC_LOCK lifts the locked-memory limit). A syscall record
/// is about 80 bytes: 256 pages hold some 13,000 releases between two drains.
const RING_PAGES: usize = 256;

/// Room (bytes) under which a ring counts as full when it is read: more than the longest
/// record these events write (header, ip, tid, time, addr and a raw `sys_enter` record of
/// six arguments: about 112 bytes). A record that did not fit was dropped, and the kernel
/// reports the drop only in a LOST record written before the *next* record that fits: after
/// a burst that ends with a full ring and no later call, that record never comes.
const FULL_ROOM: u64 = 512;

/// `madvise` advices that zap page tables, as a tracepoint filter (see
/// [`syscalls::RELEASING_ADVICE`]).
fn madvise_filter() -> String {
    syscalls::RELEASING_ADVICE
        .iter()
        .map(|a| format!("behavior == {a}"))
        .collect::<Vec<_>>()
        .join(" || ")
}

/// One syscall tracepoint: enter (its arguments) or exit (its return value).
#[derive(Debug, Clone)]
struct Tp {
    id: u64,
    t: Traced,
    enter: bool,
    /// Enter: the argument fields in order. Exit: `ret`.
    fields: Vec<Field>,
    filter: Option<String>,
}

/// A syscall entry waiting for its exit.
#[derive(Debug, Clone, Copy)]
struct Enter {
    t: Traced,
    args: [u64; 6],
}

/// What the tracer applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A successful releasing call.
    Release {
        /// CLOCK_MONOTONIC ns of its exit.
        time: u64,
        /// The process (thread group) that made it.
        pid: i32,
        /// Which syscall.
        t: Traced,
        /// The ranges it released.
        ranges: Vec<Range>,
    },
    /// The ring of a thread of `pid` overflowed: records were dropped (a LOST record), or may
    /// have been (the ring was found full).
    Lost {
        /// When the loss was seen (the drain's time: the records carry none). The records
        /// were dropped before it, possibly long before (the kernel writes the LOST record
        /// only at the first record that fits after the reader made room).
        time: u64,
        /// The process whose thread's ring overflowed.
        pid: i32,
        /// Records dropped; 0 when the ring was found full and the count is not known yet.
        records: u64,
    },
}

impl Event {
    fn time(&self) -> u64 {
        match self {
            Event::Release { time, .. } | Event::Lost { time, .. } => *time,
        }
    }
}

/// The syscall tracepoints of every traced thread.
#[derive(Debug)]
pub struct ReleaseEvents {
    tps: Vec<Tp>,
    cfg: Config,
    /// Per stream: the process it was opened for.
    streams: Vec<(i32, Stream)>,
    opened: HashSet<i32>,
    pending: HashMap<i32, Enter>,
    queue: Vec<Event>,
    /// The program break per process, for `brk` shrinks.
    brk: HashMap<i32, u64>,
    ps: u64,
    /// Syscall records read.
    pub records: u64,
    /// Records the kernel dropped (full rings).
    pub lost: u64,
    /// Drains that found a ring full (records may have been dropped that no LOST record
    /// reports yet).
    pub full: u64,
    /// Exit records whose entry was not seen (a call in progress at attach, or the entry
    /// was lost).
    pub unpaired: u64,
    /// Threads whose events could not be opened, and why.
    pub failures: Vec<String>,
}

/// The syscall tracepoints this module uses: (syscall name, what it is).
const CALLS: [(&str, Traced); 6] = [
    ("munmap", Traced::Munmap),
    ("madvise", Traced::Madvise),
    ("mremap", Traced::Mremap),
    ("brk", Traced::Brk),
    ("mmap", Traced::MmapFixed),
    ("remap_file_pages", Traced::RemapFilePages),
];

fn lookup() -> io::Result<Vec<Tp>> {
    let names: Vec<(String, String)> = CALLS
        .iter()
        .flat_map(|(n, _)| {
            [
                ("syscalls".to_string(), format!("sys_enter_{n}")),
                ("syscalls".to_string(), format!("sys_exit_{n}")),
            ]
        })
        .collect();
    let refs: Vec<(&str, &str)> = names
        .iter()
        .map(|(g, n)| (g.as_str(), n.as_str()))
        .collect();
    let found = perf::tracefs::tracepoints(&refs)?;
    let mut tps = Vec::new();
    for (k, r) in found.into_iter().enumerate() {
        let (_, t) = CALLS[k / 2];
        let enter = k % 2 == 0;
        let tp = r.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the tracepoint syscalls:{} is missing: {e}", refs[k].1),
            )
        })?;
        let fields: Vec<Field> = if enter {
            tp.fields
                .iter()
                .skip_while(|f| f.name != "__syscall_nr")
                .skip(1)
                .take(6)
                .cloned()
                .collect()
        } else {
            tp.field("ret").cloned().into_iter().collect()
        };
        if fields.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} has no argument fields", tp.name),
            ));
        }
        let filter = match (enter, t) {
            (true, Traced::Madvise) => Some(madvise_filter()),
            (true, Traced::MmapFixed) => Some("flags & 0x10".to_string()),
            _ => None,
        };
        tps.push(Tp {
            id: tp.id,
            t,
            enter,
            fields,
            filter,
        });
    }
    Ok(tps)
}

/// Every traced thread holds a dozen event descriptors: raise the soft limit on open files
/// to the hard one (best effort; the default 1,024 would last ~80 threads).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

impl ReleaseEvents {
    /// Look the tracepoints up (mounting tracefs for the read if needed) and check that one
    /// opens here (root or CAP_PERFMON: syscall tracepoints fire in kernel mode).
    ///
    /// # Errors
    /// A sentence saying why releases cannot be streamed here.
    pub fn start() -> Result<ReleaseEvents, String> {
        let tps = lookup().map_err(|e| format!("syscall tracepoints: {e}"))?;
        let mut cfg = Config {
            source: Source::Tracepoint(tps[0].id),
            stack_bytes: 0,
            user_regs: false,
            kernel: true,
            inherit_threads: true,
            ring_pages: RING_PAGES,
        };
        raise_fd_limit();
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        loop {
            match Stream::open(&cfg, me) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && cfg.ring_pages > 16 => {
                    cfg.ring_pages /= 2;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && cfg.inherit_threads => {
                    // Before 5.13 (no inherit_thread): each new thread gets its own events.
                    cfg.inherit_threads = false;
                }
                Err(e) => {
                    return Err(format!(
                        "perf_event_open refused the syscall tracepoints ({e}; \
                         perf_event_paranoid is {})",
                        std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                            .map(|s| s.trim().to_string())
                            .unwrap_or_else(|_| "unknown".into())
                    ));
                }
            }
        }
        Ok(ReleaseEvents {
            tps,
            cfg,
            streams: Vec::new(),
            opened: HashSet::new(),
            pending: HashMap::new(),
            queue: Vec::new(),
            brk: HashMap::new(),
            ps: crate::kernel::page_size() as u64,
            records: 0,
            lost: 0,
            full: 0,
            unpaired: 0,
            failures: Vec::new(),
        })
    }

    /// Threads created later need events of their own (kernels without `inherit_thread`).
    pub fn threads_need_own_events(&self) -> bool {
        !self.cfg.inherit_threads
    }

    /// Open the events on the threads of `pid` that have none; `brk` is its program break
    /// now (for brk shrinks). Call before the threads can release anything that matters (at
    /// attach, or while a new process is held at its fork stop).
    pub fn open_process(&mut self, pid: i32, threads: &[i32], brk: Option<u64>) {
        if let Some(b) = brk {
            self.brk.insert(pid, b);
        }
        for &tid in threads {
            if self.opened.contains(&tid) {
                continue;
            }
            match self.open_thread(tid) {
                Ok(s) => {
                    self.opened.insert(tid);
                    self.streams.push((pid, s));
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => self.failures.push(format!(
                    "thread {tid} of pid {pid}: the syscall tracepoints did not open ({e}): \
                     its releases are not tracked"
                )),
            }
        }
    }

    fn open_thread(&self, tid: i32) -> io::Result<Stream> {
        let first = &self.tps[0];
        let mut s = Stream::open(
            &Config {
                source: Source::Tracepoint(first.id),
                ..self.cfg
            },
            tid,
        )?;
        if let Some(f) = &first.filter {
            s.set_filter(f)?;
        }
        for tp in &self.tps[1..] {
            s.join(
                &Config {
                    source: Source::Tracepoint(tp.id),
                    ..self.cfg
                },
                tp.filter.as_deref(),
            )?;
        }
        s.enable()?;
        Ok(s)
    }

    /// Every release that happened before `until` (CLOCK_MONOTONIC ns), and every loss found
    /// so far, in time order; later releases wait for the next call.
    ///
    /// A loss never waits: this drain found it, so the records were dropped before the
    /// drain, maybe before `until` (the drain's own time stamps it, which is after `until`).
    /// Held back, it would be applied only after the sample the caller is about to take,
    /// when that sample's copies are already called copies.
    pub fn collect(&mut self, until: u64) -> Vec<Event> {
        self.drain(None);
        due(&mut self.queue, until)
    }

    /// A process is gone: read what its rings still hold, then close them (each thread has a
    /// dozen descriptors: a program that forks thousands of children must not run cowscope
    /// out of them).
    pub fn close_process(&mut self, pid: i32) {
        if !self.streams.iter().any(|(o, _)| *o == pid) {
            return;
        }
        self.drain(Some(pid));
        self.streams.retain(|(o, s)| {
            let keep = *o != pid;
            if !keep {
                self.opened.remove(&s.tid);
            }
            keep
        });
        self.brk.remove(&pid);
    }

    /// Read the rings (of `only`'s streams, or all) and queue their events.
    fn drain(&mut self, only: Option<i32>) {
        let mut streams = std::mem::take(&mut self.streams);
        let mut recs: Vec<(u64, i32, i32, usize, [u64; 6])> = Vec::new();
        for (owner, s) in &mut streams {
            let owner = *owner;
            if only.is_some_and(|p| p != owner) {
                continue;
            }
            if s.room() < FULL_ROOM {
                self.full += 1;
                self.queue.push(Event::Lost {
                    time: perf::monotonic_ns(),
                    pid: owner,
                    records: 0,
                });
            }
            s.drain(|r| match r {
                Record::Lost(n) => {
                    self.lost += n;
                    self.queue.push(Event::Lost {
                        time: perf::monotonic_ns(),
                        pid: owner,
                        records: n,
                    });
                }
                Record::Sample(smp) => {
                    self.records += 1;
                    let Some(raw) = smp.raw else { return };
                    let Some(id) = perf::field_u64(
                        &raw,
                        &Field {
                            name: String::new(),
                            offset: 0,
                            size: 2,
                        },
                    ) else {
                        return;
                    };
                    let Some(k) = self.tps.iter().position(|t| t.id & 0xffff == id) else {
                        return;
                    };
                    let mut vals = [0u64; 6];
                    for (v, f) in vals.iter_mut().zip(&self.tps[k].fields) {
                        *v = perf::field_u64(&raw, f).unwrap_or(0);
                    }
                    recs.push((
                        smp.timestamp.unwrap_or(0),
                        smp.pid.unwrap_or(owner),
                        smp.tid.unwrap_or(owner),
                        k,
                        vals,
                    ));
                }
            });
        }
        self.streams = streams;
        // Rings are per thread, so one thread's enter and exit are in order; across rings,
        // time decides.
        recs.sort_by_key(|r| r.0);
        for (time, pid, tid, k, vals) in recs {
            let tp = &self.tps[k];
            if tp.enter {
                self.pending.insert(
                    tid,
                    Enter {
                        t: tp.t,
                        args: vals,
                    },
                );
                continue;
            }
            let ret = vals[0] as i64;
            let Some(e) = self.pending.remove(&tid).filter(|e| e.t == tp.t) else {
                // Brk is not filtered at entry, so a missing entry is a lost one; the
                // others' exits come for every call (only some entries pass the filter).
                if tp.t == Traced::Brk {
                    self.unpaired += 1;
                    if ret > 0 {
                        self.brk.insert(pid, ret as u64);
                    }
                }
                continue;
            };
            let is_error = (-4095..0).contains(&ret);
            let old_brk = self.brk.get(&pid).copied();
            if e.t == Traced::Brk && !is_error {
                self.brk.insert(pid, ret as u64);
            }
            let ranges = syscalls::released(e.t, &e.args, ret, is_error, old_brk, self.ps);
            if !ranges.is_empty() {
                self.queue.push(Event::Release {
                    time,
                    pid,
                    t: e.t,
                    ranges,
                });
            }
        }
    }

    /// A process exec'd: the old program break means nothing now (the caller sets the new
    /// one with [`Self::open_process`]).
    pub fn forget(&mut self, pid: i32) {
        self.brk.remove(&pid);
    }

    /// A forked child starts with its parent's program break.
    pub fn inherit_brk(&mut self, parent: i32, child: i32) {
        if let Some(&b) = self.brk.get(&parent) {
            self.brk.insert(child, b);
        }
    }
}

/// Take from `queue` what the tracer applies now: the releases before `until` and every loss,
/// in time order; the rest stays queued.
fn due(queue: &mut Vec<Event>, until: u64) -> Vec<Event> {
    queue.sort_by_key(Event::time);
    let (now, later): (Vec<Event>, Vec<Event>) = std::mem::take(queue)
        .into_iter()
        .partition(|e| matches!(e, Event::Lost { .. }) || e.time() < until);
    *queue = later;
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(time: u64) -> Event {
        Event::Release {
            time,
            pid: 1,
            t: Traced::Munmap,
            ranges: Vec::new(),
        }
    }

    /// A loss found by the drain is stamped after `until` (the drain runs after the caller
    /// read the clock), yet it is applied now, before the sample that follows; a release
    /// after `until` waits.
    #[test]
    fn a_loss_found_by_the_drain_is_never_held_for_the_next_call() {
        let lost = Event::Lost {
            time: 30,
            pid: 1,
            records: 5,
        };
        let mut q = vec![release(35), lost.clone(), release(10), release(25)];
        let now = due(&mut q, 20);
        assert_eq!(now, vec![release(10), lost]);
        assert_eq!(q, vec![release(25), release(35)]);
        assert_eq!(due(&mut q, 30), vec![release(25)]);
        assert_eq!(q, vec![release(35)]);
    }

    #[test]
    fn the_madvise_filter_names_every_releasing_advice() {
        let f = madvise_filter();
        for a in syscalls::RELEASING_ADVICE {
            assert!(f.contains(&format!("behavior == {a}")), "{f}");
        }
        assert_eq!(
            f.matches("||").count(),
            syscalls::RELEASING_ADVICE.len() - 1
        );
    }
}
