//! `trace --stacks` as folded stacks and as a flame graph of copied pages.
//!
//! Both take the stacks grouped by process ([`StackGroup`]: a fork's command name and its
//! stack records), so they draw what the document carries: the caller maps each
//! `ForkRecord`'s `stacks` into [`StackLine`]s, nothing is recomputed.

use std::collections::BTreeMap;
use std::io;

use inferno::flamegraph::{self, Options, Palette, color::MultiPalette};

use crate::stacks::symbols::Frame;

/// One stack record: the side that copied, the pages it copied, its frames leaf first.
#[derive(Debug, Clone, Copy)]
pub struct StackLine<'a> {
    /// `"child"` or `"parent"`.
    pub who: &'a str,
    /// Pages copied with this stack.
    pub pages: u64,
    /// Leaf first, as the document stores them.
    pub frames: &'a [Frame],
}

/// The stacks of one fork (or process) under its command name.
#[derive(Debug, Clone)]
pub struct StackGroup<'a> {
    /// The command name (`comm`), the root frame of its stacks.
    pub comm: &'a str,
    /// Its stack records.
    pub stacks: Vec<StackLine<'a>>,
}

/// A frame name safe in a folded line: `;` separates frames, so it becomes `:` (as
/// flamegraph.pl's stackcollapse scripts do); line breaks and tabs become spaces. Spaces stay:
/// inferno, flamegraph.pl and speedscope all read the count after the *last* space.
fn folded_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_whitespace() => ' ',
            c => c,
        })
        .collect();
    let s = s.trim();
    if s.is_empty() {
        "[unknown]".to_string()
    } else {
        s.to_string()
    }
}

/// The folded stack of one record, outermost first, `annotate` appended to each frame below
/// the command name.
fn folded_stack(comm: &str, s: &StackLine<'_>, annotate: &str) -> String {
    let mut parts = Vec::with_capacity(s.frames.len() + 2);
    parts.push(folded_name(comm));
    parts.push(format!("{}{annotate}", folded_name(s.who)));
    parts.extend(
        s.frames
            .iter()
            .rev()
            .map(|f| format!("{}{annotate}", folded_name(&f.name()))),
    );
    parts.join(";")
}

