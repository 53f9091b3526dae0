/* pgwatch.h: watches a libpq socket on the libuv loop. The socket of a
 * connection may change while it connects (several addresses), so the
 * uv_poll handle is re-created when the fd changes and freed in its close
 * callback. */
#ifndef TANDEM_PGWATCH_H
#define TANDEM_PGWATCH_H

#include <uv.h>

struct pgwatch;
typedef void (*pgwatch_cb)(void *arg, int events);

struct pgwatch {
    uv_loop_t *loop;
    uv_poll_t *poll;    /* NULL when not watching */
    int fd;
    pgwatch_cb cb;
    void *arg;
};

void pgwatch_init(struct pgwatch *w, uv_loop_t *loop, pgwatch_cb cb, void *arg);
/* Watches fd for events (UV_READABLE|UV_WRITABLE). 0 or a uv error. */
int pgwatch_set(struct pgwatch *w, int fd, int events);
/* Stops reporting events until the next pgwatch_set; keeps the handle. */
void pgwatch_pause(struct pgwatch *w);
/* Stops watching and closes the handle; safe to call twice. Must be
 * called before the connection's socket is closed (PQfinish). */
void pgwatch_stop(struct pgwatch *w);

#endif
