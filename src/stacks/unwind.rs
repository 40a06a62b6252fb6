//! Registers plus a copy of the user stack -> code locations, leaf first (framehop, x86_64;
//! samply is the model).
//!
//! Per module the unwind sections (`.eh_frame` with `.eh_frame_hdr`, else `.eh_frame` alone,
//! else `.debug_frame`) are read once from the file and shared by every process that maps it;
//! per process one framehop unwinder holds the modules at their load addresses, rebuilt when
//! [`Modules::generation`] says the mappings changed. Where an address has no CFI (a JIT, a
//! module without unwind sections) framehop falls back to the frame pointer. The `[vdso]`'s
//! CFI comes from cowscope's own vDSO image ([`super::modules::own_vdso_image`]).
//!
//! Memory: the unwind sections of each distinct module (a few hundred KiB for libc or
//! python3), a framehop module list per live process (call [`Unwinder::forget_process`] when
//! it exits), and framehop's fixed-size rule cache.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Unwinder as _};
use object::read::elf::ElfFile64;
use object::{Object as _, ObjectSection as _};

use super::modules::{ModuleKind, Modules};
use super::{Loc, ModuleId};

/// The deepest stack recorded; frames beyond are dropped.
pub const MAX_FRAMES: usize = 256;

/// The registers unwinding starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRegs {
    /// The instruction pointer (rip).
    pub ip: u64,
    /// The stack pointer (rsp); the stack copy starts here.
    pub sp: u64,
    /// The frame pointer (rbp).
    pub bp: u64,
}

type Data = Arc<[u8]>;

/// A module's unwind sections, by virtual address, as the file states them.
#[derive(Debug, Default, Clone)]
struct UnwindSections {
    eh_frame: Option<(Range<u64>, Data)>,
    eh_frame_hdr: Option<(Range<u64>, Data)>,
    debug_frame: Option<Data>,
    text: Option<Range<u64>>,
    got: Option<Range<u64>>,
}

struct PerProcess {
    generation: u64,
    unwinder: UnwinderX86_64<Data>,
}

/// Unwinds user stacks of traced processes (see the module doc).
pub struct Unwinder {
    sections: HashMap<ModuleId, Option<Arc<UnwindSections>>>,
    processes: HashMap<i32, PerProcess>,
    cache: CacheX86_64,
    /// Frames beyond this are dropped ([`MAX_FRAMES`] unless changed).
    pub max_frames: usize,
}

impl std::fmt::Debug for Unwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwinder")
            .field("modules_read", &self.sections.len())
            .field("processes", &self.processes.len())
            .field("max_frames", &self.max_frames)
            .finish()
    }
}

impl Default for Unwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl Unwinder {
    /// An unwinder with nothing read yet.
    pub fn new() -> Self {
        Unwinder {
            sections: HashMap::new(),
            processes: HashMap::new(),
            cache: CacheX86_64::new(),
            max_frames: MAX_FRAMES,
        }
    }

    /// Unwind one stack, leaf first, into `out` (cleared first).
    ///
    /// The leaf is `regs.ip` exactly (`is_leaf` true). Every caller is the **return address**
    /// as found on the stack, not decremented: a symbolizer must look up `offset - 1` for
    /// frames with `is_leaf == false` ([`super::symbols::symbolize`] does), since the return
    /// address may already be the next line or, after a call to a noreturn function, the next
    /// function.
    ///
    /// `stack` is a copy of the user stack starting at `regs.sp` (what
    /// `PERF_SAMPLE_STACK_USER` gives, or `process_vm_readv` at a ptrace stop). DWARF CFI is
    /// used where the module has it, the frame pointer where not. Unwinding stops at
    /// `max_frames`, where the stack copy ends, at the outermost frame, or at an address in
    /// no executable mapping (after one re-read of `/proc/<pid>/maps` for the leaf, in case
    /// the process mapped code since it was last read). `out` stays empty only when the leaf
    /// itself is in no executable mapping of `pid` (or the process is gone and was never
    /// read): there is no code location to name.
    pub fn unwind(
        &mut self,
        modules: &mut Modules,
        pid: i32,
        regs: UserRegs,
        stack: &[u8],
        out: &mut Vec<(Loc, bool)>,
    ) {
        out.clear();
        if modules.locate(pid, regs.ip).is_none() && modules.read_process(pid).is_err() {
            return;
        }
        let Some(generation) = modules.generation(pid) else {
            return;
        };
        if self.processes.get(&pid).map(|p| p.generation) != Some(generation) {
            let unwinder = self.build(modules, pid);
            self.processes.insert(
                pid,
                PerProcess {
                    generation,
                    unwinder,
                },
            );
        }
        let Some(state) = self.processes.get(&pid) else {
            return;
        };
        let sp = regs.sp;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = usize::try_from(addr.checked_sub(sp).ok_or(())?).map_err(|_| ())?;
            let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut frames = state.unwinder.iter_frames(
            regs.ip,
            UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
            &mut self.cache,
            &mut read_stack,
        );
        while out.len() < self.max_frames {
            let frame = match frames.next() {
                Ok(Some(f)) => f,
                Ok(None) | Err(_) => break,
            };
            let Some(loc) = modules.locate(pid, frame.address()) else {
                break;
            };
            out.push((loc, !frame.is_return_address()));
        }
    }

