//! `inspect --format openmetrics`: the exposition parses with real parsers (Python's
//! prometheus_client, both its Prometheus text parser and its strict OpenMetrics parser, from
//! Debian's python3-prometheus-client) and node_exporter's own textfile collector serves it;
//! the figures are the family's known writes; a watch replaces its `--out` file whole at each
//! sample.

mod inspect_support;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cowscope::fork::child::ChildOp;
use inspect_support::*;
use serde_json::Value;

/// Parse `text` with prometheus_client's Prometheus parser and its OpenMetrics parser;
/// `None` (with the reason printed) when the module is missing. Panics with the parser's
/// error when either refuses the text.
fn parse(text: &str) -> Option<Value> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as prom
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
text = sys.stdin.read()
out = {}
for name, parse in (("prometheus", prom), ("openmetrics", om)):
    out[name] = [
        {"name": f.name, "type": f.type, "unit": getattr(f, "unit", ""),
         "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
        for f in parse(text)
    ]
print(json.dumps(out))
"#;
    let py = system_python()?;
    let probe = Command::new(py)
        .args(["-c", "import prometheus_client"])
        .output()
        .ok()?;
    if !probe.status.success() {
        eprintln!(
            "SKIP: Python's prometheus_client is missing (apt-get install python3-prometheus-client)"
        );
        return None;
    }
    let mut child = Command::new(py)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parsers refuse the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// name -> [(labels, value)] as one parser saw them.
fn samples(parsed: &Value, parser: &str) -> HashMap<String, Vec<(Value, f64)>> {
    let mut m: HashMap<String, Vec<(Value, f64)>> = HashMap::new();
    for f in parsed[parser].as_array().unwrap() {
        assert_eq!(f["type"], "gauge", "{f}");
        for s in f["samples"].as_array().unwrap() {
            m.entry(s["name"].as_str().unwrap().to_string())
                .or_default()
                .push((s["labels"].clone(), s["value"].as_f64().unwrap()));
        }
    }
    m
}

fn value_for(m: &HashMap<String, Vec<(Value, f64)>>, name: &str, child: i32) -> f64 {
    m.get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .iter()
        .find(|(l, _)| l["child_pid"].as_str() == Some(child.to_string().as_str()))
        .unwrap_or_else(|| panic!("no {name} for child {child}"))
        .1
}

#[test]
fn one_exposition_parses_and_carries_the_known_writes() {
    if !is_root() {
        eprintln!("SKIP: exact shared/diverged figures need visible PFNs (run as root)");
        return;
    }
    // A parent writes 64 pages; child A writes 8 of them, child B 8 others, child C 4.
    let res = Reservation::new(66);
    let r = res.page(1);
    let mut s = vec![ChildOp::MapAnon {
        addr: r,
        len: 64 * ps(),
    }];
    s.extend(writes(r, 64));
    let fam = Family::spawn(
        &s,
        &[writes(r, 8), writes(r + 8 * ps(), 8), writes(r, 4)],
        &[],
        |_| {},
    );
    let range = format!("{:#x}-{:#x}", r, r + 64 * ps());
    let pid = fam.parent.to_string();
    let (rc, text, err) = inspect(&["--pid", &pid, "--range", &range, "--format", "openmetrics"]);
    assert_eq!(rc, 0, "{err}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let Some(parsed) = parse(&text) else { return };
    let ps = ps() as f64;
    for parser in ["prometheus", "openmetrics"] {
        let m = samples(&parsed, parser);
        for (child, diverged) in fam.children.iter().zip([8.0, 8.0, 4.0]) {
            assert_eq!(
                value_for(&m, "cowscope_pair_diverged_bytes", *child),
                diverged * ps,
                "{parser}"
            );
            assert_eq!(
                value_for(&m, "cowscope_pair_shared_bytes", *child),
                (64.0 - diverged) * ps,
                "{parser}"
            );
            assert_eq!(
                value_for(&m, "cowscope_pair_only_child_bytes", *child),
                0.0,
                "{parser}"
            );
        }
        let labels = &m["cowscope_pair_diverged_bytes"][0].0;
        for k in ["parent_pid", "parent_comm", "child_pid", "child_comm"] {
            assert!(labels.get(k).is_some(), "{parser}: label {k} in {labels}");
        }
        let pool = &m["cowscope_pool_diverged_bytes"];
        assert_eq!(pool.len(), 1, "{parser}");
        assert_eq!(pool[0].0["parent_pid"], pid, "{parser}");
        assert_eq!(pool[0].1, 20.0 * ps, "{parser}: 8 + 8 + 4 pages");
        assert_eq!(m["cowscope_pool_workers"][0].1, 3.0, "{parser}");
        let read = m["cowscope_read_timestamp_seconds"][0].1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(read <= now && now - read < 60.0, "{parser}: read at {read}");
        assert!(m["cowscope_read_duration_seconds"][0].1 > 0.0, "{parser}");
    }
}

/// A comm with a quote and a backslash (family.c's layout child names itself `lay"out\x`)
/// comes back whole through both parsers.
#[test]
fn a_comm_with_a_quote_and_a_backslash_is_escaped() {
    let mut fam = CFamily::start(&[], &["layout", "4", "C:4:2"]);
    let (rc, text, err) = inspect(&["--pid", &fam.parent.to_string(), "--format", "openmetrics"]);
    assert!(rc == 0 || rc == 3, "{err}");
    assert!(text.contains(r#"child_comm="lay\"out\\x""#), "{text}");
    if let Some(parsed) = parse(&text) {
        for parser in ["prometheus", "openmetrics"] {
            let m = samples(&parsed, parser);
            let (labels, _) = &m["cowscope_pair_diverged_bytes"][0];
            assert_eq!(labels["child_comm"], r#"lay"out\x"#, "{parser}");
            assert_eq!(labels["child_pid"], fam.c1.to_string(), "{parser}");
        }
    }
    assert!(fam.end().is_some_and(|s| s.success()));
}

#[test]
fn openmetrics_with_interval_needs_out() {
    let (rc, _, err) = inspect(&["--pid", "1", "--interval", "1s", "--format", "openmetrics"]);
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("needs --out"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}

/// A watch refuses an --out it could never replace before it reads anything.
#[test]
fn a_watch_refuses_a_directory_or_proc_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for (out, says) in [
        (d.as_str(), "is a directory"),
        ("/proc/self/x.prom", "in /proc"),
    ] {
        let (rc, stdout, err) = inspect(&[
            "--pid",
            "1",
            "--interval",
            "1s",
            "--format",
            "openmetrics",
            "--out",
            out,
        ]);
        assert_eq!(rc, 2, "{out}: {err}");
        assert!(err.contains(says), "{out}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
        assert!(stdout.is_empty());
    }
}

/// A watch replaces its --out file at each sample: a reader polling it meanwhile only ever
/// sees whole expositions (each ends with `# EOF`), whose read time moves on, and no
/// temporary file stays behind.
#[test]
fn a_watch_replaces_the_file_whole_at_each_sample() {
    let (res, fam) = written_family(256, 16);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cowscope.prom");
    let mut watch = Command::new(cowscope_bin())
        .args(["inspect", "--pid", &fam.parent.to_string()])
        .args(["--range", &written_range(&res, 256)])
        .args([
            "--interval",
            "40ms",
            "--duration",
            "1200ms",
            "--format",
            "openmetrics",
        ])
        .arg("--out")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reads = 0;
    let mut stamps = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    while watch.try_wait().unwrap().is_none() && Instant::now() < end {
        if let Ok(text) = std::fs::read_to_string(&file) {
            reads += 1;
            assert!(text.ends_with("# EOF\n"), "a torn exposition:\n{text}");
            if let Some(l) = text
                .lines()
                .find(|l| l.starts_with("cowscope_read_timestamp_seconds "))
            {
                stamps.push(l.to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    let out = watch.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some_and(|c| c == 0 || c == 3), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout with --out");
    stamps.dedup();
    assert!(reads > 10 && stamps.len() >= 3, "{reads} reads, {stamps:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    if let Some(parsed) = parse(&text)
        && is_root()
    {
        let m = samples(&parsed, "openmetrics");
        assert_eq!(
            value_for(&m, "cowscope_pair_diverged_bytes", fam.children[0]),
            16.0 * ps() as f64
        );
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["cowscope.prom"], "no temporary file left");
}

/// node_exporter's textfile collector (Debian's prometheus-node-exporter) reads the file and
/// serves our gauges, with no scrape error.
#[test]
fn node_exporters_textfile_collector_serves_the_file() {
    let Some(exporter) = [
        "/usr/bin/prometheus-node-exporter",
        "/usr/local/bin/node_exporter",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists()) else {
        eprintln!("SKIP: node_exporter is missing (apt-get install prometheus-node-exporter)");
        return;
    };
    let (res, fam) = written_family(64, 4);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cowscope.prom");
    let st = Command::new(cowscope_bin())
        .args([
            "inspect",
            "--pid",
            &fam.parent.to_string(),
            "--format",
            "openmetrics",
        ])
        .args(["--range", &written_range(&res, 64)])
        .arg("--out")
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.code().is_some_and(|c| c == 0 || c == 3));
    // A free port: bind 0, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut ne = Command::new(exporter)
        .arg("--collector.disable-defaults")
        .arg("--collector.textfile")
        .arg(format!(
            "--collector.textfile.directory={}",
            dir.path().display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let body = (|| {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(b) = http_get(port, "/metrics") {
                return Some(b);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })();
    let _ = ne.kill();
    let out = ne.wait_with_output().unwrap();
    let body = body.unwrap_or_else(|| {
        panic!(
            "node_exporter did not answer: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let line = |prefix: &str| {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    };
    assert_eq!(
        line("node_textfile_scrape_error ").as_deref(),
        Some("node_textfile_scrape_error 0"),
        "node_exporter refused the file: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = fam.children[0];
    let diverged = body
        .lines()
        .find(|l| {
            l.starts_with("cowscope_pair_diverged_bytes{")
                && l.contains(&format!("child_pid=\"{child}\""))
        })
        .unwrap_or_else(|| panic!("no cowscope_pair_diverged_bytes for {child}:\n{body}"));
    if is_root() {
        assert!(diverged.ends_with(&format!(" {}", 4 * ps())), "{diverged}");
    }
    assert!(line("cowscope_read_timestamp_seconds ").is_some(), "{body}");
}

/// A plain HTTP/1.0 GET on localhost; the body.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(std::io::Error::other(head.to_string()));
    }
    Ok(body.to_string())
}
