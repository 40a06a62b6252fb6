//! Stacks: from a sampled fault to "which code copied this page" (issue 15).
//!
//! Three stages after the event stream, as samply lays them out:
//! 1. [`modules`]: every traced process's executable mappings (path, build-id, address
//!    ranges, file offset), kept while it lives so that addresses stay resolvable after it
//!    exits. Files are interned once across processes by (path, build-id).
//! 2. [`unwind`]: registers plus a copy of the user stack -> a list of code locations, leaf
//!    first (framehop: DWARF CFI from `.eh_frame`/`.debug_frame` where a module has it, frame
//!    pointers where not).
//! 3. [`symbols`]: after the run, once per distinct location: function, module, file:line
//!    (blazesym: the ELF symbol tables, DWARF, separate debug files under `/usr/lib/debug`, and
//!    the perf maps JITs write to `/tmp/perf-PID.map`), else `module+0xOFFSET`.
//!
//! Layer: below the producers (trace/, inspect/); uses only `mem/` (the one `/proc/<pid>/maps`
//! parser) and `kernel.rs`. Nothing here decides a page class.

pub mod modules;
pub mod symbols;
pub mod unwind;

/// A code location: a module and an offset in it.
///
/// For an ELF module `offset` is the address as the file states it (the ELF virtual address,
/// "SVMA": `addr - map.start + map.file_offset` translated through the file's `PT_LOAD`
/// program headers), so it is the same in every process that maps the file, whatever the
/// load address. For a JIT module (anonymous executable memory, symbolized from a perf map)
/// it is the absolute address. For a pseudo module (`[vdso]`, `[vsyscall]`, a file that could
/// not be read) it is the offset from the mapping's start plus its file offset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Loc {
    /// The module (see [`modules::Modules::module`]).
    pub module: ModuleId,
    /// The offset in the module (see the type's doc).
    pub offset: u64,
}

/// An interned module: an index into [`modules::Modules`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ModuleId(pub u32);
