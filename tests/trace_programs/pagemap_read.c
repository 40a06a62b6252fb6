/* The outside floor for `cowscope trace`'s pause (scripts/bench-trace.sh): one pagemap read of
 * [START, END) of PID by a separate, simple, single-threaded reader, timed by itself (open,
 * 64 Ki-entry preads into one buffer, close; no process start-up in the figure). Prints
 * "read_us N pages P".
 *
 * usage: pagemap_read PID START-END   (hex addresses, as examples/hold_memory prints them)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    unsigned long start, end;
    if (argc != 3 || sscanf(argv[2], "%lx-%lx", &start, &end) != 2 || end <= start) {
        fprintf(stderr, "usage: pagemap_read PID START-END\n");
        return 2;
    }
    long ps = sysconf(_SC_PAGESIZE);
    enum { CHUNK = 1 << 16 };
    static uint64_t buf[CHUNK];
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/pagemap", argv[1]);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror("open pagemap");
        return 1;
    }
    uint64_t present = 0;
    for (unsigned long p = start / ps; p < end / ps;) {
        unsigned long n = end / ps - p < CHUNK ? end / ps - p : CHUNK;
        if (pread(fd, buf, n * 8, (off_t)(p * 8)) != (ssize_t)(n * 8)) {
            perror("pread");
            return 1;
        }
        for (unsigned long i = 0; i < n; i++)
            present += buf[i] >> 63;
        p += n;
    }
    close(fd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
    printf("read_us %ld pages %lu present %lu\n", us, (end - start) / ps, (unsigned long)present);
    return 0;
}
