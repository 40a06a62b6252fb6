//! Scenario files: `cowscope fork-report --scenario-file FILE` reads scenarios written in the
//! same vocabulary as the built-in catalogue ([`Scenario`]: memory kind, size, mapping,
//! advice, before-fork steps, per-process steps, optional expectations). The JSON Schema is
//! `cowscope schema scenario-file`; every built-in scenario round-trips through it (tested).
//!
//! ```json
//! {"scenarios": [{
//!   "name": "my-case", "summary": "the child writes page 2 of 8",
//!   "memory": {"kind": "anon"}, "pages": 8,
//!   "children": [{"ops": [{"op": "write", "pages": [2]}]}]
//! }]}
//! ```
//!
//! Every `pages` list of a step or an expectation may also be a range ([`PageList`]):
//! `"all"` (every page of the arena), `"0-99"` (both ends included), or
//! `{"from": 0, "to": 100, "step": 10}` (`to` excluded, as in `0..100`; `step` defaults to 1).
//! They are expanded to the list of indices when the file is read, so everything after the
//! reader (and every document) sees plain lists.
//!
//! A bad file is a usage error (exit 2) naming the JSON path of the problem.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::scenarios::{MemoryKind, PageList, Scenario, ThpLayout};
use crate::error::{Error, Result};

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// The scenarios, run in this order.
    pub scenarios: Vec<Scenario>,
}

/// Parse a scenario file's text; `what` names it in errors.
///
/// # Errors
/// Malformed JSON, a field of the wrong type or name, or a scenario that cannot run as
/// written: the message names the JSON path (`scenarios[1].children[0].ops[2]`).
pub fn parse(text: &str, what: &str) -> Result<Vec<Scenario>> {
    let at = |path: &str, msg: &dyn std::fmt::Display| {
        Error::usage(format!(
            "{what}: at {}: {msg}",
            if path == "." || path == "?" || path.is_empty() {
                "the top level"
            } else {
                path
            }
        ))
    };
    let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| at("", &e))?;
    expand_page_lists(&mut value).map_err(|(path, msg)| at(&path, &msg))?;
    let file: ScenarioFile = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        at(&path, e.inner())
    })?;
    if file.scenarios.is_empty() {
        return Err(Error::usage(format!(
            "{what}: at scenarios: no scenario given"
        )));
    }
    for (i, s) in file.scenarios.iter().enumerate() {
        if let Err((field, msg)) = check(s) {
            return Err(Error::usage(format!(
                "{what}: at scenarios[{i}]{field}: {msg}"
            )));
        }
        if file.scenarios[..i].iter().any(|x| x.name == s.name) {
            return Err(Error::usage(format!(
                "{what}: at scenarios[{i}].name: the name '{}' is used twice",
                s.name
            )));
        }
    }
    Ok(file.scenarios)
}

/// Expand every page range of a parsed scenario file ([`PageList`]) into the list of page
/// indices, in place. Lists are left to the typed reader.
///
/// # Errors
/// (JSON path, message) of the first bad form: an unknown word, a backwards or empty range,
/// a range past the arena's end, `"all"` in a scenario whose `pages` is not a usable count.
pub fn expand_page_lists(
    file: &mut serde_json::Value,
) -> std::result::Result<(), (String, String)> {
    let Some(list) = file.get_mut("scenarios").and_then(|v| v.as_array_mut()) else {
        return Ok(());
    };
    for (i, sc) in list.iter_mut().enumerate() {
        let at = format!("scenarios[{i}]");
        let arena = sc.get("pages").cloned();
        let mut sites: Vec<(String, &mut serde_json::Value)> = Vec::new();
        let Some(obj) = sc.as_object_mut() else {
            continue;
        };
        for (key, v) in obj.iter_mut() {
            match key.as_str() {
                "prepare" | "expect" => collect_items(v, &format!("{at}.{key}"), &mut sites),
                "children" => {
                    if let Some(a) = v.as_array_mut() {
                        for (j, c) in a.iter_mut().enumerate() {
                            if let Some(ops) = c.get_mut("ops") {
                                collect_ops(ops, &format!("{at}.children[{j}].ops"), &mut sites);
                            }
                        }
                    }
                }
                "parent" => {
                    if let Some(ops) = v.get_mut("ops") {
                        collect_ops(ops, &format!("{at}.parent.ops"), &mut sites);
                    }
                }
                _ => {}
            }
        }
        for (path, v) in sites {
            if v.is_array() {
                continue;
            }
            let count = arena_pages(arena.as_ref()).map_err(|m| (format!("{at}.pages"), m))?;
            let pages = expand(v, count).map_err(|m| (path.clone(), m))?;
            *v = serde_json::Value::from(pages);
        }
    }
    Ok(())
}

