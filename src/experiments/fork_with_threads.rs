//! `fork-with-threads`: "Is this thread-safe?" — what `fork()` does to the other threads.
//!
//! `fork()` copies the whole address space but only the calling thread. A helper thread takes
//! a pthread mutex and holds it; the main thread forks. The parent then lists
//! `/proc/<child>/task` (one entry) and its own `/proc/self/task` (at least two), and the child
//! tries the held mutex with [`ChildOp::TryLockFor`] (trylock in a loop, never blocking) for a
//! bounded time: it stays locked, because the only thread that could unlock it does not exist
//! in the child. A second mutex, free at fork time, is taken at once (the control).

use std::cell::UnsafeCell;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{ExperimentOptions, Outcome};
use crate::error::{Error, Result};
use crate::fork::child::{ChildOp, TAG_LOCK_ACQUIRED, TAG_LOCK_TRIES, TAG_LOCK_WAITED_NS};
use crate::fork::subject::{Msg, NotReady, SubjectPipes, spawn};

/// How long the child tries the held lock.
const TRY_FOR: Duration = Duration::from_millis(200);

/// A heap-allocated default pthread mutex with a stable address (the child op needs one).
struct PthreadMutex(Box<UnsafeCell<libc::pthread_mutex_t>>);

// SAFETY: a pthread mutex is made to be used from several threads; all access goes through
// the pthread functions.
unsafe impl Sync for PthreadMutex {}
// SAFETY: as above; the mutex is not tied to the thread that created it.
unsafe impl Send for PthreadMutex {}

impl PthreadMutex {
    fn new() -> Self {
        PthreadMutex(Box::new(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER)))
    }
    fn ptr(&self) -> *mut libc::pthread_mutex_t {
        self.0.get()
    }
    fn lock(&self) -> Result<()> {
        // SAFETY: `ptr` is an initialised mutex that lives as long as `self`.
        let rc = unsafe { libc::pthread_mutex_lock(self.ptr()) };
        if rc != 0 {
            return Err(Error::io(
                "pthread_mutex_lock",
                std::io::Error::from_raw_os_error(rc),
            ));
        }
        Ok(())
    }
    fn try_lock(&self) -> bool {
        // SAFETY: as in `lock`; trylock never blocks.
        unsafe { libc::pthread_mutex_trylock(self.ptr()) == 0 }
    }
    fn unlock(&self) {
        // SAFETY: called only by the thread that locked it (checked by the callers' flow).
        unsafe { libc::pthread_mutex_unlock(self.ptr()) };
    }
}

impl Drop for PthreadMutex {
    fn drop(&mut self) {
        // SAFETY: nobody uses the mutex any more (we own it exclusively in drop); destroying
        // an unlocked default mutex is defined, and a failure (EBUSY) only leaks nothing.
        unsafe { libc::pthread_mutex_destroy(self.ptr()) };
    }
}

/// Thread ids listed in `/proc/<pid>/task`.
fn tasks(pid: i32) -> Result<Vec<i32>> {
    crate::mem::process::threads(pid).map_err(|e| Error::io(format!("reading /proc/{pid}/task"), e))
}

struct LockTry {
    acquired: Option<bool>,
    tries: Option<u64>,
    waited_ns: Option<u64>,
}

fn lock_tries(msgs: &[Msg]) -> Vec<LockTry> {
    let mut out = Vec::new();
    let mut cur = LockTry {
        acquired: None,
        tries: None,
        waited_ns: None,
    };
    for m in msgs {
        match m.tag {
            TAG_LOCK_TRIES => cur.tries = Some(m.value),
            TAG_LOCK_WAITED_NS => cur.waited_ns = Some(m.value),
            TAG_LOCK_ACQUIRED => {
                cur.acquired = Some(m.value == 1);
                out.push(std::mem::replace(
                    &mut cur,
                    LockTry {
                        acquired: None,
                        tries: None,
                        waited_ns: None,
                    },
                ));
            }
            _ => {}
        }
    }
    out
}

/// A thread that takes `held` and keeps it until told to let go: its handle, the sender
/// that releases it, and its tid (once it holds the lock).
fn start_the_lock_holder(
    held: &std::sync::Arc<PthreadMutex>,
) -> Result<(std::thread::JoinHandle<Result<()>>, mpsc::Sender<()>, i32)> {
    let (locked_tx, locked_rx) = mpsc::channel::<i32>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = {
        let held = std::sync::Arc::clone(held);
        std::thread::Builder::new()
            .name("lock-holder".into())
            .spawn(move || -> Result<()> {
                held.lock()?;
                let _ = locked_tx.send(nix::unistd::gettid().as_raw());
                // Hold the lock until the parent has forked and observed the child.
                let _ = release_rx.recv();
                held.unlock();
                Ok(())
            })
            .map_err(|e| Error::io("spawning the lock-holder thread", e))?
    };
    let holder_tid = locked_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| {
            Error::io(
                "waiting for the lock-holder thread",
                std::io::Error::other("it never took the lock"),
            )
        })?;
    Ok((holder, release_tx, holder_tid))
}

