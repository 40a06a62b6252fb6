//! The stack stages of `trace --stacks` (src/stacks/): unwinding and symbols on real stopped
//! processes. Expected frames come from the programs' own definitions (the call chain and the
//! marker lines of tests/trace_programs/stack_target.c, the symbol table of the unstripped
//! build read with `object`), never from cowscope's output.
//!
//! Every stopped process is killed and reaped on drop, stopped or not.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use cowscope::stacks::Loc;
use cowscope::stacks::modules::Modules;
use cowscope::stacks::symbols::{Frame, SymbolizeOptions, symbolize, symbolize_with};
use cowscope::stacks::unwind::Unwinder;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use object::{Object as _, ObjectSymbol as _};

const SRC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/trace_programs/stack_target.c"
);

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .expect("the tool runs (install build-essential, binutils)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The builds of stack_target.c, compiled once per test binary.
struct Builds {
    dir: PathBuf,
}

impl Builds {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn builds() -> &'static Builds {
    static B: OnceLock<Builds> = OnceLock::new();
    B.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("cowscope-stacks-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cc = |out: &str, flags: &[&str]| {
            run(Command::new("cc")
                .args(flags)
                .arg("-o")
                .arg(dir.join(out))
                .arg(SRC));
        };
        cc("fp_g", &["-O2", "-fno-omit-frame-pointer", "-g"]);
        cc("nofp", &["-O2", "-fomit-frame-pointer"]);
        cc("nofp_g", &["-O2", "-fomit-frame-pointer", "-g"]);
        std::fs::copy(dir.join("nofp"), dir.join("nofp_stripped")).unwrap();
        run(Command::new("strip").arg(dir.join("nofp_stripped")));
        Builds { dir }
    })
}

/// `name`'s address range in `exe`'s symbol table (the unstripped build).
fn symbol_range(exe: &Path, name: &str) -> std::ops::Range<u64> {
    let data = std::fs::read(exe).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let s = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("{name} in {exe:?}"));
    s.address()..s.address() + s.size()
}

/// The 1-based line of `stack_target.c` that carries `marker`.
fn marker_line(marker: &str) -> u32 {
    let text = std::fs::read_to_string(SRC).unwrap();
    let i = text
        .lines()
        .position(|l| l.contains(&format!("/* {marker} */")))
        .unwrap_or_else(|| panic!("marker {marker}"));
    i as u32 + 1
}

/// A child process held in a ptrace stop; killed and reaped on drop.
struct Stopped {
    child: Child,
}

impl Stopped {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `cmd` (stdout piped), wait for its `ready` line, then seize and interrupt it until
/// `at(pid, ip)` holds for its instruction pointer (read from the registers, not through
/// cowscope), so the stop is where the test needs it.
fn stop_when(mut cmd: Command, at: impl Fn(i32, u64) -> bool) -> Stopped {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let s = Stopped { child };
    // Let it get past the write of `ready` before the first stop.
    std::thread::sleep(Duration::from_millis(100));
    let pid = Pid::from_raw(s.pid());
    ptrace::seize(pid, ptrace::Options::empty()).expect("PTRACE_SEIZE");
    for _ in 0..100 {
        ptrace::interrupt(pid).expect("PTRACE_INTERRUPT");
        match waitpid(pid, Some(WaitPidFlag::__WALL)).expect("waitpid") {
            WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..) => {}
            other => panic!("unexpected {other:?}"),
        }
        let ip = ptrace::getregs(pid).expect("regs").rip;
        if at(s.pid(), ip) {
            return s;
        }
        ptrace::cont(pid, None::<Signal>).expect("cont");
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("never stopped where wanted");
}

/// The load bias of `exe` in `pid`: the start of its mapping at file offset 0 (these are PIE
/// builds whose first PT_LOAD is at vaddr 0), read from /proc directly.
fn load_bias(pid: i32, exe: &Path) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let exe = exe.to_string_lossy();
    let line = maps
        .lines()
        .find(|l| l.ends_with(&*exe) && l.split_whitespace().nth(2) == Some("00000000"))
        .expect("exe mapped");
    u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap()
}

/// The unstripped build whose code `exe` carries (strip changes no code).
fn unstripped(exe: &Path) -> PathBuf {
    match exe.file_name().and_then(|n| n.to_str()) {
        Some("nofp_stripped") => builds().path("nofp"),
        _ => exe.to_path_buf(),
    }
}

struct Unwound {
    locs: Vec<(Loc, bool)>,
    frames: Vec<Vec<Frame>>,
    modules: Modules,
}

