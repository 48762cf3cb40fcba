/* Line generator for bench/run.sh (throughput).
 *
 *   gen MODE COUNT STAMPFILE
 *
 * Writes COUNT numbered lines of exactly 100 bytes ("000000001 xxxx...x\n") to stdout.
 * MODE "line":  one write(2) per line (what an unbuffered logger or `echo` loop does).
 * MODE "block": 64 KiB write(2)s, lines cut across writes (what a buffered stdout does).
 * Before the first byte it writes its start time (CLOCK_REALTIME, seconds with
 * nanoseconds) to STAMPFILE, so the benchmark times the job and the `cat` reference
 * from the same point: the generator's own start.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE 100
#define BLOCK 65536

static void write_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            perror("gen: write");
            exit(1);
        }
        p += w;
        n -= (size_t)w;
    }
}

static void make_line(char *out, long i) {
    memset(out, 'x', LINE);
    char num[24];
    snprintf(num, sizeof num, "%09ld", i);
    memcpy(out, num, 9);
    out[9] = ' ';
    out[LINE - 1] = '\n';
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: gen line|block COUNT STAMPFILE\n");
        return 2;
    }
    int block = strcmp(argv[1], "block") == 0;
    if (!block && strcmp(argv[1], "line") != 0) {
        fprintf(stderr, "gen: MODE must be line or block\n");
        return 2;
    }
    long count = atol(argv[2]);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    FILE *f = fopen(argv[3], "w");
    if (!f) {
        perror("gen: stamp file");
        return 1;
    }
    fprintf(f, "%ld.%09ld\n", (long)ts.tv_sec, ts.tv_nsec);
    fclose(f);

    char line[LINE];
    if (!block) {
        for (long i = 1; i <= count; i++) {
            make_line(line, i);
            write_all(line, LINE);
        }
        return 0;
    }
    static char buf[BLOCK + LINE];
    size_t used = 0;
    for (long i = 1; i <= count; i++) {
        make_line(buf + used, i);
        used += LINE;
        if (used >= BLOCK) {
            write_all(buf, BLOCK);
            memmove(buf, buf + BLOCK, used - BLOCK);
            used -= BLOCK;
        }
    }
    write_all(buf, used);
    return 0;
}
