/* canary.h: canary records per mapping and direction (SPEC G9): when the
 * last canary was written on one side and when it arrived on the other,
 * so delivery latency is measured and an overdue canary is noticed. */
#ifndef TANDEM_CANARY_H
#define TANDEM_CANARY_H

#include <stdint.h>

#include "state.h"

enum canary_dir { CANARY_A_TO_B = 0, CANARY_B_TO_A };

struct canary_status {
    const char *mapping;
    enum canary_dir dir;
    const char *token;       /* value carried by the last canary, or NULL */
    int64_t sent_us;         /* when the last canary was written, 0 = never */
    int64_t seen_us;         /* when it arrived, 0 while outstanding */
    int64_t last_latency_us; /* of the last canary that arrived, 0 = none */
    int64_t sent_count;
    int64_t seen_count;
};

/* "a_to_b" / "b_to_a". */
const char *canary_dir_name(enum canary_dir dir);

/* A canary carrying token was written at sent_us (0 = now) on the source
 * side of dir; it becomes the outstanding one (seen_us reset to 0). */
int canary_sent(struct state *s, const char *mapping, enum canary_dir dir,
                const char *token, int64_t sent_us, struct err *e);

/* The canary carrying token arrived at seen_us (0 = now). *latency_us (may
 * be NULL) receives seen - sent. -ESTALE when token is not the outstanding
 * canary of (mapping, dir): an older one, or one already seen. */
int canary_seen(struct state *s, const char *mapping, enum canary_dir dir,
                const char *token, int64_t seen_us, int64_t *latency_us,
                struct err *e);

/* Calls fn with the status of (mapping, dir); -ENOENT when no canary was
 * ever sent. Strings live until fn returns. */
typedef int (*canary_fn)(const struct canary_status *c, void *arg);
int canary_get(struct state *s, const char *mapping, enum canary_dir dir,
               canary_fn fn, void *arg, struct err *e);

/* Calls fn for every (mapping, dir) with a canary, by mapping then dir.
 * Nonzero from fn stops and is returned. */
int canary_list(struct state *s, canary_fn fn, void *arg, struct err *e);

#endif
