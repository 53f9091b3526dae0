/* test_flatobj.c: the flat-object scanner (resolver/flatobj.c) and
 * canon_hash_flat: accepted shapes, every reason to bail, reuse, and a
 * seeded differential test against jansson and canon_hash. Also pins
 * canon_hash itself: its values are stored in users' state files. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "resolver/canon.h"
#include "resolver/flatobj.h"

/* ---- helpers ---- */

/* s[0..n) printable, for failure messages (four buffers in turn, so one
 * message can show several). */
static const char *show(const char *s, size_t n)
{
    static char bufs[4][4096];
    static unsigned turn;
    char *out = bufs[turn++ % 4];
    size_t o = 0;

    for (size_t i = 0; i < n && o + 8 < sizeof(bufs[0]); i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, sizeof(bufs[0]) - o, "\\x%02x", c);
    }
    out[o] = '\0';
    return out;
}

/* Scans text[0..len) from a heap copy of exactly len bytes, so ASan sees
 * any read past len. */
static int scan_exact(struct flatobj *o, const char *text, size_t len)
{
    char *copy = malloc(len ? len : 1);
    int rc;

    assert_non_null(copy);
    memcpy(copy, text, len);
    rc = flatobj_scan(o, copy, len);
    free(copy);
    return rc;
}

/* The differential check: if the scanner accepts text, jansson parses it to
 * the same pairs and canon_hash agrees with canon_hash_flat. Returns the
 * scan result. */
static int check_agrees(struct flatobj *o, const char *text, size_t len)
{
    char *z = malloc(len + 1), hj[CANON_HASH_HEX + 1], hf[CANON_HASH_HEX + 1];
    json_error_t je;
    json_t *j;
    int rc;

    assert_non_null(z);
    memcpy(z, text, len);
    z[len] = '\0';
    rc = flatobj_scan(o, z, len);
    if (rc != 0 && rc != 1)
        fail_msg("scan %s: rc %d", show(text, len), rc);
    if (rc == 0) {
        assert_int_equal(o->n, 0);
        free(z);
        return 0;
    }
    if (memchr(text, '\0', len) != NULL)
        fail_msg("scan accepted a NUL byte: %s", show(text, len));
    j = json_loads(z, 0, &je);
    if (j == NULL)
        fail_msg("scan accepted %s, jansson rejects: %s", show(text, len), je.text);
    if (!json_is_object(j) || json_object_size(j) != o->n)
        fail_msg("scan accepted %s with %zu pairs, jansson has %zu", show(text, len),
                 o->n, json_object_size(j));
    for (size_t i = 0; i < o->n; i++) {
        const struct flatobj_pair *p = &o->pairs[i];
        json_t *v = json_object_get(j, p->key);

        assert_int_equal(strlen(p->key), p->key_len);
        if (v == NULL)
            fail_msg("%s: key %s not in jansson's parse", show(text, len),
                     show(p->key, p->key_len));
        if (p->null) {
            assert_null(p->val);
            assert_int_equal(p->val_len, 0);
            if (!json_is_null(v))
                fail_msg("%s: key %s null, jansson says otherwise", show(text, len),
                         show(p->key, p->key_len));
        } else if (!json_is_string(v) || json_string_length(v) != p->val_len ||
                   memcmp(json_string_value(v), p->val, p->val_len) != 0 ||
                   p->val[p->val_len] != '\0') {
            fail_msg("%s: key %s: scan %s, jansson %s", show(text, len),
                     show(p->key, p->key_len), show(p->val, p->val_len),
                     json_is_string(v) ? json_string_value(v) : "(not a string)");
        }
    }
    for (size_t i = 1; i < o->n; i++)
        assert_true(strcmp(o->sorted[i - 1]->key, o->sorted[i]->key) < 0);
    canon_hash(j, hj);
    canon_hash_flat(o, hf);
    if (strcmp(hj, hf) != 0)
        fail_msg("%s: canon_hash %s, canon_hash_flat %s", show(text, len), hj, hf);
    json_decref(j);
    free(z);
    return 1;
}

struct buf {
    char *p;
    size_t n, cap;
};