    /// Unwind a process stopped under ptrace by the caller (registers via `PTRACE_GETREGS`,
    /// `stack_bytes` of stack via `process_vm_readv` from the stack pointer; fewer where the
    /// stack's VMA ends sooner). Used for the parent's stack at its fork stop. For a thread
    /// other than the main one use [`Unwinder::unwind_stopped_thread`].
    ///
    /// # Errors
    /// The OS error of `PTRACE_GETREGS` (ESRCH: not stopped or not traced by this thread) or
    /// of `process_vm_readv` when not one byte could be read.
    pub fn unwind_stopped(
        &mut self,
        modules: &mut Modules,
        pid: i32,
        stack_bytes: usize,
        out: &mut Vec<(Loc, bool)>,
    ) -> io::Result<()> {
        self.unwind_stopped_thread(modules, pid, pid, stack_bytes, out)
    }

    /// [`Unwinder::unwind_stopped`] for thread `tid` of process `pid` (the registers and stack
    /// are the thread's, the mappings the process's).
    ///
    /// # Errors
    /// As [`Unwinder::unwind_stopped`].
    pub fn unwind_stopped_thread(
        &mut self,
        modules: &mut Modules,
        pid: i32,
        tid: i32,
        stack_bytes: usize,
        out: &mut Vec<(Loc, bool)>,
    ) -> io::Result<()> {
        let ntid = nix::unistd::Pid::from_raw(tid);
        let r = nix::sys::ptrace::getregs(ntid).map_err(io::Error::from)?;
        let regs = UserRegs {
            ip: r.rip,
            sp: r.rsp,
            bp: r.rbp,
        };
        let mut stack = vec![0u8; stack_bytes];
        let n = read_remote(ntid, regs.sp, &mut stack)?;
        stack.truncate(n);
        self.unwind(modules, pid, regs, &stack, out);
        Ok(())
    }

    /// Drop the per-process state of `pid` (it exited); module sections stay.
    pub fn forget_process(&mut self, pid: i32) {
        self.processes.remove(&pid);
    }

    fn build(&mut self, modules: &Modules, pid: i32) -> UnwinderX86_64<Data> {
        let mut unwinder = UnwinderX86_64::new();
        for m in modules.mappings(pid).unwrap_or_default() {
            let module = modules.module(m.module);
            let is_vdso = module.kind == ModuleKind::Pseudo && module.path == "[vdso]";
            if module.kind != ModuleKind::Elf && !is_vdso {
                continue;
            }
            let sections = self
                .sections
                .entry(m.module)
                .or_insert_with(|| {
                    if is_vdso {
                        vdso_unwind_sections().map(Arc::new)
                    } else {
                        read_unwind_sections(&module.path).map(Arc::new)
                    }
                })
                .clone();
            let Some(s) = sections else { continue };
            let info = ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: s.text.clone(),
                got_svma: s.got.clone(),
                eh_frame_svma: s.eh_frame.as_ref().map(|(r, _)| r.clone()),
                eh_frame: s.eh_frame.as_ref().map(|(_, d)| d.clone()),
                eh_frame_hdr_svma: s.eh_frame_hdr.as_ref().map(|(r, _)| r.clone()),
                eh_frame_hdr: s.eh_frame_hdr.as_ref().map(|(_, d)| d.clone()),
                debug_frame: s.debug_frame.clone(),
                ..Default::default()
            };
            unwinder.add_module(framehop::Module::new(
                module.name.clone(),
                m.start..m.end,
                m.bias(),
                info,
            ));
        }
        unwinder
    }
}

