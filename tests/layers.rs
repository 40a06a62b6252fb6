//! The crate is layered (ARCHITECTURE.md, "Layers"): a module may use only modules below it.
//! This test reads every source file and fails on an upward reference, so an import cycle like
//! the one that once tied 27 files together cannot come back unnoticed.

use std::path::{Path, PathBuf};

/// Bottom to top. A new top-level module must be added here (and to ARCHITECTURE.md).
const LAYERS: &[&str] = &[
    "kernel",
    "mem",
    "perf",
    "stacks",
    "arena",
    "error",
    "output",
    "progress",
    "fork",
    "pages",
    "compare",
    "baseline",
    "experiments",
    "inspect",
    "trace",
    "doc",
    "render",
    "cmd",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

/// The top-level module a source file belongs to (`src/fork/run.rs` -> `fork`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("non-empty");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// Top-level modules named by `crate::x` paths (also inside `use crate::{a, b}` lists is not
/// used in this crate; `crate::Error` and `crate::Result` are the error module's re-exports).
fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let name = match name.as_str() {
                "Error" | "Result" => "error".to_string(),
                _ => name,
            };
            if !name.is_empty() {
                out.push(name);
            }
            rest = after;
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for f in &files {
        let module = module_of(&src, f);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = rank(&module) else {
            violations.push(format!(
                "{}: module '{module}' is in no layer (add it to LAYERS here and to ARCHITECTURE.md)",
                f.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).expect("read file");
        for dep in references(&text) {
            if dep == module {
                continue;
            }
            match rank(&dep) {
                Some(r) if r < own => {}
                Some(_) => violations.push(format!(
                    "{}: '{module}' uses '{dep}', which is not below it",
                    f.display()
                )),
                None => violations.push(format!(
                    "{}: '{module}' uses unknown module '{dep}'",
                    f.display()
                )),
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_an_upward_reference() {
    // The scanner itself: a reference in code counts, one in a comment does not.
    let refs =
        references("use crate::doc::Envelope; // crate::cmd is above\nlet e: crate::Result<()>;");
    assert_eq!(refs, ["doc", "error"]);
    assert!(rank("mem") < rank("fork") && rank("doc") < rank("cmd"));
}