static void put(struct buf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void putch(struct buf *b, int c)
{
    char ch = (char)c;

    put(b, &ch, 1);
}

/* ---- accepted shapes ---- */

struct want {
    const char *text;
    size_t n;
    const char *kv[12];     /* key, value (NULL: null), in document order */
};

static void check_want(struct flatobj *o, const struct want *w)
{
    size_t len = strlen(w->text);

    if (check_agrees(o, w->text, len) != 1)
        fail_msg("not accepted: %s", show(w->text, len));
    /* Again on an exact-size copy; the pairs then point into o->buf. */
    assert_int_equal(scan_exact(o, w->text, len), 1);
    assert_int_equal(o->n, w->n);
    for (size_t i = 0; i < w->n; i++) {
        const struct flatobj_pair *p = &o->pairs[i];
        const char *k = w->kv[2 * i], *v = w->kv[2 * i + 1];

        assert_int_equal(p->key_len, strlen(k));
        assert_memory_equal(p->key, k, p->key_len + 1);
        assert_true(p->key >= o->buf && p->key < o->buf + o->buf_len);
        if (v == NULL) {
            assert_true(p->null);
            assert_null(p->val);
        } else {
            assert_false(p->null);
            assert_int_equal(p->val_len, strlen(v));
            assert_memory_equal(p->val, v, p->val_len + 1);
        }
    }
}

static void test_accept(void **ctx)
{
    static const struct want t[] = {
        { "{}", 0, { NULL } },
        { " \t\r\n{ \t\r\n} \t\r\n", 0, { NULL } },
        { "{\"id\":\"12\",\"v\":\"value 12\",\"n\":null}", 3,
          { "id", "12", "v", "value 12", "n", NULL } },
        { " { \"a\" : \"b\" ,\n\t\"c\"\r:\nnull\t}\n", 2, { "a", "b", "c", NULL } },
        { "{\"\":\"\"}", 1, { "", "" } },
        { "{\"q\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"}", 1,
          { "q", "\" \\ / \b \f \n \r \t" } },
        { "{\"a\\nb\\u0041\":\"x\"}", 1, { "a\nbA", "x" } },
        { "{\"u\":\"\\u00e9\\u20AC\\uffff\\u0001\\u007F\\u0080\\u07ff\\u0800\"}", 1,
          { "u", "\xc3\xa9\xe2\x82\xac\xef\xbf\xbf\x01\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80" } },
        { "{\"s\":\"\\ud83d\\ude00|\\uD83D\\uDE00|\\ud800\\udc00|\\uDBFF\\uDFFF\"}", 1,
          { "s", "\xf0\x9f\x98\x80|\xf0\x9f\x98\x80|\xf0\x90\x80\x80|\xf4\x8f\xbf\xbf" } },
        { "{\"raw\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\xed\x9f\xbf"
          "\xee\x80\x80\x7f\"}", 1,
          { "raw", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\xed\x9f\xbf"
                   "\xee\x80\x80\x7f" } },
        { "{\"\xc3\xa9\":null}", 1, { "\xc3\xa9", NULL } },
        /* Past 8 bytes, the escape at every offset of the word-at-a-time
         * copy. */
        { "{\"long\":\"0123456789abcdef0123456789\\n0123456\\t01234567\\\"x\"}", 1,
          { "long", "0123456789abcdef0123456789\n0123456\t01234567\"x" } },
        { "{\"b\":\"2\",\"a\":\"1\",\"ab\":null,\"\":\"0\"}", 4,
          { "b", "2", "a", "1", "ab", NULL, "", "0" } },
        { "{\"n\":null,\"m\":null}", 2, { "n", NULL, "m", NULL } },
    };
    struct flatobj o = { 0 };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        check_want(&o, &t[i]);
    flatobj_free(&o);
}

/* Keys sorted by byte order (strcmp), whatever the document order. */
static void test_sorted(void **ctx)
{
    struct flatobj o = { 0 };
    const char *text = "{\"b\":\"\",\"\xc3\xa9\":\"\",\"a\":\"\",\"ab\":\"\",\"\":\"\",\"B\":null}";
    const char *want[] = { "", "B", "a", "ab", "b", "\xc3\xa9" };

    assert_int_equal(scan_exact(&o, text, strlen(text)), 1);
    assert_int_equal(o.n, 6);
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(o.sorted[i]->key, want[i]);
    flatobj_free(&o);
}

/* ---- rejections ---- */

