//! `cowscope inspect` on a real program: Redis (Debian's `redis-server`) during `BGSAVE`.
//!
//! The test starts its own redis-server on a free local port with its data in a temp dir,
//! loads 200,000 keys, slows the save down (`rdb-key-save-delay`), starts `BGSAVE`, runs a
//! write load against the parent, stops it, and then compares:
//! - cowscope's child Private_Dirty (smaps) with the `current_cow_size` the fork child
//!   reports in `INFO persistence` (it reads its own smaps), once that figure is fresh;
//! - Redis's figure with the child's private anonymous pages counted in its pagemap (an
//!   independent walk), and, at each frozen instant, smaps with pagemap exactly (design
//!   principle 7: no residual, no private page in a class other than diverged or only-child).
//!
//! Redis is stopped by pid at the end, also when an assertion fails (a Drop guard).

mod inspect_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use inspect_support::*;
use serde_json::Value;

const KEYS: u64 = 200_000;

/// One RESP reply.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// A minimal RESP2 client.
struct Resp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Resp {
    fn connect(port: u16) -> std::io::Result<Resp> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Resp {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }
    fn encode(args: &[&str], out: &mut Vec<u8>) {
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    fn read(&mut self) -> std::io::Result<Reply> {
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let line = line.trim_end_matches("\r\n");
        let (t, rest) = line.split_at(1.min(line.len()));
        let num = || rest.parse::<i64>().map_err(std::io::Error::other);
        Ok(match t {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(num()?),
            "$" => {
                let n = num()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut b = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    Reply::Bulk(Some(b))
                }
            }
            "*" => {
                let n = num()?;
                let mut v = Vec::new();
                for _ in 0..n.max(0) {
                    v.push(self.read()?);
                }
                Reply::Array(v)
            }
            _ => return Err(std::io::Error::other(format!("bad RESP line {line:?}"))),
        })
    }
    fn cmd(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let mut b = Vec::new();
        Self::encode(args, &mut b);
        self.w.write_all(&b)?;
        self.read()
    }
    /// `INFO section` as key -> value.
    fn info(&mut self, section: &str) -> std::collections::HashMap<String, String> {
        match self.cmd(&["INFO", section]) {
            Ok(Reply::Bulk(Some(b))) => String::from_utf8_lossy(&b)
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect(),
            other => panic!("INFO {section}: {other:?}"),
        }
    }
}

/// A redis-server of our own; SIGKILLed with its children, by pid, on drop.
struct Redis {
    proc: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            return None;
        }
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let dir = tempfile::tempdir().ok()?;
            let proc = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--enable-debug-command", "local", "--loglevel", "warning"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            let r = Redis {
                proc,
                port,
                _dir: dir,
            };
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if let Ok(mut c) = Resp::connect(port)
                    && c.cmd(&["PING"]).ok() == Some(Reply::Simple("PONG".into()))
                {
                    return Some(r);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(r); // port taken meanwhile? try another
        }
        None
    }
    fn pid(&self) -> i32 {
        self.proc.id() as i32
    }
    fn client(&self) -> Resp {
        Resp::connect(self.port).expect("connect to our redis")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let kids: Vec<i32> =
            cowscope::inspect::proc::descendants(self.pid(), &cowscope::inspect::proc::all())
                .iter()
                .map(|p| p.pid)
                .collect();
        let _ = self.proc.kill();
        for k in kids {
            // SAFETY: kill(2) with plain integers, our redis's own children.
            unsafe { libc::kill(k, libc::SIGKILL) };
        }
        let _ = self.proc.wait();
    }
}

/// Overwrite random existing keys, pipelined, until `stop`.
fn write_load(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut c = Resp::connect(port).expect("load connection");
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut b = Vec::new();
            for _ in 0..100 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = format!("key:{}", x % KEYS);
                let val = format!("{x:0100}");
                Resp::encode(&["SET", &key, &val], &mut b);
            }
            if c.w.write_all(&b).is_err() {
                break;
            }
            for _ in 0..100 {
                if c.read().is_err() {
                    return n;
                }
            }
            n += 100;
        }
        n
    })
}

fn child_private_dirty_kb(doc: &Value, child: i32) -> u64 {
    doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == child)
        .and_then(|p| p["smaps_rollup"]["private_dirty_kb"].as_u64())
        .expect("the child's smaps")
}

