/* An immutable, reference-counted message text: the logic thread
 * serialises a published payload once and hands the same buffer to every
 * I/O thread that has a recipient (issue 11, fan-out across threads);
 * each I/O thread seals it for its own sessions and drops its reference
 * when done. The text is never written after shared_payload_new, so
 * readers on any thread need no lock; only the count is shared, and it is
 * atomic. */
#ifndef SM_CORE_SHARED_PAYLOAD_H
#define SM_CORE_SHARED_PAYLOAD_H

#include <stddef.h>

typedef struct shared_payload shared_payload;

/* A copy of text[0..len) (NUL-terminated) with one reference, held by
 * the caller. NULL when out of memory or len is too large. */
shared_payload *shared_payload_new(const char *text, size_t len);
/* One more reference (for another thread's batch); returns p. */
shared_payload *shared_payload_ref(shared_payload *p);
/* Drops one reference; the last one frees the buffer. Returns 1 when this
 * call freed it, 0 otherwise. NULL is ignored. */
int shared_payload_unref(shared_payload *p);

const char *shared_payload_text(const shared_payload *p);
size_t shared_payload_len(const shared_payload *p);

#endif
