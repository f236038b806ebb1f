/* tcpblast: one TCP stream, the same on every path bench/docker-overlay.sh measures (built
 * static, so it runs in the test hosts' namespaces and in Docker's containers alike).
 *
 *   tcpblast recv PORT           listen on PORT, accept one connection, read to the end of
 *                                stream, close; prints "BYTES SECONDS" (accept to end)
 *   tcpblast send ADDR PORT MIB  connect to ADDR:PORT (retrying for up to 10 s while it is
 *                                refused: the receiver may still be starting), write MIB MiB
 *                                in 64 KiB writes, shut down the write side, wait for the
 *                                receiver's close; prints "BYTES SECONDS" from the connection
 *                                to the receiver's close (its end of stream)
 *
 * Every read and write gives up after 30 s (SO_RCVTIMEO, SO_SNDTIMEO); the receiver waits
 * at most 30 s for its connection. Exit status 1 on any error.
 * Build: gcc -O2 -static -o tcpblast bench/tcpblast.c
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

static char buffer[CHUNK];

static void die(const char *what) {
    fprintf(stderr, "tcpblast: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void timeouts(int fd) {
    struct timeval limit = {.tv_sec = 30};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit) < 0)
        die("setsockopt");
}

/* Reads to the end of stream; the number of bytes read. */
static long long drain(int fd) {
    long long total = 0;
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (n == 0)
            return total;
        total += n;
    }
}

static int receive(int port) {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0)
        die("socket");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0)
        die("bind");
    if (listen(listener, 1) < 0)
        die("listen");
    struct pollfd ready = {.fd = listener, .events = POLLIN};
    int polled = poll(&ready, 1, 30000);
    if (polled < 0)
        die("poll");
    if (polled == 0) {
        fprintf(stderr, "tcpblast: no connection within 30 s\n");
        return 1;
    }
    int fd = accept(listener, NULL, NULL);
    if (fd < 0)
        die("accept");
    double started = now();
    timeouts(fd);
    long long total = drain(fd);
    double ended = now();
    close(fd);
    close(listener);
    printf("%lld %.6f\n", total, ended - started);
    return 0;
}

static int send_stream(const char *host, int port, long mib) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
        fprintf(stderr, "tcpblast: not an IPv4 address: %s\n", host);
        return 1;
    }
    int fd = -1;
    for (int attempt = 0;; attempt++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket");
        timeouts(fd);
        if (connect(fd, (struct sockaddr *)&address, sizeof address) == 0)
            break;
        if (errno != ECONNREFUSED || attempt >= 1000)
            die("connect");
        close(fd);
        usleep(10000);
    }
    double started = now();
    long long total = (long long)mib << 20, sent = 0;
    while (sent < total) {
        ssize_t n = write(fd, buffer, CHUNK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        sent += n;
    }
    if (shutdown(fd, SHUT_WR) < 0)
        die("shutdown");
    drain(fd); /* the receiver closes after its end of stream */
    double ended = now();
    close(fd);
    printf("%lld %.6f\n", sent, ended - started);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "recv") == 0)
        return receive(atoi(argv[2]));
    if (argc == 5 && strcmp(argv[1], "send") == 0)
        return send_stream(argv[2], atoi(argv[3]), atol(argv[4]));
    fprintf(stderr, "usage: tcpblast recv PORT | tcpblast send ADDR PORT MIB\n");
    return 2;
}
