/* notify_listen: a stand-in for systemd's notification socket in tests.
 * Binds a unix datagram socket at PATH and prints every message it gets,
 * one per line, until SECONDS have passed. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char buf[4096];
    int fd, seconds;
    time_t end;

    if (argc != 3 || strlen(argv[1]) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "usage: notify_listen PATH SECONDS\n");
        return 2;
    }
    seconds = atoi(argv[2]);
    strcpy(sa.sun_path, argv[1]);
    unlink(argv[1]);
    fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("notify_listen");
        return 1;
    }
    end = time(NULL) + seconds;
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (time(NULL) < end) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t n;

        if (poll(&p, 1, 200) <= 0)
            continue;
        n = recv(fd, buf, sizeof(buf) - 1, 0);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
            printf("%s\n", line);
    }
    close(fd);
    unlink(argv[1]);
    return 0;
}
