//! The perf-event reader: open one event on one thread, map its ring buffer, read its
//! records, count what the kernel dropped. Nothing here decides what a record means.
//!
//! ```text
//!  perf_event_open(attr, tid, cpu -1)   one event per thread (inherit_thread: threads the
//!        │                              thread creates later write into the same ring)
//!  mmap: 1 metadata page + 2^n pages    the ring; data_head (kernel) / data_tail (us)
//!        │
//!  Stream::drain                        records in ring order: samples, LOST counts
//! ```
//!
//! Every event uses CLOCK_MONOTONIC (`use_clockid`), so record times compare with
//! [`monotonic_ns`] readings taken elsewhere (the tracer's fork stops, pagemap samples).
//!
//! Parsing of the record layouts is `linux-perf-event-reader`'s (samply's parser); the
//! `perf_event_attr` struct and the system call come from `perf-event-open-sys`.

pub mod tracefs;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use linux_perf_event_reader::{
    Endianness, EventRecord, PerfEventAttr, RawData, RawEventRecord, RecordParseInfo, RecordType,
    SampleRecord,
};
use perf_event_open_sys as sys;

/// What the event counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A tracepoint, by the id tracefs gives it.
    Tracepoint(u64),
    /// The software page-fault event (`page-faults`): every fault, without its kind.
    SoftwarePageFaults,
}

/// How to open an event.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// What it counts.
    pub source: Source,
    /// Bytes of the user stack copied into every sample (0: none). At most 65,000.
    pub stack_bytes: u32,
    /// Copy the user registers the unwinder needs (x86_64: bp, sp, ip).
    pub user_regs: bool,
    /// Record kernel-mode samples too (tracepoints fire in the kernel: they need this,
    /// and so root or CAP_PERFMON at `perf_event_paranoid` 2).
    pub kernel: bool,
    /// Threads created later by the thread inherit the event (and write into its ring).
    pub inherit_threads: bool,
    /// Ring size in pages, a power of two.
    pub ring_pages: usize,
}

/// The x86_64 user registers a sample carries, in the kernel's `perf_regs` order: bp, sp, ip.
#[cfg(target_arch = "x86_64")]
pub const REGS_MASK: u64 = (1 << 6) | (1 << 7) | (1 << 8);
/// No stack unwinding registers on other architectures yet.
#[cfg(not(target_arch = "x86_64"))]
pub const REGS_MASK: u64 = 0;

/// CLOCK_MONOTONIC now, in nanoseconds: the clock every event's timestamps use.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// One record, borrowed from the ring while [`Stream::drain`] runs (never stored: the size
/// of the sample variant does not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Record<'a> {
    /// A sample.
    Sample(SampleRecord<'a>),
    /// The kernel dropped this many records (the ring was full).
    Lost(u64),
}

/// One open event and its ring buffer.
#[derive(Debug)]
pub struct Stream {
    fd: OwnedFd,
    map: *mut u8,
    map_len: usize,
    data_size: u64,
    parse: RecordParseInfo,
    /// The thread it was opened on.
    pub tid: i32,
    /// Records lost to a full ring (from LOST records), over the stream's life.
    pub lost: u64,
    /// Records that could not be parsed.
    pub malformed: u64,
    /// Further events on the same thread writing into this stream's ring.
    joined: Vec<OwnedFd>,
}

// SAFETY: the mapping is owned by the stream and used only through `&mut self` (drain) or
// read-only metadata; moving it to another thread is fine.
unsafe impl Send for Stream {}

fn attr(cfg: &Config) -> sys::bindings::perf_event_attr {
    let mut a = sys::bindings::perf_event_attr {
        size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
        ..Default::default()
    };
    match cfg.source {
        Source::Tracepoint(id) => {
            a.type_ = sys::bindings::PERF_TYPE_TRACEPOINT;
            a.config = id;
        }
        Source::SoftwarePageFaults => {
            a.type_ = sys::bindings::PERF_TYPE_SOFTWARE;
            a.config = sys::bindings::PERF_COUNT_SW_PAGE_FAULTS as u64;
        }
    }
    a.__bindgen_anon_1.sample_period = 1;
    let mut st = sys::bindings::PERF_SAMPLE_IP
        | sys::bindings::PERF_SAMPLE_TID
        | sys::bindings::PERF_SAMPLE_TIME
        | sys::bindings::PERF_SAMPLE_ADDR;
    if matches!(cfg.source, Source::Tracepoint(_)) {
        st |= sys::bindings::PERF_SAMPLE_RAW;
    }
    if cfg.user_regs && REGS_MASK != 0 {
        st |= sys::bindings::PERF_SAMPLE_REGS_USER;
        a.sample_regs_user = REGS_MASK;
    }
    if cfg.stack_bytes > 0 {
        st |= sys::bindings::PERF_SAMPLE_STACK_USER;
        a.sample_stack_user = cfg.stack_bytes & !7;
    }
    a.sample_type = st as u64;
    a.set_disabled(1);
    a.set_exclude_kernel(u64::from(!cfg.kernel));
    a.set_exclude_hv(1);
    a.set_exclude_callchain_kernel(1);
    a.set_use_clockid(1);
    a.clockid = libc::CLOCK_MONOTONIC;
    a.set_sample_id_all(1);
    if cfg.inherit_threads {
        a.set_inherit(1);
        a.set_inherit_thread(1);
    }
    // Wake a poller once a quarter of the ring is full.
    a.set_watermark(1);
    a.__bindgen_anon_2.wakeup_watermark = (cfg.ring_pages * crate::kernel::page_size() / 4) as u32;
    a
}

