#include "audit.h"

#include <stdio.h>

#include "log.h"

void audit_line(const char *event, const char *username, const char *address, uint64_t session,
                const char *by)
{
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)session);
    /* The text line reads "<event> user='name' address=a session=n by=x";
     * JSON carries the same as fields, plus the event itself. */
    log_field fields[] = {
        {"event", event, LOG_FIELD_JSON_ONLY},
        {"user", username, LOG_FIELD_QUOTED},
        {"address", address && *address ? address : NULL, 0},
        {"session", session ? id : NULL, LOG_FIELD_NUMBER},
        {"by", by, 0},
    };
    size_t n = sizeof fields / sizeof fields[0];
    if (!by)
        n--; /* the core's own lines name no reporter */
    log_fields(SM_LOG_INFO, "audit", fields, n, "%s", event);
}