/// Read `buf.len()` bytes of `pid` at `addr`, as many as are mapped (at least one).
fn read_remote(pid: nix::unistd::Pid, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    use nix::sys::uio::{RemoteIoVec, process_vm_readv};
    if buf.is_empty() {
        return Ok(0);
    }
    let mut done = 0usize;
    // process_vm_readv stops at the first unmapped byte of the remote range and reports what
    // it read; go on until it reads nothing.
    while done < buf.len() {
        let remote = [RemoteIoVec {
            base: addr as usize + done,
            len: buf.len() - done,
        }];
        let mut local = [io::IoSliceMut::new(&mut buf[done..])];
        match process_vm_readv(pid, &mut local, &remote) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if done == 0 => return Err(io::Error::from(e)),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// The unwind sections of the ELF file at `path` (None when it is not a readable ELF file).
fn read_unwind_sections(path: &str) -> Option<UnwindSections> {
    let file = File::open(path).ok()?;
    let cache = object::ReadCache::new(file);
    unwind_sections(&cache)
}

/// The unwind sections of the vDSO (see [`super::modules::own_vdso_image`]).
fn vdso_unwind_sections() -> Option<UnwindSections> {
    unwind_sections(super::modules::own_vdso_image()?)
}

fn unwind_sections<'data, R: object::ReadRef<'data>>(data: R) -> Option<UnwindSections> {
    let elf = ElfFile64::<object::Endianness, R>::parse(data).ok()?;
    let with_data = |name: &str| {
        let s = elf.section_by_name(name)?;
        let data: Data = Arc::from(s.data().ok()?);
        Some((s.address()..s.address() + s.size(), data))
    };
    let range = |name: &str| {
        elf.section_by_name(name)
            .map(|s| s.address()..s.address() + s.size())
    };
    let eh_frame = with_data(".eh_frame");
    let eh_frame_hdr = eh_frame.as_ref().and_then(|_| with_data(".eh_frame_hdr"));
    let debug_frame = if eh_frame.is_none() {
        with_data(".debug_frame").map(|(_, d)| d)
    } else {
        None
    };
    Some(UnwindSections {
        eh_frame,
        eh_frame_hdr,
        debug_frame,
        text: range(".text"),
        got: range(".got"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stages_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Unwinder>();
        send::<Modules>();
        send::<super::super::symbols::Frame>();
    }

    #[test]
    fn the_own_stack_unwinds_through_this_test_to_the_test_harness() {
        // This thread's registers and stack, taken here: the leaf is in this function, and
        // CFI unwinding must reach past it into the test harness's frames.
        let pid = std::process::id() as i32;
        let mut modules = Modules::new();
        modules.read_process(pid).expect("own maps");
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: reads rip, rsp and rbp into registers; no memory is touched.
        unsafe {
            std::arch::asm!("lea {0}, [rip]", "mov {1}, rsp", "mov {2}, rbp",
                out(reg) ip, out(reg) sp, out(reg) bp);
        }
        // A copy of 64 KiB of this thread's stack from sp (well inside the 2 MiB test stack).
        let len = 64 * 1024;
        let mut stack = vec![0u8; len];
        let n = read_remote(nix::unistd::Pid::from_raw(pid), sp, &mut stack).expect("own stack");
        stack.truncate(n);
        let mut out = Vec::new();
        let mut u = Unwinder::new();
        u.unwind(&mut modules, pid, UserRegs { ip, sp, bp }, &stack, &mut out);
        assert!(out.len() >= 3, "got {out:?}");
        assert!(out[0].1 && out[1..].iter().all(|f| !f.1));
        let here = modules.locate(pid, ip).expect("ip located");
        assert_eq!(out[0].0, here, "the leaf is the ip exactly");
        // Symbolized: the leaf is this function, and the outermost frames are libc's thread
        // start (this test runs on a harness thread), so CFI carried the walk through Rust
        // code built without frame pointers.
        let syms = super::super::symbols::symbolize(&modules, &out);
        let leaf = &syms[&out[0]];
        let leaf_fn = leaf
            .last()
            .and_then(|f| f.function.clone())
            .unwrap_or_default();
        assert!(leaf_fn.contains("the_own_stack_unwinds"), "leaf {leaf:?}");
        let outer = &syms[out.last().expect("frames")];
        assert_eq!(outer[0].module, "libc.so.6", "outermost {outer:?}");

        // A stack copy that ends early ends the walk there; the leaf stays exact.
        let mut short = Vec::new();
        u.unwind(
            &mut modules,
            pid,
            UserRegs { ip, sp, bp },
            &stack[..0],
            &mut short,
        );
        assert_eq!(short, out[..1].to_vec());
        u.max_frames = 2;
        u.unwind(
            &mut modules,
            pid,
            UserRegs { ip, sp, bp },
            &stack,
            &mut short,
        );
        assert_eq!(short, out[..2].to_vec(), "max_frames");
    }
}