/// The `pages` value of every object of the array `v` (prepare steps, expectations).
fn collect_items<'a>(
    v: &'a mut serde_json::Value,
    at: &str,
    sites: &mut Vec<(String, &'a mut serde_json::Value)>,
) {
    if let Some(a) = v.as_array_mut() {
        for (k, item) in a.iter_mut().enumerate() {
            if let Some(p) = item.get_mut("pages") {
                sites.push((format!("{at}[{k}].pages"), p));
            }
        }
    }
}

/// The `pages` value of every step of `ops`, and of the steps of a forked grandchild.
fn collect_ops<'a>(
    ops: &'a mut serde_json::Value,
    at: &str,
    sites: &mut Vec<(String, &'a mut serde_json::Value)>,
) {
    if let Some(a) = ops.as_array_mut() {
        for (k, op) in a.iter_mut().enumerate() {
            let Some(o) = op.as_object_mut() else {
                continue;
            };
            for (key, v) in o.iter_mut() {
                match key.as_str() {
                    "pages" => sites.push((format!("{at}[{k}].pages"), v)),
                    "ops" => collect_ops(v, &format!("{at}[{k}].ops"), sites),
                    _ => {}
                }
            }
        }
    }
}

/// The arena's page count, as a range needs it: a number the scenario may have, whose
/// pages fit in the memory available (so expanding `"all"` cannot exhaust it).
fn arena_pages(v: Option<&serde_json::Value>) -> std::result::Result<usize, String> {
    let n = v
        .and_then(serde_json::Value::as_u64)
        .filter(|&n| n >= 1 && n <= super::MAX_PAGES as u64)
        .ok_or_else(|| {
            format!(
                "a page range needs the scenario's pages, a number between 1 and {}",
                super::MAX_PAGES
            )
        })? as usize;
    super::check_memory(
        n,
        crate::kernel::page_size(),
        crate::kernel::meminfo_kb("MemAvailable"),
    )
    .map_err(|e| e.to_string())?;
    Ok(n)
}

const PAGE_FORMS: &str = "a page list is an array of page indices, \"all\", \"A-B\" (A to B, both \
     included) or {\"from\": A, \"to\": B, \"step\": S} (B excluded)";

/// The pages a [`PageList`] range names, in an arena of `arena` pages.
fn expand(v: &serde_json::Value, arena: usize) -> std::result::Result<Vec<usize>, String> {
    let form: PageList =
        serde_json::from_value(v.clone()).map_err(|_| format!("{PAGE_FORMS}, got {v}"))?;
    let last = arena - 1;
    match form {
        PageList::List(l) => Ok(l),
        PageList::Text(t) if t.trim() == "all" => Ok((0..arena).collect()),
        PageList::Text(t) => {
            let (a, b) = t
                .split_once('-')
                .and_then(|(a, b)| {
                    Some((
                        a.trim().parse::<usize>().ok()?,
                        b.trim().parse::<usize>().ok()?,
                    ))
                })
                .ok_or_else(|| format!("{PAGE_FORMS}, got \"{t}\""))?;
            if a > b {
                return Err(format!("the range \"{t}\" runs backwards ({a} > {b})"));
            }
            if b > last {
                return Err(format!(
                    "the range \"{t}\" ends past the arena's {arena} pages (the last is page {last})"
                ));
            }
            Ok((a..=b).collect())
        }
        PageList::Span { from, to, step } => {
            if step == 0 {
                return Err("step must be at least 1".into());
            }
            if from >= to {
                return Err(format!(
                    "from {from} to {to} names no page (to is excluded: from must be below to)"
                ));
            }
            if to > arena {
                return Err(format!(
                    "to {to} is past the arena's {arena} pages (to is excluded: at most {arena})"
                ));
            }
            Ok((from..to).step_by(step).collect())
        }
    }
}

/// Read and parse a scenario file.
///
/// # Errors
/// As [`parse`], and when the file cannot be read.
pub fn load(path: &Path) -> Result<Vec<Scenario>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::usage(format!(
            "cannot read the scenario file {}: {e}",
            path.display()
        ))
    })?;
    parse(&text, &path.display().to_string())
}

/// A refusal: (JSON path suffix, message).
type Checked = std::result::Result<(), (String, String)>;