struct reject {
    const char *text;
    size_t len;             /* 0: strlen(text) */
};

static void test_reject(void **ctx)
{
    static const struct reject t[] = {
        /* Other values: valid JSON the caller parses. */
        { "{\"a\":1}", 0 }, { "{\"a\":-1}", 0 }, { "{\"a\":0.5e3}", 0 },
        { "{\"a\":true}", 0 }, { "{\"a\":false}", 0 }, { "{\"a\":{}}", 0 },
        { "{\"a\":[]}", 0 }, { "{\"a\":{\"b\":\"c\"}}", 0 },
        { "{\"a\":\"b\",\"c\":12}", 0 }, { "{\"a\":null,\"b\":[\"c\"]}", 0 },
        /* Not an object. */
        { "", 0 }, { "  \n", 0 }, { "[]", 0 }, { "[{}]", 0 }, { "\"x\"", 0 },
        { "null", 0 }, { "1", 0 }, { "true", 0 },
        /* Duplicate keys, also through escapes and past insertion sort. */
        { "{\"a\":\"1\",\"a\":\"2\"}", 0 }, { "{\"a\":null,\"b\":\"x\",\"a\":null}", 0 },
        { "{\"a\":\"1\",\"\\u0061\":\"2\"}", 0 }, { "{\"\":\"1\",\"\":null}", 0 },
        { "{\"\xc3\xa9\":\"1\",\"\\u00e9\":\"2\"}", 0 },
        { "{\"0\":\"\",\"1\":\"\",\"2\":\"\",\"3\":\"\",\"4\":\"\",\"5\":\"\",\"6\":\"\","
          "\"7\":\"\",\"8\":\"\",\"9\":\"\",\"10\":\"\",\"11\":\"\",\"12\":\"\",\"13\":\"\","
          "\"14\":\"\",\"15\":\"\",\"16\":\"\",\"17\":\"\",\"5\":\"\"}", 0 },
        /* \u0000, which jansson rejects by default. */
        { "{\"a\":\"\\u0000\"}", 0 }, { "{\"a\\u0000\":\"b\"}", 0 },
        { "{\"a\":\"x\\u0000y\"}", 0 },
        /* Invalid UTF-8: stray continuation, overlong, surrogate, past
         * U+10FFFF, truncated, never valid bytes; in values, keys and out
         * of strings. */
        { "{\"a\":\"\x80\"}", 0 }, { "{\"a\":\"\xbf\"}", 0 }, { "{\"a\":\"\xc0\x80\"}", 0 },
        { "{\"a\":\"\xc1\xbf\"}", 0 }, { "{\"a\":\"\xe0\x80\x80\"}", 0 },
        { "{\"a\":\"\xe0\x9f\xbf\"}", 0 }, { "{\"a\":\"\xed\xa0\x80\"}", 0 },
        { "{\"a\":\"\xed\xbf\xbf\"}", 0 }, { "{\"a\":\"\xf0\x80\x80\x80\"}", 0 },
        { "{\"a\":\"\xf0\x8f\xbf\xbf\"}", 0 }, { "{\"a\":\"\xf4\x90\x80\x80\"}", 0 },
        { "{\"a\":\"\xf5\x80\x80\x80\"}", 0 }, { "{\"a\":\"\xff\"}", 0 },
        { "{\"a\":\"\xfe\"}", 0 }, { "{\"a\":\"\xe2\x82\"}", 0 }, { "{\"a\":\"\xc3\"}", 0 },
        { "{\"a\":\"\xf0\x9f\x98\"}", 0 }, { "{\"a\":\"\xc3\x28\"}", 0 },
        { "{\"a\":\"\xe2\x28\xa1\"}", 0 }, { "{\"a\":\"\xf0\x9f\x28\x80\"}", 0 },
        { "{\"\xc3\":\"b\"}", 0 }, { "{\"\xed\xa0\x80\":null}", 0 },
        { "\xc3\xa9{}", 0 }, { "{}\xc2\xa0", 0 }, { "\xef\xbb\xbf{}", 0 },
        { "{\"a\":\"\xe2\x82", 0 }, { "{\"a\":\"\xf0", 0 },
        /* Invalid escapes. */
        { "{\"a\":\"\\x41\"}", 0 }, { "{\"a\":\"\\'\"}", 0 }, { "{\"a\":\"\\0\"}", 0 },
        { "{\"a\":\"\\U0041\"}", 0 }, { "{\"a\":\"\\u41\"}", 0 },
        { "{\"a\":\"\\u004\"}", 0 }, { "{\"a\":\"\\u00G1\"}", 0 },
        { "{\"a\":\"\\u-041\"}", 0 }, { "{\"a\":\"\\ \"}", 0 }, { "{\"a\":\"\\\"}", 0 },
        { "{\"a\":\"\\", 0 }, { "{\"a\":\"\\u00", 0 }, { "{\"\\q\":\"b\"}", 0 },
        /* Lone or mismatched surrogates. */
        { "{\"a\":\"\\ud800\"}", 0 }, { "{\"a\":\"\\udc00\"}", 0 },
        { "{\"a\":\"\\uDFFF\"}", 0 }, { "{\"a\":\"\\ud800x\"}", 0 },
        { "{\"a\":\"\\ud800\\u0041\"}", 0 }, { "{\"a\":\"\\ud800\\ud800\"}", 0 },
        { "{\"a\":\"\\udc00\\ud800\"}", 0 }, { "{\"a\":\"\\ud800\\\"}", 0 },
        { "{\"a\":\"\\ud800\\u0000\"}", 0 }, { "{\"a\":\"\\ud800\\udc0\"}", 0 },
        { "{\"a\":\"\\ud800\\n\"}", 0 }, { "{\"\\udbff\":\"b\"}", 0 },
        { "{\"a\":\"\\ud800\\udc", 0 },
        /* Raw control characters in strings (tab and NUL included). */
        { "{\"a\":\"\x01\"}", 0 }, { "{\"a\":\"a\tb\"}", 0 }, { "{\"a\":\"\n\"}", 0 },
        { "{\"a\x1f\":\"b\"}", 0 }, { "{\"a\":\"\0\"}", 9 },
        { "{\"a\":\"0123456789\x1f\"}", 0 },
        /* Malformed. */
        { "{", 0 }, { "}", 0 }, { "{\"a\"}", 0 }, { "{\"a\":}", 0 }, { "{\"a\"\"b\"}", 0 },
        { "{\"a\":\"b\",}", 0 }, { "{,}", 0 }, { "{,\"a\":\"b\"}", 0 },
        { "{\"a\":\"b\" \"c\":\"d\"}", 0 }, { "{\"a\":\"b\";\"c\":\"d\"}", 0 },
        { "{'a':'b'}", 0 }, { "{a:\"b\"}", 0 }, { "{\"a\":\"b\"", 0 },
        { "{\"a\":\"b}", 0 }, { "{\"a\":\"b\",", 0 }, { "{\"a\":", 0 }, { "{\"a\"", 0 },
        { "{\"a", 0 }, { "{\"a\":nul}", 0 }, { "{\"a\":nulll}", 0 },
        { "{\"a\":NULL}", 0 }, { "{\"a\":Null}", 0 }, { "{\"a\":null1}", 0 },
        { "{\"a\":nullnull}", 0 }, { "{\"a\":n", 0 }, { "{\"a\":null", 0 },
        { "{\"a\"::\"b\"}", 0 }, { "{\"a\":\"b\":\"c\"}", 0 }, { "{{}}", 0 },
        { "{\"a\":\"b\"}}", 0 },
        /* Trailing text, whitespace JSON does not allow. */
        { "{}x", 0 }, { "{} {}", 0 }, { "{},", 0 }, { "{}\0", 3 }, { "{}\0{}", 5 },
        { "{\"a\":\"b\"}\0", 10 }, { "\f{}", 0 }, { "{}\v", 0 }, { "{\f}", 0 },
        { "\0{}", 3 }, { "{\"a\"\v:\"b\"}", 0 },
    };
    struct flatobj o = { 0 };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t len = t[i].len ? t[i].len : strlen(t[i].text);
        int rc = scan_exact(&o, t[i].text, len);

        if (rc != 0)
            fail_msg("#%zu %s: rc %d, want 0", i, show(t[i].text, len), rc);
        assert_int_equal(o.n, 0);
        assert_int_equal(check_agrees(&o, t[i].text, len), 0);
    }
    flatobj_free(&o);
}

