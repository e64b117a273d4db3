/* Payload validation against a plugin's declared schema (sm_field rows),
 * so handlers start from checked fields. */
#ifndef SM_CORE_SCHEMA_H
#define SM_CORE_SCHEMA_H

#include <stddef.h>
#include <jansson.h>
#include "safemessenger/plugin.h"

/* 0 when payload satisfies schema (NULL schema: anything). Otherwise -1 and
 * a message naming the offending field in msg ("field 'room_name' must be a
 * string of 1 to 32 bytes"). */
int schema_check(const sm_field *schema, const json_t *payload, char *msg, size_t msg_len);

#endif