/// What can be checked of a scenario without running it: (JSON path suffix, message).
fn check(s: &Scenario) -> Checked {
    the_name_and_size_are_sane(s)?;
    the_size_fits_the_kind(s)?;
    the_mapping_fits_the_kind(s)?;
    the_steps_fit_their_processes(s)?;
    every_expectation_names_a_process(s)
}

/// A one-word name, and 1..=MAX_PAGES pages.
fn the_name_and_size_are_sane(s: &Scenario) -> Checked {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    if s.name.trim().is_empty() || s.name.contains(char::is_whitespace) {
        return err(
            ".name",
            "a name is one non-empty word (letters, digits, '-')".into(),
        );
    }
    if s.pages == 0 || s.pages > super::MAX_PAGES {
        return err(
            ".pages",
            format!(
                "must be between 1 and {}, got {}",
                super::MAX_PAGES,
                s.pages
            ),
        );
    }
    Ok(())
}

/// The pages a kind needs: whole THPs (one and a half for a partial mremap), the huge zero
/// page's span, an mTHP or hugetlb size that exists, the seed's single page.
fn the_size_fits_the_kind(s: &Scenario) -> Checked {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    let page_kb = (crate::kernel::page_size() / 1024) as u64;
    let pmd_pages = (crate::kernel::thp_pmd_size_kb().unwrap_or(2048) / page_kb) as usize;
    let want = |kb: u64| (kb / page_kb) as usize;
    match s.memory {
        MemoryKind::Thp { layout } => {
            let need = if layout == ThpLayout::PartialMremap {
                pmd_pages + pmd_pages / 2
            } else {
                pmd_pages
            };
            if s.pages != need {
                return err(
                    ".pages",
                    format!("a THP ({layout:?}) arena has exactly {need} pages"),
                );
            }
        }
        MemoryKind::HugeZeroPage if s.pages != pmd_pages => {
            return err(
                ".pages",
                format!("the huge zero page spans exactly {pmd_pages} pages"),
            );
        }
        MemoryKind::Mthp { size_kb } => {
            if !size_kb.is_power_of_two() || size_kb < 2 * page_kb {
                return err(
                    ".memory.size_kb",
                    format!(
                        "an mTHP size is a power of two of at least {} kB",
                        2 * page_kb
                    ),
                );
            }
            if s.pages != want(size_kb) {
                return err(
                    ".pages",
                    format!(
                        "a {size_kb} kB mTHP arena has exactly {} pages",
                        want(size_kb)
                    ),
                );
            }
        }
        MemoryKind::Hugetlb { size_kb } => {
            if !size_kb.is_power_of_two() || size_kb < page_kb {
                return err(
                    ".memory.size_kb",
                    "a huge page size is a power of two in kB".into(),
                );
            }
            if !s.pages.is_multiple_of(want(size_kb)) {
                return err(
                    ".pages",
                    format!(
                        "a {size_kb} kB hugetlb arena is a multiple of {} pages",
                        want(size_kb)
                    ),
                );
            }
        }
        MemoryKind::Seed09a if s.pages != 1 => {
            return err(".pages", "the seed's 09a arena is one page".into());
        }
        _ => {}
    }
    Ok(())
}

/// `shared` only for anon, memfd or file memory.
fn the_mapping_fits_the_kind(s: &Scenario) -> Checked {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    if s.mapping == super::scenarios::Mapping::Shared
        && !matches!(
            s.memory,
            MemoryKind::Anon | MemoryKind::Memfd | MemoryKind::File
        )
    {
        return err(
            ".mapping",
            format!(
                "'shared' is for anon, memfd or file memory, not {}",
                s.memory.name()
            ),
        );
    }
    Ok(())
}

/// Pages named in range, at most one grandchild per child, memory steps only in the parent.
fn the_steps_fit_their_processes(s: &Scenario) -> Checked {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    if let Some(m) = s.max_named_page()
        && m >= s.pages
    {
        return err(
            "",
            format!("a step names page {m}, but the arena has {} pages", s.pages),
        );
    }
    for (i, c) in s.children.iter().enumerate() {
        if c.ops
            .iter()
            .filter(|o| matches!(o, super::scenarios::Op::Fork { .. }))
            .count()
            > 1
        {
            return err(
                &format!(".children[{i}].ops"),
                "a child forks at most one grandchild".into(),
            );
        }
    }
    if s.parent.ops.iter().any(|o| {
        matches!(
            o,
            super::scenarios::Op::AfterParent
                | super::scenarios::Op::Fork { .. }
                | super::scenarios::Op::Hang
                | super::scenarios::Op::TouchAfterRelease { .. }
        )
    }) {
        return err(".parent.ops", "the parent's steps are memory steps only (write, write-byte, read-all, mprotect-cycle, vmsplice, munmap, o-direct-read)".into());
    }
    Ok(())
}