/* Nothing at or past len is read: every proper prefix of a valid object,
 * from an exact-size heap copy, is rejected. */
static void test_prefixes(void **ctx)
{
    static const char *const t[] = {
        "{\"id\":\"12\",\"v\":\"value 12\",\"n\":null}",
        " {\"a\\u00e9\\ud83d\\ude00\":\"\xf0\x9f\x98\x80\\n0123456789abcdef\" } ",
    };
    struct flatobj o = { 0 };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t len = strlen(t[i]);

        for (size_t n = 0; n < len; n++) {
            int want = n >= len - 1 && t[i][len - 1] == ' ' ? 1 : 0;

            if (scan_exact(&o, t[i], n) != want)
                fail_msg("prefix %zu of %s", n, show(t[i], len));
        }
        assert_int_equal(scan_exact(&o, t[i], len), 1);
    }
    flatobj_free(&o);
}

/* One flatobj across scans of different sizes, and after flatobj_free. */
static void test_reuse(void **ctx)
{
    struct flatobj o = { 0 };
    struct buf big = { 0 };
    char key[32];

    putch(&big, '{');
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "%s\"k%03d\":\"v%d\"", i ? "," : "", 299 - i, i);
        put(&big, key, strlen(key));
    }
    putch(&big, '}');
    assert_int_equal(check_agrees(&o, big.p, big.n), 1);
    assert_int_equal(o.n, 300);
    assert_int_equal(scan_exact(&o, big.p, big.n), 1);
    for (size_t i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "k%03zu", i);
        assert_string_equal(o.sorted[i]->key, key);
    }
    assert_int_equal(check_agrees(&o, "{\"a\":\"b\"}", 9), 1);
    assert_int_equal(o.n, 1);
    assert_int_equal(check_agrees(&o, "{\"a\":1}", 7), 0);
    assert_int_equal(check_agrees(&o, big.p, big.n), 1);
    flatobj_free(&o);
    assert_null(o.buf);
    assert_int_equal(o.cap, 0);
    assert_int_equal(check_agrees(&o, "{\"a\":null}", 10), 1);
    flatobj_free(&o);
    flatobj_free(NULL);

    /* A duplicate only the qsort path sees. */
    big.n--;
    put(&big, ",\"k150\":null}", 13);
    assert_int_equal(scan_exact(&o, big.p, big.n), 0);
    flatobj_free(&o);
    free(big.p);
}

