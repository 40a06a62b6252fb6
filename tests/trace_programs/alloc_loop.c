/* Allocate and free large blocks in a loop: the release-heavy pattern of real allocators,
 * for measuring what `cowscope trace` costs a program (scripts/bench-trace.sh).
 *
 *   alloc_loop ITERATIONS [SIZE_KIB] [TOUCH_PAGES] [fork] [attached]
 *
 * Each iteration mallocs SIZE_KIB (default 1024), writes one byte to each of its first
 * TOUCH_PAGES pages (default: all), and frees it. M_MMAP_THRESHOLD is pinned to 128 KiB so
 * glibc serves every block with mmap and returns it with munmap (without the pin, the first
 * free raises the threshold and later blocks come from the heap). With "fork", a child forked
 * first sleeps until the loop ends, so every release happens while a (parent, child) pair is
 * live and cowscope records it. With "attached", it first waits until a tracer is attached
 * (TracerPid in /proc/self/status: `trace --pid`, scripts/bench-trace-attach.sh). Prints "ns_per_iteration N" on stderr: the loop's own time,
 * so a benchmark under load can compare runs interleaved.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

#include "traced.h"

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000;
    long kib = argc > 2 ? atol(argv[2]) : 1024;
    long ps = sysconf(_SC_PAGESIZE);
    long touch = argc > 3 ? atol(argv[3]) : kib * 1024 / ps;
    int with_fork = argc > 4 && strcmp(argv[4], "fork") == 0;
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    if (argc > 5 && strcmp(argv[5], "attached") == 0) {
        while (!traced())
            usleep(1000);
        usleep(100000);
    }
    pid_t child = -1;
    if (with_fork) {
        child = fork();
        if (child == 0) {
            pause();
            _exit(0);
        }
    }
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) {
        volatile char *p = malloc(kib * 1024);
        if (!p)
            return 1;
        for (long o = 0; o < touch; o++)
            p[o * ps] = (char)i;
        free((void *)p);
    }
    long long t1 = now_ns();
    if (child > 0) {
        kill(child, SIGTERM);
        waitpid(child, NULL, 0);
    }
    fprintf(stderr, "ns_per_iteration %lld\n", (t1 - t0) / (n ? n : 1));
    return 0;
}