impl Unwound {
    /// The outermost function name of each location (the function the address is in; inlined
    /// frames before it).
    fn functions(&self) -> Vec<Option<String>> {
        self.frames
            .iter()
            .map(|f| f.last().unwrap().function.clone())
            .collect()
    }
}

/// Stop a build of stack_target in c's spin loop, unwind it with `unwind_stopped`, symbolize.
fn unwind_target(exe: &Path, opts: &SymbolizeOptions) -> Unwound {
    let c = symbol_range(&unstripped(exe), "c");
    unwind_when(
        Command::new(exe),
        |pid, ip| c.contains(&ip.wrapping_sub(load_bias(pid, exe))),
        64 * 1024,
        opts,
    )
}

/// Stop `cmd` where `at` holds, unwind `stack_bytes` of its stack with `unwind_stopped`, and
/// symbolize every frame.
fn unwind_when(
    cmd: Command,
    at: impl Fn(i32, u64) -> bool,
    stack_bytes: usize,
    opts: &SymbolizeOptions,
) -> Unwound {
    let stopped = stop_when(cmd, at);
    let mut modules = Modules::new();
    modules.read_process(stopped.pid()).unwrap();
    let mut locs = Vec::new();
    Unwinder::new()
        .unwind_stopped(&mut modules, stopped.pid(), stack_bytes, &mut locs)
        .expect("unwind");
    drop(stopped);
    let syms = symbolize_with(&modules, &locs, opts);
    let frames = locs.iter().map(|l| syms[l].clone()).collect();
    Unwound {
        locs,
        frames,
        modules,
    }
}

/// The first four frames are c <- b <- a <- main in `exe`: by name where `named`, and in any
/// case by offset inside each function's range in the unstripped build; the leaf is the ip.
fn assert_chain(exe: &Path, u: &Unwound, named: bool) {
    let chain = ["c", "b", "a", "main"];
    assert!(u.locs.len() > chain.len(), "too short: {:?}", u.frames);
    assert!(u.locs[0].1, "the first frame is the leaf");
    let name = exe.file_name().unwrap().to_string_lossy().into_owned();
    for (i, f) in chain.iter().enumerate() {
        let (loc, is_leaf) = u.locs[i];
        assert_eq!(is_leaf, i == 0);
        assert_eq!(
            u.modules.module(loc.module).name,
            name,
            "frame {i}: {:?}",
            u.frames[i]
        );
        // A return address lies just past the call, still inside the caller.
        let lookup = if is_leaf { loc.offset } else { loc.offset - 1 };
        let range = symbol_range(&unstripped(exe), f);
        assert!(
            range.contains(&lookup),
            "frame {i} {:#x} not in {f} {range:x?}",
            loc.offset
        );
        let frame = u.frames[i].last().unwrap();
        if named {
            assert_eq!(
                frame.function.as_deref(),
                Some(*f),
                "frame {i}: {:?}",
                u.frames[i]
            );
        }
        assert_eq!(frame.module, name);
        assert_eq!(frame.offset, format!("{:#x}", loc.offset));
    }
}

#[test]
fn frame_pointer_build_unwinds_to_main_with_file_and_line() {
    let exe = builds().path("fp_g");
    let u = unwind_target(&exe, &SymbolizeOptions::default());
    assert_chain(&exe, &u, true);
    let want = [("SPIN", 0), ("CALL_C", 1), ("CALL_B", 2), ("CALL_A", 3)];
    for (marker, i) in want {
        let f = u.frames[i].last().unwrap();
        assert!(
            f.file
                .as_deref()
                .is_some_and(|p| p.ends_with("stack_target.c")),
            "frame {i}: {f:?}"
        );
        assert_eq!(
            f.line,
            Some(marker_line(marker)),
            "frame {i} {marker}: {f:?}"
        );
    }
}

#[test]
fn build_without_frame_pointers_unwinds_to_main_through_eh_frame() {
    let exe = builds().path("nofp");
    let u = unwind_target(&exe, &SymbolizeOptions::default());
    assert_chain(&exe, &u, true);
    // No -g: names from .symtab, no file:line.
    assert!(
        u.frames[..4].iter().all(|f| f[0].file.is_none()),
        "{:?}",
        u.frames
    );
    // Past main: libc's start code, where the process began.
    assert!(
        u.frames[4..].iter().any(|f| f[0].module == "libc.so.6"),
        "{:?}",
        u.functions()
    );
}

