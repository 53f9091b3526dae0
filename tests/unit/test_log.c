/* test_log.c: one event per line in both formats, whatever the values
 * hold; levels filter; registered secrets never reach the output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "../../daemon/log.h"

/* Runs fn with the logger writing into a buffer; returns what it wrote. */
static char *capture(enum log_level min, enum log_format fmt, void (*fn)(void))
{
    static char buf[65536];
    FILE *f = fmemopen(buf, sizeof(buf), "w");

    assert_non_null(f);
    log_setup(min, fmt, f, "pipe");
    fn();
    fclose(f);
    log_setup(LOG_INFO, LOG_FORMAT_JSON, NULL, NULL);
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;

    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void emit_awkward(void)
{
    log_error("pgsink", "target said:\nsecond line", "err", "ERROR:  bad\nDETAIL: \"x\" = 1",
              "empty", "", "plain", "word", "none", NULL);
}

static void test_json_line(void **state)
{
    char *out = capture(LOG_INFO, LOG_FORMAT_JSON, emit_awkward);
    json_error_t je;
    json_t *ev;

    (void)state;
    assert_int_equal(count_lines(out), 1);
    ev = json_loads(out, 0, &je);
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(ev, "level")), "error");
    assert_string_equal(json_string_value(json_object_get(ev, "mod")), "pgsink");
    assert_string_equal(json_string_value(json_object_get(ev, "msg")), "target said:\nsecond line");
    assert_string_equal(json_string_value(json_object_get(ev, "pipeline")), "pipe");
    assert_string_equal(json_string_value(json_object_get(ev, "err")), "ERROR:  bad\nDETAIL: \"x\" = 1");
    assert_string_equal(json_string_value(json_object_get(ev, "empty")), "");
    assert_true(json_is_null(json_object_get(ev, "none")));
    assert_non_null(json_object_get(ev, "ts"));
    json_decref(ev);
}

static void test_text_line(void **state)
{
    char *out = capture(LOG_INFO, LOG_FORMAT_TEXT, emit_awkward);

    (void)state;
    assert_int_equal(count_lines(out), 1);
    assert_non_null(strstr(out, " error pgsink: target said:\\nsecond line pipeline=pipe"));
    assert_non_null(strstr(out, " err=\"ERROR:  bad\\nDETAIL: \\\"x\\\" = 1\""));
    assert_non_null(strstr(out, " empty=\"\""));
    assert_non_null(strstr(out, " plain=word"));
    assert_non_null(strstr(out, " none=null\n"));
}

static void emit_levels(void)
{
    log_debug("m", "debug event");
    log_info("m", "info event");
    log_warn("m", "warn event");
}

static void test_levels(void **state)
{
    char *out = capture(LOG_WARN, LOG_FORMAT_JSON, emit_levels);

    (void)state;
    assert_int_equal(count_lines(out), 1);
    assert_non_null(strstr(out, "warn event"));
    assert_null(strstr(out, "info event"));
    out = capture(LOG_DEBUG, LOG_FORMAT_TEXT, emit_levels);
    assert_int_equal(count_lines(out), 3);
    assert_int_equal(log_level_parse("warn"), LOG_WARN);
    assert_int_equal(log_level_parse("loud"), -1);
}

static void emit_secret(void)
{
    log_info("m", "connecting with s3cr3t-token", "conninfo", "password=s3cr3t-token host=x");
}

static void test_secrets(void **state)
{
    char *out;

    (void)state;
    log_add_secret("s3cr3t-token");
    out = capture(LOG_INFO, LOG_FORMAT_JSON, emit_secret);
    assert_null(strstr(out, "s3cr3t"));
    assert_non_null(strstr(out, "password=*** host=x"));
    out = capture(LOG_INFO, LOG_FORMAT_TEXT, emit_secret);
    assert_null(strstr(out, "s3cr3t"));
    assert_non_null(strstr(out, "connecting with ***"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_text_line),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_secrets),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
