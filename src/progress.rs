//! Progress on stderr for long work, one small module for every command (the `indicatif`
//! crate draws it).
//!
//! When it shows: on a terminal (stderr is a tty) and not in CI (`CI` unset, empty, `0` or
//! `false`); or wherever `--progress` asks for it (then, on a pipe, one plain line per
//! update, at most twice a second); never with `--quiet`, which wins over `--progress`. The
//! choice is made once, from the global flags (`main.rs` calls [`configure`]), and every
//! [`Progress`] follows it. A hidden progress costs a branch per update.
//!
//! Progress never goes to stdout (documents and the traced program's own output live there),
//! and it is cleared from the terminal before the command prints its result.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// What the global flags asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Show it on a terminal outside CI (no flag given).
    Auto,
    /// `--progress`: show it, also on a pipe and in CI.
    Always,
    /// `--quiet`: never show it.
    Never,
}

static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Record the global flags' choice (`--quiet` wins over `--progress`).
pub fn configure(progress: bool, quiet: bool) {
    let c = match (quiet, progress) {
        (true, _) => 2,
        (false, true) => 1,
        (false, false) => 0,
    };
    CHOICE.store(c, Ordering::SeqCst);
}

/// The choice [`configure`] recorded (Auto when it was never called).
pub fn choice() -> Choice {
    match CHOICE.load(Ordering::SeqCst) {
        1 => Choice::Always,
        2 => Choice::Never,
        _ => Choice::Auto,
    }
}

/// Whether the environment says this is a CI run (`CI` set to anything but empty, `0` or
/// `false`, as GitHub Actions, GitLab and most others set `CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE"))
}

/// Where progress goes, decided from the choice, stderr and the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Nowhere.
    Hidden,
    /// A live line on the terminal.
    Terminal,
    /// Plain lines on stderr (a pipe or a file), `--progress` only.
    Lines,
}

/// Where progress goes for this choice, with stderr a terminal or not and in CI or not.
pub fn target_for(choice: Choice, stderr_is_terminal: bool, ci: bool) -> Target {
    match choice {
        Choice::Never => Target::Hidden,
        Choice::Always if stderr_is_terminal && !ci => Target::Terminal,
        Choice::Always => Target::Lines,
        Choice::Auto if stderr_is_terminal && !ci => Target::Terminal,
        Choice::Auto => Target::Hidden,
    }
}

/// Plain lines on stderr: what `--progress` draws where stderr is not a terminal.
#[derive(Debug)]
struct StderrLines;

impl TermLike for StderrLines {
    fn width(&self) -> u16 {
        200
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        if s.trim().is_empty() {
            return Ok(());
        }
        writeln!(std::io::stderr().lock(), "{s}")
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write_line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One command's progress: a line saying where the work is. Cheap to update; hidden where
/// [`target_for`] says so.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    /// The part of the line that stays while phases change (`scenario 2/9 thp-child-writes`).
    context: std::sync::Mutex<String>,
}

impl Progress {
    /// A progress line for the current choice (see [`configure`]). On a terminal the line
    /// redraws itself (a thread ticks it: create it after signals are blocked or deferred,
    /// so that thread inherits the mask).
    pub fn new() -> Progress {
        let target = target_for(choice(), std::io::stderr().is_terminal(), in_ci());
        Progress::to(target, true)
    }

    /// As [`Progress::new`], without the thread that redraws the line on a terminal: it
    /// changes only when the caller updates it. For `trace`, whose loop waits for SIGCHLD
    /// with `sigtimedwait` in its own thread: another thread that does not block SIGCHLD
    /// would take it first and the loop would sleep through a child's stop.
    pub fn untimed() -> Progress {
        let target = target_for(choice(), std::io::stderr().is_terminal(), in_ci());
        Progress::to(target, false)
    }

    /// A progress that shows nothing.
    pub fn hidden() -> Progress {
        Progress::to(Target::Hidden, false)
    }

    fn to(target: Target, tick: bool) -> Progress {
        let draw = match target {
            Target::Hidden => None,
            Target::Terminal => Some(ProgressDrawTarget::stderr_with_hz(10)),
            Target::Lines => Some(ProgressDrawTarget::term_like_with_hz(
                Box::new(StderrLines),
                2,
            )),
        };
        let bar = draw.map(|d| {
            let bar = ProgressBar::with_draw_target(None, d);
            let style = match target {
                Target::Terminal => ProgressStyle::with_template("{spinner} [{elapsed}] {msg}"),
                _ => ProgressStyle::with_template("cowscope: [{elapsed}] {msg}"),
            };
            bar.set_style(style.unwrap_or_else(|_| ProgressStyle::default_spinner()));
            if tick && target == Target::Terminal {
                bar.enable_steady_tick(Duration::from_millis(200));
            }
            bar
        });
        Progress {
            bar,
            context: std::sync::Mutex::new(String::new()),
        }
    }

    /// Whether anything is shown.
    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    fn show(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        }
    }

    /// The line's lasting part, e.g. `scenario 2/9 thp-child-writes`; phases follow it.
    pub fn context(&self, text: impl Into<String>) {
        if self.bar.is_none() {
            return;
        }
        let text = text.into();
        self.show(text.clone());
        if let Ok(mut c) = self.context.lock() {
            *c = text;
        }
    }

    /// The phase the work is in, after the context (`scenario 2/9 x: judge`).
    pub fn phase(&self, phase: &str) {
        if self.bar.is_none() {
            return;
        }
        let c = self.context.lock().map(|c| c.clone()).unwrap_or_default();
        self.show(if c.is_empty() {
            phase.to_string()
        } else {
            format!("{c}: {phase}")
        });
    }

    /// Pages judged so far (after the context).
    pub fn pages_judged(&self, pages: u64) {
        self.phase(&format!("{pages} pages judged"));
    }

    /// Replace the whole line (`trace`: processes, forks, samples).
    pub fn line(&self, text: impl Into<String>) {
        if let Some(b) = &self.bar {
            b.set_message(text.into());
        }
    }

    /// Print a line above the progress line (or plainly when none is shown), on stderr.
    pub fn println(&self, text: &str) {
        match &self.bar {
            Some(b) if !b.is_hidden() => b.suspend(|| eprintln!("{text}")),
            _ => eprintln!("{text}"),
        }
    }

    /// Clear the line (before the command prints its result).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::hidden()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::a_terminal_shows_it(Choice::Auto, true, false, Target::Terminal)]
    #[case::a_pipe_does_not(Choice::Auto, false, false, Target::Hidden)]
    #[case::ci_does_not_even_on_a_terminal(Choice::Auto, true, true, Target::Hidden)]
    #[case::progress_asks_for_it_on_a_pipe(Choice::Always, false, false, Target::Lines)]
    #[case::progress_asks_for_it_in_ci(Choice::Always, true, true, Target::Lines)]
    #[case::progress_on_a_terminal_draws_live(Choice::Always, true, false, Target::Terminal)]
    #[case::quiet_wins_on_a_terminal(Choice::Never, true, false, Target::Hidden)]
    fn where_progress_goes(
        #[case] c: Choice,
        #[case] tty: bool,
        #[case] ci: bool,
        #[case] want: Target,
    ) {
        assert_eq!(target_for(c, tty, ci), want);
    }

    #[test]
    fn quiet_wins_over_progress() {
        configure(true, true);
        assert_eq!(choice(), Choice::Never);
        configure(true, false);
        assert_eq!(choice(), Choice::Always);
        configure(false, false);
        assert_eq!(choice(), Choice::Auto);
    }
}
