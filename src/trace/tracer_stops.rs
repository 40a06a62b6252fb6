//! What each ptrace stop means (a child module of `tracer`, whose `event_loop` and `handle`
//! only wait and dispatch): a fork (the two-phase baseline), a thread, an exec, an exit stop,
//! a seccomp or syscall stop (a release), a death; and the releases applied to the live
//! pairs.

use super::*;

impl Tracer<'_> {
    pub(super) fn on_fork(&mut self, tid: i32, ev: i32) {
        let stopped_at = Instant::now();
        let at_ns = crate::perf::monotonic_ns();
        let Ok(new) = ptrace::event_msg(tid).map(|m| m as i32) else {
            self.resume(tid, 0);
            return;
        };
        let ptgid = self.tasks.get(&tid).map_or(tid, |t| t.tgid);
        if ev == event::CLONE && tgid_of(new).unwrap_or(ptgid) == ptgid {
            self.on_new_thread(tid, ptgid, new);
            return;
        }
        let shares_mm =
            ev == event::VFORK || crate::mem::process::same_address_space(tid, new) == Some(true);
        let parent_mm = self.procs.get(&ptgid).map_or(ptgid, |p| p.mm);
        if !self.procs.contains_key(&new) {
            self.add_process(
                new,
                Some(ptgid),
                true,
                if shares_mm { parent_mm } else { new },
            );
        }
        let child_task = self.tasks.entry(new).or_insert(Task {
            tgid: new,
            ..Task::default()
        });
        child_task.awaiting_baseline = true;
        let fork = self.record_fork(tid, ptgid, new, ev, shares_mm);
        if shares_mm {
            self.resume(tid, 0);
            self.body.forks[fork].pause_us = stopped_at.elapsed().as_micros() as u64;
            self.vforks.insert(new, fork);
            self.open_release_events_child(ptgid, new);
            self.release_child(new, stopped_at, fork);
            return;
        }
        self.take_baseline(tid, ptgid, new, fork, stopped_at, at_ns);
        // Before the child's first instruction.
        self.open_release_events_child(ptgid, new);
        self.release_child(new, stopped_at, fork);
    }

    /// A clone into the same thread group: a thread, no fork.
    pub(super) fn on_new_thread(&mut self, tid: i32, ptgid: i32, new: i32) {
        self.tasks.entry(new).or_insert(Task {
            tgid: ptgid,
            ..Task::default()
        });
        if let Some(p) = self.procs.get_mut(&ptgid) {
            p.threads.insert(new);
        }
        if let Some(r) = self.faults.as_mut() {
            r.new_thread(ptgid, new);
        }
        self.release_events_new_thread(ptgid, new);
        self.resume(tid, 0);
    }

    /// The fork's record in the report (its index).
    pub(super) fn record_fork(
        &mut self,
        tid: i32,
        ptgid: i32,
        new: i32,
        ev: i32,
        shares_mm: bool,
    ) -> usize {
        let fork = self.body.forks.len();
        self.body.forks.push(ForkRecord {
            parent: ptgid,
            child: new,
            thread: tid,
            kind: match ev {
                event::VFORK => "vfork",
                event::CLONE => "clone",
                _ => "fork",
            }
            .into(),
            shares_mm,
            at: self.now(),
            pause_us: 0,
            parent_read_us: 0,
            child_hold_us: 0,
            baseline: None,
            samples: Vec::new(),
            final_sample: None,
            peak: None,
            releases: Default::default(),
            ended: None,
            stacks: None,
            unattributed: None,
            stack_samples: None,
            notes: Vec::new(),
        });
        fork
    }

    /// The fork-time baseline in two phases: the parent's side while it is held (then it
    /// resumes), the child's before its first instruction; a live pair when both were read.
    pub(super) fn take_baseline(
        &mut self,
        tid: i32,
        ptgid: i32,
        new: i32,
        fork: usize,
        stopped_at: Instant,
        at_ns: u64,
    ) {
        // Phase 1 while the parent is held at its fork stop.
        let parent_threads = thread_ids(ptgid).len().max(1);
        let phase1 = Pagemap::open(tid).and_then(|pm| {
            let snap = relation::read_parent(tid, &pm)?;
            Ok((pm, snap))
        });
        if let (Ok((_, snap)), Some(r)) = (&phase1, self.faults.as_mut()) {
            // Before the parent runs on: its faults from here belong to this fork.
            r.fork(ptgid, new, at_ns, &snap.ranges());
            let threads: Vec<i32> = self
                .procs
                .get(&ptgid)
                .map(|p| p.threads.iter().copied().collect())
                .unwrap_or_else(|| vec![tid]);
            r.open_process(ptgid, &threads);
            r.fork_stack(fork, ptgid, tid);
        }
        self.resume(tid, 0);
        self.body.forks[fork].pause_us = stopped_at.elapsed().as_micros() as u64;
        if let Ok((_, snap)) = &phase1 {
            self.body.forks[fork].parent_read_us = snap.read_time().as_micros() as u64;
        }
        // Phase 2: the child has not run yet.
        let built = phase1.and_then(|(pm_p, snap)| {
            let pm_c = Pagemap::open(new)?;
            let b = Baseline::complete(snap, &pm_c, self.pfn_visible)?;
            Ok((pm_p, pm_c, b))
        });
        let (pm_p, pm_c, mut base) = match built {
            Ok(b) => b,
            Err(e) => {
                self.body.forks[fork]
                    .notes
                    .push(format!("no baseline could be read: {e}"));
                return;
            }
        };
        if let Some(r) = self.faults.as_mut() {
            // Before the child's first instruction.
            r.open_process(new, &[new]);
            if self.opts.stacks.is_some() {
                base.track_copies();
            }
        }
        self.body.forks[fork].baseline = Some(BaselineInfo {
            pages: base.tracked_pages(),
            copied_at_fork: base.copied_at_fork(),
            vmas: base.vmas().len(),
            parent_threads,
        });
        if parent_threads > 1 {
            self.body.forks[fork].notes.push(format!(
                "the parent had {parent_threads} threads at the fork: a write by another \
                 parent thread between the fork and the reading of the parent's side \
                 counts as copied_at_fork (the child's side is the fork-time copy \
                 whatever the parent's threads do)"
            ));
        }
        self.pairs.push(Pair {
            fork,
            parent: ptgid,
            child: new,
            base: Some(base),
            pm_parent: Some(pm_p),
            pm_child: Some(pm_c),
            live: true,
            at_ns,
            last: None,
            remapped: 0,
            exit_sampled: false,
            lost_until: (None, None),
            last_sample_ns: at_ns,
            releases: Vec::new(),
            exit_ns: (None, None),
        });
    }

    /// A new process whose parent's fork event never came (the parent was killed between
    /// the fork and the event: a fatal signal skips the ptrace stop) must not stay stopped:
    /// after a second, let it run without a baseline.
    pub(super) fn release_orphaned_holds(&mut self) {
        let stale: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.awaiting_baseline
                    && t.held_since
                        .is_some_and(|h| h.elapsed() > Duration::from_secs(1))
            })
            .map(|(&tid, _)| tid)
            .collect();
        for tid in stale {
            let sig = self.tasks.get_mut(&tid).and_then(|t| {
                t.awaiting_baseline = false;
                t.held.take()
            });
            self.body.notes.push(format!(
                "pid {tid} was forked but its parent's fork event never came (the parent died \
                 first?): it runs on without a baseline"
            ));
            self.resume(tid, sig.unwrap_or(0));
        }
    }

    pub(super) fn release_child(&mut self, child: i32, stopped_at: Instant, fork: usize) {
        let held = self.tasks.get_mut(&child).and_then(|t| {
            t.awaiting_baseline = false;
            t.held.take()
        });
        self.body.forks[fork].child_hold_us = stopped_at.elapsed().as_micros() as u64;
        if let Some(sig) = held {
            self.resume(child, sig);
        }
    }

    pub(super) fn members(&self, pid: i32) -> Vec<usize> {
        self.pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.live && (p.parent == pid || p.child == pid))
            .map(|(i, _)| i)
            .collect()
    }

    pub(super) fn on_exec(&mut self, tid: i32) {
        let former = ptrace::event_msg(tid).map_or(tid, |m| m as i32);
        let tgid = tid; // after a successful exec the task is its group's leader
        if former != tid {
            self.tasks.remove(&former);
        }
        // The other threads are gone (their deaths may still be reported: ignored).
        self.tasks.retain(|&t, task| task.tgid != tgid || t == tid);
        self.tasks.insert(
            tid,
            Task {
                tgid,
                ..Task::default()
            },
        );
        for i in self.members(tgid) {
            let by = if self.pairs[i].child == tgid {
                "child_exec"
            } else {
                "parent_exec"
            };
            self.end_pair(i, by);
        }
        if let Some(f) = self.vforks.remove(&tgid) {
            self.body.forks[f].ended = Some(PairEnd {
                at: self.now(),
                by: "child_exec".into(),
            });
        }
        let fam = self.new_family(true);
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.family = fam;
            p.mm = tgid;
            p.threads = BTreeSet::from([tid]);
            let rec = p.rec;
            self.body.processes[rec].execs += 1;
            self.body.processes[rec].exe = exe_of(tgid);
            self.refresh_name(tgid);
        }
        if tgid == self.root {
            self.read_report_pipe();
        }
        if let Some(r) = self.faults.as_ref() {
            r.reread_maps(tgid);
        }
        self.release_events_exec(tgid);
        if self.tracking != Tracking::None && is_32bit_elf(tgid) {
            self.untracked_32bit.push(tgid);
            self.body.notes.push(format!(
                "pid {tgid} runs a 32-bit program ({}): its 32-bit syscalls are not decoded \
                 (the seccomp filter and the --syscalls table know the native ABI only), so \
                 its releases are not tracked",
                exe_of(tgid)
            ));
        }
        self.resume(tid, 0);
    }

    /// Messages the command's child side sent before its exec (close-on-exec pipe: at EOF by
    /// the time the exec is reported).
    pub(super) fn read_report_pipe(&mut self) -> Vec<(u8, u64)> {
        let Some(fd) = self.report_pipe.take() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        // SAFETY: fcntl on our own descriptor with plain integers.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        while let Ok(n) = nix::unistd::read(&fd, &mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        for m in buf.chunks_exact(child::MSG_LEN) {
            let mut v = [0u8; 8];
            v.copy_from_slice(&m[1..9]);
            out.push((m[0], u64::from_le_bytes(v)));
        }
        if out.iter().any(|&(t, _)| t == child::TAG_NO_NEW_PRIVS) {
            self.body.release_tracking.no_new_privs = true;
        }
        out
    }

    pub(super) fn on_exit_stop(&mut self, tid: i32) {
        let tgid = self.tasks.get(&tid).map_or(tid, |t| t.tgid);
        let members = self.members(tgid);
        if !members.is_empty() && process_is_ending(tgid, tid) {
            // The last name it had (a title set with setproctitle since its start).
            self.refresh_name(tgid);
            let now = crate::perf::monotonic_ns();
            for i in members {
                let pair = &mut self.pairs[i];
                let trig = if pair.child == tgid {
                    pair.exit_ns.1.get_or_insert(now);
                    "child_exit"
                } else {
                    pair.exit_ns.0.get_or_insert(now);
                    "parent_exit"
                };
                self.sample_pair(i, trig);
                self.pairs[i].exit_sampled = true;
            }
        }
        self.resume(tid, 0);
    }

    pub(super) fn on_seccomp(&mut self, tid: i32) {
        self.body.release_tracking.stops += 1;
        let want_exit = match ptrace::syscall_info(tid) {
            Ok(ptrace::SyscallInfo::Seccomp {
                arch,
                nr,
                args,
                ret_data,
            }) => Traced::from_data(ret_data & 0xffff)
                .or_else(|| syscalls::lookup(arch, nr))
                .is_some_and(|t| self.on_syscall_entry(tid, t, args)),
            _ => false,
        };
        if want_exit {
            let _ = ptrace::syscall(tid, 0);
        } else {
            self.resume(tid, 0);
        }
    }

    pub(super) fn on_syscall_stop(&mut self, tid: i32) {
        self.body.release_tracking.stops += 1;
        match ptrace::syscall_info(tid) {
            Ok(ptrace::SyscallInfo::Entry { arch, nr, args }) => {
                if let Some(t) = syscalls::lookup(arch, nr).filter(|&t| syscalls::matters(t, &args))
                {
                    self.on_syscall_entry(tid, t, args);
                }
            }
            Ok(ptrace::SyscallInfo::Exit { rval, is_error }) => {
                if let Some(p) = self.tasks.get_mut(&tid).and_then(|t| t.pending.take()) {
                    self.apply_release(p, rval, is_error);
                }
            }
            _ => {}
        }
        self.resume(tid, 0);
    }

    /// At a releasing (or exec) syscall's entry. Returns true when its exit must be seen.
    pub(super) fn on_syscall_entry(&mut self, tid: i32, t: Traced, args: [u64; 6]) -> bool {
        let tgid = self.tasks.get(&tid).map_or(tid, |t| t.tgid);
        let mm = self.procs.get(&tgid).map_or(tgid, |p| p.mm);
        if t == Traced::Exec {
            if mm == tgid {
                for i in self.members(tgid) {
                    let trig = if self.pairs[i].child == tgid {
                        "child_exec"
                    } else {
                        "parent_exec"
                    };
                    self.sample_pair(i, trig);
                }
            }
            return false;
        }
        if self.members(mm).is_empty() {
            return false;
        }
        let old_brk = if t == Traced::Brk {
            heap_end(tgid)
        } else {
            None
        };
        if let Some(task) = self.tasks.get_mut(&tid) {
            task.pending = Some(Pending {
                t,
                args,
                old_brk,
                mm,
            });
        }
        true
    }

    pub(super) fn apply_release(&mut self, p: Pending, rval: i64, is_error: bool) {
        let ranges = syscalls::released(p.t, &p.args, rval, is_error, p.old_brk, self.ps);
        self.apply_ranges(p.mm, p.t, &ranges, None);
    }

    /// Mark `ranges`, released by process `mm`'s address space with `t`, on every live pair
    /// it is a side of (with `at_ns`: only pairs forked before it).
    pub(super) fn apply_ranges(
        &mut self,
        mm: i32,
        t: Traced,
        ranges: &[syscalls::Range],
        at_ns: Option<u64>,
    ) {
        if ranges.is_empty() {
            return;
        }
        self.body.release_tracking.releases += 1;
        for i in self.members(mm) {
            if at_ns.is_some_and(|t| t < self.pairs[i].at_ns) {
                continue;
            }
            let by_child = self.pairs[i].child == mm;
            let Some(base) = self.pairs[i].base.as_mut() else {
                continue;
            };
            let mut pages = 0;
            let mut log = Vec::new();
            for r in ranges {
                let new = base.mark_released(r.start, r.end, by_child);
                // Only a page's first release matters to the timeline.
                if new > 0 && self.faults.is_some() {
                    log.push(super::super::timeline::Release {
                        time: at_ns.unwrap_or_else(crate::perf::monotonic_ns),
                        by_child,
                        start: r.start,
                        end: r.end,
                    });
                }
                pages += new;
            }
            self.pairs[i].releases.append(&mut log);
            let fork = self.pairs[i].fork;
            let rel = &mut self.body.forks[fork].releases;
            let side = if by_child {
                &mut rel.by_child
            } else {
                &mut rel.by_parent
            };
            side.calls += 1;
            side.pages += pages;
            *side.by_syscall.entry(t.name().to_string()).or_insert(0) += 1;
        }
    }

    pub(super) fn on_death(&mut self, tid: i32, code: Option<i32>, sig: Option<i32>) {
        let Some(task) = self.tasks.remove(&tid) else {
            return;
        };
        let tgid = task.tgid;
        if tid != tgid {
            if let Some(p) = self.procs.get_mut(&tgid) {
                p.threads.remove(&tid);
            }
            return;
        }
        // The leader's death is reported last: the process is gone.
        self.tasks.retain(|_, t| t.tgid != tgid);
        self.release_events_gone(tgid);
        let now = self.now();
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.alive = false;
            let r = &mut self.body.processes[p.rec];
            r.exited_at = Some(now);
            r.exit_code = code;
            r.signal = sig.map(signal_name);
        }
        for i in self.members(tgid) {
            let by = if self.pairs[i].child == tgid {
                "child_exit"
            } else {
                "parent_exit"
            };
            self.end_pair(i, by);
        }
        if let Some(f) = self.vforks.remove(&tgid) {
            self.body.forks[f].ended = Some(PairEnd {
                at: now,
                by: "child_exit".into(),
            });
        }
        if tgid == self.root {
            self.root_exit = Some(ProgramExit {
                code,
                signal: sig.map(signal_name),
                status: code.unwrap_or_else(|| 128 + sig.unwrap_or(0)),
            });
        }
    }
}
