//! `stdio-at-fork`: a buffered line written before `fork()` appears twice when stdout is a
//! pipe; flushing first prevents it (design principle 9).
//!
//! C stdio buffers a pipe fully (a terminal only line by line), so a `printf("...\n")` before
//! `fork()` is still in the buffer when the address space is copied. Both processes then own a
//! copy, and both flush it at `exit(3)`. The seed's own log shows this when piped.
//!
//! The demonstration needs a real stdio buffer in a freshly exec'd, single-threaded process,
//! whose child deliberately ends with `exit(3)` (which flushes): none of that may happen in
//! cowscope's own fork children. So the experiment compiles a ten-line C program with `cc` at
//! run time, runs it with its stdout on a pipe, once without and once with `fflush(stdout)`
//! before the fork, and counts the line in what the pipe delivered.

use std::process::Command;

use serde_json::{Value, json};

use super::{ExperimentOptions, Outcome};
use crate::error::{Error, Result};

/// The line the helper prints before forking (the seed's first log line).
const LINE: &str = "🎯 Arena initialized (printed once, before fork)";

/// The helper. `argv[1] == "flush"` flushes stdout before the fork.
const C_PROGRAM: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int flush = argc > 1 && strcmp(argv[1], "flush") == 0;
    printf("%s\n", LINE);           /* stdout is a pipe: this stays in the buffer */
    if (flush) fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) exit(0);          /* exit(3) flushes the child's copy of the buffer */
    int status;
    if (waitpid(pid, &status, 0) != pid) return 3;
    fprintf(stderr, "child %d exited %d\n", (int)pid, WEXITSTATUS(status));
    return 0;                       /* returning from main flushes the parent's copy */
}
"#;

/// Run the experiment.
///
/// # Errors
/// When the temporary directory or the source file cannot be written.
pub fn run(_opts: &ExperimentOptions) -> Result<Outcome> {
    let Some(cc) = super::overflow_tools::find_in_path("cc") else {
        return Ok(Outcome::skipped(
            "no C compiler (`cc`) to build the stdio helper; C stdio's buffer is the subject",
            json!({}),
        ));
    };
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temp dir", e))?;
    let src = dir.path().join("stdio_at_fork.c");
    let prog = dir.path().join("stdio_at_fork");
    // LINE holds no quote or backslash; gcc takes UTF-8 in string literals as is.
    let source = C_PROGRAM.replace("LINE", &format!("\"{LINE}\""));
    std::fs::write(&src, &source).map_err(|e| Error::io("writing stdio_at_fork.c", e))?;
    let out = Command::new(&cc)
        .args(["-O1", "-o"])
        .arg(&prog)
        .arg(&src)
        .output()
        .map_err(|e| Error::io("running cc", e))?;
    if !out.status.success() {
        return Ok(Outcome::skipped(
            format!(
                "cc could not build the stdio helper: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            json!({}),
        ));
    }
    let run_once = |flush: bool| -> Result<(usize, Value)> {
        let mut cmd = Command::new(&prog);
        if flush {
            cmd.arg("flush");
        }
        // `output()` connects stdout and stderr to pipes.
        let o = cmd
            .output()
            .map_err(|e| Error::io("running the stdio helper", e))?;
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let count = stdout.lines().filter(|l| *l == LINE).count();
        Ok((
            count,
            json!({
                "fflush_before_fork": flush,
                "stdout_is": "a pipe",
                "times_the_line_arrived": count,
                "stdout": stdout,
                "stderr": String::from_utf8_lossy(&o.stderr).trim(),
                "exit_code": o.status.code(),
            }),
        ))
    };
    let (unflushed, ev_unflushed) = run_once(false)?;
    let (flushed, ev_flushed) = run_once(true)?;
    let holds = unflushed == 2 && flushed == 1;
    let sentence = format!(
        "a line printf'd once before fork() arrived {unflushed} time(s) through a pipe when \
         the buffer was not flushed (parent and child each flushed their copy at exit), and \
         {flushed} time(s) with fflush(stdout) before the fork"
    );
    Ok(Outcome::verdict(
        holds,
        sentence,
        json!({
            "line": LINE,
            "helper": "C, compiled at run time with cc; a freshly exec'd single-threaded \
                       process whose fork child calls exit(3), which flushes stdio",
            "source": source,
            "without_flush": ev_unflushed,
            "with_flush": ev_flushed,
        }),
    ))
}
