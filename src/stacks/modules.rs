//! Every traced process's executable mappings, kept while it lives (samply's `proc_maps.rs` is
//! the model): symbolization runs after the run, when the processes are gone, so what it needs
//! (each file's path and build-id, each mapping's range and its place in the file) is taken
//! from `/proc/<pid>/maps` while they exist.
//!
//! Memory: one [`Module`] per distinct file (interned by path and build-id across every
//! process; an ELF file is opened once per (path, device, inode) to read its build-id and
//! `PT_LOAD` headers, never read whole), and per live process one [`Mapping`] per executable
//! VMA (tens). [`Modules::forget_process`] drops a process's mappings and keeps its modules.

use std::collections::HashMap;
use std::fs::File;
use std::io;

use object::Object as _;
use object::read::elf::{ElfFile64, ProgramHeader as _};

use super::{Loc, ModuleId};
use crate::mem::smaps::{SmapsEntry, vma_bounds};

/// What kind of code a module holds, which decides how its offsets are symbolized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleKind {
    /// An ELF file: offsets are the file's own virtual addresses.
    Elf,
    /// Anonymous executable memory of process `pid` (a JIT): offsets are absolute
    /// addresses, named by `/tmp/perf-<pid>.map` if the JIT wrote one.
    PerfMap {
        /// The process whose perf map names this memory.
        pid: i32,
    },
    /// `[vdso]`, `[vsyscall]`, a deleted file, a file that is not ELF or cannot be read:
    /// offsets are file offsets (mapping offset plus file offset); no symbols.
    Pseudo,
}

