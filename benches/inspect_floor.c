/*
 * The floor for `cowscope inspect`: the simplest single-threaded program that reads the same
 * evidence for one forked pair -- both smaps (the kernel walks both page tables for them) and
 * both pagemaps -- and compares frames page by page over the VMAs the two have at the same
 * range with the same identity. No JSON, no threads, no zero-page or exclusive-bit rules.
 *
 *   cc -O2 -o inspect_floor benches/inspect_floor.c && ./inspect_floor PARENT CHILD
 *
 * Prints the counts: shared diverged only_parent only_child.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (1 << 16) /* pagemap entries per pread, as cowscope reads them */
#define PRESENT (1ULL << 63)
#define PFN_MASK ((1ULL << 55) - 1)

struct vma {
	unsigned long start, end, off, inode;
	char dev[16];
};

/* Read /proc/PID/smaps whole; keep the header line of every VMA. */
static struct vma *read_smaps(int pid, size_t *n)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/smaps", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		perror(path);
		exit(2);
	}
	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (len + 65536 > cap)
			buf = realloc(buf, cap *= 2);
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = 0;
	size_t vcap = 256;
	struct vma *v = malloc(vcap * sizeof *v);
	*n = 0;
	for (char *line = buf; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		struct vma x;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu", &x.start, &x.end, perms, &x.off, x.dev,
			   &x.inode) == 6) {
			if (*n == vcap)
				v = realloc(v, (vcap *= 2) * sizeof *v);
			v[(*n)++] = x;
		}
		line = nl ? nl + 1 : NULL;
	}
	free(buf);
	return v;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: inspect_floor PARENT CHILD\n");
		return 2;
	}
	int pid[2] = {atoi(argv[1]), atoi(argv[2])};
	size_t n[2];
	struct vma *v[2];
	int pm[2];
	for (int s = 0; s < 2; s++) {
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/pagemap", pid[s]);
		pm[s] = open(path, O_RDONLY);
		if (pm[s] < 0) {
			perror(path);
			return 2;
		}
		v[s] = read_smaps(pid[s], &n[s]);
	}
	uint64_t *buf[2] = {malloc(CHUNK * 8), malloc(CHUNK * 8)};
	unsigned long long shared = 0, diverged = 0, only_p = 0, only_c = 0;
	long ps = sysconf(_SC_PAGESIZE);
	size_t j = 0;
	for (size_t i = 0; i < n[0]; i++) {
		struct vma *p = &v[0][i];
		while (j < n[1] && v[1][j].start < p->start)
			j++;
		if (j == n[1])
			break;
		struct vma *c = &v[1][j];
		if (c->start != p->start || c->end != p->end || c->off != p->off ||
		    c->inode != p->inode || strcmp(c->dev, p->dev))
			continue;
		if (p->start >= 0xffffffffff600000UL) /* [vsyscall]: not in pagemap */
			continue;
		for (unsigned long a = p->start; a < p->end;) {
			size_t k = (p->end - a) / ps;
			if (k > CHUNK)
				k = CHUNK;
			for (int s = 0; s < 2; s++)
				if (pread(pm[s], buf[s], k * 8, (off_t)(a / ps) * 8) != (ssize_t)(k * 8)) {
					perror("pread");
					return 2;
				}
			for (size_t e = 0; e < k; e++) {
				uint64_t x = buf[0][e], y = buf[1][e];
				if (x & y & PRESENT) {
					if ((x & PFN_MASK) == (y & PFN_MASK))
						shared++;
					else
						diverged++;
				} else if (x & PRESENT) {
					only_p++;
				} else if (y & PRESENT) {
					only_c++;
				}
			}
			a += k * ps;
		}
	}
	printf("shared %llu diverged %llu only_parent %llu only_child %llu\n", shared, diverged,
	       only_p, only_c);
	return 0;
}
