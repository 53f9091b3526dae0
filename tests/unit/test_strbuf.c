/* test_strbuf.c: strbuf's JSON string escaping, against fixed cases and a
 * byte-at-a-time reference over random strings (the fast path takes 8
 * bytes at a time, so escapes at every position of a word matter). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "daemon/strbuf.h"

static char *encode(const char *s, size_t n)
{
    struct strbuf b;
    char *out;

    strbuf_init(&b);
    strbuf_add_json_string(&b, s, n);
    out = strdup(strbuf_cstr(&b));
    strbuf_free(&b);
    assert_non_null(out);
    return out;
}

/* The escaping RFC 8259 asks for, one byte at a time. */
static void reference(const unsigned char *s, size_t n, char *out)
{
    *out++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];

        if (c == '"' || c == '\\') {
            *out++ = '\\';
            *out++ = (char)c;
        } else if (c == '\n') {
            out += sprintf(out, "\\n");
        } else if (c == '\r') {
            out += sprintf(out, "\\r");
        } else if (c == '\t') {
            out += sprintf(out, "\\t");
        } else if (c < 0x20) {
            out += sprintf(out, "\\u%04x", c);
        } else {
            *out++ = (char)c;
        }
    }
    *out++ = '"';
    *out = '\0';
}

static void test_fixed(void **ctx)
{
    static const struct { const char *in, *out; } t[] = {
        { "", "\"\"" },
        { "plain", "\"plain\"" },
        { "exactly8", "\"exactly8\"" },
        { "a\"b", "\"a\\\"b\"" },
        { "back\\slash", "\"back\\\\slash\"" },
        { "1234567\n", "\"1234567\\n\"" },
        { "12345678\t", "\"12345678\\t\"" },
        { "\r1234567812345678", "\"\\r1234567812345678\"" },
        { "bell\a, esc\x1b", "\"bell\\u0007, esc\\u001b\"" },
        { "caf\xc3\xa9 \xf0\x9f\x98\x80 ok", "\"caf\xc3\xa9 \xf0\x9f\x98\x80 ok\"" },
        { "\x7f\x20~", "\"\x7f ~\"" },
    };

    (void)ctx;
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char *got = encode(t[i].in, strlen(t[i].in));

        assert_string_equal(got, t[i].out);
        free(got);
    }
}

/* A NUL inside the value is data, escaped like any control byte. */
static void test_embedded_nul(void **ctx)
{
    char *got = encode("ab\0cdefghijk", 12);

    (void)ctx;
    assert_string_equal(got, "\"ab\\u0000cdefghijk\"");
    free(got);
}

static void test_random_against_reference(void **ctx)
{
    static const unsigned char alphabet[] = "ab \"\\\n\r\t\x01\x1f\x7f\x80\xc3\xa9~";
    unsigned char in[64];
    char want[64 * 6 + 3];
    uint32_t r = 12345;

    (void)ctx;
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(round % 41);

        for (size_t i = 0; i < n; i++) {
            r = r * 1103515245u + 12345u;
            /* Mostly plain letters, so long plain runs meet the odd escape. */
            in[i] = (r >> 16) % 4 ? (unsigned char)('a' + (r >> 20) % 26)
                                  : alphabet[(r >> 20) % (sizeof(alphabet) - 1)];
        }
        reference(in, n, want);
        char *got = encode((const char *)in, n);
        assert_string_equal(got, want);
        free(got);
    }
}

/* What is valid UTF-8 comes back from a JSON parser byte for byte. */
static void test_round_trip(void **ctx)
{
    const char *in = "line1\nline2\t\"quoted\" \\ \x01 caf\xc3\xa9 and more text";
    char *got = encode(in, strlen(in));
    json_t *j = json_loads(got, JSON_DECODE_ANY, NULL);

    (void)ctx;
    assert_non_null(j);
    assert_string_equal(json_string_value(j), in);
    json_decref(j);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed),
        cmocka_unit_test(test_embedded_nul),
        cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_round_trip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
