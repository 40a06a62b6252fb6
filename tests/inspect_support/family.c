/* A parent with known children for `inspect` tests (tests/inspect.rs).
 *
 * family [unreadable] [vfork]
 *
 * The parent writes 1 MiB, then forks:
 * - with "unreadable": child 2, which makes itself non-dumpable at once (prctl
 *   PR_SET_DUMPABLE 0): a reader of the same uid without CAP_SYS_PTRACE may read the parent
 *   and child 1, but not child 2;
 * - child 1, which on SIGUSR1 makes itself non-dumpable too, so such a reader can no longer
 *   read its memory while it lives on;
 * prints "<child 1> <child 2 or 0>\n", and with "vfork" then vforks a child that waits in the
 * parent's address space, which keeps the parent's only thread in uninterruptible sleep
 * (`D`: vfork waits TASK_KILLABLE), where SIGSTOP cannot stop it.
 * Every process waits until stdin reaches EOF, then exits; the parent reaps its children.
 *
 * family layout PAGES SLOT...
 *
 * A pair with a known VMA layout (tests/inspect_layouts.rs). The region starts at
 * LAYOUT_BASE (256 MiB), below the executable, the heap and every library, so its first
 * slot is the first VMA of both processes in address order. Slot i covers PAGES pages from
 * LAYOUT_BASE + i * PAGES pages; a slot is written one byte per page, from its first page:
 *   C:pre:cw    common: the parent maps it before the fork and writes pre pages; the child
 *               writes cw pages after the fork
 *   P:pre       parent only: mapped and written (pre) before the fork, unmapped by the child
 *   A:pw        parent only: a hole at the fork; the parent maps it afterwards, writes pw
 *   K:cw        child only: a hole at the fork; the child maps it afterwards, writes cw
 *   B:pw:cw     both one-sided: a hole at the fork; the parent maps it MAP_SHARED, the child
 *               MAP_PRIVATE (different mappings at the same addresses)
 *   H           a hole in both
 * The child names itself `lay"out\x` (a comm with a quote and a backslash). Prints
 * "<child> 0\n" once both are done, then both wait for EOF on stdin.
 *
 * family churn MS CHILDREN
 *
 * A parent that writes 1 MiB and keeps CHILDREN children alive: each writes a random number
 * of those pages, sometimes maps and writes memory below every inherited VMA, lives a random
 * 0-20 ms and exits; the parent reaps them and forks new ones. Prints "<own pid> 0\n". With
 * MS > 0 it stops after MS milliseconds (for `cowscope trace --`), else at EOF on stdin.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_usr1(int sig) {
    (void)sig;
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* a system call: async-signal-safe */
}

static void wait_for_eof(void) {
    char b;
    for (;;) {
        ssize_t n = read(0, &b, 1);
        if (n == 0 || (n < 0 && errno != EINTR))
            return;
    }
}

#define LAYOUT_BASE ((uintptr_t)0x10000000)

static void touch(char *p, long pages, long ps, char v) {
    for (long i = 0; i < pages; i++)
        p[i * ps] = v;
}

static char *map_at(uintptr_t addr, size_t len, int flags) {
    void *p = mmap((void *)addr, len, PROT_READ | PROT_WRITE,
                   flags | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED || (uintptr_t)p != addr)
        _exit(95);
    /* No THP or mTHP folio: one write fault maps exactly one page. */
    madvise(p, len, MADV_NOHUGEPAGE);
    return p;
}

