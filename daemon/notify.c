#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "log.h"

#define NOTIFY_STATUS_MAX 256

static int notify_send(const char *msg)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    int rc;

    if (sock == NULL || sock[0] == '\0')
        return 0;
    rc = sd_notify(0, msg);
    return rc < 0 ? rc : 0;
}

/* STATUS= is one line of text; keep it so and free of secrets. */
static void status_clean(char *s, size_t cap)
{
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    log_redact(s, cap);
}

int notify_ready(const char *status)
{
    char st[NOTIFY_STATUS_MAX];
    char msg[NOTIFY_STATUS_MAX + 32];

    if (status == NULL)
        return notify_send("READY=1");
    snprintf(st, sizeof(st), "%s", status);
    status_clean(st, sizeof(st));
    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", st);
    return notify_send(msg);
}

int notify_status(const char *fmt, ...)
{
    char st[NOTIFY_STATUS_MAX];
    char msg[NOTIFY_STATUS_MAX + 16];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(st, sizeof(st), fmt, ap);
    va_end(ap);
    status_clean(st, sizeof(st));
    snprintf(msg, sizeof(msg), "STATUS=%s", st);
    return notify_send(msg);
}

int notify_stopping(void)
{
    return notify_send("STOPPING=1");
}

int notify_watchdog(void)
{
    return notify_send("WATCHDOG=1");
}

uint64_t notify_watchdog_usec(void)
{
    uint64_t usec = 0;

    if (sd_watchdog_enabled(0, &usec) <= 0)
        return 0;
    return usec;
}
