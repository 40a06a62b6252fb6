//! Code locations -> function, module, file:line; after the run, once per distinct location.
//!
//! ELF modules go to blazesym (`.symtab`, else `.dynsym`; DWARF in the file, in a `.dwp`
//! beside it, or in a separate debug file found by build-id or `.gnu_debuglink` under the
//! debug directories, `/usr/lib/debug` and `/lib/debug` by default), with inlined calls
//! expanded. JIT modules are looked up in the perf map the JIT wrote (`/tmp/perf-PID.map`).
//! Whatever is not found is `module+0xOFFSET` with `function: None`, never a guess: a module
//! whose file now has another build-id than the one mapped is not symbolized at all.

use std::collections::HashMap;
use std::path::PathBuf;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Loc;
use super::modules::{Module, ModuleKind, Modules};

/// One frame of a symbolized stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Frame {
    /// The function (demangled), when a symbol covers the address; None when unknown.
    pub function: Option<String>,
    /// The module's file name (`libc.so.6`, `python3.11`, `[vdso]`, `perf-PID.map`).
    pub module: String,
    /// The location's offset in the module as hex (`0x1a2b`): the ELF virtual address for a
    /// file, the absolute address for JIT code; for a caller frame it is the return address.
    pub offset: String,
    /// The source file, where debug information names one.
    pub file: Option<String>,
    /// The source line, where debug information names one.
    pub line: Option<u32>,
}

impl Frame {
    /// The frame's name in a stack: the function, else `module+0xOFFSET`.
    pub fn name(&self) -> String {
        match &self.function {
            Some(f) => f.clone(),
            None => format!("{}+{}", self.module, self.offset),
        }
    }
}

/// Where to look for symbols beyond the modules themselves.
#[derive(Debug, Clone, Default)]
pub struct SymbolizeOptions {
    /// Directories searched for separate debug files (by `.build-id/xx/yyyy.debug` and by
    /// `.gnu_debuglink` name); None: blazesym's defaults (`/usr/lib/debug`, `/lib/debug`).
    pub debug_dirs: Option<Vec<PathBuf>>,
}

/// Symbolize every distinct location once, with the default debug directories.
///
/// An inlined call site expands into several frames, innermost first. For a caller frame
/// (`is_leaf == false`) the lookup address is `offset - 1`, inside the call instruction.
pub fn symbolize(modules: &Modules, locs: &[(Loc, bool)]) -> HashMap<(Loc, bool), Vec<Frame>> {
    symbolize_with(modules, locs, &SymbolizeOptions::default())
}

/// [`symbolize`] with options.
pub fn symbolize_with(
    modules: &Modules,
    locs: &[(Loc, bool)],
    opts: &SymbolizeOptions,
) -> HashMap<(Loc, bool), Vec<Frame>> {
    let mut by_module: HashMap<_, Vec<(Loc, bool)>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for l in locs {
        if seen.insert(*l) {
            by_module.entry(l.0.module).or_default().push(*l);
        }
    }
    let symbolizer = Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        // Demangled here instead (see `demangle`): blazesym tries C++ demangling on every
        // name it cannot place, and cpp_demangle reads a C function named `c` as the type
        // `char` (and `a`, `b` as `signed char`, `bool`).
        .enable_demangling(false)
        .set_debug_dirs(opts.debug_dirs.clone())
        .build();
    let mut out = HashMap::with_capacity(seen.len());
    for (id, group) in by_module {
        let module = modules.module(id);
        let frames: Vec<Vec<Frame>> = match &module.kind {
            ModuleKind::Elf if same_build_id(module) => elf_frames(&symbolizer, module, &group),
            ModuleKind::PerfMap { pid: _ } => perf_map_frames(module, &group),
            ModuleKind::Pseudo if module.path == "[vdso]" => vdso_frames(module, &group),
            _ => group.iter().map(|l| vec![unknown(module, l.0)]).collect(),
        };
        out.extend(group.into_iter().zip(frames));
    }
    out
}

