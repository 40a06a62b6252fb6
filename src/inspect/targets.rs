//! Stage 2 of a snapshot: the plan's processes as open files. With `--freeze` they are
//! stopped first ([`Freeze::stop`]) and resumed after the read ([`resume`]); each is opened
//! as its pagemap and its `/proc/<pid>/maps` geometry ([`open_all`]), with no page walk yet.

use std::collections::HashMap;

use super::access;
use super::freeze::{Freeze, FreezeInfo};
use super::plan::{Losses, Plan};
use super::proc::Stat;
use crate::error::Result;
use crate::mem::pagemap::Pagemap;
use crate::mem::smaps::{self, SmapsEntry};

/// One opened process.
#[derive(Debug)]
pub struct Target {
    /// What `/proc/<pid>/stat` said when planning.
    pub stat: Stat,
    /// Its pagemap, opened once for every walk of the snapshot.
    pub pm: Pagemap,
    /// Its VMAs as `/proc/<pid>/maps` lists them (bounds, permissions, file; no figures).
    pub maps: Vec<SmapsEntry>,
}

fn open_target(s: &Stat) -> std::result::Result<Target, (&'static str, std::io::Error)> {
    let pm = Pagemap::open(s.pid).map_err(|e| ("pagemap", e))?;
    let maps = smaps::vma_bounds(s.pid).map_err(|e| ("maps", e))?;
    if maps.is_empty() && !access::still_alive(s) {
        return Err(("maps", std::io::Error::from_raw_os_error(libc::ESRCH)));
    }
    Ok(Target {
        stat: s.clone(),
        pm,
        maps,
    })
}

/// Open every process of `procs`, by pid; one that cannot be opened goes to `losses` (see
/// [`Plan::read_failure`]).
///
/// # Errors
/// When the `--pid` process or a named `--child` cannot be opened.
pub fn open_all(plan: &Plan, procs: &[Stat], losses: &mut Losses) -> Result<HashMap<i32, Target>> {
    let mut targets = HashMap::new();
    for s in procs {
        match open_target(s) {
            Ok(t) => {
                targets.insert(s.pid, t);
            }
            Err((file, e)) => losses.record(s.pid, plan.read_failure(s, file, e)?),
        }
    }
    Ok(targets)
}

/// Resume what `--freeze` stopped; the second value says whether the read was a frozen
/// instant. A thread in uninterruptible sleep (`D`) stops only when it wakes, and may have
/// run during the read: then a note says so.
pub fn resume(freeze: Option<Freeze>, notes: &mut Vec<String>) -> (Option<FreezeInfo>, bool) {
    let info = freeze.map(Freeze::resume);
    let frozen = info.as_ref().is_some_and(|f| f.all_threads_stopped);
    if let Some(f) = &info
        && !f.all_threads_stopped
    {
        notes.push(format!(
            "--freeze: not every thread had stopped after {} s (a thread in uninterruptible \
             sleep stops only when it wakes), so this is not a frozen instant: the unstopped \
             threads may have run during the read",
            super::freeze::STOP_TIMEOUT.as_secs()
        ));
    }
    (info, frozen)
}
