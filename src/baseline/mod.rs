//! The seed's reference programs (09a, 09b, 09b-overflow) replayed on the arena engine.
//!
//! Each case performs the seed's `arena_alloc` and `strcpy` calls in the seed's order on an
//! [`Arena`] with the ledger on and no red zones (so the bytes, and hence
//! the dump, are the seed's byte for byte), then lets the engine judge what the seed only
//! printed: which block leaked, and whether any write crossed a block end.
//!
//! The 09b question, worked out: block `c` is bytes 96..128. `strcpy(c + 20, " 🤡 Oops!")`
//! copies 11 characters' worth of bytes (space, the 4-byte U+1F921, space, `Oops!`) plus the
//! NUL that `strcpy` always writes: 12 bytes at offsets 20..32 of the block. The last byte
//! written is the block's last byte, so the seed's "overflow" does **not** cross the block end
//! (it only overwrites the tail of "This will overwrite next"). `09b-overflow` moves the same
//! write 4 bytes later (`c + 24`), which really crosses: 4 bytes (`p`, `s`, `!`, NUL) land in
//! the next block.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::arena::{Arena, ArenaConfig, ArenaError, Block, Findings};
use crate::error::{Error, Result};

/// One of the seed's reference cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BaselineCase {
    /// 09a: a 4096-byte arena and three 64-byte blocks.
    #[serde(rename = "09a")]
    A09,
    /// 09b: 256 bytes, 32-byte blocks, a leak and a near-overflow.
    #[serde(rename = "09b")]
    B09,
    /// 09b with a write that really crosses into the next block.
    #[serde(rename = "09b-overflow")]
    B09Overflow,
}

impl BaselineCase {
    /// Every case with its stable name.
    pub const ALL: [(&'static str, BaselineCase); 3] = [
        ("09a", BaselineCase::A09),
        ("09b", BaselineCase::B09),
        ("09b-overflow", BaselineCase::B09Overflow),
    ];

    /// The case's stable name.
    pub fn name(self) -> &'static str {
        match self {
            BaselineCase::A09 => "09a",
            BaselineCase::B09 => "09b",
            BaselineCase::B09Overflow => "09b-overflow",
        }
    }
}

impl std::str::FromStr for BaselineCase {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                Error::usage(format!(
                    "unknown baseline case '{s}'; expected one of: 09a, 09b, 09b-overflow"
                ))
            })
    }
}

/// A block as the baseline reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BaselineBlock {
    /// Block index (allocation order, from 0).
    pub index: usize,
    /// Offset from the arena's base.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
    /// The seed's variable name (`unassigned` for the result 09b never kept).
    pub label: String,
    /// Whether anything was ever written through this block.
    pub written: bool,
    /// Whether the block was released.
    pub released: bool,
    /// Address of its first byte, hex.
    pub addr: String,
}

/// A leaked block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BaselineLeak {
    /// Block index.
    pub index: usize,
    /// Offset from the arena's base.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
    /// The block's label.
    pub label: Option<String>,
}

/// A write that crossed its block's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BaselineOverflow {
    /// The block written through.
    pub index: usize,
    /// That block's offset.
    pub offset: usize,
    /// That block's length.
    pub len: usize,
    /// Exact number of bytes written past the block's end.
    pub bytes_past_end: usize,
    /// Of those, bytes past the arena's capacity (into the slack of its last page).
    pub bytes_past_capacity: usize,
    /// Absolute offset where the write started.
    pub write_offset: usize,
    /// Length of the write (including the NUL that strcpy writes).
    pub write_len: usize,
    /// Blocks the overflow landed in.
    pub victims: Vec<usize>,
}

/// One `strcpy` of the seed, as replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BaselineWrite {
    /// The C expression, e.g. `strcpy(c + 20, " 🤡 Oops!")`.
    pub call: String,
    /// The destination block's index.
    pub block: usize,
    /// Offset inside the block where the copy starts.
    pub offset_in_block: usize,
    /// Bytes copied, counting the terminating NUL.
    pub len: usize,
    /// Bytes that landed past the block's end.
    pub bytes_past_end: usize,
    /// Of those, bytes that landed past the arena's capacity (into the slack of its last
    /// page, which the seed's C would not fault on either).
    pub bytes_past_capacity: usize,
}

