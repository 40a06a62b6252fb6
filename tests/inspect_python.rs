//! `cowscope inspect` on a real program: CPython. A parent holding a 64 MiB bytearray and a
//! list of 10^6 distinct ints forks a child that only reads.
//!
//! - Iterating the list writes every int's refcount, so every page holding an int object is
//!   copied into the child; the bytearray's buffer, never touched, stays shared.
//! - `gc.freeze()` before the fork does not change that (ints are not GC-tracked; refcounts
//!   are written anyway), but it does stop the copies a `gc.collect()` in the child makes
//!   when it writes the GC headers of tracked containers.

mod inspect_support;

use inspect_support::*;

/// Page runs `[[start, end], ...]` of a key of the fixture's line.
fn runs(py: &PySubject, key: &str) -> Vec<(u64, u64)> {
    py.info[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .collect()
}

fn start(args: &[&str]) -> Option<PySubject> {
    if !is_root() {
        eprintln!("SKIP: frame-level proof needs root");
        return None;
    }
    let p = PySubject::spawn("python_refcounts.py", args, false);
    if p.is_none() {
        eprintln!("SKIP: no usable python3");
    }
    p
}

/// How many of the pages in `runs` cowscope calls `diverged`, and how many pages that is.
fn diverged_in(py: &PySubject, runs: &[(u64, u64)]) -> (u64, u64) {
    let lo = runs.first().unwrap().0;
    let hi = runs.last().unwrap().1;
    let range = format!("{lo:#x}-{hi:#x}");
    let doc = inspect_json(&["--pid", &py.pid(), "--range", &range, "--per-page"], 0);
    let cls = pair(&doc, py.child())["page_runs"]
        .as_array()
        .unwrap()
        .clone();
    let class_runs: Vec<(u64, u64, String)> = cls
        .iter()
        .map(|r| {
            let h = |k: &str| cowscope::mem::hex::parse(r[k].as_str().unwrap()).unwrap();
            (
                h("start"),
                h("end"),
                r["class"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let ps = ps() as u64;
    let (mut diverged, mut total) = (0, 0);
    for &(a, b) in runs {
        let mut p = a;
        while p < b {
            total += 1;
            let c = class_runs
                .iter()
                .find(|(s, e, _)| *s <= p && p < *e)
                .map(|(_, _, c)| c.as_str())
                .unwrap_or("none");
            diverged += (c == "diverged") as u64;
            p += ps;
        }
    }
    (diverged, total)
}

#[test]
fn iterating_a_list_of_ints_copies_every_int_page_and_leaves_the_bytearray_shared() {
    let Some(py) = start(&["--mode", "iterate"]) else {
        return;
    };
    let ps = ps() as u64;
    let b = &py.info["bytearray"];
    let (lo, hi) = (
        b[0].as_u64().unwrap().next_multiple_of(ps),
        b[1].as_u64().unwrap() / ps * ps,
    );
    let doc = inspect_json(
        &["--pid", &py.pid(), "--range", &format!("{lo:#x}-{hi:#x}")],
        0,
    );
    let t = &pair(&doc, py.child())["totals"];
    let pages = (hi - lo) / ps;
    assert_eq!(
        classes(t),
        [pages, 0, 0, 0, 0, 0],
        "the bytearray stays shared: {t}"
    );

    let (d, n) = diverged_in(&py, &runs(&py, "int_pages"));
    eprintln!("int pages diverged: {d} of {n}");
    assert!(
        n > 5000,
        "10^6 ints of 32 bytes fill thousands of pages: {n}"
    );
    assert_eq!(d, n, "every page holding an int had its refcounts written");
}

#[test]
fn gc_freeze_spares_the_collectors_copies_but_not_the_refcount_copies() {
    let mut figures = Vec::new();
    for (mode, freeze) in [
        ("iterate", false),
        ("iterate", true),
        ("collect", false),
        ("collect", true),
    ] {
        let mut args = vec!["--mode", mode, "--containers", "300000"];
        if freeze {
            args.push("--gc-freeze");
        }
        let Some(py) = start(&args) else {
            return;
        };
        let key = if mode == "iterate" {
            "int_pages"
        } else {
            "container_pages"
        };
        let (d, n) = diverged_in(&py, &runs(&py, key));
        let doc = inspect_json(&["--pid", &py.pid()], 0);
        let total = pair(&doc, py.child())["totals"]["diverged"]
            .as_u64()
            .unwrap();
        eprintln!(
            "{mode:8} gc.freeze={freeze:<5} {key}: {d} of {n} diverged; whole pair: {:.1} MiB diverged",
            total as f64 * ps() as f64 / (1 << 20) as f64
        );
        figures.push((d, n, total));
    }
    let frac = |(d, n, _): (u64, u64, u64)| d as f64 / n as f64;
    assert_eq!(frac(figures[0]), 1.0, "refcounts: every int page copied");
    assert_eq!(
        frac(figures[1]),
        1.0,
        "gc.freeze does not stop refcount writes"
    );
    assert!(
        frac(figures[2]) > 0.9,
        "gc.collect copies the containers' pages"
    );
    assert!(
        frac(figures[3]) < 0.1,
        "after gc.freeze the collector leaves frozen containers alone"
    );
    assert!(
        figures[3].2 * 4 < figures[2].2,
        "the whole pair diverges far less"
    );
}

/// A pool of real workers: four CPython children each iterate the parent's list of 10^6 ints.
/// Each worker then holds its own copy of every page holding an int (its refcount writes), so
/// the pool view adds up at least 4 x those pages, names 4 workers, and the 64 MiB bytearray
/// nobody touched is a frame all 4 still share (sharing_histogram["4"]).
#[test]
fn a_pool_of_four_python_workers_adds_up_their_copies() {
    let Some(py) = start(&["--mode", "iterate", "--workers", "4"]) else {
        return;
    };
    let ps = ps() as u64;
    let int_pages: u64 = runs(&py, "int_pages")
        .iter()
        .map(|(a, b)| (b - a) / ps)
        .sum();
    let ba = &py.info["bytearray"];
    let ba_pages = (ba[1].as_u64().unwrap() - ba[0].as_u64().unwrap()) / ps;
    let doc = inspect_json(&["--pid", &py.pid()], 0);
    let pool = &doc["pools"][0];
    let view = &pool["view"];
    assert_eq!(view["workers"], 4, "{view}");
    assert_eq!(pool["incomplete"], false);
    let diverged = view["diverged_bytes"].as_u64().unwrap();
    assert!(
        diverged >= 4 * int_pages * ps,
        "{diverged} bytes diverged < 4 x {int_pages} int pages"
    );
    let members: Vec<i64> = view["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            g["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_i64().unwrap())
        })
        .collect();
    let mut want: Vec<i64> = py.info["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_i64().unwrap())
        .collect();
    let mut got = members.clone();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "every worker in exactly one group");
    assert!(
        view["summary"].as_str().unwrap().starts_with("4 workers, "),
        "{view}"
    );
    let shared_by_all = pool["sharing_histogram"]["4"].as_u64().unwrap();
    assert!(
        shared_by_all >= ba_pages,
        "{shared_by_all} pages shared by all 4 < the bytearray's {ba_pages}"
    );
}
