/* The connection string a private test service wrote (tests/services/
 * redis-instance, postgres-instance: DIR/url), found through the
 * environment variable ctest sets for the suites that need the service. */
#ifndef SM_TEST_SERVICE_URL_H
#define SM_TEST_SERVICE_URL_H

#include <stddef.h>

/* Reads the file named by the environment variable `env` into buf (len
 * bytes, NUL-terminated, the trailing newline removed). Returns 0, or -1
 * with a message on stderr when the variable is unset, the file cannot be
 * read, is empty or does not fit. */
int service_url_read(const char *env, char *buf, size_t len);

#endif