/* ---- canon_hash ---- */

/* The canonical hash written the slow, obvious way: the whole item stream
 * laid out in a buffer (per item a little-endian word of length << 8 | tag,
 * then its bytes zero-padded to a word), then both lanes over its words. */
struct ref_stream {
    unsigned char b[4096];
    size_t n;
};

static void ref_item(struct ref_stream *r, const char *s, size_t n, char tag)
{
    uint64_t head = (uint64_t)n << 8 | (unsigned char)tag;

    assert_true(r->n + 8 + n + 8 <= sizeof(r->b));
    for (int i = 0; i < 8; i++)
        r->b[r->n++] = (unsigned char)(head >> (8 * i));
    memcpy(r->b + r->n, s, n);
    r->n += n;
    while (r->n % 8 != 0)
        r->b[r->n++] = 0;
}

static uint64_t ref_fmix(uint64_t k)
{
    k ^= k >> 33;
    k *= UINT64_C(0xff51afd7ed558ccd);
    k ^= k >> 33;
    k *= UINT64_C(0xc4ceb9fe1a85ec53);
    return k ^ k >> 33;
}

static void ref_finish(const struct ref_stream *r, char out[CANON_HASH_HEX + 1])
{
    uint64_t h1 = UINT64_C(0x243f6a8885a308d3), h2 = UINT64_C(0x13198a2e03707344);

    for (size_t i = 0; i < r->n; i += 8) {
        uint64_t w = 0;

        for (int j = 7; j >= 0; j--)
            w = w << 8 | r->b[i + (size_t)j];
        h1 = (h1 ^ w) * UINT64_C(0x9e3779b97f4a7c15);
        h1 ^= h1 >> 32;
        h2 ^= w;
        h2 = (h2 << 31 | h2 >> 33) * UINT64_C(0xc2b2ae3d27d4eb4f);
    }
    h1 = ref_fmix(h1);
    h2 = ref_fmix(h2);
    h1 += h2;
    h2 += h1;
    snprintf(out, CANON_HASH_HEX + 1, "%016llx%016llx", (unsigned long long)h1,
             (unsigned long long)h2);
}

