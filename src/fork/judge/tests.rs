//! The judge's cases: evidence built by hand, judged against the catalogue's scenarios.

use super::*;
use crate::fork::classify::PageWitness;
use crate::fork::evidence::{HEAD, SmapsFigures};
use crate::fork::scenarios::by_name;
use crate::fork::subject::ExitInfo;

const PS: usize = 4096;

/// The judge, on evidence whose content reads exactly what the scenario expects (every
/// sampled process's heads as its last writer left them, nothing moved while reading):
/// the tests below are about the page tables. Content itself is tested through
/// `super::judge` directly.
fn judge(s: &Scenario, e: &Evidence) -> Judgement {
    let mut e = e.clone();
    let unit = unit(s, &e);
    for p in e.procs.iter_mut().filter(|p| p.sampled) {
        let mut heads = vec![0u8; p.pages.len() * HEAD];
        let expect = s.expect_for(&p.path, unit);
        for i in 0..p.pages.len() {
            if let Some(w) = expect.head(i) {
                let h = &mut heads[i * HEAD..(i + 1) * HEAD];
                h[..8].copy_from_slice(&w.index.to_le_bytes());
                h[crate::fork::child::STAMP_SIDE_OFFSET] = w.marker;
                if let Some(b) = w.byte32 {
                    h[HEAD / 2] = b;
                }
            }
        }
        p.heads.get_or_insert(heads);
        p.moved_by_reading.get_or_insert(0);
    }
    super::judge(s, &e)
}

#[test]
fn content_that_could_not_be_read_is_unproven_not_held() {
    let s = by_name("private-child-writes").unwrap();
    let e = child_writes_evidence(true);
    // Every head read as the scenario expects (the wrapper fills them in): it holds.
    assert_eq!(judge(&s, &e).verdict().state, VerdictState::Held);
    // No bytes could be read (/proc/<pid>/mem refused): the content check never ran.
    let mut unread = e.clone();
    for p in &mut unread.procs {
        p.moved_by_reading = Some(0);
    }
    let v = super::judge(&s, &unread).verdict();
    assert_eq!(v.state, VerdictState::Unproven, "{v:?}");
    assert!(
        v.unproven.iter().any(|u| u.contains("could not be read (")),
        "{:?}",
        v.unproven
    );
    // The page tables could not be read again after the content: nothing shows the read
    // left them alone.
    let mut not_rechecked = e.clone();
    not_rechecked.procs[1].heads = Some(vec![0; 16 * HEAD]);
    not_rechecked.procs[1].moved_by_reading = None;
    let v = super::judge(&s, &not_rechecked).verdict();
    assert!(
        v.unproven
            .iter()
            .any(|u| u.contains("could not be read again")),
        "{:?}",
        v.unproven
    );
}

fn page(pfn: u64, exclusive: bool) -> PageWitness {
    PageWitness {
        present: true,
        mapped: true,
        pfn: Some(pfn),
        exclusive,
        ..Default::default()
    }
}

fn hidden(w: PageWitness) -> PageWitness {
    PageWitness {
        pfn: None,
        mapcount: None,
        ..w
    }
}

fn smaps(rss: u64, shared: u64, private: u64, pss: u64) -> Option<SmapsFigures> {
    Some(SmapsFigures {
        rss_kb: rss,
        pss_kb: pss,
        shared_dirty_kb: shared,
        private_dirty_kb: private,
        ..Default::default()
    })
}

fn proc_(path: &[usize], pages: Vec<PageWitness>, f: Option<SmapsFigures>) -> ProcessSeen {
    ProcessSeen {
        path: path.to_vec(),
        role: crate::fork::scenarios::role(path),
        pid: 100 + path.len() as i32,
        sampled: true,
        exit: (!path.is_empty()).then(|| ExitInfo {
            code: Some(0),
            ..Default::default()
        }),
        exit_visible: !path.is_empty(),
        smaps: f,
        pages,
        ..Default::default()
    }
}

