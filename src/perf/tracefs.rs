//! Tracepoint ids and record layouts from tracefs, mounted on demand.
//!
//! A tracepoint is opened through `perf_event_open` by the id tracefs gives it; its raw
//! record layout is in the `format` file beside the id. If no tracefs is mounted, one is
//! mounted at `/sys/kernel/tracing` for the read and unmounted right after (only what was
//! mounted here is ever unmounted; an open event does not need the mount).

use std::io;
use std::path::{Path, PathBuf};

use super::{Field, parse_format};

/// A tracepoint's id and fields.
#[derive(Debug, Clone)]
pub struct Tracepoint {
    /// `group:name`.
    pub name: String,
    /// The id `perf_event_open` takes as `config`.
    pub id: u64,
    /// Its raw record's fields.
    pub fields: Vec<Field>,
}

impl Tracepoint {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Where tracefs is mounted now (from /proc/self/mountinfo), if anywhere.
fn mounted() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in text.lines() {
        // "36 35 0:12 / /sys/kernel/tracing rw,... - tracefs nodev rw"
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mount_point = pre.split_whitespace().nth(4)?;
        if fstype == "tracefs" {
            return Some(PathBuf::from(mount_point.replace("\\040", " ")));
        }
    }
    None
}

/// A tracefs mount made here, unmounted on drop.
#[derive(Debug)]
struct OurMount(PathBuf);

impl Drop for OurMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn read_one(root: &Path, group: &str, name: &str) -> io::Result<Tracepoint> {
    let dir = root.join("events").join(group).join(name);
    let id = std::fs::read_to_string(dir.join("id"))?
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "tracepoint id is no number"))?;
    let fields = parse_format(&std::fs::read_to_string(dir.join("format"))?);
    Ok(Tracepoint {
        name: format!("{group}:{name}"),
        id,
        fields,
    })
}

/// Look up tracepoints (`("exceptions", "page_fault_user")`...), mounting tracefs for the
/// read if it is not mounted. Tracepoints this kernel does not have are `Err` in their slot.
///
/// # Errors
/// tracefs is not mounted and cannot be (no CAP_SYS_ADMIN, no tracefs in the kernel), or it
/// is unreadable (non-root: tracefs is root's).
pub fn tracepoints(names: &[(&str, &str)]) -> io::Result<Vec<io::Result<Tracepoint>>> {
    let (root, _ours) = match mounted() {
        Some(p) => (p, None),
        None => {
            let p = PathBuf::from("/sys/kernel/tracing");
            nix::mount::mount(
                Some("nodev"),
                &p,
                Some("tracefs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("tracefs is not mounted and mounting it failed: {e}"),
                )
            })?;
            (p.clone(), Some(OurMount(p)))
        }
    };
    Ok(names.iter().map(|(g, n)| read_one(&root, g, n)).collect())
}