#[test]
fn stripped_build_gives_module_and_offset_never_a_wrong_name() {
    let exe = builds().path("nofp_stripped");
    let u = unwind_target(&exe, &SymbolizeOptions::default());
    // The offsets are checked against the unstripped twin's symbols; the names c, b, a, main
    // are gone (not in .dynsym), so nothing may claim them.
    assert_chain(&exe, &u, false);
    for f in &u.frames[..4] {
        let f = f.last().unwrap();
        assert_eq!(f.function, None, "{f:?}");
        assert_eq!(f.name(), format!("nofp_stripped+{}", f.offset));
    }
}

/// A `-g` build split the Debian way: the debug info moved to a separate file that only the
/// debug directory holds, the binary stripped of it (symbols kept) with a `.gnu_debuglink`.
fn split_debug(layout: &str) -> (PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join(format!("split_{layout}"));
    std::fs::copy(builds().path("nofp_g"), &exe).unwrap();
    let dbg = dir.path().join("split.debug");
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&exe)
        .arg(&dbg));
    run(Command::new("objcopy").arg("--strip-debug").arg(&exe));
    run(Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", dbg.display()))
        .arg(&exe));
    let debug_dir = dir.path().join("debug");
    let target = match layout {
        "build_id" => {
            let data = std::fs::read(&exe).unwrap();
            let id = object::File::parse(&*data)
                .unwrap()
                .build_id()
                .unwrap()
                .unwrap()
                .to_vec();
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            debug_dir
                .join(".build-id")
                .join(&hex[..2])
                .join(format!("{}.debug", &hex[2..]))
        }
        _ => debug_dir.join("split.debug"),
    };
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::rename(&dbg, &target).unwrap();
    (exe, dir)
}

#[rstest::rstest]
#[case::by_build_id("build_id")]
#[case::by_debuglink_name("debuglink")]
fn separate_debug_file_gives_file_and_line(#[case] layout: &str) {
    let (exe, dir) = split_debug(layout);
    let opts = SymbolizeOptions {
        debug_dirs: Some(vec![dir.path().join("debug")]),
    };
    let u = unwind_target(&exe, &opts);
    assert_chain(&exe, &u, true);
    for (marker, i) in [("SPIN", 0), ("CALL_C", 1), ("CALL_B", 2), ("CALL_A", 3)] {
        assert_eq!(
            u.frames[i].last().unwrap().line,
            Some(marker_line(marker)),
            "{marker}"
        );
    }
    // Without the debug directory the same binary has names but no lines: the lines above
    // came from the separate file.
    let plain = symbolize_with(
        &u.modules,
        &u.locs[..1],
        &SymbolizeOptions {
            debug_dirs: Some(vec![dir.path().join("elsewhere")]),
        },
    );
    assert_eq!(plain[&u.locs[0]].last().unwrap().line, None);
}

/// Whether `ip` is in `pid`'s mapping named `name` (read from /proc directly).
fn in_mapping(pid: i32, ip: u64, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(name))
        .any(|l| {
            let (s, e) = l.split_once(' ').unwrap().0.split_once('-').unwrap();
            let s = u64::from_str_radix(s, 16).unwrap();
            let e = u64::from_str_radix(e, 16).unwrap();
            (s..e).contains(&ip)
        })
}

#[test]
fn a_stop_inside_the_vdso_unwinds_through_libc_to_main() {
    let exe = builds().path("nofp");
    let mut cmd = Command::new(&exe);
    cmd.arg("clock");
    let u = unwind_when(
        cmd,
        |pid, ip| in_mapping(pid, ip, "[vdso]"),
        64 * 1024,
        &SymbolizeOptions::default(),
    );
    let frames: Vec<&Frame> = u.frames.iter().map(|f| f.last().unwrap()).collect();
    let shown: Vec<String> = frames
        .iter()
        .map(|f| format!("{} ({})", f.name(), f.module))
        .collect();
    eprintln!("in the vDSO: {shown:#?}");
    assert_eq!(frames[0].module, "[vdso]", "{shown:#?}");
    assert!(
        frames[0]
            .function
            .as_deref()
            .is_some_and(|f| f.contains("clock_gettime")),
        "{shown:#?}"
    );
    let first = frames
        .iter()
        .position(|f| f.module == "nofp")
        .expect("reaches the program");
    let names: Vec<Option<&str>> = frames[first..first + 4]
        .iter()
        .map(|f| f.function.as_deref())
        .collect();
    assert_eq!(
        names,
        [Some("c"), Some("b"), Some("a"), Some("main")],
        "{shown:#?}"
    );
}

