/* Whether a tracer is attached to this process (TracerPid in /proc/self/status): the test
 * programs that wait to be attached (`cowscope trace --pid`) poll it before they fork. */
#ifndef COWSCOPE_TRACED_H
#define COWSCOPE_TRACED_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int traced(void) {
    char buf[4096];
    FILE *f = fopen("/proc/self/status", "r");
    int t = 0;
    if (!f)
        return 0;
    while (fgets(buf, sizeof buf, f))
        if (strncmp(buf, "TracerPid:", 10) == 0)
            t = atoi(buf + 10) != 0;
    fclose(f);
    return t;
}
#endif
