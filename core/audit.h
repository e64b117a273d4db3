/* Audit lines (source "audit", level info): who did what from where, for
 * the operator's log. One shape for every event, so a log reader (or the
 * JSON "fields" object) finds event, user, address and session in each. */
#ifndef SM_CORE_AUDIT_H
#define SM_CORE_AUDIT_H

#include <stdint.h>

/* event: "connection", "login", "disable", ...; username NULL when none;
 * address NULL when the event has no peer (an admin command); session 0
 * for none; by names who reported it (a plugin, "admin"), NULL for the
 * core. Never pass a secret. */
void audit_line(const char *event, const char *username, const char *address, uint64_t session,
                const char *by);

#endif
