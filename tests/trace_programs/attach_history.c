/* The page-history case of `trace --pid` (tests/trace.rs, issue 16). Every count the test
 * expects follows from this program, never from cowscope's output.
 *
 * An arena of 1000 pages (its own VMA between PROT_NONE guards, MADV_NOHUGEPAGE), every page
 * written before the fork. The program prints "arena 0x<start> 0x<end>" and "ready", then
 * waits until a tracer has attached (TracerPid in /proc/self/status) and forks. After the fork:
 *
 *   child   [0, 300)    writes                                   -> copied_by_child 300
 *           [300, 400)  writes, waits HOLD ms, MADV_DONTNEEDs     -> copied, then released
 *           [400, 450)  MADV_DONTNEEDs without writing            -> released_by_child 50
 *   parent  [450, 650)  writes                                   -> copied_by_parent 200
 *           [650, 750)  MADV_DONTNEEDs, then writes again         -> released_by_parent 100
 *           [750, 1000) untouched                                 -> shared 250
 *
 * The parent does its work first and then lets the child start (a pipe); it waits for the
 * child, so the child's exit stop sees both sides' work done. HOLD (argv[1], default 600)
 * lets a `--interval` sample see the child's copies of [300, 400) before it releases them.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N 1000

static char *arena;
static long ps;

static void touch(long from, long to, char v) {
    for (long i = from; i < to; i++)
        memset(arena + i * ps, v, ps);
}

static void release(long from, long to) {
    if (madvise(arena + from * ps, (to - from) * ps, MADV_DONTNEED) != 0) {
        perror("madvise");
        _exit(90);
    }
}

#include "traced.h"

int main(int argc, char **argv) {
    long hold = argc > 1 ? atol(argv[1]) : 600;
    ps = sysconf(_SC_PAGESIZE);
    char *r = mmap(NULL, (N + 2) * ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED)
        return 91;
    arena = r + ps;
    if (mprotect(arena, N * ps, PROT_READ | PROT_WRITE) != 0)
        return 92;
    madvise(arena, N * ps, MADV_NOHUGEPAGE);
    touch(0, N, 'b');
    printf("arena %#lx %#lx\nready\n", (unsigned long)arena, (unsigned long)(arena + N * ps));
    fflush(stdout);
    while (!traced())
        usleep(1000);
    int go[2];
    if (pipe(go) != 0)
        return 93;
    pid_t pid = fork();
    if (pid < 0)
        return 94;
    if (pid == 0) {
        char x;
        close(go[1]);
        if (read(go[0], &x, 1) != 1)
            _exit(95);
        touch(0, 300, 'c');
        touch(300, 400, 'c');
        struct timespec ts = {hold / 1000, (hold % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        release(300, 400);
        release(400, 450);
        _exit(0);
    }
    close(go[0]);
    touch(450, 650, 'p');
    release(650, 750);
    touch(650, 750, 'q');
    if (write(go[1], "g", 1) != 1)
        return 96;
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return 97;
    return 0;
}