/// One `PT_LOAD` program header: how the file's bytes map to its virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// `p_offset`.
    pub file_offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_filesz`.
    pub file_size: u64,
    /// `p_flags` has `PF_X`.
    pub executable: bool,
}

/// A file (or JIT region, or pseudo mapping) that code ran from.
#[derive(Debug, Clone)]
pub struct Module {
    /// The path as `/proc/<pid>/maps` printed it (`[vdso]` for pseudo mappings; the perf map's
    /// path for a JIT module).
    pub path: String,
    /// The GNU build-id note, when the file has one.
    pub build_id: Option<Vec<u8>>,
    /// The file name (`libc.so.6`), or the pseudo name (`[vdso]`, `perf-PID.map`).
    pub name: String,
    /// How offsets in it are symbolized.
    pub kind: ModuleKind,
    /// The `PT_LOAD` headers of an ELF module (empty otherwise).
    pub segments: Vec<Segment>,
}

/// One executable VMA of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The module mapped here.
    pub module: ModuleId,
    /// The module offset ([`Loc::offset`]) of `start`: `offset(addr) = svma_start + (addr - start)`.
    pub svma_start: u64,
}

impl Mapping {
    /// The module offset of `addr` (which this mapping contains).
    pub fn offset_of(&self, addr: u64) -> u64 {
        self.svma_start.wrapping_add(addr - self.start)
    }

    /// The load bias: the address at which the module's offset 0 would lie
    /// (framehop's `base_avma`).
    pub fn bias(&self) -> u64 {
        self.start.wrapping_sub(self.svma_start)
    }
}

#[derive(Debug, Clone, Default)]
struct Process {
    /// Sorted by start, non-overlapping.
    maps: Vec<Mapping>,
    generation: u64,
}

/// A registry over all traced processes; modules interned by (path, build-id) across processes.
#[derive(Debug, Default)]
pub struct Modules {
    modules: Vec<Module>,
    by_key: HashMap<(String, Option<Vec<u8>>), ModuleId>,
    /// (path, dev, inode) -> module: a file already read is not opened again.
    by_file: HashMap<(String, String, u64), ModuleId>,
    processes: HashMap<i32, Process>,
    generation: u64,
}

impl Modules {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// (Re)read `/proc/<pid>/maps` now: at attach, after an exec, or when an address is not
    /// in any known mapping. Replaces the process's mappings; modules are kept.
    ///
    /// # Errors
    /// The OS error reading the maps file (ESRCH/ENOENT once the process is gone).
    pub fn read_process(&mut self, pid: i32) -> io::Result<()> {
        let vmas = vma_bounds(pid)?;
        self.set_process(pid, &vmas);
        Ok(())
    }

    /// Replace the mappings of `pid` with the executable ones among `vmas` (as
    /// `/proc/<pid>/maps` lists them). Public so that a caller holding a maps snapshot (or a
    /// test) need not read it twice.
    pub fn set_process(&mut self, pid: i32, vmas: &[SmapsEntry]) {
        let old = self.processes.remove(&pid).unwrap_or_default();
        let mut maps = Vec::new();
        for v in vmas.iter().filter(|v| v.perms.contains('x')) {
            let (module, svma_start) = if v.pathname.is_empty() || v.pathname.starts_with("[anon") {
                // Anonymous executable memory: keep the module an earlier read (or a fork's
                // inheritance) gave this range, else this process's perf map.
                let kept = old.maps.iter().find(|m| {
                    m.start == v.start
                        && matches!(
                            self.modules[m.module.0 as usize].kind,
                            ModuleKind::PerfMap { .. }
                        )
                });
                match kept {
                    Some(m) => (m.module, v.start),
                    None => (self.perf_map_module(pid), v.start),
                }
            } else if v.pathname.starts_with('[') || v.pathname.ends_with(" (deleted)") {
                (self.pseudo(&v.pathname), v.offset)
            } else {
                let id = self.file_module(v);
                let m = &self.modules[id.0 as usize];
                let svma = match m.kind {
                    ModuleKind::Elf => file_offset_to_svma(&m.segments, v.offset),
                    _ => v.offset,
                };
                (id, svma)
            };
            maps.push(Mapping {
                start: v.start,
                end: v.end,
                module,
                svma_start,
            });
        }
        maps.sort_by_key(|m| m.start);
        self.generation += 1;
        self.processes.insert(
            pid,
            Process {
                maps,
                generation: self.generation,
            },
        );
    }

    /// A fork: the child maps what the parent maps (until it execs or is re-read).
    pub fn inherit(&mut self, parent: i32, child: i32) {
        let maps = self
            .processes
            .get(&parent)
            .map(|p| p.maps.clone())
            .unwrap_or_default();
        self.generation += 1;
        self.processes.insert(
            child,
            Process {
                maps,
                generation: self.generation,
            },
        );
    }

    /// The code location of `addr` in `pid`, if an executable mapping of it contains `addr`.
    pub fn locate(&self, pid: i32, addr: u64) -> Option<Loc> {
        let m = self.mapping(pid, addr)?;
        Some(Loc {
            module: m.module,
            offset: m.offset_of(addr),
        })
    }

    /// The executable mapping of `pid` that contains `addr`.
    pub fn mapping(&self, pid: i32, addr: u64) -> Option<&Mapping> {
        let maps = &self.processes.get(&pid)?.maps;
        let i = maps.partition_point(|m| m.start <= addr);
        let m = maps.get(i.checked_sub(1)?)?;
        (addr < m.end).then_some(m)
    }

    /// Every executable mapping of `pid`, by address (None for a process never read).
    pub fn mappings(&self, pid: i32) -> Option<&[Mapping]> {
        self.processes.get(&pid).map(|p| p.maps.as_slice())
    }

    /// A number that changes whenever the mappings of `pid` are replaced (the unwinder
    /// rebuilds its per-process state when it does).
    pub fn generation(&self, pid: i32) -> Option<u64> {
        self.processes.get(&pid).map(|p| p.generation)
    }

    /// The module behind an id this registry handed out.
    ///
    /// # Panics
    /// On an id from another registry (a caller bug).
    pub fn module(&self, id: ModuleId) -> &Module {
        &self.modules[id.0 as usize]
    }

    /// How many distinct modules are known.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Whether no module is known.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Drop the address map of `pid` (it exited); its modules stay for symbolization.
    pub fn forget_process(&mut self, pid: i32) {
        self.processes.remove(&pid);
    }

    fn intern(&mut self, m: Module) -> ModuleId {
        let key = (m.path.clone(), m.build_id.clone());
        if let Some(id) = self.by_key.get(&key) {
            return *id;
        }
        let id = ModuleId(u32::try_from(self.modules.len()).expect("fewer than 2^32 modules"));
        self.modules.push(m);
        self.by_key.insert(key, id);
        id
    }

    fn pseudo(&mut self, pathname: &str) -> ModuleId {
        self.intern(Module {
            path: pathname.to_string(),
            build_id: None,
            name: file_name(pathname.trim_end_matches(" (deleted)")),
            kind: ModuleKind::Pseudo,
            segments: Vec::new(),
        })
    }

    fn perf_map_module(&mut self, pid: i32) -> ModuleId {
        let path = perf_map_path(pid);
        self.intern(Module {
            name: file_name(&path),
            path,
            build_id: None,
            kind: ModuleKind::PerfMap { pid },
            segments: Vec::new(),
        })
    }

    fn file_module(&mut self, v: &SmapsEntry) -> ModuleId {
        let fkey = (v.pathname.clone(), v.dev.clone(), v.inode);
        if let Some(id) = self.by_file.get(&fkey) {
            return *id;
        }
        let id = match read_elf_headers(&v.pathname) {
            Some((build_id, segments)) => self.intern(Module {
                path: v.pathname.clone(),
                build_id,
                name: file_name(&v.pathname),
                kind: ModuleKind::Elf,
                segments,
            }),
            None => self.pseudo(&v.pathname),
        };
        self.by_file.insert(fkey, id);
        id
    }
}

/// The 64-bit vDSO image as this process maps it, copied once. Every 64-bit process of one
/// kernel maps the same vDSO code (one image per ABI, linked at virtual address 0), so its
/// `.eh_frame` and `.dynsym` stand in for a traced process's `[vdso]`, which has no file.
pub fn own_vdso_image() -> Option<&'static [u8]> {
    static IMAGE: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let pid = nix::unistd::getpid();
            let vmas = vma_bounds(pid.as_raw()).ok()?;
            let v = vmas.iter().find(|v| v.pathname == "[vdso]")?;
            let len = usize::try_from(v.end - v.start).ok()?;
            let mut buf = vec![0u8; len];
            let n = nix::sys::uio::process_vm_readv(
                pid,
                &mut [io::IoSliceMut::new(&mut buf)],
                &[nix::sys::uio::RemoteIoVec {
                    base: usize::try_from(v.start).ok()?,
                    len,
                }],
            )
            .ok()?;
            (n == len).then_some(buf)
        })
        .as_deref()
}

/// Where a JIT in process `pid` writes its perf map (perf's convention).
pub fn perf_map_path(pid: i32) -> String {
    format!("/tmp/perf-{pid}.map")
}

fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// The virtual address of the file offset at which an executable mapping starts, through the
/// `PT_LOAD` header it maps (the file offset itself where none does).
///
/// A mapping starts at the page-aligned start of its segment, which may lie inside the
/// previous segment's last page (`p_offset` 0x135a90 is mapped from 0x135000), so a segment
/// covers `[p_offset & !PAGE, p_offset + p_filesz)` and an executable segment is preferred.
/// `p_offset` and `p_vaddr` are congruent modulo the page size, so
/// `vaddr = file_offset - p_offset + p_vaddr` holds across that first partial page.
pub fn file_offset_to_svma(segments: &[Segment], file_offset: u64) -> u64 {
    let page = crate::kernel::page_size() as u64;
    let covers = |s: &&Segment| {
        file_offset >= s.file_offset & !(page - 1)
            && file_offset < s.file_offset.saturating_add(s.file_size)
    };
    segments
        .iter()
        .filter(covers)
        .find(|s| s.executable)
        .or_else(|| segments.iter().find(covers))
        .map(|s| (file_offset.wrapping_sub(s.file_offset)).wrapping_add(s.vaddr))
        .unwrap_or(file_offset)
}

/// The GNU build-id of the ELF file at `path` (None: not readable, not ELF, or no note).
pub fn read_build_id(path: &str) -> Option<Vec<u8>> {
    read_elf_headers(path)?.0
}

/// The build-id and `PT_LOAD` headers of the ELF file at `path`, reading only those parts.
fn read_elf_headers(path: &str) -> Option<(Option<Vec<u8>>, Vec<Segment>)> {
    let file = File::open(path).ok()?;
    let cache = object::ReadCache::new(file);
    let elf = ElfFile64::<object::Endianness, _>::parse(&cache).ok()?;
    let endian = elf.endian();
    let segments = elf
        .elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == object::elf::PT_LOAD)
        .map(|ph| Segment {
            file_offset: ph.p_offset(endian),
            vaddr: ph.p_vaddr(endian),
            file_size: ph.p_filesz(endian),
            executable: ph.p_flags(endian).0 & object::elf::PF_X.0 != 0,
        })
        .collect();
    let build_id = elf.build_id().ok().flatten().map(<[u8]>::to_vec);
    Some((build_id, segments))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64, perms: &str, offset: u64, path: &str) -> SmapsEntry {
        SmapsEntry {
            start,
            end,
            perms: perms.into(),
            offset,
            dev: "00:00".into(),
            inode: 0,
            pathname: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn svma_goes_through_the_load_header_that_holds_the_offset() {
        // GNU ld's PIE layout: r-- at 0, r-x at 0x1000 (file) / 0x1000 (vaddr), data at file
        // 0x3000 placed at vaddr 0x4000.
        let seg = |file_offset, vaddr, file_size, executable| Segment {
            file_offset,
            vaddr,
            file_size,
            executable,
        };
        let segs = [
            seg(0, 0, 0x1000, false),
            seg(0x1000, 0x1000, 0x2000, true),
            seg(0x3000, 0x4000, 0x500, false),
        ];
        assert_eq!(file_offset_to_svma(&segs, 0x1000), 0x1000);
        assert_eq!(file_offset_to_svma(&segs, 0x3000), 0x4000);
        assert_eq!(
            file_offset_to_svma(&segs, 0x9000),
            0x9000,
            "no header: the offset"
        );
        // lld's (and rustc's) layout, from a real test binary: the r-x segment starts mid-page,
        // so its mapping starts at file offset 0x135000, inside the r-- segment's range.
        let lld = [
            seg(0, 0, 0x135a88, false),
            seg(0x135a90, 0x136a90, 0x27fa20, true),
            seg(0x3b54b0, 0x3b74b0, 0x2e810, false),
        ];
        assert_eq!(file_offset_to_svma(&lld, 0x135000), 0x136000);
    }

    #[test]
    fn anonymous_exec_memory_is_the_perf_map_module_with_absolute_offsets_and_a_fork_keeps_it() {
        let mut m = Modules::new();
        m.set_process(
            10,
            &[
                vma(0x7000_0000, 0x7000_4000, "r-xp", 0, ""),
                vma(0x7100_0000, 0x7100_1000, "r-xp", 0, "[vdso]"),
                vma(0x7200_0000, 0x7200_1000, "rw-p", 0, ""),
            ],
        );
        let loc = m.locate(10, 0x7000_0123).expect("in the anon exec region");
        assert_eq!(loc.offset, 0x7000_0123);
        assert_eq!(m.module(loc.module).kind, ModuleKind::PerfMap { pid: 10 });
        assert_eq!(m.module(loc.module).path, "/tmp/perf-10.map");
        let vdso = m.locate(10, 0x7100_0010).expect("vdso");
        assert_eq!(
            (m.module(vdso.module).name.as_str(), vdso.offset),
            ("[vdso]", 0x10)
        );
        assert_eq!(m.locate(10, 0x7200_0000), None, "not executable");
        assert_eq!(m.locate(10, 0x7000_4000), None, "end is exclusive");
        assert_eq!(m.locate(11, 0x7000_0123), None, "unknown process");

        m.inherit(10, 11);
        assert_eq!(m.locate(11, 0x7000_0123), Some(loc));
        // The child re-read: its inherited JIT range keeps the parent's perf map.
        m.set_process(11, &[vma(0x7000_0000, 0x7000_4000, "r-xp", 0, "")]);
        assert_eq!(m.locate(11, 0x7000_0123), Some(loc));
        let g = m.generation(11);
        m.forget_process(11);
        assert_eq!(m.locate(11, 0x7000_0123), None);
        assert!(g.is_some());
        assert_eq!(m.module(loc.module).name, "perf-10.map");
    }

    #[test]
    fn the_test_binary_is_interned_once_with_its_build_id() {
        let pid = std::process::id() as i32;
        let mut m = Modules::new();
        m.read_process(pid).expect("own maps");
        let here = the_test_binary_is_interned_once_with_its_build_id as *const () as u64;
        let loc = m.locate(pid, here).expect("own code is mapped");
        let module = m.module(loc.module);
        assert_eq!(module.kind, ModuleKind::Elf);
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        assert_eq!(module.path, exe.to_string_lossy());
        assert!(!module.segments.is_empty());
        let n = m.len();
        m.read_process(pid).expect("again");
        assert_eq!(m.len(), n, "re-reading interns nothing new");
        assert_eq!(m.locate(pid, here), Some(loc), "same module, same offset");
    }
}