/// private-child-writes on 4 pages: the child copied pages 0-3 of 16; made-up frames.
fn child_writes_evidence(pfn_visible: bool) -> Evidence {
    let n = 16;
    let before: Vec<_> = (0..n).map(|i| page(1000 + i as u64, true)).collect();
    let parent: Vec<_> = (0..n)
        .map(|i| PageWitness {
            mapcount: Some(if i < 4 { 1 } else { 2 }),
            ..page(1000 + i as u64, i < 4)
        })
        .collect();
    let child: Vec<_> = (0..n)
        .map(|i| {
            if i < 4 {
                PageWitness {
                    mapcount: Some(1),
                    ..page(2000 + i as u64, true)
                }
            } else {
                PageWitness {
                    mapcount: Some(2),
                    ..page(1000 + i as u64, false)
                }
            }
        })
        .collect();
    let hide = |v: Vec<PageWitness>| -> Vec<PageWitness> {
        if pfn_visible {
            v
        } else {
            v.into_iter().map(hidden).collect()
        }
    };
    Evidence {
        page_size: PS,
        pmd_pages: 512,
        pfn_visible,
        kpage_readable: pfn_visible,
        before: hide(before),
        procs: vec![
            proc_(&[], hide(parent), smaps(64, 48, 16, 40)),
            proc_(&[0], hide(child), smaps(64, 48, 16, 40)),
        ],
        ..Default::default()
    }
}

#[test]
fn the_check_table_names_each_check_once() {
    let mut names: Vec<_> = CHECKS.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CHECKS.len());
}

#[test]
fn a_child_write_seen_by_every_witness_holds() {
    let s = by_name("private-child-writes").unwrap();
    let j = judge(&s, &child_writes_evidence(true));
    let v = j.verdict();
    assert_eq!(v.state, VerdictState::Held, "{:?}", j.findings);
    assert_eq!(counts(&j.classes[1]).copied, 4);
    assert_eq!(j.new_frames, vec![Some(0), Some(4)]);
    assert_eq!(j.bytes_copied_by_one_write, Some(4096));
    assert!(v.evidence.contains(&"kpagecount".to_string()));
}

#[test]
fn hidden_pfns_prove_the_copies_by_the_exclusive_bit_and_note_it() {
    let s = by_name("private-child-writes").unwrap();
    let j = judge(&s, &child_writes_evidence(false));
    let v = j.verdict();
    assert_eq!(v.state, VerdictState::Held, "{:?}", j.findings);
    assert!(!v.evidence.contains(&"pfn".to_string()));
    assert_eq!(
        v.notes.len(),
        1,
        "the privilege note, which changes nothing"
    );
    assert_eq!(
        j.bytes_copied_by_one_write, None,
        "not measured without PFNs"
    );
}

#[test]
fn a_copy_where_none_was_expected_fails() {
    let s = by_name("private-idle").unwrap();
    let j = judge(&s, &child_writes_evidence(true));
    let v = j.verdict();
    assert_eq!(v.state, VerdictState::Failed);
    assert!(
        v.disagreements
            .iter()
            .any(|d| d.starts_with("classes: child page 0"))
    );
    assert!(v.disagreements.iter().any(|d| d.starts_with("new_frames:")));
}

#[test]
fn an_undecidable_page_is_unproven_not_failed() {
    let s = by_name("many-children").unwrap();
    // Three processes, PFNs hidden, no exclusive bits: shared cannot be proven.
    let w = hidden(page(1, false));
    let e = Evidence {
        page_size: PS,
        pmd_pages: 512,
        before: vec![w; 16],
        procs: vec![
            proc_(&[], vec![w; 16], None),
            proc_(&[0], vec![w; 16], None),
            proc_(&[1], vec![w; 16], None),
        ],
        ..Default::default()
    };
    let mut s3 = s.clone();
    s3.children.truncate(2);
    s3.children.iter_mut().for_each(|c| c.ops.clear());
    let v = judge(&s3, &e).verdict();
    assert_eq!(v.state, VerdictState::Unproven);
    assert!(!v.holds && v.agree);
    assert!(
        v.unproven[0].contains("could not be decided"),
        "{:?}",
        v.unproven
    );
}

#[test]
fn a_kpagecount_that_does_not_count_our_mappings_disagrees() {
    let s = by_name("private-child-writes").unwrap();
    let mut e = child_writes_evidence(true);
    e.procs[0].pages[9].mapcount = Some(3);
    let v = judge(&s, &e).verdict();
    assert_eq!(v.state, VerdictState::Failed);
    assert!(v.disagreements[0].starts_with("kpagecount: kpagecount of PFN 0x3f1 is 3"));
}

