/* A program whose copies after a fork are made by known functions, for `cowscope trace
 * --stacks` tests (tests/trace_stacks.rs). Every count the test expects follows from the
 * arguments, never from cowscope's output.
 *
 * Arguments (key=value, defaults in brackets):
 *   n   pages in the arena, written by populate() before the fork [2048]
 *   a   pages the child writes in child_writes_a()                 [250]
 *   b   pages the child writes in child_writes_b()                 [150]
 *   p   pages the parent writes in parent_writes()                 [200]
 *   r   pages the child MADV_DONTNEEDs and then writes in child_refaults() (released, not
 *       copied: never attributed)                                  [0]
 *   t   pages of a second arena the child maps and writes after the fork in
 *       child_first_touch() (new memory: no copy, never attributed)  [0]
 *
 * The arena is its own VMA of 4 KiB pages (MADV_NOHUGEPAGE). Page ranges: the child's a
 * pages from 0, its b pages after them, the parent's p pages after those, the child's r
 * pages after those. The child waits for the parent's writes (a pipe), and the parent waits
 * for the child, so the child's exit stop sees both sides' work. Prints
 * "arena 0x<start> 0x<end>" before the fork.
 *
 * The writers are noinline and write through a volatile pointer one byte per page (the
 * copy is the first write), so each page's copy is made by exactly that function; they are
 * called from main through a chain of noinline functions (none a tail call) so an unwinder
 * must walk several frames to reach main: main -> run -> child_work/parent_work -> writer.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static long n = 2048, a = 250, b = 150, p = 200, r = 0, t = 0;
static long ps;
static char *arena;
/* Written after each call in the chain, so no call is a tail call (a tail call leaves no
 * frame for the unwinder to find: main would vanish from the stack, rightly). */
static volatile int steps;

#define NOINLINE __attribute__((noinline))

static void die(const char *what) {
    perror(what);
    _exit(99);
}

NOINLINE void populate(char *base, long pages) {
    for (long i = 0; i < pages; i++)
        memset(base + i * ps, (int)(i & 0x7f) | 1, ps);
}

NOINLINE void child_writes_a(volatile char *base, long from, long count) {
    for (long i = from; i < from + count; i++)
        base[i * ps] = 'a';
}

NOINLINE void child_writes_b(volatile char *base, long from, long count) {
    for (long i = from; i < from + count; i++)
        base[i * ps + 1] = 'b';
}

NOINLINE void parent_writes(volatile char *base, long from, long count) {
    for (long i = from; i < from + count; i++)
        base[i * ps + 2] = 'p';
}

NOINLINE void child_refaults(char *base, long from, long count) {
    if (count == 0)
        return;
    if (madvise(base + from * ps, count * ps, MADV_DONTNEED))
        die("madvise");
    for (long i = from; i < from + count; i++)
        ((volatile char *)base)[i * ps] = 'r';
}

NOINLINE void child_first_touch(long count) {
    if (count == 0)
        return;
    char *m = mmap(NULL, count * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        die("mmap");
    for (long i = 0; i < count; i++)
        ((volatile char *)m)[i * ps] = 't';
}

NOINLINE void child_work(void) {
    child_writes_a(arena, 0, a);
    steps++;
    child_writes_b(arena, a, b);
    steps++;
    child_refaults(arena, a + b + p, r);
    steps++;
    child_first_touch(t);
    steps++;
}

NOINLINE void parent_work(void) {
    parent_writes(arena, a + b, p);
    steps++;
}

NOINLINE int run(void) {
    int go[2];
    if (pipe(go))
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1)
            _exit(98);
        child_work();
        steps++;
        _exit(0);
    }
    close(go[0]);
    parent_work();
    steps++;
    if (write(go[1], "g", 1) != 1)
        die("write");
    int st;
    if (waitpid(pid, &st, 0) < 0)
        die("waitpid");
    return WIFEXITED(st) ? WEXITSTATUS(st) : 97;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long v = atol(strchr(argv[i], '=') ? strchr(argv[i], '=') + 1 : "0");
        switch (argv[i][0]) {
        case 'n': n = v; break;
        case 'a': a = v; break;
        case 'b': b = v; break;
        case 'p': p = v; break;
        case 'r': r = v; break;
        case 't': t = v; break;
        default: fprintf(stderr, "unknown argument %s\n", argv[i]); return 2;
        }
    }
    if (a + b + p + r > n) {
        fprintf(stderr, "a+b+p+r exceeds n\n");
        return 2;
    }
    ps = sysconf(_SC_PAGESIZE);
    /* Guard pages on both sides keep the arena its own VMA. */
    char *m = mmap(NULL, (n + 2) * ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        die("mmap");
    arena = m + ps;
    if (mprotect(arena, n * ps, PROT_READ | PROT_WRITE))
        die("mprotect");
    madvise(arena, n * ps, MADV_NOHUGEPAGE);
    populate(arena, n);
    printf("arena %p %p\n", (void *)arena, (void *)(arena + n * ps));
    fflush(stdout);
    int rc = run();
    steps++;
    return rc;
}