#[test]
fn bgsave_copy_on_write_size_equals_the_childs_private_dirty_and_the_classes_account_for_it() {
    if !is_root() {
        eprintln!("SKIP: frame-level proof needs root");
        return;
    }
    let Some(redis) = Redis::start() else {
        eprintln!("SKIP: redis-server is not installed (.ci/run installs it)");
        return;
    };
    let mut c = redis.client();
    assert_eq!(
        c.cmd(&["DEBUG", "POPULATE", &KEYS.to_string(), "key", "100"])
            .unwrap(),
        Reply::Simple("OK".into())
    );
    // 100 µs per key: the save of 200,000 keys takes about 20 s.
    c.cmd(&["CONFIG", "SET", "rdb-key-save-delay", "100"])
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load(redis.port, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        c.cmd(&["BGSAVE"]).unwrap(),
        Reply::Simple("Background saving started".into())
    );
    let table = cowscope::inspect::proc::all();
    let child = cowscope::inspect::proc::descendants(redis.pid(), &table)
        .first()
        .map(|p| p.pid)
        .expect("the BGSAVE child");
    std::thread::sleep(Duration::from_secs(2)); // the load copies pages meanwhile
    stop.store(true, Ordering::Relaxed);
    let sets = load.join().unwrap();
    assert!(sets > 1000, "the write load ran: {sets} SETs");

    // Wait for two refreshes of the child's figure after the load stopped, so the figure
    // Redis shows was measured after the stop.
    let keys = |c: &mut Resp| -> u64 {
        c.info("persistence")["current_save_keys_processed"]
            .parse()
            .unwrap()
    };
    let mut k = keys(&mut c);
    for _ in 0..2 {
        let end = Instant::now() + Duration::from_secs(10);
        while keys(&mut c) == k && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        k = keys(&mut c);
    }

    // Compare right after each refresh: Redis's figure (the child's own smaps, summed by
    // Redis) against two readings of cowscope at one frozen instant, taken before the next
    // refresh: the same smaps (Private_Dirty) and, independently, the child's pagemap (its
    // private anonymous pages: present, exclusive, not file-backed, x 4 KiB).
    let pid = redis.pid().to_string();
    let cpid = child.to_string();
    let mut tries = Vec::new();
    let mut last = Value::Null;
    for _ in 0..8 {
        let before = c.info("persistence");
        assert_eq!(
            before["rdb_bgsave_in_progress"], "1",
            "the save is still running"
        );
        let doc = inspect_json_once(&["--pid", &pid, "--child", &cpid, "--freeze"], 0);
        let after = c.info("persistence");
        let fresh = before["current_save_keys_processed"] == after["current_save_keys_processed"];
        let redis_cow: u64 = before["current_cow_size"].parse().unwrap();
        let smaps = child_private_dirty_kb(&doc, child) * 1024;
        let a = &pair(&doc, child)["accounting"]["child"];
        let pagemap = a["private_anon_kb"].as_u64().unwrap() * 1024;
        eprintln!(
            "redis current_cow_size {redis_cow} B (age {} s), cowscope child Private_Dirty \
             {smaps} B, private anonymous pages {pagemap} B{}",
            before["current_cow_size_age"],
            if fresh {
                ""
            } else {
                " (Redis refreshed meanwhile)"
            }
        );
        // At a frozen instant smaps and pagemap are two walks of the same page tables: every
        // dirty private page is an anonymous page mapped once (Redis maps no file shared and
        // writable, and turns THP off), and every such page is in a class of the pair.
        assert_eq!(a["residual_kb"], 0, "{a}");
        assert_eq!(a["other_kb"], 0, "{a}");
        if fresh {
            tries.push((redis_cow, smaps, pagemap));
        }
        last = doc;
        let k0 = keys(&mut c);
        let end = Instant::now() + Duration::from_secs(5);
        while keys(&mut c) == k0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(!tries.is_empty(), "no comparison between two refreshes");
    // Redis measured a moment before cowscope did: equal unless the child wrote a page in
    // between (it keeps saving), which shows as a page or two.
    let equal = tries.iter().filter(|(r, o, _)| r == o).count();
    assert!(
        equal * 2 >= tries.len(),
        "cowscope's child Private_Dirty should equal Redis's fresh current_cow_size: {tries:?}"
    );
    let near = |a: u64, b: u64| a.abs_diff(b) <= 16 * ps() as u64;
    assert!(
        tries.iter().all(|&(r, o, _)| near(r, o)),
        "never more than a few pages apart: {tries:?}"
    );
    assert!(
        tries.iter().all(|&(r, _, pm)| near(r, pm)),
        "the child's private anonymous pages, counted page by page in its pagemap, are \
         Redis's copy-on-write size: {tries:?}"
    );
    assert!(
        tries[0].0 > 1 << 20,
        "the write load made Redis report real copy-on-write: {tries:?}"
    );

    // Where those pages are: the write load wrote only in the parent, so the child's
    // private pages are mostly frames the parent no longer maps (diverged), not pages only
    // the child has.
    let p = pair(&last, child);
    let a = &p["accounting"]["child"];
    eprintln!("child accounting: {a}");
    let kb = |k: &str| a[k].as_u64().unwrap();
    assert!(
        kb("diverged_kb") * 2 > kb("private_anon_kb"),
        "most of the child's private memory is diverged pages: {a}"
    );
    for pid in [redis.pid(), child] {
        assert!(
            wait_state(pid, &['S', 'R', 'D'], Duration::from_secs(2)),
            "{pid} resumed"
        );
    }
    // The table and the picture of this moment, for the README's worked example.
    if let Ok(dir) = std::env::var("COWSCOPE_EXAMPLES_OUT") {
        let table = inspect(&["--pid", &pid, "--child", &cpid, "--format", "table"]).1;
        let svg = inspect(&["--pid", &pid, "--child", &cpid, "--format", "svg"]).1;
        let _ = std::fs::write(format!("{dir}/redis-inspect.txt"), table);
        let _ = std::fs::write(format!("{dir}/redis-inspect.svg"), svg);
    }
}