/// Lines `stack count`, identical stacks summed, sorted (stable output), zero counts dropped.
fn folded_lines(groups: &[StackGroup<'_>], annotate: impl Fn(&str) -> &'static str) -> Vec<String> {
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for g in groups {
        for s in g.stacks.iter().filter(|s| s.pages > 0) {
            *sums
                .entry(folded_stack(g.comm, s, annotate(s.who)))
                .or_default() += s.pages;
        }
    }
    sums.into_iter().map(|(k, v)| format!("{k} {v}")).collect()
}

/// `--format folded`: one line per distinct stack, `comm;side;outermost;...;leaf PAGES`
/// (frames named by function, else `module+0xOFFSET`), the input inferno, flamegraph.pl and
/// speedscope read.
pub fn folded(groups: &[StackGroup<'_>]) -> String {
    let mut out = String::new();
    for l in folded_lines(groups, |_| "") {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// inferno's colour annotations (its "java" palette): a frame name ending in `_[k]` is drawn
/// orange, `_[i]` aqua; inferno strips the suffix from the label and the tooltip.
fn side_annotation(who: &str) -> &'static str {
    match who {
        "parent" => "_[k]",
        "child" => "_[i]",
        _ => "",
    }
}

/// `--format flamegraph`: an SVG flame graph of copied pages (width = pages), the child's
/// frames aqua and the parent's orange, titled with the program and the kernel.
///
/// # Errors
/// InvalidData when no stack has a page (inferno draws nothing then).
pub fn flamegraph(groups: &[StackGroup<'_>], program: &str, kernel: &str) -> io::Result<String> {
    let lines = folded_lines(groups, side_annotation);
    let mut opts = Options::default();
    opts.title = format!("Pages copied after fork: {program}");
    opts.subtitle = Some(format!(
        "Linux {kernel}; width = pages copied; child aqua, parent orange"
    ));
    opts.count_name = "pages".to_string();
    opts.colors = Palette::Multi(MultiPalette::Java);
    // Colours from the frame names, not a random generator: the same input draws the same SVG.
    opts.hash = true;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)?;
    String::from_utf8(svg).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: Option<&str>, module: &str, offset: &str) -> Frame {
        Frame {
            function: function.map(str::to_string),
            module: module.to_string(),
            offset: offset.to_string(),
            file: None,
            line: None,
        }
    }

    fn sample() -> (Vec<Frame>, Vec<Frame>, Vec<Frame>) {
        let child = vec![
            frame(Some("listiter_next"), "python3.11", "0x10"),
            frame(Some("_PyEval_EvalFrameDefault"), "python3.11", "0x20"),
            frame(Some("main"), "python3.11", "0x30"),
        ];
        let parent = vec![
            frame(None, "redis-server", "0x1a2b"),
            frame(
                Some("operator new(unsigned long)"),
                "libstdc++.so.6",
                "0x40",
            ),
            frame(Some("weird;name"), "x", "0x50"),
        ];
        let bare = vec![frame(Some("main"), "python3.11", "0x30")];
        (child, parent, bare)
    }

    fn line<'a>(who: &'static str, pages: u64, frames: &'a [Frame]) -> StackLine<'a> {
        StackLine { who, pages, frames }
    }

    #[test]
    fn folded_lines_are_outermost_first_summed_and_escaped() {
        let (child, parent, bare) = sample();
        let groups = [StackGroup {
            comm: "python3",
            stacks: vec![
                line("child", 300, &child),
                line("parent", 2, &parent),
                line("child", 5, &child),
                line("child", 0, &bare),
            ],
        }];
        let text = folded(&groups);
        let want = "python3;child;main;_PyEval_EvalFrameDefault;listiter_next 305\n\
                    python3;parent;weird:name;operator new(unsigned long);redis-server+0x1a2b 2\n";
        assert_eq!(text, want);
        // Every line splits into frames and a count at the last space, as the tools read it.
        for line in text.lines() {
            let (stack, count) = line.rsplit_once(' ').unwrap();
            assert!(count.parse::<u64>().is_ok());
            assert!(stack.split(';').all(|f| !f.is_empty()));
        }
    }

    #[test]
    fn flamegraph_colours_each_side_and_labels_without_the_annotation() {
        let (child, parent, _) = sample();
        let groups = [StackGroup {
            comm: "python3",
            stacks: vec![line("child", 300, &child), line("parent", 100, &parent)],
        }];
        let svg = flamegraph(&groups, "python3 list.py", "6.1.0-test").unwrap();
        assert!(svg.contains("Pages copied after fork: python3 list.py"));
        assert!(svg.contains("Linux 6.1.0-test"));
        assert!(
            svg.contains("listiter_next (300 pages, 75.00%)"),
            "tooltip without _[i]"
        );
        assert!(!svg.contains("_[i]") && !svg.contains("_[k]"));
        // The child's frames in the aqua family, the parent's in the orange family: java
        // palette aqua is rgb(50+60v, 165+55v, 165+55v), orange rgb(190+65v, 90+65v, 0).
        let fill_of = |label: &str| -> (u8, u8, u8) {
            let i = svg.find(&format!("<title>{label}")).unwrap();
            let rest = &svg[i..];
            let f = rest.find("fill=\"rgb(").unwrap() + "fill=\"rgb(".len();
            let nums: Vec<u8> = rest[f..]
                .split(')')
                .next()
                .unwrap()
                .split(',')
                .map(|n| n.trim().parse().unwrap())
                .collect();
            (nums[0], nums[1], nums[2])
        };
        let (r, g, b) = fill_of("listiter_next");
        assert!(r < 111 && g >= 165 && b >= 165, "child aqua: {r},{g},{b}");
        let (r, g, b) = fill_of("redis-server+0x1a2b");
        assert!(
            r >= 190 && (90..=155).contains(&g) && b == 0,
            "parent orange: {r},{g},{b}"
        );
    }

    #[test]
    fn flamegraph_of_nothing_is_an_error_not_an_empty_picture() {
        assert!(flamegraph(&[], "p", "k").is_err());
    }
}