/// The baseline's verdict: the engine's findings against what the seed's own arithmetic says
/// (block size, string lengths plus the NUL `strcpy` writes, the result 09b never assigns),
/// computed by the replay from the C program's constants, never from the engine's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BaselineVerdict {
    /// `held` (the engine found exactly what the arithmetic predicts) or `failed`.
    pub state: String,
    /// `state` is `held`.
    pub holds: bool,
    /// One sentence: what was predicted and found.
    pub sentence: String,
    /// Blocks the seed leaks, by its variable name (never written, never released).
    pub expected_leaks: Vec<String>,
    /// Bytes past its block's end each `strcpy` must write, in order.
    pub expected_bytes_past_end: Vec<usize>,
    /// Where the engine disagreed with the arithmetic.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub disagreements: Vec<String>,
}

/// The body of a baseline document.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BaselineBody {
    /// The case's stable name.
    pub case: String,
    /// What the case replays.
    pub description: String,
    /// Arena capacity in bytes: the seed's `ARENA_SIZE`, what `arena_alloc` checks against.
    pub capacity: usize,
    /// Bytes mapped for it: the capacity rounded up to whole pages (the bytes past the
    /// capacity are the slack, which allocation never hands out).
    pub mapped_bytes: usize,
    /// Bytes handed out (the seed's `offset`).
    pub used: usize,
    /// Base address of the arena, hex.
    pub base_addr: String,
    /// Every block, in allocation order.
    pub blocks: Vec<BaselineBlock>,
    /// Every `strcpy`, in order.
    pub writes: Vec<BaselineWrite>,
    /// The seed's `arena_dump` rendering of the used bytes, byte for byte.
    pub dump: String,
    /// The used bytes as hex + ASCII.
    pub dump_hex: String,
    /// Blocks allocated and never written or released.
    pub leaks: Vec<BaselineLeak>,
    /// Writes that crossed a block end.
    pub overflows: Vec<BaselineOverflow>,
    /// Everything the engine's check found.
    pub findings: Findings,
    /// The seed's log lines, replayed (addresses are this run's).
    pub log: Vec<String>,
    /// The engine's findings against the seed's arithmetic.
    pub verdict: BaselineVerdict,
}

impl BaselineBody {
    /// 0 when the verdict held, 1 when it failed.
    pub fn exit_code(&self) -> i32 {
        if self.verdict.holds {
            crate::error::EXIT_OK
        } else {
            crate::error::EXIT_VERDICT_FAILED
        }
    }
}

/// The seed's `arena_alloc` and `strcpy`, replayed on the engine with the seed's log lines.
struct Replay {
    arena: Arena,
    log: Vec<String>,
    writes: Vec<BaselineWrite>,
    /// The C program's block size, for the expected crossing of each write.
    block_size: usize,
    /// Bytes past the block's end each write must land, from the arithmetic alone.
    expected_past_end: Vec<usize>,
}

impl Replay {
    fn init(size: usize, block_size: usize, icon: &str) -> Result<Replay> {
        let arena = Arena::new(ArenaConfig::new(size))?;
        let log = vec![format!(
            "{icon} Arena initialized at {:#x} ({} bytes; mapped {} bytes, one guard page each side)",
            arena.base_addr(),
            arena.capacity(),
            arena.mapped_len()
        )];
        Ok(Replay {
            arena,
            log,
            writes: Vec::new(),
            block_size,
            expected_past_end: Vec::new(),
        })
    }

    /// `arena_alloc(size)`, labelled with the C variable it is assigned to.
    fn alloc(&mut self, size: usize, label: &'static str) -> Result<Block> {
        let b = self.arena.alloc_labeled(size, label)?;
        self.log.push(format!(
            "✅ arena_alloc({size}) → {:#x} (offset now {})",
            self.arena.base_addr() + b.offset(),
            self.arena.used()
        ));
        Ok(b)
    }