fn lookup_addr((loc, is_leaf): (Loc, bool)) -> u64 {
    if is_leaf {
        loc.offset
    } else {
        loc.offset.saturating_sub(1)
    }
}

fn unknown(module: &Module, loc: Loc) -> Frame {
    Frame {
        function: None,
        module: module.name.clone(),
        offset: format!("{:#x}", loc.offset),
        file: None,
        line: None,
    }
}

/// Whether the file at the module's path is still the one that was mapped.
fn same_build_id(module: &Module) -> bool {
    match &module.build_id {
        None => true,
        Some(id) => super::modules::read_build_id(&module.path).as_ref() == Some(id),
    }
}

fn elf_frames(symbolizer: &Symbolizer, module: &Module, group: &[(Loc, bool)]) -> Vec<Vec<Frame>> {
    let addrs: Vec<u64> = group.iter().copied().map(lookup_addr).collect();
    let src = Source::Elf(Elf::new(&module.path));
    let results = match symbolizer.symbolize(&src, Input::VirtOffset(&addrs)) {
        Ok(r) => r,
        Err(_) => return group.iter().map(|l| vec![unknown(module, l.0)]).collect(),
    };
    group
        .iter()
        .zip(results)
        .map(|(l, r)| match r {
            Symbolized::Sym(sym) => {
                let base = unknown(module, l.0);
                let located = |name: &str, ci: Option<&blazesym::symbolize::CodeInfo<'_>>| Frame {
                    function: Some(demangle(name)),
                    file: ci.map(|c| c.to_path().to_string_lossy().into_owned()),
                    line: ci.and_then(|c| c.line),
                    ..base.clone()
                };
                // blazesym lists inlined calls outermost first, each with its own location;
                // the symbol's code_info is the call site in the outer function.
                let mut frames: Vec<Frame> = sym
                    .inlined
                    .iter()
                    .rev()
                    .map(|f| located(&f.name, f.code_info.as_ref()))
                    .collect();
                frames.push(located(&sym.name, sym.code_info.as_deref()));
                frames
            }
            Symbolized::Unknown(_) => vec![unknown(module, l.0)],
        })
        .collect()
}

/// A mangled Rust (legacy `_ZN..E` or v0 `_R`) or C++ (`_Z`) name demangled; any other name
/// as it is (a C function is its own name).
pub fn demangle(name: &str) -> String {
    if !(name.starts_with("_Z") || name.starts_with("_R") || name.starts_with("__Z")) {
        return name.to_string();
    }
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    cpp_demangle::Symbol::new(name)
        .ok()
        .and_then(|s| s.demangle().ok())
        .unwrap_or_else(|| name.to_string())
}

/// vDSO frames named by the vDSO's own `.dynsym` (the image this process maps, the same code;
/// see [`super::modules::own_vdso_image`]); the `__vdso_` alias is preferred.
fn vdso_frames(module: &Module, group: &[(Loc, bool)]) -> Vec<Vec<Frame>> {
    use object::{Object as _, ObjectSymbol as _};
    let image = super::modules::own_vdso_image();
    let file = image.and_then(|d| object::File::parse(d).ok());
    let name_of = |addr: u64| -> Option<String> {
        let file = file.as_ref()?;
        let mut names: Vec<String> = file
            .dynamic_symbols()
            .filter(|s| s.is_definition() && s.address() <= addr && addr < s.address() + s.size())
            .filter_map(|s| s.name().ok().map(str::to_string))
            .collect();
        names.sort_by_key(|n| !n.starts_with("__vdso_"));
        names.into_iter().next()
    };
    group
        .iter()
        .map(|l| {
            let mut f = unknown(module, l.0);
            f.function = name_of(lookup_addr(*l));
            vec![f]
        })
        .collect()
}

