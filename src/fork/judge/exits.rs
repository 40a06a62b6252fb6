//! `processes` and `exits`: every subject reported ready, and ended as its steps say.

use super::{Finding, Judgement};
use crate::fork::evidence::Evidence;
use crate::fork::scenarios::{ForkAdvice, Op, Scenario};
use crate::fork::subject::ExitInfo;

pub(super) fn every_process_was_sampled(_s: &Scenario, e: &Evidence, j: &mut Judgement) {
    for p in e.procs.iter().skip(1).filter(|p| !p.sampled) {
        j.file(Finding::disagree(
            "processes",
            format!(
                "{} never reported ready (exit: {})",
                p.role,
                describe_exit(p.exit.as_ref())
            ),
        ));
    }
}

pub(super) fn describe_exit(e: Option<&ExitInfo>) -> String {
    match e {
        Some(ExitInfo {
            killed_on_timeout: true,
            ..
        }) => "killed after the timeout".into(),
        Some(ExitInfo {
            signal: Some(s), ..
        }) => format!("signal {s}"),
        Some(ExitInfo { code: Some(c), .. }) => format!("exit code {c}"),
        _ => "unknown".into(),
    }
}

/// Every child exits 0, except one that touches a DONTFORK page after release (SIGSEGV).
pub(super) fn every_process_ended_as_expected(s: &Scenario, e: &Evidence, j: &mut Judgement) {
    for p in e.procs.iter().skip(1).filter(|p| p.exit_visible) {
        let want_segv = s.advice == ForkAdvice::DontFork
            && s.plan(&p.path).is_some_and(|pl| {
                pl.ops
                    .iter()
                    .any(|o| matches!(o, Op::TouchAfterRelease { .. }))
            });
        let ok = match &p.exit {
            Some(x) if want_segv => x.signal.as_deref() == Some("SIGSEGV"),
            Some(x) => x.code == Some(0),
            None => false,
        };
        if !ok {
            j.file(Finding::disagree(
                "exits",
                format!(
                    "{} ended with {}, expected {}",
                    p.role,
                    describe_exit(p.exit.as_ref()),
                    if want_segv { "SIGSEGV" } else { "exit code 0" }
                ),
            ));
        }
    }
}
