/* Unit tests for daemon/notify.c against a local AF_UNIX datagram socket
 * standing in for systemd's NOTIFY_SOCKET. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/log.h"
#include "daemon/notify.h"

struct sock {
    int fd;
    char path[108];
};

static int setup(void **st)
{
    struct sock *s = calloc(1, sizeof(*s));
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = 2 };

    if (s == NULL)
        return -1;
    snprintf(s->path, sizeof(s->path), "/tmp/tandem-notify-%d.sock", (int)getpid());
    unlink(s->path);
    s->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0)
        return -1;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s->path);
    if (bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return -1;
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setenv("NOTIFY_SOCKET", s->path, 1);
    *st = s;
    return 0;
}

static int teardown(void **st)
{
    struct sock *s = *st;

    unsetenv("NOTIFY_SOCKET");
    close(s->fd);
    unlink(s->path);
    free(s);
    return 0;
}

static void expect_msg(struct sock *s, const char *want)
{
    char buf[1024];
    ssize_t n = recv(s->fd, buf, sizeof(buf) - 1, 0);

    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void test_messages(void **st)
{
    struct sock *s = *st;
    char longer[600];

    assert_int_equal(notify_ready(NULL), 0);
    expect_msg(s, "READY=1");
    assert_int_equal(notify_ready("syncing crm-sync\nsecond line"), 0);
    expect_msg(s, "READY=1\nSTATUS=syncing crm-sync second line");
    assert_int_equal(notify_status("journal depth %d, dlq %d", 12, 0), 0);
    expect_msg(s, "STATUS=journal depth 12, dlq 0");
    log_add_secret("hunter2-secret");
    assert_int_equal(notify_status("connect failed: password=%s", "hunter2-secret"), 0);
    expect_msg(s, "STATUS=connect failed: password=***");
    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    assert_int_equal(notify_status("%s", longer), 0);
    {
        char buf[1024];
        ssize_t n = recv(s->fd, buf, sizeof(buf), 0);

        assert_int_equal(n, (ssize_t)strlen("STATUS=") + 255);
    }
    assert_int_equal(notify_watchdog(), 0);
    expect_msg(s, "WATCHDOG=1");
    assert_int_equal(notify_stopping(), 0);
    expect_msg(s, "STOPPING=1");
}

static void test_without_systemd(void **st)
{
    char pid[32];

    (void)st;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(notify_ready("x"), 0);
    assert_int_equal(notify_status("x %d", 1), 0);
    assert_int_equal(notify_watchdog(), 0);
    assert_int_equal(notify_stopping(), 0);

    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    assert_int_equal(notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "5000000", 1);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(notify_watchdog_usec(), 5000000);
    setenv("WATCHDOG_PID", "1", 1);  /* meant for another process */
    assert_int_equal(notify_watchdog_usec(), 0);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_messages, setup, teardown),
        cmocka_unit_test(test_without_systemd),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
