//! The human form of a `baseline` document: the seed's log replayed, then the engine's
//! judgement.

use crate::baseline::BaselineBody;

/// A transcript in the spirit of the seed's log, followed by the engine's judgement.
pub fn transcript(b: &BaselineBody) -> String {
    let mut s = String::new();
    for line in &b.log {
        s.push_str(line);
        s.push('\n');
    }
    s.push_str("\n🔎 cowscope's judgement:\n");
    if b.leaks.is_empty() {
        s.push_str("  ✅ no leak: every block was written or released\n");
    }
    for l in &b.leaks {
        s.push_str(&format!(
            "  ⚠️  leak: block {} '{}' (offset {}, {} bytes) was allocated and never written or released\n",
            l.index,
            l.label.as_deref().unwrap_or("?"),
            l.offset,
            l.len
        ));
    }
    for w in &b.writes {
        let verdict = match (w.bytes_past_end, w.bytes_past_capacity) {
            (0, _) => "stays inside the block".to_string(),
            (n, 0) => format!("runs {n} byte(s) past the block's end"),
            (n, c) => format!(
                "runs {n} byte(s) past the block's end, {c} of them past the arena's capacity"
            ),
        };
        s.push_str(&format!(
            "  ✍️  {}: {} bytes incl. NUL at +{} of block {}: {}\n",
            w.call, w.len, w.offset_in_block, w.block, verdict
        ));
    }
    if b.overflows.is_empty() {
        s.push_str("  ✅ no write crossed a block end\n");
    }
    for o in &b.overflows {
        let victims = if o.victims.is_empty() {
            "no other block".to_string()
        } else {
            format!(
                "block(s) {}",
                o.victims
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        s.push_str(&format!(
            "  🤡 overflow: block {} (offset {}, {} bytes) written {} byte(s) past its end, into {}\n",
            o.index, o.offset, o.len, o.bytes_past_end, victims
        ));
        if o.bytes_past_capacity > 0 {
            s.push_str(&format!(
                "     {} of them past the arena's capacity ({} bytes), into the slack of its last page\n",
                o.bytes_past_capacity, b.capacity
            ));
        }
    }
    if let Some(d) = &b.findings.slack {
        s.push_str(&format!(
            "  🧱 slack damaged: {} non-zero byte(s) between the capacity {} and the mapping's end {}, reaching {} byte(s) past the capacity\n",
            d.nonzero_bytes, d.capacity, d.mapped, d.bytes_past_capacity
        ));
    }
    let v = &b.verdict;
    s.push_str(&format!(
        "\nverdict: {}: {}\n",
        if v.holds { "held" } else { "FAILED" },
        v.sentence
    ));
    for d in &v.disagreements {
        s.push_str(&format!("  disagreement: {d}\n"));
    }
    s
}