/// `perf_event_open(attr, tid, cpu)` (no group, close-on-exec): a new event we own.
fn open_event(a: &mut sys::bindings::perf_event_attr, tid: i32, cpu: i32) -> io::Result<OwnedFd> {
    let flags = sys::bindings::PERF_FLAG_FD_CLOEXEC as _;
    // SAFETY: `a` is a valid, fully initialised attr of its own `size` (from `attr`); the
    // rest are plain integers (a thread or 0, a CPU or -1, no group, CLOEXEC).
    let fd = unsafe { sys::perf_event_open(a, tid, cpu, -1, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: perf_event_open returned a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send the records of event `fd` into the ring of event `ring` (`PERF_EVENT_IOC_SET_OUTPUT`:
/// the same thread, or the same CPU), set `filter`, and enable it.
fn send_into(fd: &OwnedFd, ring: &OwnedFd, filter: Option<&str>) -> io::Result<()> {
    // SAFETY: two valid event fds; SET_OUTPUT takes the target fd as its argument.
    if unsafe { sys::ioctls::SET_OUTPUT(fd.as_raw_fd(), ring.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(f) = filter {
        set_filter(fd, f)?;
    }
    // SAFETY: a valid event fd; ENABLE takes no pointer.
    if unsafe { sys::ioctls::ENABLE(fd.as_raw_fd(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_filter(fd: &OwnedFd, filter: &str) -> io::Result<()> {
    let c = std::ffi::CString::new(filter)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in filter"))?;
    // SAFETY: a valid event fd and a NUL-terminated string that outlives the call.
    let rc = unsafe { sys::ioctls::SET_FILTER(fd.as_raw_fd(), c.as_ptr() as *mut _) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The parse info `linux-perf-event-reader` needs, from the attr's own bytes.
fn parse_info(a: &sys::bindings::perf_event_attr) -> io::Result<RecordParseInfo> {
    // SAFETY: `perf_event_attr` is a plain-old-data C struct; viewing its bytes is sound.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (a as *const sys::bindings::perf_event_attr).cast::<u8>(),
            std::mem::size_of::<sys::bindings::perf_event_attr>(),
        )
    };
    let (parsed, _) = PerfEventAttr::parse::<_, byteorder::NativeEndian>(bytes)?;
    Ok(RecordParseInfo::new(&parsed, Endianness::NATIVE))
}

impl Stream {
    /// Open `cfg` on thread `tid` (any CPU), map its ring, and leave it disabled.
    ///
    /// # Errors
    /// `perf_event_open` refused (EACCES/EPERM: `perf_event_paranoid`, no CAP_PERFMON, or
    /// ptrace access to the thread denied; ESRCH: the thread is gone; EINVAL/E2BIG: a field
    /// this kernel does not know, e.g. `inherit_thread` before 5.13), or `mmap` refused
    /// (EPERM: the locked-memory limit, `perf_event_mlock_kb`).
    pub fn open(cfg: &Config, tid: i32) -> io::Result<Stream> {
        let mut a = attr(cfg);
        let parse = parse_info(&a)?;
        let fd = open_event(&mut a, tid, -1)?;
        Self::map(fd, cfg, parse, tid)
    }

    fn map(fd: OwnedFd, cfg: &Config, parse: RecordParseInfo, tid: i32) -> io::Result<Stream> {
        let ps = crate::kernel::page_size();
        let pages = cfg.ring_pages.next_power_of_two().max(1);
        let map_len = (pages + 1) * ps;
        // SAFETY: a fresh shared mapping of the event's ring; the kernel validates the size.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Stream {
            fd,
            map: map.cast(),
            map_len,
            data_size: (pages * ps) as u64,
            parse,
            tid,
            lost: 0,
            malformed: 0,
            joined: Vec::new(),
        })
    }

    /// A ring for one CPU: a silent carrier event (the software dummy event, on the calling
    /// thread, bound to `cpu`) and its mapping. Events of any thread opened for that CPU are
    /// sent into it with [`Stream::redirect`]: a traced process's events then cost no ring
    /// of their own, and opening them at a ptrace stop maps and zeroes nothing. Records are
    /// parsed as `cfg`'s (every event sent here must sample what `cfg` samples).
    ///
    /// # Errors
    /// As [`Stream::open`].
    pub fn open_ring(cfg: &Config, cpu: i32) -> io::Result<Stream> {
        let sampled = attr(cfg);
        let parse = parse_info(&sampled)?;
        let mut a = sampled;
        a.type_ = sys::bindings::PERF_TYPE_SOFTWARE;
        a.config = sys::bindings::PERF_COUNT_SW_DUMMY as u64;
        a.set_inherit(0);
        a.set_inherit_thread(0);
        let fd = open_event(&mut a, 0, cpu)?;
        Self::map(fd, cfg, parse, 0)
    }

    /// Open `cfg` on thread `tid`, bound to the CPU of `ring` (a [`Stream::ring_fd`] of a
    /// [`Stream::open_ring`]), send its records there, set
    /// `filter`, enable it; the caller keeps the returned event open as long as it wants
    /// records. (`PERF_EVENT_IOC_SET_OUTPUT` takes a ring of another task only from an
    /// event on the same CPU.)
    ///
    /// # Errors
    /// `perf_event_open` refused (see [`Stream::open`]), or the filter or the redirection
    /// was refused.
    pub fn redirect(
        ring: &OwnedFd,
        cfg: &Config,
        tid: i32,
        cpu: i32,
        filter: Option<&str>,
    ) -> io::Result<OwnedFd> {
        let fd = open_event(&mut attr(cfg), tid, cpu)?;
        send_into(&fd, ring, filter)?;
        Ok(fd)
    }

    /// A second descriptor of this stream's event (for [`Stream::redirect`] from another
    /// thread while this one drains the ring).
    ///
    /// # Errors
    /// `dup` failed (no descriptors left).
    pub fn ring_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Open `cfg` on this stream's thread and send its records into this stream's ring
    /// (`PERF_EVENT_IOC_SET_OUTPUT`: same thread, same CPU setting), with `filter` if given,
    /// enabled at once. Its records must be told apart by their content.
    ///
    /// # Errors
    /// As [`Stream::open`], or the kernel refused the filter or the redirection.
    pub fn join(&mut self, cfg: &Config, filter: Option<&str>) -> io::Result<()> {
        let fd = open_event(&mut attr(cfg), self.tid, -1)?;
        send_into(&fd, &self.fd, filter)?;
        self.joined.push(fd);
        Ok(())
    }

    /// Install a tracepoint filter (`error_code & 2`): the kernel drops what does not match
    /// before it reaches the ring.
    ///
    /// # Errors
    /// The kernel rejected the expression (EINVAL) or the event is no tracepoint.
    pub fn set_filter(&self, filter: &str) -> io::Result<()> {
        set_filter(&self.fd, filter)
    }

    /// Start counting.
    ///
    /// # Errors
    /// The ioctl failed (the fd is not an event: cannot happen for an open stream).
    pub fn enable(&self) -> io::Result<()> {
        // SAFETY: a valid event fd; ENABLE takes no pointer.
        let rc = unsafe { sys::ioctls::ENABLE(self.fd.as_raw_fd(), 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor, for `poll`.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn head_tail(&self) -> (&AtomicU64, &AtomicU64) {
        // SAFETY: the first page of the mapping is the kernel's `perf_event_mmap_page`;
        // `data_head` and `data_tail` are naturally aligned u64 fields that the kernel and
        // we access atomically (the kernel writes head, we write tail).
        unsafe {
            let meta = self.map.cast::<sys::bindings::perf_event_mmap_page>();
            (
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*meta).data_head)),
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*meta).data_tail)),
            )
        }
    }

    /// Bytes the kernel can still write before the reader frees some. A record longer than
    /// this is dropped (counted in the LOST record the kernel writes once there is room).
    pub fn room(&self) -> u64 {
        self.data_size.saturating_sub(self.pending())
    }

    /// Bytes waiting in the ring.
    pub fn pending(&self) -> u64 {
        let (head, tail) = self.head_tail();
        head.load(Ordering::Acquire)
            .wrapping_sub(tail.load(Ordering::Relaxed))
    }

    /// Hand every record now in the ring to `f`, in ring order, then free its space.
    pub fn drain(&mut self, mut f: impl FnMut(Record<'_>)) {
        let (head_a, tail_a) = self.head_tail();
        let head = head_a.load(Ordering::Acquire);
        let mut tail = tail_a.load(Ordering::Relaxed);
        let ps = crate::kernel::page_size();
        // SAFETY: the data area follows the metadata page and is `data_size` bytes long; we
        // only read the part between tail and head, which the kernel does not write until
        // we advance the tail.
        let data = unsafe { std::slice::from_raw_parts(self.map.add(ps), self.data_size as usize) };
        let size = self.data_size;
        let mut lost = 0u64;
        let mut malformed = 0u64;
        while head.wrapping_sub(tail) >= 8 {
            let off = (tail % size) as usize;
            let at = |o: usize, n: usize| -> RawData<'_> {
                let o = o % size as usize;
                if o + n <= size as usize {
                    RawData::Single(&data[o..o + n])
                } else {
                    let first = size as usize - o;
                    RawData::Split(&data[o..], &data[..n - first])
                }
            };
            let mut hdr = [0u8; 8];
            let _ = at(off, 8).read_exact(&mut hdr);
            let rtype = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let misc = u16::from_ne_bytes([hdr[4], hdr[5]]);
            let rsize = u16::from_ne_bytes([hdr[6], hdr[7]]) as u64;
            if rsize < 8 || head.wrapping_sub(tail) < rsize {
                // A torn or corrupt header: drop what is left rather than loop.
                malformed += 1;
                tail = head;
                break;
            }
            let body = at(off + 8, rsize as usize - 8);
            let raw = RawEventRecord::new(RecordType(rtype), misc, body, self.parse);
            match raw.parse() {
                Ok(EventRecord::Sample(s)) => f(Record::Sample(s)),
                Ok(EventRecord::Lost(l)) => {
                    lost += l.count;
                    f(Record::Lost(l.count));
                }
                Ok(_) => {}
                Err(_) => malformed += 1,
            }
            tail = tail.wrapping_add(rsize);
        }
        tail_a.store(tail, Ordering::Release);
        self.lost += lost;
        self.malformed += malformed;
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping this stream made, once.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

/// The fields of a tracepoint's raw record, from its `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Its name (`address`, `error_code`).
    pub name: String,
    /// Offset in the raw data.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// Parse a tracepoint `format` file's field lines.
pub fn parse_format(text: &str) -> Vec<Field> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut name = None;
        let mut offset = None;
        let mut size = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.trim().parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.trim().parse().ok();
            } else if !part.contains(':') && !part.is_empty() {
                // "unsigned long address" or "char comm[16]": the last word, without [..].
                name = part
                    .split_whitespace()
                    .last()
                    .map(|w| w.split('[').next().unwrap_or(w).to_string());
            }
        }
        if let (Some(name), Some(offset), Some(size)) = (name, offset, size) {
            out.push(Field { name, offset, size });
        }
    }
    out
}

/// Read an unsigned field (1, 2, 4 or 8 bytes) of a raw tracepoint record.
pub fn field_u64(raw: &RawData<'_>, f: &Field) -> Option<u64> {
    let bytes = raw.get(f.offset..f.offset + f.size)?.as_slice();
    Some(match f.size {
        1 => bytes[0] as u64,
        2 => u16::from_ne_bytes(bytes[..2].try_into().ok()?) as u64,
        4 => u32::from_ne_bytes(bytes[..4].try_into().ok()?) as u64,
        8 => u64::from_ne_bytes(bytes[..8].try_into().ok()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE_FAULT_USER: &str = "name: page_fault_user
ID: 190
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:unsigned long address;\toffset:8;\tsize:8;\tsigned:0;
\tfield:unsigned long ip;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long error_code;\toffset:24;\tsize:8;\tsigned:0;

print fmt: \"address=%ps ip=%ps error_code=0x%lx\", (void *)REC->address";

    #[test]
    fn a_format_file_gives_every_field_with_offset_and_size() {
        let f = parse_format(PAGE_FAULT_USER);
        let names: Vec<_> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "common_type",
                "common_flags",
                "common_preempt_count",
                "common_pid",
                "address",
                "ip",
                "error_code"
            ]
        );
        assert_eq!(f[6].offset, 24);
        assert_eq!(f[6].size, 8);
    }

    #[test]
    fn fields_are_read_across_a_split_ring() {
        let mut rec = [0u8; 32];
        rec[24..32].copy_from_slice(&6u64.to_ne_bytes());
        let (a, b) = rec.split_at(27);
        let raw = RawData::Split(a, b);
        let f = &parse_format(PAGE_FAULT_USER)[6];
        assert_eq!(field_u64(&raw, f), Some(6));
    }
}
