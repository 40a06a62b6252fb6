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
        let ast = parse(f);
        for item in &ast.items {
            let syn::Item::Mod(m) = item else { continue };
            let Some(target) = m.attrs.iter().find_map(path_attr) else {
                continue;
            };
            let target = f.parent().expect("a dir").join(target);
            if let Some(j) = files.iter().position(|g| *g == target) {
                let mut p = paths[i].clone();
                p.push(m.ident.to_string());
                paths[j] = p;
            }
        }
    }
    paths
}

fn parse(file: &Path) -> syn::File {
    let text = std::fs::read_to_string(file).expect("read file");
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The file a `#[path = "x.rs"]` attribute names.
fn path_attr(a: &syn::Attribute) -> Option<String> {
    let syn::Meta::NameValue(nv) = &a.meta else {
        return None;
    };
    let syn::Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Str(s),
        ..
    }) = &nv.value
    else {
        return None;
    };
    nv.path.is_ident("path").then(|| s.value())
}

/// Every module path a file names, made absolute: each `use` tree (with `{..}` groups), each
/// path in code and types, and each `a::b` inside a macro's arguments (`format!`, `assert!`),
/// resolved against the scope (`crate`, `super`, `self`, or a child module named bare). Inline
/// `mod x { .. }` blocks shift `super` and `self`. Comments and strings name nothing (rustc's
/// own grammar, through syn).
struct Named<'a> {
    scope: Vec<String>,
    is_module: &'a dyn Fn(&[String]) -> bool,
    out: Vec<Vec<String>>,
}

impl Named<'_> {
    fn push(&mut self, segs: &[String]) {
        if let Some(abs) = absolute(segs, &self.scope, self.is_module) {
            self.out.push(abs);
        }
    }

    /// The paths of a `use` tree, with `prefix` in front.
    fn use_tree(&mut self, tree: &syn::UseTree, prefix: &mut Vec<String>) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(&p.tree, prefix);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" || full.is_empty() {
                    full.push(n.ident.to_string());
                }
                self.push(&full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                full.push(r.ident.to_string());
                self.push(&full);
            }
            syn::UseTree::Glob(_) => self.push(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(t, prefix);
                }
            }
        }
    }

    fn flush(&mut self, segs: &mut Vec<String>) {
        if segs.len() > 1 {
            self.push(segs);
        }
        segs.clear();
    }

    /// `a::b::c` runs in a macro's tokens (macro arguments are not parsed as code).
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        use proc_macro2::TokenTree;
        let mut segs: Vec<String> = Vec::new();
        let mut colons = 0;
        for t in tokens {
            match t {
                TokenTree::Ident(i) if segs.is_empty() || colons == 2 => {
                    segs.push(i.to_string());
                    colons = 0;
                }
                TokenTree::Punct(p) if p.as_char() == ':' && !segs.is_empty() && colons < 2 => {
                    colons += 1;
                }
                TokenTree::Group(g) => {
                    self.flush(&mut segs);
                    colons = 0;
                    self.tokens(g.stream());
                }
                other => {
                    self.flush(&mut segs);
                    colons = 0;
                    if let TokenTree::Ident(i) = other {
                        segs.push(i.to_string());
                    }
                }
            }
        }
        self.flush(&mut segs);
    }
}

impl<'ast> syn::visit::Visit<'ast> for Named<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&u.tree, &mut Vec::new());
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.scope.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.scope.pop();
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.segments.len() > 1 {
            let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            self.push(&segs);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        syn::visit::visit_macro(self, m);
        self.tokens(m.tokens.clone());
    }
}

fn named_paths(
    file: &syn::File,
    module: &[String],
    is_module: &dyn Fn(&[String]) -> bool,
) -> Vec<Vec<String>> {
    let mut named = Named {
        scope: module.to_vec(),
        is_module,
        out: Vec::new(),
    };
    syn::visit::Visit::visit_file(&mut named, file);
    named.out
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
        for p in named_paths(&parse(f), &paths[i], &is_module) {
            if let Some(j) = file_of(&p)
                && j != i
            {
                edges.insert((i, j));
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
                const S: &str = \"crate::string::Y\";\n\
                mod tests { use super::*; }\n\
                fn f() { crate::mem::kpage::read(); }\n\
                fn g() { assert!(crate::doc::ok(), \"{}\", super::observe::HEAD); }\n";
    let module: Vec<String> = vec!["fork".into(), "judge".into()];
    let got: Vec<String> = named_paths(&syn::parse_file(text).unwrap(), &module, &is_module)
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
            "doc::ok",
            "fork::observe::HEAD",
        ]
    );
    let in_fork: Vec<String> = named_paths(
        &syn::parse_file("use classify::PageClass;").unwrap(),
        &known[0],
        &is_module,
    )
    .into_iter()
    .map(|p| p.join("::"))
    .collect();
    assert_eq!(in_fork, ["fork::classify::PageClass"]);
    assert!(declares(&known[0], &known[1]) && !declares(&known[1], &known[2]));
}
