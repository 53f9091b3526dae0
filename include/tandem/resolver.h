/* tandem/resolver.h: the C ABI of a tandem conflict-resolver plugin.
 *
 * A plugin is a shared object named in a mapping's config
 * ("conflict": {"strategy": "plugin", "plugin": "path/to/resolver.so"}).
 * It exports two functions:
 *
 *   int tandem_resolver_abi_version(void);   returns TANDEM_RESOLVER_ABI_VERSION
 *   int tandem_resolve(const struct tandem_resolve_input *in,
 *                      struct tandem_resolve_output *out);
 *
 * tandem loads the plugin once at start; a missing file, a missing symbol
 * or a different ABI version is a config error. tandem_resolve is called
 * for each conflict of the mapping, from one thread at a time.
 *
 * The contract: tandem_resolve is a pure function of its input. It must
 * not read the clock, keep state between calls or do I/O, so that the same
 * input gives the same output and both sides of a mapping converge. A
 * plugin that should not favour a side by its label must also decide the
 * same when a and b are swapped.
 *
 * Only plain C types cross this boundary: no tandem or library structs.
 * Every pointer in the input is borrowed for the duration of the call.
 * Field values are the canonical text form (numbers as decimal text,
 * timestamps as ISO-8601 text); field names are side-a names. */
#ifndef TANDEM_RESOLVER_ABI_H
#define TANDEM_RESOLVER_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change to the structs or functions below. */
#define TANDEM_RESOLVER_ABI_VERSION 1

#define TANDEM_RESOLVER_EXPLANATION_MAX 512

#if defined(__GNUC__)
#define TANDEM_RESOLVER_EXPORT __attribute__((visibility("default")))
#else
#define TANDEM_RESOLVER_EXPORT
#endif

/* One field: value is NULL exactly when is_null is nonzero. */
struct tandem_field {
    const char *name;
    const char *value;
    int is_null;
};

/* One version of the record. fields are sorted by name (byte order).
 * For a and b, fields the side did not send (PostgreSQL unchanged TOAST)
 * are filled in from base; a field absent from all three is absent. */
struct tandem_record {
    int present;        /* 0: there is no such record (no base yet) */
    int deleted;        /* a delete (or, for base, a tombstone) */
    const struct tandem_field *fields;  /* NULL/0 when deleted or absent */
    size_t nfields;
    int64_t version_us; /* a, b: the side's version; base: unused (0) */
    int64_t commit_us;  /* a, b: source commit time; base: unused (0) */
    const char *endpoint; /* a, b: endpoint name; base: NULL */
};

struct tandem_resolve_input {
    int abi_version;            /* TANDEM_RESOLVER_ABI_VERSION */
    const char *mapping;        /* mapping name */
    const char *key;            /* canonical key text, e.g. ["5"] */
    struct tandem_record base;  /* the last version both sides agreed on */
    int64_t base_version_a_us;  /* base's version on each side (0: none) */
    int64_t base_version_b_us;
    struct tandem_record a, b;  /* each side's current version */
};

/* What the plugin decides. */
enum tandem_choice {
    TANDEM_CHOICE_NONE = 0,     /* not set: an error */
    TANDEM_CHOICE_A = 1,        /* side a's record (or delete) wins whole */
    TANDEM_CHOICE_B = 2,        /* side b's record (or delete) wins whole */
    TANDEM_CHOICE_MERGED = 3,   /* the fields given with set_field */
    TANDEM_CHOICE_DELETE = 4,   /* both sides end deleted */
    TANDEM_CHOICE_PARK = 5      /* an operator decides (like "manual") */
};

/* Filled by the plugin. tandem zeroes choice and explanation and sets
 * host and set_field before the call. */
struct tandem_resolve_output {
    int choice;                 /* an enum tandem_choice */
    /* Why, for the conflict log; NUL-terminated, may be left empty. */
    char explanation[TANDEM_RESOLVER_EXPLANATION_MAX];
    /* For TANDEM_CHOICE_MERGED: call once per field of the merged record;
     * tandem copies name and value. Every field present in a or b must be
     * set. Returns 0, or nonzero on a bad name or no memory (then return
     * an error from tandem_resolve). */
    int (*set_field)(void *host, const char *name, const char *value,
                     int is_null);
    void *host;                 /* pass to set_field; opaque */
};

/* Returns TANDEM_RESOLVER_ABI_VERSION as compiled into the plugin. */
TANDEM_RESOLVER_EXPORT int tandem_resolver_abi_version(void);

/* Decides one conflict. Returns 0 with out->choice set, or nonzero on
 * error (tandem records the conflict as failed with out->explanation). */
TANDEM_RESOLVER_EXPORT int tandem_resolve(const struct tandem_resolve_input *in,
                                          struct tandem_resolve_output *out);

/* Types of the two symbols, for loaders. */
typedef int (*tandem_resolver_abi_version_fn)(void);
typedef int (*tandem_resolve_fn)(const struct tandem_resolve_input *in,
                                 struct tandem_resolve_output *out);

#ifdef __cplusplus
}
#endif

#endif
