#include "pgwatch.h"

#include <stdlib.h>

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct pgwatch *w = h->data;

    /* An error on the fd is reported to the owner as readable: libpq's
     * next call reports the real problem. */
    if (status < 0)
        events = UV_READABLE;
    w->cb(w->arg, events);
}

static void on_close(uv_handle_t *h)
{
    free(h);
}

void pgwatch_init(struct pgwatch *w, uv_loop_t *loop, pgwatch_cb cb, void *arg)
{
    w->loop = loop;
    w->poll = NULL;
    w->fd = -1;
    w->cb = cb;
    w->arg = arg;
}

int pgwatch_set(struct pgwatch *w, int fd, int events)
{
    int rc;

    if (w->poll != NULL && w->fd != fd)
        pgwatch_stop(w);
    if (w->poll == NULL) {
        w->poll = malloc(sizeof(*w->poll));
        if (w->poll == NULL)
            return UV_ENOMEM;
        rc = uv_poll_init(w->loop, w->poll, fd);
        if (rc != 0) {
            free(w->poll);
            w->poll = NULL;
            return rc;
        }
        w->poll->data = w;
        w->fd = fd;
    }
    return uv_poll_start(w->poll, events, on_poll);
}

void pgwatch_pause(struct pgwatch *w)
{
    if (w->poll != NULL)
        uv_poll_stop(w->poll);
}

void pgwatch_stop(struct pgwatch *w)
{
    if (w->poll == NULL)
        return;
    uv_poll_stop(w->poll);
    uv_close((uv_handle_t *)w->poll, on_close);
    w->poll = NULL;
    w->fd = -1;
}