/// Every expectation names a process of the scenario.
fn every_expectation_names_a_process(s: &Scenario) -> Checked {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    for e in &s.expect {
        let ok = e.process == "parent"
            || s.paths()
                .iter()
                .any(|p| super::scenarios::role(p) == e.process);
        if !ok {
            return err(
                ".expect",
                format!("no process named '{}' in this scenario", e.process),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fork::scenarios::catalogue;

    #[test]
    fn every_built_in_scenario_round_trips_through_the_file_format() {
        let all = catalogue();
        let text = serde_json::to_string_pretty(&ScenarioFile {
            scenarios: all.clone(),
        })
        .unwrap();
        let back = parse(&text, "catalogue").unwrap();
        assert_eq!(back, all);
    }

    #[test]
    fn a_minimal_scenario_gets_the_defaults() {
        let s = parse(
            r#"{"scenarios": [{"name": "x", "summary": "y", "pages": 8,
                "children": [{"ops": [{"op": "write", "pages": [2]}]}]}]}"#,
            "f",
        )
        .unwrap();
        assert_eq!(s[0].memory, MemoryKind::Anon);
        assert!(s[0].populate);
        assert_eq!(s[0].written_by(&[0]), vec![2]);
    }

    fn one_child_writing(pages: usize, list: &str) -> String {
        format!(
            r#"{{"scenarios": [{{"name": "x", "summary": "y", "pages": {pages},
                "children": [{{"ops": [{{"op": "write", "pages": {list}}}]}}]}}]}}"#
        )
    }

    #[rstest::rstest]
    #[case::a_list(r#"[3, 1, 2]"#, vec![1, 2, 3])]
    #[case::all(r#""all""#, (0..16).collect())]
    #[case::inclusive_text_range(r#""0-3""#, vec![0, 1, 2, 3])]
    #[case::a_text_range_of_one(r#""5-5""#, vec![5])]
    #[case::the_last_page_inclusive(r#""14-15""#, vec![14, 15])]
    #[case::from_to_excludes_to(r#"{"from": 0, "to": 4}"#, vec![0, 1, 2, 3])]
    #[case::from_to_step(r#"{"from": 0, "to": 16, "step": 5}"#, vec![0, 5, 10, 15])]
    #[case::to_may_be_the_arena_size(r#"{"from": 12, "to": 16}"#, vec![12, 13, 14, 15])]
    fn every_page_list_form_names_these_pages(#[case] list: &str, #[case] want: Vec<usize>) {
        let s = parse(&one_child_writing(16, list), "f").unwrap();
        assert_eq!(s[0].written_by(&[0]), want);
    }

    #[test]
    fn ranges_work_in_every_place_a_page_list_goes() {
        let s = parse(
            r#"{"scenarios": [{"name": "x", "summary": "y", "pages": 8,
                "prepare": [{"op": "vmsplice", "pages": "0-1"}],
                "children": [{"ops": [{"op": "munmap", "pages": {"from": 6, "to": 8}},
                                      {"op": "fork", "ops": [{"op": "write", "pages": "all"}]}]}],
                "parent": {"ops": [{"op": "write-byte", "pages": "2-3"}]},
                "expect": [{"process": "child", "pages": "4-5", "class": "shared"}]}]}"#,
            "f",
        );
        let s = match s {
            Ok(s) => s,
            // The step names may differ from this guess: say which, rather than pass.
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s[0].unmapped_by(&[0]), vec![6, 7]);
        assert_eq!(s[0].written_by(&[0, 0]), (0..8).collect::<Vec<_>>());
        assert_eq!(s[0].written_by(&[]), vec![2, 3]);
        assert_eq!(s[0].vmspliced(), vec![0, 1]);
        assert_eq!(s[0].expect[0].pages, vec![4, 5]);
    }

    #[test]
    fn a_file_with_ranges_round_trips_as_the_lists_they_name() {
        let s = parse(
            &one_child_writing(64, r#"{"from": 1, "to": 64, "step": 7}"#),
            "f",
        )
        .unwrap();
        let text = serde_json::to_string(&ScenarioFile {
            scenarios: s.clone(),
        })
        .unwrap();
        assert!(
            text.contains(r#""pages":[1,8,15,22,29,36,43,50,57]"#),
            "{text}"
        );
        assert_eq!(parse(&text, "again").unwrap(), s);
    }

    #[test]
    fn the_schema_describes_the_range_forms() {
        let schema = serde_json::to_value(schemars::schema_for!(ScenarioFile)).unwrap();
        // The descriptions, decoded (no JSON escapes), of the page-list type.
        let mut text = String::new();
        let list = &schema["$defs"]["PageList"];
        text.push_str(list["description"].as_str().unwrap_or_default());
        for form in list["anyOf"].as_array().into_iter().flatten() {
            text.push_str(form["description"].as_str().unwrap_or_default());
        }
        for needle in [
            "\"all\"",
            "\"A-B\"",
            "both included",
            "`to` is excluded",
            "step",
        ] {
            assert!(
                text.contains(needle),
                "{needle} missing from the schema: {text}"
            );
        }
        // And every page list of a step points at it.
        let ops = serde_json::to_string(&schema["$defs"]["Op"]).unwrap();
        assert!(ops.contains("#/$defs/PageList"), "{ops}");
    }

    #[rstest::rstest]
    #[case::an_unknown_word(r#""every""#, "children[0].ops[0].pages: a page list is an array")]
    #[case::backwards(
        r#""9-2""#,
        "children[0].ops[0].pages: the range \"9-2\" runs backwards"
    )]
    #[case::past_the_end(
        r#""0-16""#,
        "children[0].ops[0].pages: the range \"0-16\" ends past the arena's 16 pages"
    )]
    #[case::half_a_range(r#""3-""#, "children[0].ops[0].pages: a page list is an array")]
    #[case::negative(r#""-1-3""#, "children[0].ops[0].pages: a page list is an array")]
    #[case::empty_span(
        r#"{"from": 4, "to": 4}"#,
        "children[0].ops[0].pages: from 4 to 4 names no page"
    )]
    #[case::span_past_the_end(
        r#"{"from": 0, "to": 17}"#,
        "children[0].ops[0].pages: to 17 is past the arena's 16 pages"
    )]
    #[case::step_zero(
        r#"{"from": 0, "to": 4, "step": 0}"#,
        "children[0].ops[0].pages: step must be at least 1"
    )]
    #[case::a_number(r#"7"#, "children[0].ops[0].pages: a page list is an array")]
    #[case::a_list_of_words(r#"["all"]"#, "children[0].ops[0]: invalid type: string \"all\"")]
    fn a_bad_page_list_names_its_json_path(#[case] list: &str, #[case] needle: &str) {
        let e = parse(&one_child_writing(16, list), "f.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("at scenarios[0].{needle}")), "{e}");
    }

    #[test]
    fn all_without_a_usable_arena_size_names_the_pages_field() {
        let e = parse(&one_child_writing(0, r#""all""#), "f.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("at scenarios[0].pages: a page range needs"),
            "{e}"
        );
    }

    #[rstest::rstest]
    #[case::unknown_field(
        r#"{"scenarios": [{"name": "x", "summary": "y", "pages": 8, "colour": 1}]}"#,
        "at scenarios[0].colour: unknown field `colour`"
    )]
    #[case::wrong_type(
        r#"{"scenarios": [{"name": "x", "summary": "y", "pages": "four"}]}"#,
        "at scenarios[0].pages:"
    )]
    #[case::unknown_op(r#"{"scenarios": [{"name": "x", "summary": "y", "pages": 8, "children": [{"ops": [{"op": "jump"}]}]}]}"#, "at scenarios[0].children[0].ops[0]")]
    #[case::page_out_of_range(r#"{"scenarios": [{"name": "x", "summary": "y", "pages": 8, "children": [{"ops": [{"op": "write", "pages": [9]}]}]}]}"#, "at scenarios[0]: a step names page 9")]
    #[case::bad_mthp(r#"{"scenarios": [{"name": "x", "summary": "y", "pages": 6, "memory": {"kind": "mthp", "size_kb": 24}}]}"#, "at scenarios[0].memory.size_kb")]
    #[case::duplicate(r#"{"scenarios": [{"name": "x", "summary": "y", "pages": 1}, {"name": "x", "summary": "z", "pages": 1}]}"#, "at scenarios[1].name")]
    #[case::empty(r#"{"scenarios": []}"#, "at scenarios: no scenario")]
    #[case::not_json("{", "at the top level")]
    fn a_bad_file_names_the_json_path(#[case] text: &str, #[case] needle: &str) {
        let e = parse(text, "f.json").unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
        assert!(e.starts_with("f.json: "), "{e}");
    }
}
