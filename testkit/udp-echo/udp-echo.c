/* udp-echo PORT: answers each UDP datagram on PORT (IPv4, every address) with
 * "HOSTNAME DATAGRAM", so that a test sees which replica answered. The test images carry
 * it (their busybox has no UDP server); built static: the images have no C library. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: udp-echo PORT\n");
        return 2;
    }
    int port = atoi(argv[1]);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "udp-echo: invalid port %s\n", argv[1]);
        return 2;
    }
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0) {
        strcpy(host, "unknown");
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("udp-echo: socket");
        return 1;
    }
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    address.sin_port = htons((unsigned short)port);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        perror("udp-echo: bind");
        return 1;
    }
    size_t prefix = strlen(host) + 1;
    char answer[65536];
    memcpy(answer, host, prefix - 1);
    answer[prefix - 1] = ' ';
    for (;;) {
        struct sockaddr_in client;
        socklen_t length = sizeof client;
        ssize_t received = recvfrom(fd, answer + prefix, sizeof answer - prefix, 0,
                                    (struct sockaddr *)&client, &length);
        if (received < 0) {
            perror("udp-echo: recvfrom");
            continue;
        }
        if (sendto(fd, answer, prefix + (size_t)received, 0, (struct sockaddr *)&client,
                   length) < 0) {
            perror("udp-echo: sendto");
        }
    }
}
