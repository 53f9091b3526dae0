/* Unit tests for daemon/health.c: the degraded-reasons set. */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/health.h"
#include "daemon/log.h"

/* Parses the JSON and checks it against the HTTP status it came with. */
static json_t *health_doc(struct health *h, int want_status)
{
    int status = 0;
    char *text = health_json(h, &status);
    json_error_t jerr;
    json_t *doc;

    assert_non_null(text);
    assert_int_equal(status, want_status);
    doc = json_loads(text, 0, &jerr);
    if (doc == NULL)
        fail_msg("invalid json %s: %s", text, jerr.text);
    free(text);
    assert_string_equal(json_string_value(json_object_get(doc, "status")),
                        want_status == 200 ? "ok" : "degraded");
    return doc;
}

static void test_ok(void **st)
{
    struct health *h = NULL;
    char *text;
    int status = 0;

    (void)st;
    assert_int_equal(health_new(&h), 0);
    assert_int_equal(health_count(h), 0);
    text = health_json(h, &status);
    assert_string_equal(text, "{\"status\":\"ok\"}");
    assert_int_equal(status, 200);
    free(text);
    text = health_json(h, NULL);
    assert_non_null(text);
    free(text);
    health_free(h);
    health_free(NULL);
}

static void test_set_clear(void **st)
{
    struct health *h = NULL;
    json_t *doc, *reasons, *r;

    (void)st;
    assert_int_equal(health_new(&h), 0);
    assert_int_equal(health_set(h, HEALTH_ENDPOINT_DOWN, "crm",
                                "endpoint crm: connection refused"), 0);
    assert_int_equal(health_set(h, HEALTH_ENDPOINT_DOWN, "app",
                                "endpoint app: timeout"), 0);
    assert_int_equal(health_set(h, HEALTH_DLQ_NONEMPTY, NULL, "3 open entries"), 0);
    assert_int_equal(health_set(h, HEALTH_NOT_READY, "", NULL), 0);
    /* Same (code, subject): detail replaced, no duplicate. */
    assert_int_equal(health_set(h, HEALTH_DLQ_NONEMPTY, NULL, "4 open entries"), 0);
    assert_int_equal(health_set(h, "bogus", "x", "y"), -EINVAL);
    assert_int_equal(health_set(h, NULL, "x", "y"), -EINVAL);
    assert_int_equal(health_count(h), 4);

    doc = health_doc(h, 503);
    reasons = json_object_get(doc, "reasons");
    assert_int_equal(json_array_size(reasons), 4);
    /* Sorted by code then subject. */
    r = json_array_get(reasons, 0);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "dlq_nonempty");
    assert_string_equal(json_string_value(json_object_get(r, "detail")), "4 open entries");
    assert_null(json_object_get(r, "subject"));
    r = json_array_get(reasons, 1);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "endpoint_down");
    assert_string_equal(json_string_value(json_object_get(r, "subject")), "app");
    assert_string_equal(json_string_value(json_object_get(r, "detail")), "endpoint app: timeout");
    r = json_array_get(reasons, 2);
    assert_string_equal(json_string_value(json_object_get(r, "subject")), "crm");
    r = json_array_get(reasons, 3);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "not_ready");
    assert_string_equal(json_string_value(json_object_get(r, "detail")), "not_ready");
    json_decref(doc);

    health_clear(h, HEALTH_ENDPOINT_DOWN, "app");
    health_clear(h, HEALTH_ENDPOINT_DOWN, "app");      /* absent: fine */
    health_clear(h, HEALTH_DRIFT, NULL);
    health_clear(h, "bogus", NULL);
    health_clear(NULL, HEALTH_DRIFT, NULL);
    assert_int_equal(health_count(h), 3);
    health_clear(h, HEALTH_DLQ_NONEMPTY, "");
    health_clear(h, HEALTH_NOT_READY, "");
    assert_int_equal(health_count(h), 1);
    doc = health_doc(h, 503);
    r = json_array_get(json_object_get(doc, "reasons"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "subject")), "crm");
    json_decref(doc);

    /* NULL subject clears every subject of the code. */
    assert_int_equal(health_set(h, HEALTH_ENDPOINT_DOWN, "app", NULL), 0);
    assert_int_equal(health_set(h, HEALTH_CANARY_OVERDUE, "customers", NULL), 0);
    health_clear(h, HEALTH_ENDPOINT_DOWN, NULL);
    assert_int_equal(health_count(h), 1);
    doc = health_doc(h, 503);
    r = json_array_get(json_object_get(doc, "reasons"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "detail")), "customers");
    json_decref(doc);
    health_clear(h, HEALTH_CANARY_OVERDUE, NULL);
    json_decref(health_doc(h, 200));
    health_free(h);
}

static void test_detail_hygiene(void **st)
{
    struct health *h = NULL;
    char long_detail[2000];
    const char *d;
    json_t *doc, *r;

    (void)st;
    assert_int_equal(health_new(&h), 0);
    log_add_secret("s3cr3t-token");
    assert_int_equal(health_set(h, HEALTH_ENDPOINT_DOWN, "crm",
                                "auth failed with Bearer s3cr3t-token\nretrying"), 0);
    /* "é" straddles the cut: the detail stays valid UTF-8. */
    memset(long_detail, 'x', sizeof(long_detail));
    memcpy(long_detail + HEALTH_DETAIL_MAX - 1, "\xc3\xa9", 2);
    long_detail[sizeof(long_detail) - 1] = '\0';
    assert_int_equal(health_set(h, HEALTH_DRIFT, "customers", long_detail), 0);
    /* Invalid UTF-8 in a subject never turns /healthz into a 500. */
    assert_int_equal(health_set(h, HEALTH_SLOT_RETENTION, "bad\xff", "x"), 0);

    doc = health_doc(h, 503);
    r = json_array_get(json_object_get(doc, "reasons"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "drift");
    d = json_string_value(json_object_get(r, "detail"));
    assert_non_null(d);
    assert_true(strlen(d) <= HEALTH_DETAIL_MAX);
    assert_int_equal(strlen(d), HEALTH_DETAIL_MAX - 1);
    r = json_array_get(json_object_get(doc, "reasons"), 1);
    d = json_string_value(json_object_get(r, "detail"));
    assert_string_equal(d, "auth failed with Bearer *** retrying");
    r = json_array_get(json_object_get(doc, "reasons"), 2);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "slot_retention");
    json_decref(doc);
    health_free(h);
}

static void *flapper(void *arg)
{
    struct health *h = arg;

    for (int i = 0; i < 5000; i++) {
        health_set(h, HEALTH_ENDPOINT_DOWN, (i & 1) ? "a" : "b", "down");
        free(health_json(h, NULL));
        health_clear(h, HEALTH_ENDPOINT_DOWN, (i & 1) ? "a" : "b");
    }
    return NULL;
}

static void test_threads(void **st)
{
    struct health *h = NULL;
    pthread_t t[4];

    (void)st;
    assert_int_equal(health_new(&h), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, flapper, h), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(health_count(h), 0);
    health_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_set_clear),
        cmocka_unit_test(test_detail_hygiene),
        cmocka_unit_test(test_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
