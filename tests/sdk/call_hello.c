/* A real client for tests/sdk/build_example.sh: connects to a running
 * server, logs in through the testcmds plugin's fake_login, calls the hello
 * example plugin's `hello` and prints the greeting.
 *
 *   sdk_call_hello URL USERNAME EXPECTED_GREETING [EXPECTED_COUNT]
 *
 * Exit status 0 only when the reply is a `hello` response whose greeting
 * equals EXPECTED_GREETING (and whose count equals EXPECTED_COUNT when
 * given); 1 otherwise, with the reason on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm_client.h"

#define TIMEOUT_MS 5000

/* Calls action with payload and returns the reply if it is a response
 * named `expect`; prints the reason and returns NULL otherwise. */
static sm_message *call(sm_client *c, const char *action, json_t *payload, const char *expect)
{
    sm_message *reply = NULL;
    int rc = sm_client_call(c, action, payload, TIMEOUT_MS, &reply);
    if (rc != SM_CLIENT_OK) {
        fprintf(stderr, "call_hello: %s: no reply (status %d)\n", action, rc);
        return NULL;
    }
    if (strcmp(reply->type, "response") != 0 || strcmp(reply->action, expect) != 0) {
        char *text = json_dumps(reply->payload, JSON_COMPACT);
        fprintf(stderr, "call_hello: %s: got %s %s %s\n", action, reply->type, reply->action,
                text ? text : "?");
        free(text);
        sm_message_free(reply);
        return NULL;
    }
    return reply;
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s URL USERNAME EXPECTED_GREETING [EXPECTED_COUNT]\n", argv[0]);
        return 2;
    }
    const char *url = argv[1], *username = argv[2], *expected = argv[3];
    long long expected_count = argc == 5 ? strtoll(argv[4], NULL, 10) : -1;
    int status = 1;
    sm_client *c = NULL;
    sm_message *login = NULL, *hello = NULL;
    json_t *login_payload = json_pack("{s:s}", "username", username);
    char err[256] = "";
    sm_client_options opt = {.url = url, .timeout_ms = TIMEOUT_MS};

    if (!login_payload)
        goto fail;
    if (sm_client_connect(&opt, &c, err, sizeof err) != SM_CLIENT_OK) {
        fprintf(stderr, "call_hello: cannot connect to %s: %s\n", url, err);
        goto fail;
    }
    if (!(login = call(c, "fake_login", login_payload, "fake_login")) ||
        !(hello = call(c, "hello", NULL, "hello")))
        goto fail;
    const char *greeting = json_string_value(json_object_get(hello->payload, "greeting"));
    json_t *count = json_object_get(hello->payload, "count");
    printf("%s (count %lld)\n", greeting ? greeting : "(none)",
           (long long)json_integer_value(count));
    if (!greeting || strcmp(greeting, expected) != 0) {
        fprintf(stderr, "call_hello: expected greeting \"%s\"\n", expected);
        goto fail;
    }
    if (!json_is_integer(count) ||
        (expected_count >= 0 && json_integer_value(count) != expected_count)) {
        fprintf(stderr, "call_hello: expected count %lld\n", expected_count);
        goto fail;
    }
    status = 0;
fail:
    sm_message_free(hello);
    sm_message_free(login);
    sm_client_close(c, 1000); /* also frees; NULL is allowed */
    json_decref(login_payload);
    return status;
}