    /// `strcpy(block + at, s)`: copies `s` and its terminating NUL.
    fn strcpy(&mut self, block: &Block, at: usize, s: &str) -> Result<()> {
        let mut bytes = Vec::with_capacity(s.len() + 1);
        bytes.extend_from_slice(s.as_bytes());
        bytes.push(0);
        self.expected_past_end
            .push((at + bytes.len()).saturating_sub(self.block_size));
        let out = self.arena.write(block, at, &bytes)?;
        let name = self.arena.label(block).unwrap_or("?");
        let dest = if at == 0 {
            name.to_string()
        } else {
            format!("{name} + {at}")
        };
        self.writes.push(BaselineWrite {
            call: format!("strcpy({dest}, \"{s}\")"),
            block: self
                .arena
                .index_of(block)
                .ok_or(ArenaError::NoLedger { op: "index_of" })?,
            offset_in_block: at,
            len: bytes.len(),
            bytes_past_end: out.bytes_past_end,
            bytes_past_capacity: out.bytes_past_capacity,
        });
        Ok(())
    }

    fn finish(
        mut self,
        case: BaselineCase,
        description: &str,
        header: String,
        expected_leaks: &[&str],
    ) -> Result<BaselineBody> {
        let a = &self.arena;
        let dump = a.dump();
        self.log.push(header);
        self.log.push(dump.clone());
        let findings = a.check();
        let base = a.base_addr();
        let blocks = a
            .blocks()
            .iter()
            .map(|e| BaselineBlock {
                index: e.index,
                offset: e.offset,
                len: e.len,
                label: e.label.unwrap_or("").to_string(),
                written: e.written,
                released: e.released,
                addr: format!("{:#x}", base + e.offset),
            })
            .collect();
        let leaks = findings
            .leaks
            .iter()
            .map(|l| BaselineLeak {
                index: l.index,
                offset: l.offset,
                len: l.len,
                label: l.label.clone(),
            })
            .collect();
        let overflows = findings
            .overflows
            .iter()
            .map(|o| BaselineOverflow {
                index: o.index,
                offset: o.offset,
                len: o.len,
                bytes_past_end: o.bytes_past_end,
                bytes_past_capacity: o.bytes_past_capacity,
                write_offset: o.write_offset,
                write_len: o.write_len,
                victims: o.victims.clone(),
            })
            .collect();
        let verdict = judge(
            &findings,
            &self.writes,
            expected_leaks,
            &self.expected_past_end,
        );
        let (capacity, mapped_bytes, used, dump_hex) =
            (a.capacity(), a.mapped_len(), a.used(), a.dump_hex());
        self.arena.release()?;
        self.log.push("🧹 Arena memory freed".to_string());
        Ok(BaselineBody {
            case: case.name().to_string(),
            description: description.to_string(),
            capacity,
            mapped_bytes,
            used,
            base_addr: format!("{base:#x}"),
            blocks,
            writes: self.writes,
            dump,
            dump_hex,
            leaks,
            overflows,
            findings,
            log: self.log,
            verdict,
        })
    }
}

fn run_09a() -> Result<BaselineBody> {
    const ARENA_SIZE: usize = 4096;
    const BLOCK_SIZE: usize = 64;
    let mut r = Replay::init(ARENA_SIZE, BLOCK_SIZE, "📦")?;
    let msg1 = r.alloc(BLOCK_SIZE, "msg1")?;
    let msg2 = r.alloc(BLOCK_SIZE, "msg2")?;
    let msg3 = r.alloc(BLOCK_SIZE, "msg3")?;
    r.strcpy(&msg1, 0, "Hello arena")?;
    r.strcpy(&msg2, 0, "Scoped allocator is born")?;
    r.strcpy(&msg3, 0, "This is not malloc")?;
    r.finish(
        BaselineCase::A09,
        "09a_arena_scope_local_mmap.c: a 4096-byte mmap arena, three 64-byte blocks, three strings",
        "🧠 Arena dump:".to_string(),
        &[],
    )
}

