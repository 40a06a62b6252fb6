/* A program with known writes, releases and refaults in parent and child, for
 * `cowscope trace` tests (tests/trace.rs). Every count the test expects follows from the
 * arguments below, never from cowscope's output.
 *
 * Arguments are key=value (all optional, default 0):
 *   n   pages in the arena (its own VMA, 4 KiB pages: MADV_NOHUGEPAGE), all written before fork
 *   a   pages the child writes                       -> copied_by_child
 *   b   pages the parent writes                      -> copied_by_parent
 *   c   pages the child MADV_DONTNEEDs and rewrites  -> released_by_child
 *   d   pages the parent munmaps                     -> released_by_parent
 *   e   pages the child munmaps                      -> released_by_child
 *   f   pages the parent MADV_DONTNEEDs and rewrites -> released_by_parent
 *   z   pages at the end of the arena only read before fork (the zero page) -> zero
 *   g   pages a grandchild (forked by the child after its own work) writes
 *   collapse=1   a second, 2 MiB-aligned arena of 512 pages the child MADV_COLLAPSEs -> moved
 *   vfork=1      the parent also vforks a child that execs /bin/true
 *   thread=1     the fork is made by a second thread (the main thread waits in pthread_join)
 *   free=1       the child MADV_FREEs the pages of its `c` range instead (shared pages: the
 *                kernel skips them, so they stay shared)
 *   exit=N       the parent exits with N
 *   hold=MS      the child sleeps MS milliseconds before exiting (for interval samples)
 *   pin=K        register the arena's last K written pages as an io_uring fixed buffer
 *                before the fork (a long-term pin: fork copies them instead of sharing) ->
 *                copied_at_fork; exits 96 when io_uring is unavailable
 *   hzp=1        a 2 MiB-aligned MADV_HUGEPAGE region only read before the fork (the huge
 *                zero page: checked through pagemap and kpageflags, exits 95 when it is not
 *                one or cannot be checked); the child writes one byte into it and prints
 *                "hzp_child_thp_kb N", its AnonHugePages there afterwards: 2048 when the
 *                write gave it a whole new THP (Linux 6.13+), 0 when the kernel split the
 *                huge zero page into small zero pages and copied one page
 *   remap=K      a private, writable mapping of a K-page file, read before the fork; the
 *                child maps another K-page file over it (MAP_FIXED) and reads it
 *   wait=1       read one byte from stdin before forking (lets a test attach first)
 *   delay=MS     sleep MS milliseconds before forking, after printing the arena line (lets
 *                `trace --pid` attach first without talking to the program)
 *   at=ADDR      place the arena's reservation at ADDR (hex allowed; MAP_FIXED_NOREPLACE): the
 *                arena then starts one page above ADDR (the kernel matrix's check knows it)
 * Prints "arena 0x<start> 0x<end>" (and "collapse ...", "hzp ...", "remap ...") on stdout, flushed
 * before the fork. The child only runs after the parent's work (a pipe), and the parent waits
 * for the child, so the child's exit stop sees both sides' work done.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

static long n, a, b, c, d, e, f, z, g, collapse, do_vfork, thread, use_free, code, hold, pin;
static long hzp, remap, wait_stdin, at, delay;
static long ps;
static char *arena, *carena, *hzarena, *rarena;
static int remap_fd;

static void die(const char *what) {
    perror(what);
    _exit(99);
}

static char *page(long i) { return arena + i * ps; }

static void write_pages(long from, long count, char mark) {
    for (long i = from; i < from + count; i++)
        memset(page(i), mark, ps);
}

static void msleep(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* AnonHugePages (kB) of our VMA starting at `start`, from /proc/self/smaps. */
static long anon_huge_kb(char *start) {
    FILE *fp = fopen("/proc/self/smaps", "r");
    if (!fp)
        die("smaps");
    char line[512];
    int in = 0;
    long kb = -1;
    while (fgets(line, sizeof line, fp)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = lo == (unsigned long)start;
            continue;
        }
        if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
            break;
    }
    fclose(fp);
    return kb;
}

/* A file of `pages` pages, each starting with `mark`, unlinked; returns its descriptor. */
static int temp_file(long pages, char mark) {
    char name[] = "/tmp/cow_exact.XXXXXX";
    int fd = mkstemp(name);
    if (fd < 0)
        die("mkstemp");
    unlink(name);
    char *buf = calloc(1, ps);
    buf[0] = mark;
    for (long i = 0; i < pages; i++)
        if (write(fd, buf, ps) != ps)
            die("write temp file");
    free(buf);
    return fd;
}

