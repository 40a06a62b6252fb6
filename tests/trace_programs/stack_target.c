/* A known call chain for the stack tests (tests/stacks.rs): main -> a -> b -> c, where c
 * spins until the tracer stops it. Each function is `noipa` (never inlined, cloned or
 * specialised, so each keeps its own name) and does work after its call, so no call becomes a
 * tail call: every frame of the chain is on the stack at the stop. The markers CALL_A, CALL_B,
 * CALL_C and SPIN name the lines the tests expect file:line to point at. With an argument, c
 * first spins calling clock_gettime (the vDSO) instead. */
#include <stdio.h>
#include <time.h>

static volatile int spin = 1;
volatile unsigned long sink;
static int use_clock;

__attribute__((noipa)) void c(unsigned long n)
{
    puts("ready");
    fflush(stdout);
    struct timespec ts;
    while (spin && use_clock) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        sink += (unsigned long)ts.tv_nsec;
    }
    while (spin) sink += n; /* SPIN */
}

__attribute__((noipa)) void b(unsigned long n)
{
    c(n + 1); /* CALL_C */
    sink += 2;
}

__attribute__((noipa)) void a(unsigned long n)
{
    b(n + 1); /* CALL_B */
    sink += 3;
}

int main(int argc, char **argv)
{
    (void)argv;
    use_clock = argc > 1;
    a(1); /* CALL_A */
    sink += 4;
    return 0;
}