static int ref_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void ref_hash(const json_t *fields, char out[CANON_HASH_HEX + 1])
{
    static struct ref_stream r;
    size_t n = json_object_size(fields), i = 0;
    const char **names = calloc(n + 1, sizeof(*names));
    const char *k;
    json_t *v;

    assert_non_null(names);
    r.n = 0;
    json_object_foreach((json_t *)fields, k, v)
        names[i++] = k;
    qsort(names, i, sizeof(*names), ref_cmp);
    for (size_t j = 0; j < i; j++) {
        json_t *val = json_object_get(fields, names[j]);

        ref_item(&r, names[j], strlen(names[j]), 'k');
        if (json_is_null(val)) {
            ref_item(&r, "", 0, 'n');
        } else if (json_is_string(val)) {
            ref_item(&r, json_string_value(val), json_string_length(val), 's');
        } else {
            char *t = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);

            ref_item(&r, t ? t : "", t ? strlen(t) : 0, 'j');
            free(t);
        }
    }
    free(names);
    ref_finish(&r, out);
}

static void test_hash_pinned(void **ctx)
{
    static const struct { const char *text, *hash; } t[] = {
        { "{}", "edac9fc1559e3910608b83e9fa08300d" },
        { "{\"id\":\"123456\",\"v\":\"value 123456\",\"n\":\"0\"}",
          "2518cdc64d7859423b418d2c3a1c0865" },
        { "{\"b\":null,\"a\":\"\\u00e9\\ud83d\\ude00\",\"\":\"\"}",
          "45e733bb2ba36eb0ebb7dfc76af9f92c" },
        { "{\"x\":1,\"y\":[true,null],\"z\":{\"q\":\"r\"}}",
          "e76018a1f96b9bf0810ebbe0116697c2" },
        /* a value of exactly one word and one of two: no padding word */
        { "{\"k8\":\"12345678\",\"k16\":\"1234567890abcdef\"}",
          "e0e57cc88192ba6877ed7919abc1b629" },
    };
    struct flatobj o = { 0 };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        json_t *j = json_loads(t[i].text, 0, NULL);
        char h[CANON_HASH_HEX + 1];

        assert_non_null(j);
        canon_hash(j, h);
        assert_string_equal(h, t[i].hash);
        ref_hash(j, h);
        assert_string_equal(h, t[i].hash);
        if (flatobj_scan(&o, t[i].text, strlen(t[i].text)) == 1) {
            canon_hash_flat(&o, h);
            assert_string_equal(h, t[i].hash);
        }
        json_decref(j);
    }
    flatobj_free(&o);
}

/* ---- differential ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(0x2545F4914F6CDD1D);
}

static unsigned pick(unsigned n)
{
    return (unsigned)(rnd() % n);
}

static size_t enc_utf8(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A code point in [lo, hi], edges often, never a surrogate. */
static uint32_t pick_cp(uint32_t lo, uint32_t hi)
{
    uint32_t cp;

    do {
        switch (pick(4)) {
        case 0:
            cp = lo;
            break;
        case 1:
            cp = hi;
            break;
        default:
            cp = lo + (uint32_t)(rnd() % (hi - lo + 1));
        }
    } while (cp >= 0xD800 && cp <= 0xDFFF);
    return cp;
}

static void put_u(struct buf *t, unsigned v)
{
    char s[7];

    if (pick(2))
        snprintf(s, sizeof(s), "\\u%04x", v);
    else
        snprintf(s, sizeof(s), "\\u%04X", v);
    put(t, s, 6);
}

static void gen_ws(struct buf *t)
{
    while (pick(5) == 0)
        putch(t, " \t\n\r"[pick(4)]);
}