fn run_09b(overflow: bool) -> Result<BaselineBody> {
    const ARENA_SIZE: usize = 256;
    const BLOCK_SIZE: usize = 32;
    let mut r = Replay::init(ARENA_SIZE, BLOCK_SIZE, "🎯")?;
    let a = r.alloc(BLOCK_SIZE, "a")?;
    let b = r.alloc(BLOCK_SIZE, "b")?;
    r.strcpy(&a, 0, "First block ok.")?;
    r.strcpy(&b, 0, "Second block too.")?;
    // The seed drops this result on the floor; the engine still knows the block.
    let _unassigned = r.alloc(BLOCK_SIZE, "unassigned")?;
    r.log.push("⚠️ Leaked 32 bytes — no tracking.".to_string());
    let c = r.alloc(BLOCK_SIZE, "c")?;
    let clown_at = if overflow {
        // The next block, so the overflow has something to corrupt.
        let d = r.alloc(BLOCK_SIZE, "d")?;
        r.strcpy(&c, 0, "This will overwrite next")?;
        r.strcpy(&d, 0, "Next block intact?")?;
        24
    } else {
        r.strcpy(&c, 0, "This will overwrite next")?;
        20
    };
    r.strcpy(&c, clown_at, " \u{1F921} Oops!")?;
    let header = format!(
        "\n📦 Arena dump ({} used / {} total):",
        r.arena.used(),
        r.arena.capacity()
    );
    let (case, description) = if overflow {
        (
            BaselineCase::B09Overflow,
            "09b with a fifth block d after c and the clown written at c + 24: 12 bytes from \
             offset 24 of a 32-byte block, so 4 bytes land in d",
        )
    } else {
        (
            BaselineCase::B09,
            "09b_arena_scope_leak_tracer.c: 256-byte arena, 32-byte blocks, one result never \
             assigned, strcpy(c + 20, \" \u{1F921} Oops!\") (12 bytes with the NUL, ending \
             exactly at c's end)",
        )
    };
    // The seed never assigns the third result: that block is the leak, whatever else runs.
    r.finish(case, description, header, &["unassigned"])
}

/// The engine's findings against the arithmetic: the leaked blocks by name, and each write's
/// bytes past its block's end (and an overflow finding exactly for the writes that cross).
fn judge(
    findings: &Findings,
    writes: &[BaselineWrite],
    expected_leaks: &[&str],
    expected_past_end: &[usize],
) -> BaselineVerdict {
    let mut disagreements = Vec::new();
    let mut leaked: Vec<&str> = findings
        .leaks
        .iter()
        .map(|l| l.label.as_deref().unwrap_or("?"))
        .collect();
    leaked.sort_unstable();
    let mut want: Vec<&str> = expected_leaks.to_vec();
    want.sort_unstable();
    if leaked != want {
        disagreements.push(format!(
            "leaks: the engine found {leaked:?}, the seed leaks {want:?}"
        ));
    }
    for (w, &want) in writes.iter().zip(expected_past_end) {
        if w.bytes_past_end != want {
            disagreements.push(format!(
                "{}: the engine saw {} byte(s) past the block's end, the arithmetic says {want}",
                w.call, w.bytes_past_end
            ));
        }
    }
    let crossing = expected_past_end.iter().filter(|&&n| n > 0).count();
    if findings.overflows.len() != crossing {
        disagreements.push(format!(
            "overflows: the engine reported {}, {crossing} write(s) cross a block end",
            findings.overflows.len()
        ));
    }
    let holds = disagreements.is_empty();
    let crossed: usize = expected_past_end.iter().sum();
    let sentence = format!(
        "{} leaked block(s) ({}), {} write(s) crossing a block end ({crossed} byte(s) past it): {}",
        want.len(),
        if want.is_empty() {
            "none".to_string()
        } else {
            want.join(", ")
        },
        crossing,
        if holds {
            "the engine found exactly that"
        } else {
            "the engine found otherwise"
        }
    );
    BaselineVerdict {
        state: if holds { "held" } else { "failed" }.into(),
        holds,
        sentence,
        expected_leaks: expected_leaks.iter().map(|s| s.to_string()).collect(),
        expected_bytes_past_end: expected_past_end.to_vec(),
        disagreements,
    }
}

/// Replay `case`.
///
/// # Errors
/// Only if the kernel refuses the arena's mapping ([`Error::Arena`]).
pub fn run(case: BaselineCase) -> Result<BaselineBody> {
    let body = match case {
        BaselineCase::A09 => run_09a()?,
        BaselineCase::B09 => run_09b(false)?,
        BaselineCase::B09Overflow => run_09b(true)?,
    };
    Ok(body)
}
