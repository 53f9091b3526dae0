/* err.h: error values with text, shared by every module. */
#ifndef TANDEM_ERR_H
#define TANDEM_ERR_H

#include <errno.h>

#define ERR_MSG_MAX 8192  /* room for every config problem at once */

/* Functions return 0 or a negative errno and, when text helps, fill a
 * struct err with a lower-case message that names the failing thing. */
struct err {
    int code;
    char msg[ERR_MSG_MAX];
};

/* Sets e (which may be NULL) and returns code, so callers can
 * `return err_set(e, -EIO, "…")`. */
int err_set(struct err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears e to "no error". */
void err_clear(struct err *e);

#endif