#[test]
fn smaps_off_by_a_page_disagrees() {
    let s = by_name("private-child-writes").unwrap();
    let mut e = child_writes_evidence(true);
    e.procs[1].smaps = smaps(64, 44, 20, 40);
    let v = judge(&s, &e).verdict();
    assert!(
        v.disagreements
            .iter()
            .any(|d| d.contains("child smaps disagrees"))
    );
}

/// thp-child-writes on a kernel whose bit 56 follows the head page: the same fact is a
/// kernel quirk with PFNs (kpagecount says so) and without (smaps says so).
fn thp_evidence(pfn_visible: bool) -> Evidence {
    let n = 512;
    let head_excl = true;
    let thp = |pfn: u64, exclusive: bool, mapcount: u64, pmd: bool| PageWitness {
        thp: pfn_visible.then_some(true),
        pmd_mapped: pmd,
        mapcount: pfn_visible.then_some(mapcount),
        pfn: pfn_visible.then_some(pfn),
        ..page(pfn, exclusive)
    };
    let before: Vec<_> = (0..n)
        .map(|i| thp(4096 + i as u64, true, 1, true))
        .collect();
    let parent: Vec<_> = (0..n)
        .map(|i| thp(4096 + i as u64, head_excl, if i == 0 { 1 } else { 2 }, true))
        .collect();
    let child: Vec<_> = (0..n)
        .map(|i| {
            if i == 0 {
                PageWitness {
                    thp: pfn_visible.then_some(false),
                    mapcount: pfn_visible.then_some(1),
                    pfn: pfn_visible.then_some(9),
                    ..page(9, true)
                }
            } else {
                thp(4096 + i as u64, false, 2, false)
            }
        })
        .collect();
    Evidence {
        page_size: PS,
        pmd_pages: 512,
        pfn_visible,
        kpage_readable: pfn_visible,
        before,
        procs: vec![
            proc_(&[], parent, smaps(2048, 2044, 4, 1026)),
            proc_(&[0], child, smaps(2048, 2044, 4, 1026)),
        ],
        ..Default::default()
    }
}

#[test]
fn bit_56_following_the_head_page_is_the_same_quirk_with_and_without_pfns() {
    let s = by_name("thp-child-writes").unwrap();
    for visible in [true, false] {
        let j = judge(&s, &thp_evidence(visible));
        let v = j.verdict();
        assert_eq!(
            v.kernel_quirks.len(),
            1,
            "visible={visible}: {:?}",
            j.findings
        );
        assert!(v.kernel_quirks[0].contains("follows the THP's head page"));
        assert!(
            v.disagreements.is_empty(),
            "visible={visible}: {:?}",
            v.disagreements
        );
        if visible {
            assert_eq!(v.state, VerdictState::Held);
            assert_eq!(j.bytes_copied_by_one_write, Some(4096));
        } else {
            // The parent's PMD-mapped bits decide nothing: unproven, never failed.
            assert_eq!(v.state, VerdictState::Unproven);
        }
    }
}

#[test]
fn a_write_to_the_huge_zero_page_may_replace_the_whole_unit() {
    let s = by_name("huge-zero-page-child-writes").unwrap();
    let n = 512;
    let zero = |i: usize| PageWitness {
        zero_page: Some(true),
        file_or_shared: true,
        mapcount: Some(0),
        pmd_mapped: true,
        ..page(77_000 + i as u64, false)
    };
    let mk = |child_new: &dyn Fn(usize) -> bool| Evidence {
        page_size: PS,
        pmd_pages: 512,
        pfn_visible: true,
        kpage_readable: true,
        before: (0..n).map(zero).collect(),
        procs: vec![
            proc_(&[], (0..n).map(zero).collect(), smaps(0, 0, 0, 0)),
            proc_(
                &[0],
                (0..n)
                    .map(|i| {
                        if child_new(i) {
                            PageWitness {
                                mapcount: Some(1),
                                zero_page: Some(false),
                                ..page(5000 + i as u64, true)
                            }
                        } else {
                            PageWitness {
                                pmd_mapped: false,
                                ..zero(i)
                            }
                        }
                    })
                    .collect(),
                None,
            ),
        ],
        ..Default::default()
    };
    // 6.13+: a whole new THP.
    let j = judge(&s, &mk(&|_| true));
    assert_eq!(j.verdict().state, VerdictState::Held, "{:?}", j.findings);
    assert_eq!(j.bytes_copied_by_one_write, Some(2 << 20));
    assert!(j.verdict().kernel_quirks[0].contains("whole new huge page"));
    // Older kernels: one page.
    let j = judge(&s, &mk(&|i| i == 0));
    assert_eq!(j.verdict().state, VerdictState::Held, "{:?}", j.findings);
    assert_eq!(j.bytes_copied_by_one_write, Some(4096));
    // What 6.1 and 6.12 do: split the PMD; the written page gets a frame, the other 511
    // map the one 4 KiB zero page (other frames than the huge zero page's, nothing copied).
    let mut split = mk(&|i| i == 0);
    for w in split.procs[1].pages.iter_mut().skip(1) {
        w.pfn = Some(0x3b34);
    }
    let j = judge(&s, &split);
    assert_eq!(j.verdict().state, VerdictState::Held, "{:?}", j.findings);
    assert_eq!(j.new_frames[1], Some(1));
    assert_eq!(j.bytes_copied_by_one_write, Some(4096));
    // Anything between is a disagreement.
    let j = judge(&s, &mk(&|i| i < 3));
    assert_eq!(j.verdict().state, VerdictState::Failed);
}

