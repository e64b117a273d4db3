/* Writes the seed corpus of fuzz_envelope into a directory: real sealed
 * envelopes under the target's fixed keys, made by envelope_seal as the
 * client library and the server make them, each behind the mode byte that
 * opens it. Run again if the keys or the envelope format change:
 *   build-fuzz/fuzz/fuzz_envelope_seeds fuzz/corpus/envelope */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_keys.h"

static int write_seed(const char *dir, const char *name, unsigned char mode, const char *text,
                      size_t len)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof path)
        return -1;
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fputc(mode, f) != EOF && fwrite(text, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

typedef struct seed {
    const char *name;
    int cbc;
    const char *type, *action, *reply_to, *plaintext;
} seed;

static const seed seeds[] = {
    {"gcm-command-login", 0, "command", "login", NULL,
     "{\"username\":\"alice\",\"password\":\"correct horse\"}"},
    {"gcm-response-login", 0, "response", "login_success", "1",
     "{\"username\":\"alice\",\"user_id\":1,\"assigned_room\":\"general\",\"unread_count\":0}"},
    {"gcm-event-private", 0, "event", "private_message", NULL,
     "{\"id\":7,\"sender\":\"bob\",\"recipient\":\"alice\",\"content\":\"h\\u00e9llo\","
     "\"encrypted\":false,\"signature\":null,\"timestamp\":1700000000.5}"},
    {"gcm-error", 0, "error", "error", "4",
     "{\"code\":1004,\"message\":\"malformed payload\",\"command\":\"join_room\"}"},
    {"gcm-not-object", 0, "command", "get_users", NULL, "[1,2,3]"},
    {"cbc-command-public", 1, "command", "public_message", NULL,
     "{\"content\":\"hello room\",\"expires_at\":1700003600}"},
    {"cbc-response-history", 1, "response", "get_history", "9",
     "{\"room\":\"general\",\"messages\":[],\"more\":false}"},
    {"cbc-empty", 1, "command", "logout", NULL, "{}"},
};

/* Seeds of the other modes: their material is not an envelope. */
typedef struct raw_seed {
    const char *name;
    unsigned char mode;
    const char *bytes;
    size_t len;
} raw_seed;

#define RAW(name, mode, lit) {name, mode, lit, sizeof lit - 1}
static const raw_seed raw_seeds[] = {
    RAW("round-gcm-object", 2, "\x05{\"content\":\"hi\",\"n\":1}"),
    RAW("round-cbc-reply", 10, "\x80{\"room\":\"general\",\"users\":[\"alice\"]}"),
    RAW("round-gcm-not-json", 2, "\x01not json \xff"),
    RAW("tamper-gcm", 3, "\x02\x40\x01\x90\x80hello"),
    RAW("tamper-cbc", 11, "\x01\xf0\x20hello"),
    RAW("short-gcm", 4, "\x0fsome bytes"),
    RAW("short-cbc", 12, "\x10sixteen bytes..."),
    RAW("counter-edge", 5, "\xff\xff\xff\xff\xff\xff\xff\xfe\x00"),
    RAW("counter-skip", 13, "\x00\x00\x00\x00\x00\x00\x00\x05\x01"),
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        const seed *s = &seeds[i];
        envelope_dir c2s, s2c;
        if (fuzz_keys_derive(s->cbc ? ENVELOPE_CIPHER_AES256_CBC_HMAC
                                    : ENVELOPE_CIPHER_AES256_GCM, &c2s, &s2c) != 0)
            return 1;
        char *text = NULL;
        size_t len = 0;
        if (envelope_seal(&c2s, s->type, s->action, s->reply_to, s->plaintext,
                          strlen(s->plaintext), &text, &len) != 0)
            return 1;
        /* Mode 0 opens as is, mode 1 re-signs (the cipher bit is 8). */
        unsigned char cipher_bit = s->cbc ? 8 : 0;
        char name[128];
        snprintf(name, sizeof name, "open-%s", s->name);
        int rc = write_seed(argv[1], name, cipher_bit, text, len);
        snprintf(name, sizeof name, "resign-%s", s->name);
        rc |= write_seed(argv[1], name, (unsigned char)(cipher_bit | 1), text, len);
        free(text);
        if (rc != 0) {
            fprintf(stderr, "cannot write into %s\n", argv[1]);
            return 1;
        }
    }
    for (size_t i = 0; i < sizeof raw_seeds / sizeof raw_seeds[0]; i++) {
        const raw_seed *s = &raw_seeds[i];
        if (write_seed(argv[1], s->name, s->mode, s->bytes, s->len) != 0) {
            fprintf(stderr, "cannot write into %s\n", argv[1]);
            return 1;
        }
    }
    return 0;
}
