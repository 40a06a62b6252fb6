/* The history cases of `trace` without `--interval` (tests/trace_history.rs, issue 16). Every
 * count the test expects follows from this program, never from cowscope's output.
 *
 *   copy_release free N       the child writes N pages of the arena (each a copy: the pages
 *                             are shared with the parent since the fork), MADV_DONTNEEDs all
 *                             N, sleeps 300 ms, exits. No sample can see the copies: only the
 *                             write faults and the release can.
 *   copy_release shutdown N   the child writes N pages, sleeps 300 ms ("serving"), then
 *                             MADV_DONTNEEDs 3N/4 of them page by page ("shutdown"), sleeps
 *                             100 ms and exits: it held N while it ran and N/4 at exit.
 *   copy_release lost N       waits until a tracer is attached (TracerPid), forks; the child
 *                             writes pages [0, N) ("A"), sleeps 300 ms, then makes 200,000
 *                             MADV_DONTNEED calls on one page of a mapping made after the
 *                             fork (outside every baseline: a burst that overflows a 1 MiB
 *                             ring of syscall records), sleeps 600 ms, writes pages [N, 2N)
 *                             ("B"), sleeps 300 ms and exits.
 *
 * The arena is N + 64 pages (2N + 64 for `lost`) in a VMA of its own (PROT_NONE guards, MADV_NOHUGEPAGE), every
 * page written before the fork; the parent writes nothing after the fork and waits for the
 * child. Prints "arena 0x<start> 0x<end>".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void nap(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#include "traced.h"

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int shutdown = strcmp(argv[1], "shutdown") == 0;
    int lost = strcmp(argv[1], "lost") == 0;
    long n = atol(argv[2]);
    long ps = sysconf(_SC_PAGESIZE);
    long total = (lost ? 2 * n : n) + 64;
    char *r = mmap(NULL, (total + 2) * ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED)
        return 91;
    char *arena = r + ps;
    if (mprotect(arena, total * ps, PROT_READ | PROT_WRITE) != 0)
        return 92;
    madvise(arena, total * ps, MADV_NOHUGEPAGE);
    memset(arena, 'b', total * ps);
    printf("arena %#lx %#lx\n", (unsigned long)arena, (unsigned long)(arena + total * ps));
    fflush(stdout);
    while (lost && !traced())
        usleep(1000);
    pid_t pid = fork();
    if (pid < 0)
        return 94;
    if (pid == 0 && lost) {
        for (long i = 0; i < n; i++)
            arena[i * ps] = 'c';
        nap(300);
        char *scratch = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (scratch == MAP_FAILED)
            _exit(89);
        for (long k = 0; k < 200000; k++)
            if (madvise(scratch, ps, MADV_DONTNEED) != 0)
                _exit(90);
        nap(600);
        for (long i = n; i < 2 * n; i++)
            arena[i * ps] = 'c';
        nap(300);
        _exit(0);
    }
    if (pid == 0) {
        for (long i = 0; i < n; i++)
            arena[i * ps] = 'c';
        if (!shutdown) {
            if (madvise(arena, n * ps, MADV_DONTNEED) != 0)
                _exit(90);
            nap(300);
            _exit(0);
        }
        nap(300);
        for (long i = 0; i < 3 * n / 4; i++)
            if (madvise(arena + i * ps, ps, MADV_DONTNEED) != 0)
                _exit(90);
        nap(100);
        _exit(0);
    }
    int st;
    if (lost) {
        printf("forked\n");
        fflush(stdout);
    }
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return 97;
    return 0;
}