/* A JSON string into t, its unescaped bytes into d; with nul, one \u0000. */
static void gen_string(struct buf *t, struct buf *d, unsigned max_units, bool nul)
{
    unsigned units = pick(max_units + 1), at_nul = nul ? pick(units + 1) : UINT32_MAX;
    char u[4];
    size_t n;

    putch(t, '"');
    d->n = 0;
    put(d, "", 0);
    for (unsigned i = 0; i <= units; i++) {
        if (i == at_nul) {
            put(t, "\\u0000", 6);
            putch(d, '\0');
        }
        if (i == units)
            break;
        switch (pick(9)) {
        case 0:
        case 1: {                       /* a run of plain ASCII */
            unsigned run = 1 + pick(pick(4) ? 4 : 24);

            for (unsigned k = 0; k < run; k++) {
                int c = 0x20 + (int)pick(0x60);     /* up to DEL */

                if (c == '"' || c == '\\')
                    c = 'x';
                putch(t, c);
                putch(d, c);
            }
            break;
        }
        case 2: {
            unsigned k = pick(8);

            putch(t, '\\');
            putch(t, "\"\\/bfnrt"[k]);
            putch(d, "\"\\/\b\f\n\r\t"[k]);
            break;
        }
        case 3: {                       /* \u of a BMP code point */
            uint32_t cp = pick(3) ? pick_cp(1, 0xFFFF) : pick_cp(1, 0x7F);

            put_u(t, cp);
            put(d, u, enc_utf8(cp, u));
            break;
        }
        case 4: {                       /* a surrogate pair */
            uint32_t cp = pick_cp(0x10000, 0x10FFFF);

            put_u(t, 0xD800 + ((cp - 0x10000) >> 10));
            put_u(t, 0xDC00 + ((cp - 0x10000) & 0x3FF));
            put(d, u, enc_utf8(cp, u));
            break;
        }
        default: {                      /* raw UTF-8, 2 to 4 bytes */
            static const uint32_t lo[] = { 0x80, 0x800, 0x10000 },
                                  hi[] = { 0x7FF, 0xFFFF, 0x10FFFF };
            unsigned k = pick(3);

            n = enc_utf8(pick_cp(lo[k], hi[k]), u);
            put(t, u, n);
            put(d, u, n);
        }
        }
    }
    putch(t, '"');
}

struct gen_pair {
    struct buf key, val;
    size_t key_at, key_end;             /* the key's text in the object */
    bool null;
};

enum gen_kind { GEN_VALID, GEN_DUP, GEN_NUL };

/* A random flat object into t; returns the number of pairs in pairs[]. */
static size_t gen_object(struct buf *t, struct gen_pair *pairs, size_t max,
                         enum gen_kind kind)
{
    size_t n = pick(8) ? pick(8) : pick((unsigned)max + 1), nul_at;

    if (kind != GEN_VALID && n < 2)
        n = 2;
    nul_at = kind == GEN_NUL ? pick((unsigned)n) : SIZE_MAX;
    t->n = 0;
    gen_ws(t);
    putch(t, '{');
    for (size_t i = 0; i < n; i++) {
        struct gen_pair *p = &pairs[i];
        bool unique;

        gen_ws(t);
        if (i)
            putch(t, ',');
        gen_ws(t);
        p->key_at = t->n;
        if (kind == GEN_DUP && i == n - 1) {
            size_t j = pick((unsigned)(n - 1));

            put(t, t->p + pairs[j].key_at, pairs[j].key_end - pairs[j].key_at);
            p->key.n = 0;
            put(&p->key, pairs[j].key.p, pairs[j].key.n);
        } else {
            do {                        /* distinct decoded keys */
                t->n = p->key_at;
                gen_string(t, &p->key, pick(4) ? 3 : 12, nul_at == i && pick(2));
                unique = true;
                for (size_t j = 0; j < i; j++)
                    if (pairs[j].key.n == p->key.n &&
                        memcmp(pairs[j].key.p, p->key.p, p->key.n) == 0)
                        unique = false;
            } while (!unique);
        }
        p->key_end = t->n;
        gen_ws(t);
        putch(t, ':');
        gen_ws(t);
        p->null = pick(6) == 0 && !(nul_at == i);
        if (p->null) {
            put(t, "null", 4);
        } else {
            gen_string(t, &p->val, pick(4) ? 6 : 40,
                       nul_at == i && memchr(p->key.p, '\0', p->key.n) == NULL);
        }
        gen_ws(t);
    }
    putch(t, '}');
    gen_ws(t);
    return n;
}

