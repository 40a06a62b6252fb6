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
 */
#define _GNU_SOURCE
#include <errno.h>
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

int main(int argc, char **argv) {
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
