//! A pool of workers (several children of one parent): for each frame of the parent, how
//! many pool members still map that same frame at the same address, streamed chunk by chunk
//! like the pair walk (one counter per page of the current chunk, never per page of the
//! address space). With kpagecount readable, also how many page tables map each frame in the
//! whole system (the parent and the members included, and anyone else, e.g. other processes
//! mapping the same library page).

use std::collections::BTreeMap;
use std::io;

use super::walk::{PairReader, Side, SideError, union};
use super::zero::ZeroPfns;
use crate::mem::kpage::Kpage;
use crate::mem::pagemap::{PFN_MASK, PRESENT, Pagemap};

/// One member of a pool: its pagemap and the ranges it has in common with the parent
/// (sorted, disjoint).
#[derive(Debug)]
pub struct PoolMember<'a> {
    /// The member's pid.
    pub pid: i32,
    /// Its pagemap.
    pub pm: &'a Pagemap,
    /// Common segments with the parent.
    pub common: &'a [(u64, u64)],
}

/// What a pool walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSharing {
    /// Parent pages examined (present, not a zero page).
    pub parent_pages: u64,
    /// `histogram[k]`: pages whose frame exactly `k` members map at the same address.
    pub histogram: Vec<u64>,
    /// kpagecount -> pages, when the kpage files were given.
    pub kpagecount: Option<BTreeMap<u64, u64>>,
}

/// A member whose read failed (it exited?).
#[derive(Debug)]
pub struct MemberError {
    /// The member, or `None` for the parent.
    pub pid: Option<i32>,
    /// The error.
    pub error: io::Error,
}

/// Walk the parent's frames over every range some member shares, counting members that map
/// the same frame. PFNs must be visible (the caller checks).
///
/// # Errors
/// The first failing read, naming the member (or the parent).
pub fn pool_sharing(
    parent: &Pagemap,
    members: &[PoolMember<'_>],
    zero: &ZeroPfns,
    kpage: Option<&Kpage>,
) -> Result<PoolSharing, MemberError> {
    let ps = crate::kernel::page_size() as u64;
    let ranges = union(
        members
            .iter()
            .flat_map(|m| m.common.iter().copied())
            .collect(),
    );
    let mut out = PoolSharing {
        parent_pages: 0,
        histogram: vec![0; members.len() + 1],
        kpagecount: kpage.map(|_| BTreeMap::new()),
    };
    let mut reader = PairReader::new();
    let mut share: Vec<u16> = Vec::new();
    let mut mbuf: Vec<u64> = Vec::new();
    let mut pfns: Vec<u64> = Vec::new();
    for (a, b) in ranges {
        let res = reader.walk_one(parent, Side::Parent, a, b, |c0, pe| {
            let n = pe.len();
            let c1 = c0 + n as u64 * ps;
            share.clear();
            share.resize(n, 0);
            for m in members {
                for &(s, e) in m.common {
                    let (lo, hi) = (s.max(c0), e.min(c1));
                    if lo >= hi {
                        continue;
                    }
                    let k = ((hi - lo) / ps) as usize;
                    mbuf.resize(k, 0);
                    m.pm.read_into(lo, &mut mbuf[..k]).map_err(|e| {
                        // Smuggle the member's pid through the side error.
                        SideError::new(Side::Child, io::Error::new(e.kind(), PidError(m.pid, e)))
                    })?;
                    let off = ((lo - c0) / ps) as usize;
                    for (j, &me) in mbuf[..k].iter().enumerate() {
                        let p = pe[off + j];
                        if p & me & PRESENT != 0 && p & PFN_MASK == me & PFN_MASK {
                            share[off + j] = share[off + j].saturating_add(1);
                        }
                    }
                }
            }
            pfns.clear();
            for (i, &p) in pe.iter().enumerate() {
                if p & PRESENT != 0 && !zero.contains(p & PFN_MASK) {
                    out.parent_pages += 1;
                    if let Some(h) = out.histogram.get_mut(share[i] as usize) {
                        *h += 1;
                    }
                    pfns.push(p & PFN_MASK);
                }
            }
            if let (Some(k), Some(hist)) = (kpage, out.kpagecount.as_mut()) {
                let counts = k
                    .counts(&pfns)
                    .map_err(|e| SideError::new(Side::Parent, e))?;
                for c in counts {
                    *hist.entry(c).or_insert(0) += 1;
                }
            }
            Ok(())
        });
        if let Err(e) = res {
            let pid = e
                .error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<PidError>())
                .map(|p| p.0);
            return Err(MemberError {
                pid,
                error: e.error,
            });
        }
    }
    Ok(out)
}

/// An I/O error of one member, carrying its pid.
#[derive(Debug)]
struct PidError(i32, io::Error);

impl std::fmt::Display for PidError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pool member {}: {}", self.0, self.1)
    }
}

impl std::error::Error for PidError {}
