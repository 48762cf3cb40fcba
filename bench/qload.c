/* Load client for the queue benchmark: THREADS keep-alive connections POST the same
 * request TOTAL times in all, as fast as the server answers, so that the enqueue rate
 * measured is the host's and not a Python client's (http.client on 8 threads tops
 * out near the figure it is meant to measure). Prints one JSON object: wall time,
 * answers by status, its own CPU and every latency in microseconds.
 *
 *   qload HOST PORT TOKEN PATH THREADS TOTAL BODY_BYTES
 *
 * Each thread connects and sends one untimed request before the common start. The
 * answer must carry Content-Length (the host's JSON answers do).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *g_host;
static int g_port;
static char *g_req;
static size_t g_req_len;
static pthread_barrier_t g_start;

struct worker {
    pthread_t th;
    int fd;
    long count;
    long *lat_us;
    long ok, other;
    int first_bad_status;
    char first_bad[256];
    int failed;
    char error[256];
    double end;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int connect_to(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(g_port);
    if (inet_pton(AF_INET, g_host, &sa.sin_addr) != 1) return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* One request and its whole answer; returns the HTTP status, or -1 (w->error says why). */
static int exchange(struct worker *w) {
    size_t off = 0;
    while (off < g_req_len) {
        ssize_t n = write(w->fd, g_req + off, g_req_len - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            snprintf(w->error, sizeof w->error, "write: %s", strerror(errno));
            return -1;
        }
        off += n;
    }
    char buf[8192];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have == sizeof buf - 1) {
            snprintf(w->error, sizeof w->error, "answer head larger than %zu bytes", sizeof buf);
            return -1;
        }
        ssize_t n = read(w->fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0) {
            snprintf(w->error, sizeof w->error, "read: %s", n == 0 ? "connection closed" : strerror(errno));
            return -1;
        }
        have += n;
        buf[have] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        snprintf(w->error, sizeof w->error, "not an HTTP answer: %.60s", buf);
        return -1;
    }
    long clen = -1;
    for (char *p = strstr(buf, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, "content-length:", 15) == 0) clen = strtol(p + 17, NULL, 10);
    }
    if (clen < 0) {
        snprintf(w->error, sizeof w->error, "answer without Content-Length (status %d)", status);
        return -1;
    }
    size_t body_have = have - (size_t)(end + 4 - buf);
    if (status != 202 && !w->first_bad_status) {
        w->first_bad_status = status;
        snprintf(w->first_bad, sizeof w->first_bad, "%.200s", end + 4);
    }
    while ((long)body_have < clen) {
        ssize_t n = read(w->fd, buf, sizeof buf - 1 < (size_t)(clen - body_have) ? sizeof buf - 1 : (size_t)(clen - body_have));
        if (n <= 0) {
            snprintf(w->error, sizeof w->error, "read body: %s", n == 0 ? "connection closed" : strerror(errno));
            return -1;
        }
        body_have += n;
    }
    return status;
}

static void *run(void *arg) {
    struct worker *w = arg;
    int warm = exchange(w);
    if (warm < 0) w->failed = 1;
    pthread_barrier_wait(&g_start);
    for (long i = 0; i < w->count && !w->failed; i++) {
        double t = now();
        int status = exchange(w);
        if (status < 0) {
            w->failed = 1;
            break;
        }
        w->lat_us[i] = (long)((now() - t) * 1e6);
        if (status == 202) w->ok++;
        else w->other++;
    }
    w->end = now();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: qload HOST PORT TOKEN PATH THREADS TOTAL BODY_BYTES\n");
        return 2;
    }
    g_host = argv[1];
    g_port = atoi(argv[2]);
    const char *token = argv[3], *path = argv[4];
    int threads = atoi(argv[5]);
    long total = atol(argv[6]);
    long body_bytes = atol(argv[7]);
    if (threads < 1 || total < 1 || body_bytes < 0) {
        fprintf(stderr, "qload: THREADS and TOTAL must be positive, BODY_BYTES not negative\n");
        return 2;
    }
    char *body = malloc(body_bytes + 1);
    memset(body, 'x', body_bytes);
    body[body_bytes] = 0;
    if (asprintf(&g_req,
                 "POST %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                 "Content-Type: application/octet-stream\r\nContent-Length: %ld\r\n\r\n%s",
                 path, g_host, g_port, token, body_bytes, body) < 0)
        return 1;
    g_req_len = strlen(g_req);
    struct worker *ws = calloc(threads, sizeof *ws);
    pthread_barrier_init(&g_start, NULL, threads + 1);
    for (int i = 0; i < threads; i++) {
        ws[i].count = total / threads + (i < total % threads ? 1 : 0);
        ws[i].lat_us = calloc(ws[i].count + 1, sizeof(long));
        ws[i].fd = connect_to();
        if (ws[i].fd < 0) {
            fprintf(stderr, "qload: cannot connect to %s:%d: %s\n", g_host, g_port, strerror(errno));
            return 1;
        }
    }
    for (int i = 0; i < threads; i++) pthread_create(&ws[i].th, NULL, run, &ws[i]);
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    pthread_barrier_wait(&g_start);
    double t0 = now();
    double last = t0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].th, NULL);
        if (ws[i].end > last) last = ws[i].end;
    }
    getrusage(RUSAGE_SELF, &r1);
    long ok = 0, other = 0;
    const char *error = NULL, *bad = NULL;
    int bad_status = 0;
    for (int i = 0; i < threads; i++) {
        ok += ws[i].ok;
        other += ws[i].other;
        if (ws[i].failed && !error) error = ws[i].error;
        if (ws[i].first_bad_status && !bad_status) {
            bad_status = ws[i].first_bad_status;
            bad = ws[i].first_bad;
        }
    }
    double us = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6;
    double sy = (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    printf("{\"wall_s\": %.6f, \"ok\": %ld, \"other\": %ld, \"client_user_s\": %.4f, \"client_sys_s\": %.4f",
           last - t0, ok, other, us, sy);
    printf(", \"error\": ");
    if (error) {
        putchar('"');
        for (const char *p = error; *p; p++) putchar(*p == '"' || *p == '\\' ? '\'' : *p);
        putchar('"');
    } else {
        printf("null");
    }
    printf(", \"bad_status\": %d, \"bad_body\": \"", bad_status);
    for (const char *p = bad ? bad : ""; *p; p++) putchar(*p == '"' || *p == '\\' || *p < 32 ? '\'' : *p);
    printf("\", \"lat_us\": [");
    int first = 1;
    for (int i = 0; i < threads; i++)
        for (long k = 0; k < ws[i].ok + ws[i].other; k++) {
            printf(first ? "%ld" : ",%ld", ws[i].lat_us[k]);
            first = 0;
        }
    printf("]}\n");
    return error ? 1 : 0;
}