/// One perf map line: `START SIZE name` (hex, `0x` optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfMapEntry {
    /// First byte of the code.
    pub start: u64,
    /// Its length.
    pub size: u64,
    /// The name the JIT gave it.
    pub name: String,
}

/// Parse a perf map (`/tmp/perf-PID.map`). Malformed lines are skipped. Where the JIT
/// reused an address, the later line wins.
pub fn parse_perf_map(text: &str) -> Vec<PerfMapEntry> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let mut by_start: Vec<PerfMapEntry> = Vec::new();
    for line in text.lines() {
        let mut parts = line.trim().splitn(3, ' ');
        let (Some(a), Some(s), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Some(start), Some(size)) = (hex(a), hex(s)) else {
            continue;
        };
        by_start.push(PerfMapEntry {
            start,
            size,
            name: name.trim().to_string(),
        });
    }
    // Stable sort, then keep the last of equal starts: the latest definition.
    by_start.sort_by_key(|e| e.start);
    let mut out: Vec<PerfMapEntry> = Vec::with_capacity(by_start.len());
    for e in by_start {
        if out.last().is_some_and(|l| l.start == e.start) {
            out.pop();
        }
        out.push(e);
    }
    out
}

/// The perf map entry that contains `addr` (entries sorted by start, as parsed).
pub fn perf_map_lookup(entries: &[PerfMapEntry], addr: u64) -> Option<&PerfMapEntry> {
    let i = entries.partition_point(|e| e.start <= addr);
    let e = entries.get(i.checked_sub(1)?)?;
    (addr < e.start.saturating_add(e.size)).then_some(e)
}

fn perf_map_frames(module: &Module, group: &[(Loc, bool)]) -> Vec<Vec<Frame>> {
    let entries = std::fs::read_to_string(&module.path)
        .map(|t| parse_perf_map(&t))
        .unwrap_or_default();
    group
        .iter()
        .map(|l| {
            let mut f = unknown(module, l.0);
            f.function = perf_map_lookup(&entries, lookup_addr(*l)).map(|e| e.name.clone());
            vec![f]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_map_lines_parse_with_and_without_0x_and_the_later_definition_wins() {
        let text = "7f0000001000 40 py::f:/tmp/a.py\n\
                    0x7f0000002000 0x10 js:*g with spaces\n\
                    garbage\n\
                    7f0000001000 20 py::f2:/tmp/a.py\n";
        let e = parse_perf_map(text);
        assert_eq!(e.len(), 2);
        assert_eq!(
            perf_map_lookup(&e, 0x7f00_0000_1010).unwrap().name,
            "py::f2:/tmp/a.py"
        );
        assert_eq!(
            perf_map_lookup(&e, 0x7f00_0000_1020),
            None,
            "past the later size"
        );
        assert_eq!(
            perf_map_lookup(&e, 0x7f00_0000_200f).unwrap().name,
            "js:*g with spaces"
        );
        assert_eq!(perf_map_lookup(&e, 0x7f00_0000_2010), None);
        assert_eq!(perf_map_lookup(&e, 0x10), None);
    }

    #[test]
    fn only_mangled_names_are_demangled() {
        assert_eq!(demangle("c"), "c", "a C function, not the type char");
        assert_eq!(demangle("a"), "a");
        assert_eq!(demangle("listiter_next"), "listiter_next");
        assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar()");
        assert_eq!(
            demangle("_ZN4core3ptr4read17h0123456789abcdefE"),
            "core::ptr::read"
        );
        assert_eq!(demangle("_RNvCs1234_5mylib3foo"), "mylib::foo");
        assert_eq!(demangle("_Znot-mangled"), "_Znot-mangled");
    }

    #[test]
    fn an_unknown_frame_is_named_module_plus_offset() {
        let f = Frame {
            function: None,
            module: "redis-server".into(),
            offset: "0x1a2b".into(),
            file: None,
            line: None,
        };
        assert_eq!(f.name(), "redis-server+0x1a2b");
    }
}
