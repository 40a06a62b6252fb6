//! The crate is layered (ARCHITECTURE.md, "Layers"): a module may use only modules below it.
//! This test reads every source file and fails on an upward reference, so an import cycle like
//! the one that once tied 27 files together cannot come back unnoticed. Inside a layer it fails
//! on two files that import each other (a file and the file declaring it as its module excepted).

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

// ---- File-level import cycles --------------------------------------------------------------
//
// The layer check above sees top-level modules only; two files of one module that import each
// other (fork/judge.rs used observe.rs's `PfnMap`, observe.rs used judge.rs's `SmapsFigures`)
// pass it. The check below resolves every path a file names (`crate::a::b`, `super::x`,
// `self::y`, `use` trees with `{..}` groups, a child module by its name) to the file that
// defines it and fails on any two files that import each other.

/// Code with comments, string and char literals blanked out (lifetimes are kept).
fn strip_code(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // A raw string r"..", r#".."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"'
                    && b[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == b'#')
                        .count()
                        == hashes
                {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                // A char of several UTF-8 bytes, or a lifetime.
                let rest = &text[i + 1..];
                let mut chars = rest.char_indices();
                match (chars.next(), chars.next()) {
                    (Some((_, ch)), Some((k, '\''))) if !ch.is_ascii() => {
                        i += 1 + k + 1;
                        out.push_str("' '");
                    }
                    _ => {
                        out.push('\'');
                        i += 1;
                    }
                }
            }
        } else {
            let ch = text[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[derive(Debug, PartialEq, Clone)]
enum Tok {
    Ident(String),
    Path,
    Punct(char),
}

fn tokens(code: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphabetic() || c == '_' {
            let mut s = String::from(c);
            while let Some(&n) = chars.peek() {
                if n.is_alphanumeric() || n == '_' {
                    s.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Tok::Ident(s));
        } else if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|n| n.is_alphanumeric() || *n == '_')
            {
                chars.next();
            }
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.push(Tok::Path);
        } else if !c.is_whitespace() {
            out.push(Tok::Punct(c));
        }
    }
    out
}

/// The module path of every file (`src/fork/judge.rs` -> `fork::judge`, a `mod.rs` its
/// directory's, a `#[path = "x.rs"] mod m;` file its declarer's path plus `m`).
fn module_paths(src: &Path, files: &[PathBuf]) -> Vec<Vec<String>> {
    let mut paths: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(src).expect("under src");
            let mut segs: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let last = segs.pop().expect("a file name");
            let stem = last.trim_end_matches(".rs");
            if !matches!(stem, "mod" | "lib" | "main") {
                segs.push(stem.to_string());
            }
            segs
        })
        .collect();
    for (i, f) in files.iter().enumerate() {
        let text = std::fs::read_to_string(f).expect("read file");
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let Some(rest) = line.trim().strip_prefix("#[path = \"") else {
                continue;
            };
            let target = rest.split('"').next().expect("a path");
            let decl = lines.next().unwrap_or("");
            let name = decl
                .trim()
                .trim_start_matches("pub ")
                .trim_start_matches("mod ")
                .trim_end_matches(';')
                .to_string();
            let target = f.parent().expect("a dir").join(target);
            if let Some(j) = files.iter().position(|g| *g == target) {
                let mut p = paths[i].clone();
                p.push(name);
                paths[j] = p;
            }
        }
    }
    paths
}

