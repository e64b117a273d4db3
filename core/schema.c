#include "schema.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* 1 when s consists only of [A-Za-z0-9_.-]: the SDK's own rule (plugin.h,
 * sm_name_valid), lengths being the field's min and max. */
static int schema_is_name(const char *s)
{
    return sm_name_valid(s, 0, SIZE_MAX);
}

static const char *type_name(sm_field_type t)
{
    switch (t) {
    case SM_FIELD_STRING: return "a string";
    case SM_FIELD_INTEGER: return "an integer";
    case SM_FIELD_NUMBER: return "a number";
    case SM_FIELD_BOOLEAN: return "a boolean";
    case SM_FIELD_OBJECT: return "an object";
    case SM_FIELD_ARRAY: return "an array";
    default: return "a value";
    }
}

static int bounded(const sm_field *f) { return f->min != 0 || f->max != 0; }

static int check_field(const sm_field *f, const json_t *v, char *msg, size_t msg_len)
{
    switch (f->type) {
    case SM_FIELD_STRING: {
        if (!json_is_string(v))
            break;
        size_t len = json_string_length(v);
        if (bounded(f) && ((double)len < f->min || (double)len > f->max)) {
            snprintf(msg, msg_len, "field '%s' must be a string of %.0f to %.0f bytes",
                     f->name, f->min, f->max);
            return -1;
        }
        /* Names are compared and stored as text: no NUL, only the name set. */
        if ((f->flags & SM_FIELD_NAME) &&
            (strlen(json_string_value(v)) != len || !schema_is_name(json_string_value(v)))) {
            snprintf(msg, msg_len, "field '%s' may contain only letters, digits, '_', '.' and '-'",
                     f->name);
            return -1;
        }
        return 0;
    }
    case SM_FIELD_INTEGER: {
        if (!json_is_integer(v))
            break;
        double d = (double)json_integer_value(v);
        if (bounded(f) && (d < f->min || d > f->max)) {
            snprintf(msg, msg_len, "field '%s' must be an integer from %.0f to %.0f", f->name,
                     f->min, f->max);
            return -1;
        }
        return 0;
    }
    case SM_FIELD_NUMBER: {
        if (!json_is_number(v))
            break;
        double d = json_number_value(v);
        if (!isfinite(d) || (bounded(f) && (d < f->min || d > f->max))) {
            snprintf(msg, msg_len, "field '%s' must be a number from %g to %g", f->name, f->min,
                     f->max);
            return -1;
        }
        return 0;
    }
    case SM_FIELD_BOOLEAN:
        if (json_is_boolean(v))
            return 0;
        break;
    case SM_FIELD_OBJECT:
        if (json_is_object(v))
            return 0;
        break;
    case SM_FIELD_ARRAY: {
        if (!json_is_array(v))
            break;
        double n = (double)json_array_size(v);
        if (bounded(f) && (n < f->min || n > f->max)) {
            snprintf(msg, msg_len, "field '%s' must have %.0f to %.0f elements", f->name, f->min,
                     f->max);
            return -1;
        }
        return 0;
    }
    default:
        snprintf(msg, msg_len, "field '%s' has an unknown schema type", f->name);
        return -1;
    }
    snprintf(msg, msg_len, "field '%s' must be %s", f->name, type_name(f->type));
    return -1;
}

int schema_check(const sm_field *schema, const json_t *payload, char *msg, size_t msg_len)
{
    if (!json_is_object(payload)) {
        snprintf(msg, msg_len, "payload must be an object");
        return -1;
    }
    if (!schema)
        return 0;
    for (const sm_field *f = schema; f->type != SM_FIELD_END && f->name; f++) {
        const json_t *v = json_object_get(payload, f->name);
        if (!v || json_is_null(v)) {
            if (f->flags & SM_FIELD_REQUIRED) {
                snprintf(msg, msg_len, "field '%s' is required", f->name);
                return -1;
            }
            continue;
        }
        if (check_field(f, v, msg, msg_len) != 0)
            return -1;
    }
    return 0;
}