/* Small edits: where the scanner's decisions are. */
static void mutate(struct buf *m, const struct buf *t)
{
    static const char interesting[] = "\"\\u{}:,n \t0dD8\x80\xc3\xed\xf4\xbf\x01";
    size_t at = t->n ? pick((unsigned)t->n) : 0;
    char c = pick(2) ? interesting[pick(sizeof(interesting))] : (char)pick(256);

    m->n = 0;
    put(m, t->p, t->n);
    switch (pick(4)) {
    case 0:
        if (at < m->n)
            m->p[at] = c;
        break;
    case 1:
        if (at < m->n) {
            memmove(m->p + at, m->p + at + 1, m->n - at - 1);
            m->n--;
        }
        break;
    case 2:
        putch(m, 'x');
        memmove(m->p + at + 1, m->p + at, m->n - at - 1);
        m->p[at] = c;
        break;
    default:
        m->n = at;
    }
}

static void test_differential(void **ctx)
{
    enum { MAXP = 40, OBJECTS = 2000, MUTANTS = 8 };
    struct gen_pair pairs[MAXP] = { 0 };
    struct buf t = { 0 }, m = { 0 };
    struct flatobj o = { 0 }, fresh = { 0 };
    unsigned accepted_mutants = 0, large = 0;

    rng_state = UINT64_C(0x9E3779B97F4A7C15);
    for (unsigned i = 0; i < OBJECTS; i++) {
        size_t n = gen_object(&t, pairs, MAXP, GEN_VALID);
        json_t *j;

        if (check_agrees(&o, t.p, t.n) != 1)
            fail_msg("object %u not accepted: %s", i, show(t.p, t.n));
        large += n > 16;
        assert_int_equal(scan_exact(&fresh, t.p, t.n), 1);
        assert_int_equal(fresh.n, n);
        for (size_t k = 0; k < n; k++) {
            const struct flatobj_pair *p = &fresh.pairs[k];

            assert_int_equal(p->key_len, pairs[k].key.n);
            assert_memory_equal(p->key, pairs[k].key.p, p->key_len);
            assert_int_equal(p->null, pairs[k].null);
            if (!p->null) {
                assert_int_equal(p->val_len, pairs[k].val.n);
                assert_memory_equal(p->val, pairs[k].val.p, p->val_len);
            }
        }
        /* canon_hash unchanged, on this object and with other types. */
        j = json_loads(t.p, 0, NULL);
        assert_non_null(j);
        if (n > 0 && pick(2)) {
            static const char *const other[] = { "1", "-2.5e3", "true", "[null,\"a\"]",
                                                 "{\"x\":{}}" };
            json_object_set_new(j, pairs[0].key.p,
                                json_loads(other[pick(5)], JSON_DECODE_ANY, NULL));
        }
        {
            char h1[CANON_HASH_HEX + 1], h2[CANON_HASH_HEX + 1];

            canon_hash(j, h1);
            ref_hash(j, h2);
            assert_string_equal(h1, h2);
        }
        json_decref(j);
        for (unsigned k = 0; k < MUTANTS; k++) {
            mutate(&m, &t);
            accepted_mutants += (unsigned)check_agrees(&o, m.p, m.n);
        }

        gen_object(&t, pairs, MAXP, GEN_DUP);
        if (scan_exact(&o, t.p, t.n) != 0)
            fail_msg("object %u, duplicate key accepted: %s", i, show(t.p, t.n));
        j = json_loads(t.p, JSON_REJECT_DUPLICATES, NULL);
        assert_null(j);

        gen_object(&t, pairs, MAXP, GEN_NUL);
        if (scan_exact(&o, t.p, t.n) != 0)
            fail_msg("object %u, \\u0000 accepted: %s", i, show(t.p, t.n));
        j = json_loads(t.p, 0, NULL);
        assert_null(j);
    }
    print_message("  %u objects (%u over 16 pairs), %u of %u mutants still flat\n",
                  OBJECTS, large, accepted_mutants, OBJECTS * MUTANTS);
    assert_true(large > 50);
    assert_true(accepted_mutants > OBJECTS);
    for (size_t k = 0; k < MAXP; k++) {
        free(pairs[k].key.p);
        free(pairs[k].val.p);
    }
    free(t.p);
    free(m.p);
    flatobj_free(&o);
    flatobj_free(&fresh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept),
        cmocka_unit_test(test_sorted),
        cmocka_unit_test(test_reject),
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_hash_pinned),
        cmocka_unit_test(test_differential),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