/// Every module path a file names, made absolute: what follows `crate::`, `super::`, `self::`,
/// a `use` tree (with `{..}` groups), or a first segment that is a child module of the scope.
/// `module` is the file's own path; inline `mod x { .. }` blocks shift `super` and `self`.
fn named_paths(
    text: &str,
    module: &[String],
    is_module: &dyn Fn(&[String]) -> bool,
) -> Vec<Vec<String>> {
    let toks = tokens(&strip_code(text));
    let mut out = Vec::new();
    let mut scope: Vec<String> = module.to_vec();
    // Brace depth at which each inline module was opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                    scope.pop();
                }
            }
            Tok::Ident(k) if k == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    scope.push(name.clone());
                    inline.push(depth);
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(k) if k == "use" => {
                let mut j = i + 1;
                let mut prefixes = Vec::new();
                use_tree(&toks, &mut j, &[], &mut prefixes);
                for p in prefixes {
                    if let Some(abs) = absolute(&p, &scope, is_module) {
                        out.push(abs);
                    }
                }
                i = j;
                continue;
            }
            Tok::Ident(first) if toks.get(i + 1) == Some(&Tok::Path) => {
                let preceded_by_path = i > 0 && toks[i - 1] == Tok::Path;
                if !preceded_by_path {
                    let mut segs = vec![first.clone()];
                    let mut j = i + 1;
                    while toks.get(j) == Some(&Tok::Path) {
                        match toks.get(j + 1) {
                            Some(Tok::Ident(s)) => {
                                segs.push(s.clone());
                                j += 2;
                            }
                            _ => break,
                        }
                    }
                    if let Some(abs) = absolute(&segs, &scope, is_module) {
                        out.push(abs);
                    }
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// One `use` tree from `toks[*j]` on: every full path it names, with `prefix` in front.
fn use_tree(toks: &[Tok], j: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(*j) {
            Some(Tok::Ident(s)) if s == "as" => {
                *j += 2;
                out.push(path);
                return;
            }
            Some(Tok::Ident(s)) => {
                if s != "self" || path.is_empty() {
                    path.push(s.clone());
                }
                *j += 1;
            }
            Some(Tok::Path) => *j += 1,
            Some(Tok::Punct('*')) => {
                *j += 1;
                out.push(path);
                return;
            }
            Some(Tok::Punct('{')) => {
                *j += 1;
                loop {
                    match toks.get(*j) {
                        Some(Tok::Punct('}')) => {
                            *j += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *j += 1,
                        None => return,
                        _ => use_tree(toks, j, &path, out),
                    }
                }
            }
            _ => {
                out.push(path);
                return;
            }
        }
    }
}

/// `segs` resolved against `scope` (crate/super/self, or a child module of the scope); `None`
/// for paths into other crates or names of this file.
fn absolute(
    segs: &[String],
    scope: &[String],
    is_module: &dyn Fn(&[String]) -> bool,
) -> Option<Vec<String>> {
    let mut base: Vec<String>;
    let mut rest = segs;
    match segs.first().map(String::as_str) {
        Some("crate") => {
            base = Vec::new();
            rest = &segs[1..];
        }
        Some("self") | Some("super") => {
            base = scope.to_vec();
            while let Some(s) = rest.first() {
                match s.as_str() {
                    "self" => {}
                    "super" => {
                        base.pop()?;
                    }
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        Some(first) => {
            let mut child = scope.to_vec();
            child.push(first.to_string());
            if !is_module(&child) {
                return None;
            }
            base = scope.to_vec();
        }
        None => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Whether the file of `parent` declares the module `child` (`mod child;`): a module's parent
/// file and its children are one unit here (a registry in `mod.rs` names each child's `run`,
/// each child uses the parent's `Outcome`), as rustc's module tree makes them.
fn declares(parent: &[String], child: &[String]) -> bool {
    child.len() == parent.len() + 1 && child.starts_with(parent)
}

#[test]
fn no_two_files_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.ends_with("main.rs"));
    files.sort();
    let paths = module_paths(&src, &files);
    let is_module = |p: &[String]| paths.iter().any(|q| q == p);
    // The file a path lands in: the longest prefix that is a file's module.
    let file_of = |p: &[String]| {
        (0..=p.len())
            .rev()
            .find_map(|n| paths.iter().position(|q| q[..] == p[..n]))
    };
    let mut edges = std::collections::BTreeSet::new();
    for (i, f) in files.iter().enumerate() {
        let text = std::fs::read_to_string(f).expect("read file");
        for p in named_paths(&text, &paths[i], &is_module) {
            if let Some(j) = file_of(&p) {
                if j != i {
                    edges.insert((i, j));
                }
            }
        }
    }
    let rel = |i: usize| {
        files[i]
            .strip_prefix(&src)
            .expect("under src")
            .display()
            .to_string()
    };
    let cycles: Vec<String> = edges
        .iter()
        .filter(|&&(a, b)| a < b && edges.contains(&(b, a)))
        .filter(|&&(a, b)| !declares(&paths[a], &paths[b]) && !declares(&paths[b], &paths[a]))
        .map(|&(a, b)| format!("{} and {} import each other", rel(a), rel(b)))
        .collect();
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}

#[test]
fn the_cycle_checker_resolves_what_a_file_names() {
    // The scanner itself, on fork/judge.rs as it was: `super::observe::PfnMap` names observe,
    // a `use` group names each member, `super` inside `mod tests` is the file itself, a child
    // module is found by its bare name, and comments and strings name nothing.
    let known: Vec<Vec<String>> = [
        vec!["fork"],
        vec!["fork", "observe"],
        vec!["fork", "classify"],
    ]
    .iter()
    .map(|p| p.iter().map(|s| s.to_string()).collect())
    .collect();
    let is_module = |p: &[String]| known.iter().any(|q| q == p);
    let text = "use super::observe::PfnMap;\n\
                use super::{classify::{self, PageClass}, Verdict};\n\
                // super::comment::X\n\
                let s = \"crate::string::Y\";\n\
                mod tests { use super::*; }\n\
                fn f() { crate::mem::kpage::read(); }\n";
    let module: Vec<String> = vec!["fork".into(), "judge".into()];
    let got: Vec<String> = named_paths(text, &module, &is_module)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        got,
        [
            "fork::observe::PfnMap",
            "fork::classify",
            "fork::classify::PageClass",
            "fork::Verdict",
            "fork::judge",
            "mem::kpage::read",
        ]
    );
    let in_fork: Vec<String> = named_paths("use classify::PageClass;", &known[0], &is_module)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(in_fork, ["fork::classify::PageClass"]);
    assert!(declares(&known[0], &known[1]) && !declares(&known[1], &known[2]));
}
