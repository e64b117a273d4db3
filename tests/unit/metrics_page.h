/* Reading a rendered /metrics page in tests. */
#ifndef SM_TEST_METRICS_PAGE_H
#define SM_TEST_METRICS_PAGE_H

#include <stdlib.h>
#include <string.h>

/* The value of the sample line that starts with `series` followed by a
 * space in page, or -1 when there is none. */
static inline double sample_in(const char *page, const char *series)
{
    size_t n = strlen(series);
    const char *line = page;
    while (*line) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        const char *end = strchr(line, '\n');
        if (!end)
            break;
        line = end + 1;
    }
    return -1;
}

#endif