#[test]
fn soft_dirty_names_the_writers_and_knows_two_kernel_behaviours() {
    let s = by_name("private-child-writes").unwrap();
    let mut e = child_writes_evidence(true);
    e.soft_dirty_tracked = true;
    for (i, w) in e.procs[1].pages.iter_mut().enumerate() {
        w.soft_dirty = i < 4;
    }
    let j = judge(&s, &e);
    assert_eq!(j.verdict().state, VerdictState::Held, "{:?}", j.findings);
    assert_eq!(j.written_since_fork, vec![Some(0), Some(4)]);
    e.procs[0].pages[7].soft_dirty = true;
    assert_eq!(judge(&s, &e).verdict().state, VerdictState::Failed);

    // clear_refs does not write-protect DMA-pinned pages: all stay soft-dirty.
    let s = by_name("iouring-fixed-buffer-fork").unwrap();
    let mut e = child_writes_evidence(true);
    e.soft_dirty_tracked = true;
    for w in e.procs[0].pages.iter_mut() {
        w.soft_dirty = true;
    }
    let j = judge(&s, &e);
    assert!(
        j.findings.iter().any(|f| matches!(f, Finding::KernelQuirk { check, detail } if check == "soft_dirty" && detail.contains("DMA-pinned"))),
        "{:?}",
        j.findings
    );
}

#[test]
fn a_pipe_that_yields_the_parents_new_bytes_is_a_leak() {
    let s = by_name("private-child-writes").unwrap();
    let mut e = child_writes_evidence(true);
    e.pipe_expected = Some(vec![b'P'; 8]);
    e.pipe = Some(vec![b'Q'; 8]);
    let j = judge(&s, &e);
    assert_eq!(j.content.pipe_reads_pre_fork_data, Some(false));
    assert_eq!(j.verdict().state, VerdictState::Failed);
}

#[test]
fn a_child_that_never_reported_fails_the_verdict() {
    let s = by_name("private-child-writes").unwrap();
    let mut e = child_writes_evidence(true);
    e.procs[1].sampled = false;
    e.procs[1].exit = Some(ExitInfo {
        killed_on_timeout: true,
        ..Default::default()
    });
    let v = judge(&s, &e).verdict();
    assert_eq!(v.state, VerdictState::Failed);
    assert!(v.disagreements[0].contains("never reported ready"));
}

#[test]
fn findings_not_text_decide_the_verdict() {
    let f = vec![Finding::note("x", "PFNs are hidden? not important")];
    assert_eq!(
        Verdict::from_findings(&f, vec![], true).state,
        VerdictState::Held
    );
    let f = vec![Finding::quirk("x", "anything")];
    assert_eq!(
        Verdict::from_findings(&f, vec![], true).state,
        VerdictState::Held
    );
    let f = vec![Finding::unproven("x", "no"), Finding::note("y", "z")];
    assert_eq!(
        Verdict::from_findings(&f, vec![], true).state,
        VerdictState::Unproven
    );
    let f = vec![Finding::unproven("x", "no"), Finding::disagree("y", "z")];
    assert_eq!(
        Verdict::from_findings(&f, vec![], true).state,
        VerdictState::Failed
    );
}
