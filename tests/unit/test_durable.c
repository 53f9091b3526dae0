/* test_durable.c: the WAL sync worker reports on the loop, once per start,
 * with the fdatasync's result; freeing while a sync runs is safe. The
 * checkpoint worker copies the WAL so the daemon's connection, which no
 * longer checkpoints itself, restarts it. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "daemon/durable.h"
#include "state/state.h"

struct fx {
    char dir[256];
    char state[300];
    char wal[310];
    uv_loop_t loop;
    int calls, last_err;
};

static int setup(void **ctx)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    const char *t = getenv("TMPDIR");

    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "%s/tandem-durable-XXXXXX",
             t != NULL && t[0] != '\0' ? t : "/tmp");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->state, sizeof(fx->state), "%s/state.db", fx->dir);
    snprintf(fx->wal, sizeof(fx->wal), "%s-wal", fx->state);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    *ctx = fx;
    return 0;
}

static int teardown(void **ctx)
{
    struct fx *fx = *ctx;

    uv_loop_close(&fx->loop);
    unlink(fx->wal);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static void on_done(void *arg, int err)
{
    struct fx *fx = arg;

    fx->calls++;
    fx->last_err = err;
}

static void write_wal(struct fx *fx)
{
    int fd = open(fx->wal, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, "frames", 6), 6);
    close(fd);
}

static void test_sync_reports_once(void **ctx)
{
    struct fx *fx = *ctx;
    struct durable *d = NULL;
    struct err e = { 0 };

    write_wal(fx);
    assert_int_equal(durable_new(&d, &fx->loop, fx->state, on_done, fx, &e), 0);
    assert_false(durable_busy(d));
    assert_int_equal(durable_start(d), 0);
    assert_true(durable_busy(d));
    assert_int_equal(durable_start(d), -EBUSY);     /* one at a time */
    assert_int_equal(fx->calls, 0);                 /* reported on the loop */
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->calls, 1);
    assert_int_equal(fx->last_err, 0);
    assert_false(durable_busy(d));
    assert_int_equal(durable_start(d), 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->calls, 2);
    assert_int_equal(durable_sync_now(d), 0);
    durable_free(d);
}

static void test_missing_wal_is_an_error(void **ctx)
{
    struct fx *fx = *ctx;
    struct durable *d = NULL;
    struct err e = { 0 };

    assert_int_equal(durable_new(&d, &fx->loop, fx->state, on_done, fx, &e), 0);
    assert_int_equal(durable_start(d), 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->calls, 1);
    assert_int_equal(fx->last_err, ENOENT);
    assert_int_equal(durable_sync_now(d), ENOENT);
    durable_free(d);
}

static void test_free_while_busy(void **ctx)
{
    struct fx *fx = *ctx;
    struct durable *d = NULL;
    struct err e = { 0 };

    write_wal(fx);
    assert_int_equal(durable_new(&d, &fx->loop, fx->state, on_done, fx, &e), 0);
    assert_int_equal(durable_start(d), 0);
    durable_free(d);                    /* freed when the sync ends */
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->calls, 0);     /* and its report dropped */
}

/* Commits n meta rows of 4 KiB each: about n/2 WAL frames of 8 KiB. The
 * value changes with `from` (a write of the same bytes writes no page). */
static void commit_rows(struct state *st, int from, int n)
{
    struct err e = { 0 };
    char k[32], v[4096];

    memset(v, 'a' + from % 26, sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    assert_int_equal(state_begin(st, &e), 0);
    for (int i = from; i < from + n; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        assert_int_equal(state_meta_set(st, k, v, &e), 0);
    }
    assert_int_equal(state_commit(st, &e), 0);
}

static void remove_state_files(struct fx *fx)
{
    static const char *const ext[] = { "", "-shm", ".lock" };
    char p[330];

    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", fx->state, ext[i]);
        unlink(p);
    }
}

/* The state as the daemon opens it: exclusive, commits synced elsewhere,
 * checkpoints left to the worker. */
static struct state *daemon_state(struct fx *fx)
{
    struct state *st = NULL;
    struct err e = { 0 };

    assert_int_equal(state_open(&st, fx->state, STATE_EXCLUSIVE, &e), 0);
    assert_int_equal(state_checkpoint_elsewhere(st, &e), 0);
    assert_int_equal(state_set_synchronous(st, false, &e), 0);
    return st;
}

static void test_checkpoint_elsewhere(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *st = NULL;
    struct durable *d = NULL;
    struct err e = { 0 };
    int before;

    st = daemon_state(fx);
    /* Past SQLite's autocheckpoint size, and nothing checkpointed it. */
    commit_rows(st, 0, 2400);
    before = state_wal_frames(st);
    assert_true(before > 1100);
    commit_rows(st, 2400, 10);
    assert_true(state_wal_frames(st) > before);
    assert_int_equal(durable_new(&d, &fx->loop, fx->state, on_done, fx, &e), 0);
    assert_int_equal(durable_checkpoint(d), 0);
    assert_int_equal(durable_checkpoint(d), 0);     /* one runs: a no-op */
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(fx->calls, 0);                 /* not a sync report */
    /* Every frame was copied: the next commit starts the WAL over. */
    commit_rows(st, 1, 2);
    assert_true(state_wal_frames(st) < 10);
    assert_int_equal(durable_checkpoint(d), 0);
    durable_free(d);                    /* freed when the checkpoint ends */
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    state_close(st);
    remove_state_files(fx);
}

/* The daemon's own connection finishes a checkpoint between transactions
 * (the worker's never catch up with a busy writer): the WAL starts over. */
static void test_checkpoint_here(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *st = NULL;
    struct err e = { 0 };

    st = daemon_state(fx);
    commit_rows(st, 0, 400);
    assert_true(state_wal_frames(st) > 150);
    assert_int_equal(state_begin(st, &e), 0);
    assert_int_equal(state_checkpoint_here(st, &e), -EBUSY);   /* not mid-transaction */
    assert_int_equal(state_commit(st, &e), 0);
    assert_int_equal(state_checkpoint_here(st, &e), 0);
    commit_rows(st, 1, 2);
    assert_true(state_wal_frames(st) < 10);
    state_close(st);
    remove_state_files(fx);
}

/* A command's connection (shared) checkpoints for itself. */
static void test_checkpoint_elsewhere_daemon_only(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *st = NULL;
    struct err e = { 0 };

    assert_int_equal(state_open(&st, fx->state, STATE_SHARED, &e), 0);
    assert_int_equal(state_checkpoint_elsewhere(st, &e), -EINVAL);
    state_close(st);
    remove_state_files(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sync_reports_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_wal_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_while_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_elsewhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_here, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_elsewhere_daemon_only, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
