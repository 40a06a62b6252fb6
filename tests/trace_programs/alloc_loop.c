/* Allocate and free large blocks in a loop: the release-heavy pattern of real allocators,
 * for measuring what `cowscope trace` costs a program (scripts/bench-trace.sh).
 *
 *   alloc_loop ITERATIONS [SIZE_KIB] [fork]
 *
 * Each iteration mallocs SIZE_KIB (default 1024), writes one byte per page, and frees it.
 * M_MMAP_THRESHOLD is pinned to 128 KiB so glibc serves every block with mmap and returns it
 * with munmap (without the pin, the first free raises the threshold and later blocks come
 * from the heap). With "fork", a child forked first sleeps until the loop ends, so every
 * release happens while a (parent, child) pair is live and cowscope records it.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000;
    long kib = argc > 2 ? atol(argv[2]) : 1024;
    int with_fork = argc > 3 && strcmp(argv[3], "fork") == 0;
    long ps = sysconf(_SC_PAGESIZE);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    pid_t child = -1;
    if (with_fork) {
        child = fork();
        if (child == 0) {
            pause();
            _exit(0);
        }
    }
    for (long i = 0; i < n; i++) {
        volatile char *p = malloc(kib * 1024);
        if (!p)
            return 1;
        for (long o = 0; o < kib * 1024; o += ps)
            p[o] = (char)i;
        free((void *)p);
    }
    if (child > 0) {
        kill(child, SIGTERM);
        waitpid(child, NULL, 0);
    }
    return 0;
}