static int layout(int argc, char **argv) {
    long ps = sysconf(_SC_PAGESIZE);
    long pages = atol(argv[2]);
    int nslots = argc - 3;
    size_t slot = (size_t)(pages * ps);
    for (int i = 0; i < nslots; i++) {
        char *spec = argv[3 + i];
        long a = 0, b = 0;
        sscanf(spec + 1, ":%ld:%ld", &a, &b);
        uintptr_t at = LAYOUT_BASE + (uintptr_t)i * slot;
        if (spec[0] == 'C' || spec[0] == 'P')
            touch(map_at(at, slot, MAP_PRIVATE), a, ps, 'P');
    }
    int done[2];
    if (pipe(done) != 0)
        return 96;
    pid_t c = fork();
    if (c < 0)
        return 92;
    if (c == 0) {
        /* A comm with a quote and a backslash: label values must escape both. */
        prctl(PR_SET_NAME, "lay\"out\\x", 0, 0, 0);
        for (int i = 0; i < nslots; i++) {
            char *spec = argv[3 + i];
            long a = 0, b = 0;
            sscanf(spec + 1, ":%ld:%ld", &a, &b);
            uintptr_t at = LAYOUT_BASE + (uintptr_t)i * slot;
            switch (spec[0]) {
            case 'C': touch((char *)at, b, ps, 'c'); break;
            case 'P': munmap((void *)at, slot); break;
            case 'K': touch(map_at(at, slot, MAP_PRIVATE), a, ps, 'c'); break;
            case 'B': touch(map_at(at, slot, MAP_PRIVATE), b, ps, 'c'); break;
            }
        }
        if (write(done[1], "x", 1) != 1)
            _exit(97);
        wait_for_eof();
        _exit(0);
    }
    char x;
    if (read(done[0], &x, 1) != 1)
        return 97;
    for (int i = 0; i < nslots; i++) {
        char *spec = argv[3 + i];
        long a = 0, b = 0;
        sscanf(spec + 1, ":%ld:%ld", &a, &b);
        uintptr_t at = LAYOUT_BASE + (uintptr_t)i * slot;
        if (spec[0] == 'A')
            touch(map_at(at, slot, MAP_PRIVATE), a, ps, 'p');
        else if (spec[0] == 'B')
            touch(map_at(at, slot, MAP_SHARED), a, ps, 'p');
    }
    printf("%d 0\n", (int)c);
    fflush(stdout);
    wait_for_eof();
    kill(c, SIGKILL);
    while (wait(NULL) > 0)
        ;
    return 0;
}

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int churn(int argc, char **argv) {
    long ms = argc > 2 ? atol(argv[2]) : 0;
    int want = argc > 3 ? atoi(argv[3]) : 4;
    long ps = sysconf(_SC_PAGESIZE);
    size_t n = 1 << 20;
    char *m = malloc(n);
    if (!m)
        return 91;
    memset(m, 0x5a, n);
    /* Without MS, stdin is read without blocking each round: EOF ends the churn. */
    int fl = fcntl(0, F_GETFL);
    if (ms == 0 && fl >= 0)
        fcntl(0, F_SETFL, fl | O_NONBLOCK);
    srand((unsigned)getpid());
    printf("%d 0\n", (int)getpid());
    fflush(stdout);
    long start = now_ms();
    int live = 0;
    for (;;) {
        if (ms > 0 && now_ms() - start >= ms)
            break;
        if (ms == 0) {
            char b;
            ssize_t r = read(0, &b, 1);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                break;
        }
        while (live < want) {
            unsigned seed = (unsigned)rand();
            pid_t c = fork();
            if (c < 0)
                break;
            if (c == 0) {
                srand(seed);
                long pages = rand() % (long)(n / ps);
                touch(m, pages, ps, 'c');
                if (rand() % 3 == 0) {
                    uintptr_t low = LAYOUT_BASE + (uintptr_t)(rand() % 16) * (uintptr_t)ps;
                    void *p = mmap((void *)low, 4 * ps, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
                    if (p != MAP_FAILED)
                        touch(p, rand() % 5, ps, 'c');
                }
                usleep((useconds_t)(rand() % 20000));
                _exit(0);
            }
            live++;
        }
        /* Reap whoever exited; sleep a little while nobody did. */
        int reaped = 0;
        while (waitpid(-1, NULL, WNOHANG) > 0) {
            live--;
            reaped++;
        }
        if (!reaped)
            usleep(1000);
    }
    while (wait(NULL) > 0)
        ;
    return m[n - 1] == 0x5a ? 0 : 94;
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "layout") == 0)
        return layout(argc, argv);
    if (argc > 1 && strcmp(argv[1], "churn") == 0)
        return churn(argc, argv);
    int want_unreadable = 0, want_vfork = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "unreadable") == 0)
            want_unreadable = 1;
        else if (strcmp(argv[i], "vfork") == 0)
            want_vfork = 1;
    }
    size_t n = 1 << 20;
    char *m = malloc(n);
    if (!m)
        return 91;
    memset(m, 0x5a, n);

    pid_t c2 = 0;
    if (want_unreadable) {
        c2 = fork();
        if (c2 < 0)
            return 93;
        if (c2 == 0) {
            prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
            wait_for_eof();
            _exit(0);
        }
    }
    pid_t c1 = fork();
    if (c1 < 0)
        return 92;
    if (c1 == 0) {
        signal(SIGUSR1, on_usr1);
        wait_for_eof();
        _exit(0);
    }
    printf("%d %d\n", (int)c1, (int)c2);
    fflush(stdout);
    if (want_vfork) {
        pid_t v = vfork();
        if (v == 0) {
            wait_for_eof();
            _exit(0);
        }
    }
    wait_for_eof();
    while (wait(NULL) > 0)
        ;
    /* Keep the written memory alive until here. */
    return m[n - 1] == 0x5a ? 0 : 94;
}