/* Whether [p, p + 512 pages) maps the huge zero page: present, consecutive frames, and
 * kpageflags ZERO_PAGE (bit 24) on the first. Needs root (PFNs, kpageflags). */
static int is_huge_zero(char *p) {
    int pm = open("/proc/self/pagemap", O_RDONLY);
    int kf = open("/proc/kpageflags", O_RDONLY);
    if (pm < 0 || kf < 0)
        return 0;
    uint64_t e[512], flags = 0;
    int ok = pread(pm, e, sizeof e, (off_t)((uintptr_t)p / ps * 8)) == sizeof e;
    uint64_t pfn0 = e[0] & ((1ULL << 55) - 1);
    for (int i = 0; ok && i < 512; i++)
        ok = (e[i] >> 63) && (e[i] & ((1ULL << 55) - 1)) == pfn0 + i;
    ok = ok && pfn0 != 0 && pread(kf, &flags, 8, (off_t)(pfn0 * 8)) == 8 && (flags >> 24 & 1);
    close(pm);
    close(kf);
    return ok;
}

static int run(void) {
    int go[2];
    if (pipe(go) != 0)
        die("pipe");
    long pa = 0;           /* child writes      [0, a) */
    long pb = pa + a;      /* parent writes     [pb, pb+b) */
    long pc = pb + b;      /* child DONTNEED    [pc, pc+c) */
    long pd = pc + c;      /* parent munmap     [pd, pd+d) */
    long pe = pd + d;      /* child munmap      [pe, pe+e) */
    long pf = pe + e;      /* parent DONTNEED   [pf, pf+f) */
    fflush(stdout);
    if (delay) {
        struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (wait_stdin) {
        char x;
        if (read(0, &x, 1) != 1)
            return 94;
    }
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        char x;
        close(go[1]);
        if (read(go[0], &x, 1) != 1)
            _exit(98);
        write_pages(pa, a, 'C');
        if (c) {
            if (madvise(page(pc), c * ps, use_free ? MADV_FREE : MADV_DONTNEED) != 0)
                die("madvise child");
            if (!use_free)
                write_pages(pc, c, 'c');
        }
        if (e && munmap(page(pe), e * ps) != 0)
            die("munmap child");
        if (collapse && madvise(carena, 512 * ps, MADV_COLLAPSE) != 0)
            die("madvise collapse");
        if (hzp) {
            hzarena[0] = 'H';
            printf("hzp_child_thp_kb %ld\n", anon_huge_kb(hzarena));
            fflush(stdout);
        }
        if (remap) {
            if (mmap(rarena, remap * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED,
                     remap_fd, 0) != rarena)
                die("mmap remap");
            for (long i = 0; i < remap; i++) {
                volatile char rd = rarena[i * ps];
                (void)rd;
            }
        }
        if (g) {
            pid_t gc = fork();
            if (gc < 0)
                die("fork grandchild");
            if (gc == 0) {
                write_pages(0, g, 'G');
                _exit(0);
            }
            waitpid(gc, NULL, 0);
        }
        if (hold)
            msleep(hold);
        _exit(0);
    }
    close(go[0]);
    write_pages(pb, b, 'P');
    if (d && munmap(page(pd), d * ps) != 0)
        die("munmap parent");
    if (f) {
        if (madvise(page(pf), f * ps, MADV_DONTNEED) != 0)
            die("madvise parent");
        write_pages(pf, f, 'p');
    }
    if (write(go[1], "g", 1) != 1)
        die("write");
    int st;
    if (waitpid(child, &st, 0) != child)
        die("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return 97;
    return 0;
}

static void *thread_main(void *arg) {
    (void)arg;
    return (void *)(intptr_t)run();
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char k[32];
        long v;
        if (sscanf(argv[i], "%31[a-z]=%li", k, &v) != 2) {
            fprintf(stderr, "bad argument %s\n", argv[i]);
            return 2;
        }
        long *slot = !strcmp(k, "n") ? &n : !strcmp(k, "a") ? &a : !strcmp(k, "b") ? &b
                   : !strcmp(k, "c") ? &c : !strcmp(k, "d") ? &d : !strcmp(k, "e") ? &e
                   : !strcmp(k, "f") ? &f : !strcmp(k, "z") ? &z : !strcmp(k, "g") ? &g
                   : !strcmp(k, "collapse") ? &collapse : !strcmp(k, "vfork") ? &do_vfork
                   : !strcmp(k, "thread") ? &thread : !strcmp(k, "free") ? &use_free
                   : !strcmp(k, "exit") ? &code : !strcmp(k, "hold") ? &hold
                   : !strcmp(k, "pin") ? &pin : !strcmp(k, "hzp") ? &hzp
                   : !strcmp(k, "remap") ? &remap : !strcmp(k, "wait") ? &wait_stdin
                   : !strcmp(k, "at") ? &at : !strcmp(k, "delay") ? &delay : NULL;
        if (!slot) {
            fprintf(stderr, "unknown key %s\n", k);
            return 2;
        }
        *slot = v;
    }
    if (a + b + c + d + e + f + z + pin > n || g > a + b + c + d + e + f + z + n) {
        fprintf(stderr, "ranges exceed n\n");
        return 2;
    }
    ps = sysconf(_SC_PAGESIZE);
    /* Guard pages on both sides keep the arena a VMA of its own. */
    char *r = mmap((void *)at, (n + 2) * ps, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED_NOREPLACE : 0), -1, 0);
    if (r == MAP_FAILED || (at && r != (char *)at))
        die("mmap");
    arena = r + ps;
    if (mprotect(arena, n * ps, PROT_READ | PROT_WRITE) != 0)
        die("mprotect");
    madvise(arena, n * ps, MADV_NOHUGEPAGE);
    write_pages(0, n - z, 'x');
    for (long i = n - z; i < n; i++) {
        volatile char rd = *page(i);
        (void)rd;
    }
    if (pin) {
        /* The pinned pages: the last `pin` of the written ones, after every range above. */
        struct io_uring_params params;
        memset(&params, 0, sizeof params);
        int ring = (int)syscall(__NR_io_uring_setup, 4, &params);
        if (ring < 0)
            return 96;
        struct iovec iov = {page(n - z - pin), (size_t)(pin * ps)};
        if (syscall(__NR_io_uring_register, ring, IORING_REGISTER_BUFFERS, &iov, 1) != 0)
            return 96;
        /* The ring stays open: the pin lasts until the process exits. */
    }
    printf("arena %#lx %#lx\n", (unsigned long)arena, (unsigned long)(arena + n * ps));
    if (collapse) {
        long h = 512 * ps;
        char *cr = mmap(NULL, 2 * h, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (cr == MAP_FAILED)
            die("mmap collapse");
        carena = (char *)(((uintptr_t)cr + h - 1) & ~(uintptr_t)(h - 1));
        /* Small pages first (no THP at fault time), then allow THP for the child's collapse. */
        madvise(cr, 2 * h, MADV_NOHUGEPAGE);
        for (long i = 0; i < 512; i++)
            memset(carena + i * ps, 'k' + (i % 7), ps);
        madvise(carena, h, MADV_HUGEPAGE);
        printf("collapse %#lx %#lx\n", (unsigned long)carena, (unsigned long)(carena + h));
    }
    if (hzp) {
        long h = 512 * ps;
        char *hr = mmap(NULL, 2 * h, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (hr == MAP_FAILED)
            die("mmap hzp");
        hzarena = (char *)(((uintptr_t)hr + h - 1) & ~(uintptr_t)(h - 1));
        madvise(hzarena, h, MADV_HUGEPAGE);
        volatile char rd = *hzarena; /* a read fault: the huge zero page */
        (void)rd;
        if (!is_huge_zero(hzarena))
            return 95;
        printf("hzp %#lx %#lx\n", (unsigned long)hzarena, (unsigned long)(hzarena + h));
    }
    if (remap) {
        int fa = temp_file(remap, 'A');
        remap_fd = temp_file(remap, 'B');
        rarena = mmap(NULL, remap * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE, fa, 0);
        if (rarena == MAP_FAILED)
            die("mmap file");
        for (long i = 0; i < remap; i++) {
            volatile char rd = rarena[i * ps];
            (void)rd;
        }
        printf("remap %#lx %#lx\n", (unsigned long)rarena, (unsigned long)(rarena + remap * ps));
    }
    fflush(stdout);
    if (do_vfork) {
        pid_t v = vfork();
        if (v == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        if (v < 0)
            die("vfork");
        waitpid(v, NULL, 0);
    }
    int rc;
    if (thread) {
        pthread_t t;
        void *ret;
        if (pthread_create(&t, NULL, thread_main, NULL) != 0)
            die("pthread_create");
        pthread_join(t, &ret);
        rc = (int)(intptr_t)ret;
    } else {
        rc = run();
    }
    if (rc)
        return rc;
    return (int)code;
}
