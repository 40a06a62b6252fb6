/* cow_hold: a held family with known writes, for `cowscope inspect` in the kernel matrix
 * (scripts/kernel-matrix.sh ships it statically linked in the initramfs; scripts/collect.sh
 * builds it on the host). scripts/matrix/check-live.sh derives every expected figure from the
 * constants below.
 *
 * At the fixed address HOLD_ADDR (so the check knows the range without being told):
 *   [guard][arena: 64 pages, all written before the fork][guard][zero: 16 pages][guard]
 * where the zero region's page 0 is written and pages 1..15 are only read (the zero page; the
 * write gives the VMA an anon_vma, without which fork copies no page-table entries at all).
 * Then 3 children are forked; child i writes W[i] pages of the arena starting at page 8*i
 * (8, 4, 2 pages) and reports ready; then the parent writes arena pages 56..59 (4 pages).
 * Every process then waits in pause() until killed. The parent prints "ready <pid>" on
 * stdout when all writes are done.
 *
 * Expected, per pair (parent, child i) over the arena: diverged = W[i] + 4, shared = 60 - W[i];
 * over the zero region: shared = 1, zero = 15. Pool over both: of the parent's 65 frames (zero
 * pages are not counted), 4 are mapped by no child (the parent's own copies after the fork),
 * 14 by two children, 47 by all three.
 *
 * Exits 2 on a bad start (mapping refused, fork failed).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define HOLD_ADDR 0x300000000000UL
#define ARENA_PAGES 64
#define ZERO_PAGES 16
#define CHILDREN 3

static const int W[CHILDREN] = {8, 4, 2};

static void die(const char *what) {
    perror(what);
    exit(2);
}

int main(void) {
    long ps = sysconf(_SC_PAGESIZE);
    size_t total = (size_t)(1 + ARENA_PAGES + 1 + ZERO_PAGES + 1) * ps;
    char *base = mmap((void *)HOLD_ADDR, total, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (base == MAP_FAILED || base != (char *)HOLD_ADDR)
        die("mmap reservation at HOLD_ADDR");
    char *arena = base + ps;
    char *zero = arena + (ARENA_PAGES + 1) * ps;
    if (mprotect(arena, ARENA_PAGES * ps, PROT_READ | PROT_WRITE) != 0 ||
        mprotect(zero, ZERO_PAGES * ps, PROT_READ | PROT_WRITE) != 0)
        die("mprotect");
    for (int p = 0; p < ARENA_PAGES; p++)
        *(volatile char *)(arena + p * ps) = (char)(p + 1);
    *(volatile char *)zero = 1;
    for (int p = 1; p < ZERO_PAGES; p++)
        (void)*(volatile char *)(zero + p * ps);
    int ready[2];
    if (pipe(ready) != 0)
        die("pipe");
    fflush(stdout);
    for (int i = 0; i < CHILDREN; i++) {
        pid_t c = fork();
        if (c < 0)
            die("fork");
        if (c == 0) {
            for (int p = 8 * i; p < 8 * i + W[i]; p++)
                *(volatile char *)(arena + p * ps) = (char)(0x40 + i);
            char one = 1;
            if (write(ready[1], &one, 1) != 1)
                _exit(2);
            for (;;)
                pause();
        }
    }
    for (int i = 0; i < CHILDREN; i++) {
        char one;
        if (read(ready[0], &one, 1) != 1)
            die("waiting for the children");
    }
    for (int p = 56; p < 60; p++)
        *(volatile char *)(arena + p * ps) = (char)0x7f;
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    for (;;)
        pause();
}