#[test]
fn perf_map_names_anonymous_executable_memory() {
    // Fake JIT code in this process: an anonymous executable page, and the perf map a JIT
    // would write for it.
    let page = cowscope::kernel::AnonMap::new(4096, libc::PROT_READ | libc::PROT_EXEC, 0).unwrap();
    let start = page.addr() as u64;
    let pid = std::process::id() as i32;
    let path = format!("/tmp/perf-{pid}.map");
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Remove(path.clone());
    std::fs::write(
        &path,
        format!(
            "{start:x} 100 jitted_fn_one
{:x} 80 py::two:/x.py
",
            start + 0x100
        ),
    )
    .unwrap();
    let mut modules = Modules::new();
    modules.read_process(pid).unwrap();
    let loc = |off: u64| modules.locate(pid, start + off).expect("anon exec located");
    let locs = vec![
        (loc(0x10), true),
        (loc(0x100), false), // return address at the end of jitted_fn_one: looked up at 0xff
        (loc(0x100), true),
        (loc(0x200), true), // in no entry
    ];
    assert_eq!(
        locs[0].0.offset,
        start + 0x10,
        "JIT offsets are absolute addresses"
    );
    let syms = symbolize(&modules, &locs);
    let name = |i: usize| syms[&locs[i]][0].function.clone();
    assert_eq!(name(0).as_deref(), Some("jitted_fn_one"));
    assert_eq!(name(1).as_deref(), Some("jitted_fn_one"));
    assert_eq!(name(2).as_deref(), Some("py::two:/x.py"));
    assert_eq!(name(3), None);
    assert_eq!(syms[&locs[3]][0].module, format!("perf-{pid}.map"));
}

#[test]
fn debian_python3_unwinds_through_its_stripped_binary_to_main() {
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        eprintln!("skipped: /usr/bin/python3 is not installed");
        return;
    }
    let mut cmd = Command::new(python);
    cmd.args([
        "-c",
        "import time; print('ready', flush=True); time.sleep(600)",
    ]);
    // Stop it asleep: the ip in libc (the clock_nanosleep system call), not in python3.
    let u = unwind_when(
        cmd,
        |pid, ip| in_mapping(pid, ip, "libc.so"),
        256 * 1024,
        &SymbolizeOptions::default(),
    );
    let frames: Vec<&Frame> = u.frames.iter().map(|f| f.last().unwrap()).collect();
    let shown: Vec<String> = frames
        .iter()
        .map(|f| format!("{} ({}) {:?}:{:?}", f.name(), f.module, f.file, f.line))
        .collect();
    eprintln!("python3 asleep: {shown:#?}");
    assert_eq!(frames[0].module, "libc.so.6", "{shown:#?}");
    let exe = std::fs::canonicalize(python).unwrap();
    let exe_name = exe.file_name().unwrap().to_string_lossy().into_owned();
    // Beyond libc's sleep: into python's own (stripped, frame-pointer-less) binary, through
    // the interpreter, down to its exported entry point and libc's start code.
    let first_py = frames
        .iter()
        .position(|f| f.module == exe_name)
        .unwrap_or_else(|| panic!("{shown:#?}"));
    assert!(frames[first_py..].len() >= 5, "{shown:#?}");
    assert!(
        frames
            .iter()
            .any(|f| f.function.as_deref() == Some("Py_BytesMain")),
        "{shown:#?}"
    );
    assert!(
        frames
            .iter()
            .skip(first_py)
            .any(|f| f.module == "libc.so.6"),
        "libc's start code below main: {shown:#?}"
    );
    // Debian's separate debug file for python3 (package python3-dbg), found by build-id
    // under /usr/lib/debug: where it is installed, python's frames carry file:line.
    let data = std::fs::read(&exe).unwrap();
    let id = object::File::parse(&*data)
        .unwrap()
        .build_id()
        .unwrap()
        .map(<[u8]>::to_vec);
    let hex: String = id
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let debug_file = format!("/usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..]);
    if Path::new(&debug_file).exists() {
        // (`_start` is hand-written assembly: no line table.)
        let mut py = frames
            .iter()
            .filter(|f| f.module == exe_name && f.function.as_deref() != Some("_start"));
        assert!(
            py.all(|f| f.file.is_some() && f.line.is_some()),
            "{debug_file} is installed: {shown:#?}"
        );
        assert!(
            frames
                .iter()
                .any(|f| f.function.as_deref() == Some("run_mod")),
            "a static function, named only by the debug file: {shown:#?}"
        );
    } else {
        eprintln!("file:line part skipped: {debug_file} is not installed (python3-dbg)");
    }
}
