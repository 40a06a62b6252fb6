//! Renderings of documents for humans: tables, SVG page maps, the seed transcript. A renderer
//! reads a document and draws what it carries; it never classifies or judges.

pub mod baseline;
pub mod compare;
pub mod experiment;
pub mod inspect_svg;
pub mod inspect_table;
pub mod openmetrics;
pub mod pages;
pub mod stacks;
pub mod svg;
pub mod table;
pub mod trace;

/// How a column's cells are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text columns.
    Left,
    /// Number columns.
    Right,
}

/// Lay `rows` (the first is the heading) out in columns as wide as their widest cell, so a
/// large figure widens its column instead of pushing the row out of line. `align` gives each
/// column's alignment (columns beyond it are left-aligned); the last column is never padded
/// (no trailing blanks).
pub fn aligned(rows: &[Vec<String>], align: &[Align]) -> String {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let w = widths[c];
            let pad = w.saturating_sub(cell.chars().count());
            let last = c + 1 == r.len();
            match align.get(c).copied().unwrap_or(Align::Left) {
                Align::Left if last => line.push_str(cell),
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_number_widens_its_column_and_keeps_rows_in_line() {
        let rows = vec![
            vec!["name".to_string(), "pages".into(), "verdict".into()],
            vec!["a".to_string(), "16".into(), "ok".into()],
            vec!["b".to_string(), "262144".into(), "ok [pfn]".into()],
        ];
        let t = aligned(&rows, &[Align::Left, Align::Right, Align::Left]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "name   pages  verdict");
        assert_eq!(lines[1], "a         16  ok");
        assert_eq!(lines[2], "b     262144  ok [pfn]");
    }
}