/// The child's program: try the held mutex, then the free one, each for `timeout_ns`.
fn try_both_locks(
    pipes: &SubjectPipes,
    held: &PthreadMutex,
    free: &PthreadMutex,
    timeout_ns: u64,
) -> Vec<ChildOp<'static>> {
    let fd = pipes.child_report_fd();
    let mut ops = pipes.prologue().to_vec();
    ops.push(ChildOp::TryLockFor {
        mutex: held.ptr() as usize,
        timeout_ns,
        fd,
    });
    ops.push(ChildOp::TryLockFor {
        mutex: free.ptr() as usize,
        timeout_ns,
        fd,
    });
    ops.extend(pipes.epilogue());
    ops
}

/// Run the experiment.
///
/// # Errors
/// When the helper thread or the child cannot be started, or /proc cannot be read.
pub fn run(_opts: &ExperimentOptions) -> Result<Outcome> {
    let held = std::sync::Arc::new(PthreadMutex::new());
    let free = PthreadMutex::new();
    let (holder, release_tx, holder_tid) = start_the_lock_holder(&held)?;

    let pipes = SubjectPipes::new()?;
    let timeout_ns = TRY_FOR.as_nanos() as u64;
    let ops = try_both_locks(&pipes, &held, &free, timeout_ns);
    // Sampled just before the fork: the threads that exist at fork time.
    let parent_tasks = tasks(std::process::id() as i32)?;
    let forking_tid = nix::unistd::gettid().as_raw();
    let (mut subj, _) = spawn(pipes, &ops)?;
    let child_pid = subj.pid().as_raw();
    let waited = subj.wait_ready(Instant::now() + Duration::from_secs(10));
    let child_tasks = tasks(child_pid);
    let exit = subj.finish(Instant::now() + Duration::from_secs(5));
    // Now let the holder go; the parent's copy of the lock is then free again.
    let _ = release_tx.send(());
    let holder_ok = holder.join().map(|r| r.is_ok()).unwrap_or(false);
    let parent_relocks = held.try_lock();
    if parent_relocks {
        held.unlock();
    }

    let msgs = match waited {
        Ok(m) => m,
        Err(NotReady::Died(e)) | Err(NotReady::TimedOut(e)) => {
            return Ok(Outcome::verdict(
                false,
                "the child did not report back",
                json!({"child_exit": e}),
            ));
        }
    };
    let child_tasks = child_tasks?;
    let tries = lock_tries(&msgs);
    let (held_try, free_try) = match tries.as_slice() {
        [a, b] => (a, b),
        _ => {
            return Ok(Outcome::verdict(
                false,
                "the child did not report both lock attempts",
                json!({"messages": msgs.len()}),
            ));
        }
    };
    let waited_enough = held_try.waited_ns.is_some_and(|n| n >= timeout_ns);
    let holds = parent_tasks.len() >= 2
        && parent_tasks.contains(&holder_tid)
        && child_tasks.len() == 1
        && child_tasks.first() == Some(&child_pid)
        && held_try.acquired == Some(false)
        && waited_enough
        && free_try.acquired == Some(true)
        && holder_ok
        && parent_relocks;
    let sentence = if holds {
        format!(
            "only the forking thread exists in the child (1 task vs {} in the parent), and the \
             mutex held by thread {holder_tid} at fork time stayed locked in the child for the \
             whole {} ms it tried ({} trylocks), while a free mutex was taken at once; the \
             parent could take the same mutex again once its holder released it",
            parent_tasks.len(),
            TRY_FOR.as_millis(),
            held_try.tries.unwrap_or(0)
        )
    } else {
        "fork with threads did not behave as expected; see the evidence".to_string()
    };
    Ok(Outcome::verdict(
        holds,
        sentence,
        json!({
            "parent_pid": std::process::id(),
            "forking_tid": forking_tid,
            "holder_tid": holder_tid,
            "parent_tasks_at_fork": parent_tasks,
            "child_pid": child_pid,
            "child_tasks": child_tasks,
            "held_mutex": {
                "addr": format!("{:#x}", held.ptr() as usize),
                "acquired_in_child": held_try.acquired,
                "tries": held_try.tries,
                "tried_ns": held_try.waited_ns,
                "timeout_ns": timeout_ns,
                "parent_relocked_after_release": parent_relocks,
            },
            "free_mutex": {
                "addr": format!("{:#x}", free.ptr() as usize),
                "acquired_in_child": free_try.acquired,
                "tries": free_try.tries,
            },
            "child_exit": exit,
        }),
    ))
}
