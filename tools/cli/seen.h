/* The replay guard of PROTOCOL.md Appendix A: the e2e ids of the messages
 * already shown to one user, kept in <config>/seen/<server>/<username>,
 * bounded to the most recent SEEN_LIMIT. Each id is stored with the
 * server's message id, so the same stored message listed again (an event,
 * then /unread) is not mistaken for a replay: a replay is the same e2e id
 * arriving as a different server message. */
#ifndef SM_CLI_SEEN_H
#define SM_CLI_SEEN_H

#include <stddef.h>

#define SEEN_LIMIT 10000

typedef struct seen_store seen_store;

typedef enum seen_result {
    SEEN_NEW,       /* first sight: recorded */
    SEEN_SAME,      /* the same server message again */
    SEEN_REPLAY     /* this e2e id came before in another server message */
} seen_result;

/* Opens (loading what the file holds) the store at path, keeping at most
 * `limit` entries. */
int seen_open(const char *path, size_t limit, seen_store **out);

/* Looks e2e_id up and records it with msg_id when new. Returns 0 with
 * *result set, -1 when the record could not be written (the caller still
 * gets a result: the id is kept in memory). */
int seen_check(seen_store *s, const char *e2e_id, long long msg_id, seen_result *result);

size_t seen_count(const seen_store *s);
void seen_close(seen_store *s);

#endif
