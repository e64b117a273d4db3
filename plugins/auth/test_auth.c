/* The auth plugin on the test host: register, login and logout as
 * PROTOCOL.md sections 5 to 7 say, argon2id storage and rehashing, the
 * rate limits, the hashing queue, and what never reaches the log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <argon2.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "capture.h"
#include "safemessenger/testhost.h"
#include "safemessenger/testhost_suite.h"

/* Cheap parameters so the suite stays fast; one test uses the defaults. */
#define WEAK "allow_weak_argon2 = true; argon2_memory_kib = 64; argon2_passes = 1;"
#define WEAK_PREFIX "$argon2id$v=19$m=64,t=1,p=1$"
#define BAD_CREDENTIALS "invalid username or password"
/* Failure limits out of the way of tests about something else. */
#define FEW_LIMITS "failed_logins = 100; failed_logins_per_user = 1000;"

/* A host with auth loaded; auth_keys go inside "auth = { WEAK ... };",
 * extra is appended as further sections (may be NULL). The dummy hash
 * that start() queues is completed before returning. */
static sm_testhost *start_with(const char *auth_keys, const char *extra)
{
    char config[1024];
    int n = snprintf(config, sizeof config, "auth = { " WEAK " %s };\n%s",
                     auth_keys ? auth_keys : "", extra ? extra : "");
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof config);
    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(config, &th), SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, AUTH_SO, "auth"), SM_OK);
    sm_testhost_run_workers(th);
    return th;
}

static sm_testhost *start(void) { return start_with(NULL, NULL); }

static int load_status(const char *config)
{
    sm_testhost *th = NULL;
    if (sm_testhost_new(config, &th) != SM_OK)
        return 1000; /* not a plugin status: the assertion shows it */
    int rc = sm_testhost_load(th, AUTH_SO, "auth");
    sm_testhost_run_workers(th);
    sm_testhost_free(th);
    return rc;
}

static sm_session_id connect_from(sm_testhost *th, const char *address)
{
    sm_session_id s = sm_testhost_connect(th, address);
    CU_ASSERT_FATAL(s != 0);
    return s;
}

static json_t *call_json(sm_testhost *th, sm_session_id s, const char *action, json_t *payload)
{
    char *text = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    json_t *r = sm_testhost_call(th, s, action, text);
    free(text);
    return r;
}

static json_t *reg(sm_testhost *th, sm_session_id s, const char *username, const char *password)
{
    return call_json(th, s, "register",
                     json_pack("{s:s, s:s}", "username", username, "password", password));
}

static json_t *login(sm_testhost *th, sm_session_id s, const char *username, const char *password)
{
    return call_json(th, s, "login",
                     json_pack("{s:s, s:s}", "username", username, "password", password));
}

static const json_t *payload_of(const json_t *m) { return json_object_get(m, "payload"); }

/* A string member, or "<none>", so that a failing comparison reports
 * instead of passing NULL to strcmp. */
static const char *str_of(const json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    return v ? v : "<none>";
}

/* Asserts an error reply with this code for this command; returns its message. */
static const char *expect_error(const json_t *r, int code, const char *command)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "type")), "error");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "action")), "error");
    const json_t *p = payload_of(r);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "code")), code);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(p, "command")), command);
    const char *msg = json_string_value(json_object_get(p, "message"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    return msg;
}

static void expect_and_free_error(json_t *r, int code, const char *command)
{
    expect_error(r, code, command);
    json_decref(r);
}

/* Asserts a 1008 with an integer retry_after equal to `seconds`. */
static void expect_retry_after(json_t *r, const char *command, json_int_t seconds)
{
    expect_error(r, 1008, command);
    const json_t *ra = json_object_get(payload_of(r), "retry_after");
    CU_ASSERT_TRUE(json_is_integer(ra));
    CU_ASSERT_EQUAL(json_integer_value(ra), seconds);
    json_decref(r);
}

/* Asserts registration_success {username, user_id, assigned_room: null};
 * returns the user id. */
static json_int_t expect_registered(json_t *r, const char *username)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "type")), "response");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "action")),
                           "registration_success");
    const json_t *p = payload_of(r);
    CU_ASSERT_EQUAL(json_object_size(p), 3);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(p, "username")), username);
    CU_ASSERT_TRUE(json_is_null(json_object_get(p, "assigned_room")));
    json_int_t id = json_integer_value(json_object_get(p, "user_id"));
    CU_ASSERT_TRUE(json_is_integer(json_object_get(p, "user_id")) && id > 0);
    json_decref(r);
    return id;
}

static void expect_logged_in(json_t *r, const char *username, json_int_t user_id)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(str_of(r, "type"), "response");
    CU_ASSERT_STRING_EQUAL(str_of(r, "action"), "login_success");
    const json_t *p = payload_of(r);
    CU_ASSERT_EQUAL(json_object_size(p), 4);
    CU_ASSERT_STRING_EQUAL(str_of(p, "username"), username);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "user_id")), user_id);
    CU_ASSERT_TRUE(json_is_null(json_object_get(p, "assigned_room")));
    CU_ASSERT_TRUE(json_is_integer(json_object_get(p, "unread_count")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(p, "unread_count")), 0);
    json_decref(r);
}

static json_int_t register_ok(sm_testhost *th, sm_session_id s, const char *username,
                              const char *password)
{
    return expect_registered(reg(th, s, username, password), username);
}

static int64_t query(sm_testhost *th, const char *sql)
{
    int64_t v = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, sql, &v), SM_OK);
    return v;
}

static int64_t user_count(sm_testhost *th) { return query(th, "SELECT COUNT(*) FROM auth_users"); }

static const char *username_of(sm_testhost *th, sm_session_id s)
{
    return sm_testhost_username(th, s);
}

/* A PEM SubjectPublicKeyInfo of a fresh key ("RSA" with bits, or "ED25519"). */
static char *make_key_pem(const char *type, size_t bits)
{
    EVP_PKEY *key = strcmp(type, "RSA") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", bits)
                                             : EVP_PKEY_Q_keygen(NULL, NULL, type);
    CU_ASSERT_PTR_NOT_NULL_FATAL(key);
    BIO *bio = BIO_new(BIO_s_mem());
    CU_ASSERT_FATAL(bio && PEM_write_bio_PUBKEY(bio, key) == 1);
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    char *pem = malloc((size_t)len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pem);
    memcpy(pem, data, (size_t)len);
    pem[len] = '\0';
    BIO_free(bio);
    EVP_PKEY_free(key);
    return pem;
}

static json_t *reg_with_key(sm_testhost *th, sm_session_id s, const char *username,
                            const char *key)
{
    return call_json(th, s, "register",
                     json_pack("{s:s, s:s, s:s}", "username", username, "password",
                               "password123", "public_key", key));
}

/* ---- register ---------------------------------------------------------- */

static void register_logs_the_session_in_and_replies_registration_success(void)
{
    sm_testhost *th = start();
    sm_session_id s = connect_from(th, NULL);
    json_int_t id = register_ok(th, s, "Alice", "correct horse");
    CU_ASSERT_STRING_EQUAL(username_of(th, s), "Alice");
    CU_ASSERT_EQUAL(query(th, "SELECT id FROM auth_users WHERE username = 'Alice'"
                              " AND username_lower = 'alice' AND public_key IS NULL"),
                    id);
    CU_ASSERT_EQUAL(query(th, "SELECT password_hash LIKE '" WEAK_PREFIX "%' FROM auth_users"),
                    1);
    CU_ASSERT_EQUAL(query(th, "SELECT created_at FROM auth_users"),
                    (int64_t)SM_TESTHOST_EPOCH);
    json_int_t id2 = register_ok(th, connect_from(th, NULL), "bob", "correct horse");
    CU_ASSERT_TRUE(id2 > id);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, s), 0);
    sm_testhost_free(th);
}

static void register_refuses_each_malformed_field_with_1004_naming_it(void)
{
    static const struct {
        const char *payload;
        const char *field;
    } cases[] = {
        {"{\"password\": \"password123\"}", "username"},
        {"{\"username\": null, \"password\": \"password123\"}", "username"},
        {"{\"username\": 42, \"password\": \"password123\"}", "username"},
        {"{\"username\": \"ab\", \"password\": \"password123\"}", "username"},
        {"{\"username\": \"abcdefghijklmnopqrstuvwxyz0123456\", \"password\": \"password123\"}",
         "username"},
        {"{\"username\": \"al ice\", \"password\": \"password123\"}", "username"},
        {"{\"username\": \"al/ice\", \"password\": \"password123\"}", "username"},
        {"{\"username\": \"al\\u00e9ce\", \"password\": \"password123\"}", "username"},
        {"{\"username\": \"alice\"}", "password"},
        {"{\"username\": \"alice\", \"password\": [\"password123\"]}", "password"},
        {"{\"username\": \"alice\", \"password\": \"1234567\"}", "password"},
        {"{\"username\": \"alice\", \"password\": \"password123\", \"public_key\": 42}",
         "public_key"},
        {"{\"username\": \"alice\", \"password\": \"password123\", \"public_key\": \"nope\"}",
         "public_key"},
        {"{\"username\": \"alice\", \"password\": \"password123\", \"public_key\":"
         " \"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\\n\"}",
         "public_key"},
    };
    sm_testhost *th = start();
    sm_session_id s = connect_from(th, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *r = sm_testhost_call(th, s, "register", cases[i].payload);
        const char *msg = expect_error(r, 1004, "register");
        char quoted[32];
        snprintf(quoted, sizeof quoted, "'%s'", cases[i].field);
        if (!strstr(msg, quoted))
            fprintf(stderr, "case %zu: message \"%s\" does not name %s\n", i, msg, quoted);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, quoted));
        json_decref(r);
    }
    CU_ASSERT_EQUAL(user_count(th), 0);
    CU_ASSERT_PTR_NULL(username_of(th, s));
    sm_testhost_free(th);
}

static void register_password_length_bounds_are_8_and_1024_bytes(void)
{
    sm_testhost *th = start();
    sm_session_id s = connect_from(th, NULL);
    char pw[1026];
    memset(pw, 'p', 1025);
    pw[1025] = '\0';
    json_t *r = reg(th, s, "alice", pw);
    CU_ASSERT_PTR_NOT_NULL(strstr(expect_error(r, 1004, "register"), "'password'"));
    json_decref(r);
    pw[1024] = '\0';
    register_ok(th, s, "alice", pw);
    /* Eight bytes of UTF-8 (four two-byte characters) are enough. */
    register_ok(th, connect_from(th, NULL), "bob", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
    CU_ASSERT_EQUAL(user_count(th), 2);
    sm_testhost_free(th);
}

static void register_public_key_rsa_2048_and_ed25519_accepted(void)
{
    sm_testhost *th = start();
    char *rsa = make_key_pem("RSA", 2048);
    char *ed = make_key_pem("ED25519", 0);
    expect_registered(reg_with_key(th, connect_from(th, NULL), "rsa_user", rsa), "rsa_user");
    expect_registered(reg_with_key(th, connect_from(th, NULL), "ed_user", ed), "ed_user");
    /* null counts as absent */
    json_t *r = sm_testhost_call(th, connect_from(th, NULL), "register",
                                 "{\"username\": \"nokey\", \"password\": \"password123\","
                                 " \"public_key\": null}");
    expect_registered(r, "nokey");
    CU_ASSERT_EQUAL(query(th, "SELECT COUNT(*) FROM auth_users WHERE public_key IS NOT NULL"),
                    2);
    /* The default bound: 8192 bytes. */
    char *big = malloc(8200);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    snprintf(big, 8200, "%s", rsa);
    size_t used = strlen(big);
    memset(big + used, '\n', 8193 - used);
    big[8193] = '\0';
    json_t *over = reg_with_key(th, connect_from(th, NULL), "too_big", big);
    CU_ASSERT_STRING_EQUAL(expect_error(over, 1004, "register"),
                           "field 'public_key' must be at most 8192 bytes");
    json_decref(over);
    big[8192] = '\0'; /* exactly the bound, whitespace after the key: fine */
    expect_registered(reg_with_key(th, connect_from(th, NULL), "just_fits", big), "just_fits");
    free(big);
    CU_ASSERT_EQUAL(query(th, "SELECT public_key LIKE '-----BEGIN PUBLIC KEY-----%' FROM"
                              " auth_users WHERE username = 'rsa_user'"),
                    1);
    free(rsa);
    free(ed);
    sm_testhost_free(th);
}

static void register_public_key_weak_foreign_or_oversized_refused(void)
{
    sm_testhost *th = start_with("max_public_key_bytes = 512;", NULL);
    sm_session_id s = connect_from(th, NULL);
    char *rsa1024 = make_key_pem("RSA", 1024);
    char *rsa2048 = make_key_pem("RSA", 2048); /* about 450 bytes: fits */
    char *rsa3072 = make_key_pem("RSA", 3072); /* about 620 bytes: too long */
    char *ed = make_key_pem("ED25519", 0);
    json_t *r = reg_with_key(th, s, "alice", rsa1024);
    CU_ASSERT_STRING_EQUAL(expect_error(r, 1004, "register"),
                           "field 'public_key' must be an RSA key of at least 2048 bits");
    json_decref(r);
    r = reg_with_key(th, s, "alice", rsa3072);
    CU_ASSERT_STRING_EQUAL(expect_error(r, 1004, "register"),
                           "field 'public_key' must be at most 512 bytes");
    json_decref(r);
    /* Neither RSA nor Ed25519. */
    EVP_PKEY *p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p256);
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, p256);
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    r = call_json(th, s, "register",
                  json_pack("{s:s, s:s, s:s#}", "username", "alice", "password", "password123",
                            "public_key", data, (int)len));
    CU_ASSERT_PTR_NOT_NULL(strstr(expect_error(r, 1004, "register"), "'public_key'"));
    json_decref(r);
    BIO_free(bio);
    EVP_PKEY_free(p256);

    /* Text around the key, or a second key, is refused. */
    char buf[2048];
    snprintf(buf, sizeof buf, "hello\n%s", rsa2048);
    r = reg_with_key(th, s, "alice", buf);
    expect_and_free_error(r, 1004, "register");
    snprintf(buf, sizeof buf, "%sgarbage\n", rsa2048);
    r = reg_with_key(th, s, "alice", buf);
    expect_and_free_error(r, 1004, "register");
    snprintf(buf, sizeof buf, "%s%s", ed, ed);
    r = reg_with_key(th, s, "alice", buf);
    expect_and_free_error(r, 1004, "register");
    /* PKCS#1 "RSA PUBLIC KEY" is not SubjectPublicKeyInfo. */
    r = reg_with_key(th, s, "alice",
                     "-----BEGIN RSA PUBLIC KEY-----\nMAoCAwEAAQIDAQAB\n-----END RSA PUBLIC KEY-----\n");
    expect_and_free_error(r, 1004, "register");
    CU_ASSERT_EQUAL(user_count(th), 0);
    /* Surrounding whitespace is fine. */
    snprintf(buf, sizeof buf, "\n  %s\n\n", rsa2048);
    expect_registered(reg_with_key(th, s, "alice", buf), "alice");
    free(rsa1024);
    free(rsa2048);
    free(rsa3072);
    free(ed);
    sm_testhost_free(th);
}

static void register_taken_name_gets_1010_regardless_of_case(void)
{
    sm_testhost *th = start();
    register_ok(th, connect_from(th, NULL), "Alice", "password123");
    const char *names[] = {"Alice", "alice", "ALICE", "aLiCe", NULL};
    for (const char **n = names; *n; n++) {
        sm_session_id s = connect_from(th, NULL);
        json_t *r = reg(th, s, *n, "another password");
        CU_ASSERT_STRING_EQUAL(expect_error(r, 1010, "register"), "username already taken");
        json_decref(r);
        CU_ASSERT_PTR_NULL(username_of(th, s));
    }
    CU_ASSERT_EQUAL(user_count(th), 1);
    sm_testhost_free(th);
}

/* Both pass the existence check before either hash is done; the UNIQUE
 * index makes exactly one insert win. */
static void register_race_for_one_name_has_exactly_one_winner(void)
{
    sm_testhost *th = start();
    sm_session_id a = connect_from(th, "10.0.0.1"), b = connect_from(th, "10.0.0.2");
    uint64_t na = sm_testhost_send(th, a, "register",
                                   "{\"username\": \"Racer\", \"password\": \"password-a\"}");
    uint64_t nb = sm_testhost_send(th, b, "register",
                                   "{\"username\": \"racer\", \"password\": \"password-b\"}");
    CU_ASSERT_FATAL(na && nb);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, a), 0); /* both still hashing */
    CU_ASSERT_EQUAL(sm_testhost_pending(th, b), 0);
    sm_testhost_run_workers(th);
    json_t *ra = sm_testhost_reply(th, a, na), *rb = sm_testhost_reply(th, b, nb);
    CU_ASSERT_FATAL(ra && rb);
    const char *ta = json_string_value(json_object_get(ra, "type"));
    const char *tb = json_string_value(json_object_get(rb, "type"));
    CU_ASSERT_EQUAL((strcmp(ta, "response") == 0) + (strcmp(tb, "response") == 0), 1);
    json_t *winner = strcmp(ta, "response") == 0 ? ra : rb;
    json_t *loser = winner == ra ? rb : ra;
    sm_session_id ws = winner == ra ? a : b, ls = winner == ra ? b : a;
    expect_error(loser, 1010, "register");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(winner, "action")),
                           "registration_success");
    CU_ASSERT_PTR_NOT_NULL(username_of(th, ws));
    CU_ASSERT_PTR_NULL(username_of(th, ls));
    CU_ASSERT_EQUAL(user_count(th), 1);
    json_decref(ra);
    json_decref(rb);
    sm_testhost_free(th);
}

/* The protocol's order: a rate limit (1008) is checked before the payload. */
static void register_limit_per_address_per_hour(void)
{
    sm_testhost *th = start_with("registrations_per_hour = 2;", NULL);
    register_ok(th, connect_from(th, "10.0.0.1"), "user1", "password123");
    sm_testhost_advance(th, 600);
    /* A taken name counts as an attempt too. */
    expect_and_free_error(reg(th, connect_from(th, "10.0.0.1"), "USER1", "password123"), 1010,
                          "register");
    sm_session_id s = connect_from(th, "10.0.0.1");
    /* The oldest registration leaves the hour in 3000 s. */
    expect_retry_after(reg(th, s, "user3", "password123"), "register", 3000);
    expect_retry_after(sm_testhost_call(th, s, "register", "{}"), "register", 3000);
    CU_ASSERT_PTR_NULL(username_of(th, s));
    /* Other addresses are not affected, and malformed payloads do not count. */
    sm_session_id other = connect_from(th, "10.0.0.2");
    for (int i = 0; i < 5; i++)
        expect_and_free_error(sm_testhost_call(th, other, "register", "{}"), 1004, "register");
    register_ok(th, other, "user4", "password123");
    sm_testhost_advance(th, 3000);
    register_ok(th, s, "user3", "password123");
    expect_retry_after(reg(th, connect_from(th, "10.0.0.1"), "user5", "password123"),
                       "register", 600);
    sm_testhost_advance(th, 600);
    register_ok(th, connect_from(th, "10.0.0.1"), "user5", "password123");
    sm_testhost_free(th);
}

/* ---- login -------------------------------------------------------------- */

static void login_replies_with_the_name_as_first_written(void)
{
    sm_testhost *th = start();
    json_int_t id = register_ok(th, connect_from(th, NULL), "Alice.Smith", "correct horse");
    sm_session_id s = connect_from(th, NULL);
    expect_logged_in(login(th, s, "aLICE.smith", "correct horse"), "Alice.Smith", id);
    CU_ASSERT_STRING_EQUAL(username_of(th, s), "Alice.Smith");
    sm_testhost_free(th);
}

static void login_same_reply_for_unknown_user_and_wrong_password(void)
{
    sm_testhost *th = start();
    register_ok(th, connect_from(th, NULL), "alice", "correct horse");
    sm_session_id s = connect_from(th, NULL);
    json_t *wrong = login(th, s, "alice", "wrong horse");
    /* The unknown name is verified on the pool too (against the dummy
     * hash): no answer before the workers ran. */
    uint64_t n = sm_testhost_send(th, s, "login",
                                  "{\"username\": \"mallory\", \"password\": \"correct horse\"}");
    CU_ASSERT_FATAL(n != 0);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, s), 0);
    sm_testhost_run_workers(th);
    json_t *unknown = sm_testhost_reply(th, s, n);
    CU_ASSERT_STRING_EQUAL(expect_error(wrong, 1001, "login"), BAD_CREDENTIALS);
    char *a = json_dumps(wrong, JSON_COMPACT | JSON_SORT_KEYS);
    char *b = json_dumps(unknown, JSON_COMPACT | JSON_SORT_KEYS);
    /* Equal but for reply_to, which names each command's own nonce. */
    json_object_del(wrong, "reply_to");
    json_object_del(unknown, "reply_to");
    char *pa = json_dumps(wrong, JSON_COMPACT | JSON_SORT_KEYS);
    char *pb = json_dumps(unknown, JSON_COMPACT | JSON_SORT_KEYS);
    CU_ASSERT_FATAL(a && b && pa && pb);
    CU_ASSERT_STRING_EQUAL(pa, pb);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    CU_ASSERT_PTR_NULL(username_of(th, s));
    free(a);
    free(b);
    free(pa);
    free(pb);
    json_decref(wrong);
    json_decref(unknown);
    sm_testhost_free(th);
}

static void login_ill_formed_credentials_get_1001_missing_ones_1004(void)
{
    sm_testhost *th = start_with(FEW_LIMITS, NULL);
    register_ok(th, connect_from(th, NULL), "alice", "correct horse");
    sm_session_id s = connect_from(th, NULL);
    json_t *ref = login(th, s, "alice", "wrong horse");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    const json_t *ref_payload = payload_of(ref);
    char long_pw[1026];
    memset(long_pw, 'p', 1025);
    long_pw[1025] = '\0';
    const char *ill[][2] = {
        {"al", "correct horse"},
        {"al ice", "correct horse"},
        {"abcdefghijklmnopqrstuvwxyz0123456", "correct horse"},
        {"al'ice", "correct horse"},
        {"alice", "short"},
        {"alice", long_pw},
    };
    for (size_t i = 0; i < sizeof ill / sizeof ill[0]; i++) {
        json_t *r = login(th, s, ill[i][0], ill[i][1]);
        expect_error(r, 1001, "login");
        CU_ASSERT_TRUE(json_equal(payload_of(r), (json_t *)ref_payload));
        json_decref(r);
    }
    expect_and_free_error(sm_testhost_call(th, s, "login", "{\"password\": \"correct horse\"}"),
                          1004, "login");
    expect_and_free_error(sm_testhost_call(th, s, "login", "{\"username\": \"alice\"}"), 1004,
                          "login");
    expect_and_free_error(
        sm_testhost_call(th, s, "login", "{\"username\": 7, \"password\": \"correct horse\"}"),
        1004, "login");
    expect_and_free_error(
        sm_testhost_call(th, s, "login", "{\"username\": \"alice\", \"password\": null}"), 1004,
        "login");
    CU_ASSERT_PTR_NULL(username_of(th, s));
    json_decref(ref);
    sm_testhost_free(th);
}

static void login_reply_carries_room_and_unread_count_from_session_attributes(void)
{
    sm_testhost *th = start();
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, AUTH_PEER_SO, "auth_peer"), SM_OK);
    sm_session_id s = connect_from(th, NULL);
    json_t *r = reg(th, s, "alice", "correct horse");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(payload_of(r), "assigned_room")),
                           "lobby");
    CU_ASSERT_PTR_NULL(json_object_get(payload_of(r), "unread_count"));
    json_decref(r);
    r = login(th, connect_from(th, NULL), "alice", "correct horse");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "action")), "login_success");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(payload_of(r), "assigned_room")),
                           "lobby");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(payload_of(r), "unread_count")), 7);
    json_decref(r);
    sm_testhost_free(th);
}

/* auth is the users provider: other plugins find accounts by name (any
 * ASCII case) or id, with the name as registered and the public key. */
static long long lookup_status(const json_t *r)
{
    return json_integer_value(json_object_get(payload_of(r), "status"));
}

static void users_service_finds_accounts_by_name_and_id(void)
{
    sm_testhost *th = start();
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, AUTH_PEER_SO, "auth_peer"), SM_OK);
    char *pem = make_key_pem("ED25519", 0);
    /* (auth_peer's attributes are in the replies: check only the ids.) */
    json_decref(reg_with_key(th, connect_from(th, NULL), "Alice", pem));
    json_decref(reg(th, connect_from(th, NULL), "bob", "correct horse"));
    int64_t alice = query(th, "SELECT id FROM auth_users WHERE username_lower = 'alice'");
    int64_t bob = query(th, "SELECT id FROM auth_users WHERE username_lower = 'bob'");
    CU_ASSERT_TRUE_FATAL(alice > 0 && bob > 0 && alice != bob);
    json_t *r;
    sm_session_id s = connect_from(th, NULL);

    r = sm_testhost_call(th, s, "peer_lookup", "{\"name\": \"ALICE\"}");
    CU_ASSERT_EQUAL(lookup_status(r), SM_OK);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(payload_of(r), "id")), alice);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(payload_of(r), "name")), "Alice");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(payload_of(r), "public_key")), pem);
    json_decref(r);

    char body[64];
    snprintf(body, sizeof body, "{\"id\": %lld}", (long long)bob);
    r = sm_testhost_call(th, s, "peer_lookup", body);
    CU_ASSERT_EQUAL(lookup_status(r), SM_OK);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(payload_of(r), "name")), "bob");
    CU_ASSERT_TRUE(json_is_null(json_object_get(payload_of(r), "public_key")));
    json_decref(r);

    const char *missing[] = {"{\"name\": \"carol\"}", "{\"name\": \"a b\"}",
                             "{\"id\": 999}"};
    for (size_t i = 0; i < 3; i++) {
        r = sm_testhost_call(th, s, "peer_lookup", missing[i]);
        CU_ASSERT_EQUAL(lookup_status(r), SM_ENOTFOUND);
        json_decref(r);
    }
    r = sm_testhost_call(th, s, "peer_lookup", "{\"name\": \"\"}");
    CU_ASSERT_EQUAL(lookup_status(r), SM_EINVAL);
    json_decref(r);
    free(pem);
    sm_testhost_free(th);
}

/* ---- logout and sessions ------------------------------------------------ */

static void logout_ends_the_login_and_needs_one(void)
{
    sm_testhost *th = start();
    sm_session_id s = connect_from(th, NULL);
    register_ok(th, s, "alice", "correct horse");
    json_t *r = sm_testhost_call(th, s, "logout", "{}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "type")), "response");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r, "action")), "logout");
    CU_ASSERT_EQUAL(json_object_size(payload_of(r)), 0);
    json_decref(r);
    CU_ASSERT_PTR_NULL(username_of(th, s));
    expect_and_free_error(sm_testhost_call(th, s, "logout", "{}"), 1002, "logout");
    expect_and_free_error(sm_testhost_call(th, connect_from(th, NULL), "logout", NULL), 1002,
                          "logout");
    sm_testhost_free(th);
}

static void failed_login_or_register_still_ends_the_old_login(void)
{
    sm_testhost *th = start_with(FEW_LIMITS, NULL);
    json_int_t bob = register_ok(th, connect_from(th, NULL), "bob", "bob password");
    sm_session_id s = connect_from(th, NULL);
    register_ok(th, s, "alice", "correct horse");
    expect_and_free_error(login(th, s, "alice", "wrong horse"), 1001, "login");
    CU_ASSERT_PTR_NULL(username_of(th, s));

    expect_logged_in(login(th, s, "alice", "correct horse"), "alice", 2);
    expect_and_free_error(login(th, s, "x", "y"), 1001, "login");
    CU_ASSERT_PTR_NULL(username_of(th, s));

    expect_logged_in(login(th, s, "alice", "correct horse"), "alice", 2);
    expect_and_free_error(sm_testhost_call(th, s, "login", "{}"), 1004, "login");
    CU_ASSERT_PTR_NULL(username_of(th, s));

    expect_logged_in(login(th, s, "alice", "correct horse"), "alice", 2);
    expect_and_free_error(reg(th, s, "BOB", "password123"), 1010, "register");
    CU_ASSERT_PTR_NULL(username_of(th, s));

    expect_logged_in(login(th, s, "alice", "correct horse"), "alice", 2);
    expect_and_free_error(sm_testhost_call(th, s, "register", "{\"username\": 1}"), 1004,
                          "register");
    CU_ASSERT_PTR_NULL(username_of(th, s));

    /* And a successful login switches users. */
    expect_logged_in(login(th, s, "alice", "correct horse"), "alice", 2);
    expect_logged_in(login(th, s, "bob", "bob password"), "bob", bob);
    CU_ASSERT_STRING_EQUAL(username_of(th, s), "bob");
    sm_testhost_free(th);
}

static void one_user_on_two_sessions_logout_ends_only_one(void)
{
    sm_testhost *th = start();
    sm_session_id phone = connect_from(th, NULL), laptop = connect_from(th, NULL);
    json_int_t id = register_ok(th, phone, "alice", "correct horse");
    expect_logged_in(login(th, laptop, "ALICE", "correct horse"), "alice", id);
    CU_ASSERT_STRING_EQUAL(username_of(th, phone), "alice");
    CU_ASSERT_STRING_EQUAL(username_of(th, laptop), "alice");
    json_decref(sm_testhost_call(th, phone, "logout", NULL));
    CU_ASSERT_PTR_NULL(username_of(th, phone));
    CU_ASSERT_STRING_EQUAL(username_of(th, laptop), "alice");
    /* A closed connection ends its login only. */
    sm_session_id third = connect_from(th, NULL);
    expect_logged_in(login(th, third, "alice", "correct horse"), "alice", id);
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, laptop), SM_OK);
    CU_ASSERT_STRING_EQUAL(username_of(th, third), "alice");
    sm_testhost_free(th);
}

/* ---- rate limits -------------------------------------------------------- */

static uint64_t send_login(sm_testhost *th, sm_session_id s, const char *username,
                           const char *password)
{
    char payload[160];
    int n = snprintf(payload, sizeof payload, "{\"username\": \"%s\", \"password\": \"%s\"}",
                     username, password);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof payload);
    uint64_t nonce = sm_testhost_send(th, s, "login", payload);
    CU_ASSERT_FATAL(nonce != 0);
    return nonce;
}

/* Asserts a 1008 with this message and retry_after; frees r. */
static void expect_refusal(json_t *r, const char *command, const char *message,
                           json_int_t seconds)
{
    CU_ASSERT_STRING_EQUAL(expect_error(r, 1008, command), message);
    const json_t *ra = json_object_get(payload_of(r), "retry_after");
    CU_ASSERT_TRUE(json_is_integer(ra));
    CU_ASSERT_EQUAL(json_integer_value(ra), seconds);
    json_decref(r);
}

#define TOO_MANY_FAILED "too many failed logins; try again later"
#define IN_PROGRESS "too many attempts in progress; try again later"

/* Failures for one name from many addresses, each below its own limit;
 * the limit holds for unknown names too, and a right password does not get
 * past it. */
static void failed_logins_per_username_get_1008_until_the_window_passes(void)
{
    sm_testhost *th = start_with(
        "failed_logins = 2; failed_logins_per_user = 3; failed_login_window = 60;", NULL);
    json_int_t id = register_ok(th, connect_from(th, "10.1.0.1"), "alice", "correct horse");
    const char *addrs[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
    for (int i = 0; i < 3; i++) {
        expect_and_free_error(login(th, connect_from(th, addrs[i]), "Alice", "wrong horse"),
                              1001, "login");
        sm_testhost_advance(th, 10);
    }
    sm_session_id s = connect_from(th, "10.0.0.4");
    /* Oldest failure at +0, now +30: it leaves the window in 30 s. */
    expect_retry_after(login(th, s, "alice", "correct horse"), "login", 30);
    expect_retry_after(login(th, s, "ALICE", "wrong horse"), "login", 30);
    sm_testhost_advance(th, 30);
    /* One failure left the window: one more try. */
    expect_logged_in(login(th, s, "alice", "correct horse"), "alice", id);

    for (int i = 0; i < 3; i++)
        expect_and_free_error(login(th, connect_from(th, addrs[i]), "ghost", "wrong horse"),
                              1001, "login");
    expect_retry_after(login(th, connect_from(th, "10.0.0.9"), "ghost", "x-password"), "login",
                       60);
    sm_testhost_free(th);
}

static void failed_logins_per_address_get_1008_before_the_payload_check(void)
{
    sm_testhost *th = start_with("failed_logins = 3; failed_login_window = 60;", NULL);
    json_int_t id = register_ok(th, connect_from(th, "10.1.0.1"), "alice", "correct horse");
    sm_session_id s = connect_from(th, "10.0.0.1");
    expect_and_free_error(login(th, s, "nobody1", "wrong horse"), 1001, "login");
    sm_testhost_advance(th, 5);
    expect_and_free_error(login(th, s, "nobody2", "wrong horse"), 1001, "login");
    expect_and_free_error(login(th, s, "x", "ill-formed name"), 1001, "login");
    sm_session_id s2 = connect_from(th, "10.0.0.1");
    expect_retry_after(login(th, s2, "alice", "correct horse"), "login", 55);
    expect_retry_after(sm_testhost_call(th, s2, "login", "{}"), "login", 55);
    /* Other addresses are not affected. */
    expect_logged_in(login(th, connect_from(th, "10.0.0.2"), "alice", "correct horse"), "alice",
                     id);
    sm_testhost_advance(th, 55);
    expect_logged_in(login(th, s2, "alice", "correct horse"), "alice", id);
    /* Successes do not count. */
    for (int i = 0; i < 5; i++)
        expect_logged_in(login(th, s2, "alice", "correct horse"), "alice", id);
    sm_testhost_free(th);
}

/* SIGHUP: a lower failed_logins holds against the failures already
 * counted; new argon2id parameters apply to the next hash; a bad value
 * refuses the reload and the old limits stay. */
static void reload_changes_limits_and_argon2_parameters(void)
{
    sm_testhost *th = start_with("failed_logins = 5; failed_login_window = 60;", NULL);
    sm_session_id s = connect_from(th, "10.0.0.1");
    for (int i = 0; i < 3; i++)
        expect_and_free_error(login(th, s, "nobody", "wrong horse"), 1001, "login");
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "auth = { " WEAK " failed_logins = 2; "
                                           "failed_login_window = 60; };"),
                    SM_OK);
    expect_retry_after(login(th, s, "nobody", "wrong horse"), "login", 60);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "auth = { " WEAK " failed_logins = 0; };"), SM_ERROR);
    CU_ASSERT_EQUAL(sm_testhost_reload(th, "auth = { " WEAK " failed_logins = 5; "
                                           "argon2_lanes = 2; };"),
                    SM_OK);
    expect_and_free_error(login(th, s, "nobody", "wrong horse"), 1001, "login");
    register_ok(th, connect_from(th, "10.0.0.3"), "carol", "correct horse");
    int64_t n = -1;
    CU_ASSERT_EQUAL(sm_testhost_query_int(th, "SELECT COUNT(*) FROM auth_users WHERE "
                                              "password_hash LIKE '$argon2id$v=19$m=64,t=1,p=2$%'",
                                          &n),
                    SM_OK);
    CU_ASSERT_EQUAL(n, 1);
    sm_testhost_free(th);
}

/* Guesses at one account sent in parallel count while their hashes run. */
static void login_attempts_in_flight_count_toward_the_username_limit(void)
{
    sm_testhost *th = start_with("failed_logins = 1; failed_logins_per_user = 2;", NULL);
    register_ok(th, connect_from(th, "10.1.0.1"), "alice", "correct horse");
    sm_session_id s[3];
    uint64_t n[3];
    const char *addrs[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
    for (int i = 0; i < 3; i++) {
        s[i] = connect_from(th, addrs[i]);
        n[i] = send_login(th, s[i], "alice", "wrong horse");
    }
    /* The third is refused at once, before any hash finished. */
    expect_retry_after(sm_testhost_reply(th, s[2], n[2]), "login", 1);
    sm_testhost_run_workers(th);
    expect_and_free_error(sm_testhost_reply(th, s[0], n[0]), 1001, "login");
    expect_and_free_error(sm_testhost_reply(th, s[1], n[1]), 1001, "login");
    expect_retry_after(login(th, s[2], "alice", "correct horse"), "login", 60);
    sm_testhost_free(th);
}

enum { BURST = 40 };

/* Sends one wrong login for alice from each session; returns how many were
 * answered at once (asserting each is a 1008 with `message` and
 * retry_after `seconds`), and runs the workers: the others were hashed and
 * must get 1001. *hashed grows by their number. */
static int burst_of_wrong_logins(sm_testhost *th, const sm_session_id *s, const char *message,
                                 json_int_t seconds, int *hashed)
{
    uint64_t n[BURST];
    int refused = 0;
    int waiting[BURST];
    for (int i = 0; i < BURST; i++)
        n[i] = send_login(th, s[i], "alice", "wrong horse");
    for (int i = 0; i < BURST; i++) {
        json_t *r = sm_testhost_reply(th, s[i], n[i]);
        waiting[i] = r == NULL;
        if (r) {
            expect_refusal(r, "login", message, seconds);
            refused++;
        }
    }
    sm_testhost_run_workers(th);
    for (int i = 0; i < BURST; i++) {
        if (!waiting[i])
            continue;
        expect_and_free_error(sm_testhost_reply(th, s[i], n[i]), 1001, "login");
        (*hashed)++;
    }
    return refused;
}

/* The review's attack: 40 parallel wrong logins from one address were all
 * hashed. Now at most max_hashes_per_address (2) of the address's hashes
 * are queued or running, the rest get 1008 at once, and over the window
 * no more than failed_logins (5) are hashed in all, while a user elsewhere
 * logs in meanwhile. */
static void login_hashes_per_address_are_capped_while_in_flight(void)
{
    sm_testhost *th = start();
    json_int_t id = register_ok(th, connect_from(th, "10.1.0.1"), "alice", "correct horse");
    sm_session_id s[BURST];
    for (int i = 0; i < BURST; i++)
        s[i] = connect_from(th, "192.0.2.7");
    int hashed = 0;
    /* Two hashed, 38 refused: the address has its share of the queue. */
    CU_ASSERT_EQUAL(burst_of_wrong_logins(th, s, IN_PROGRESS, 1, &hashed), BURST - 2);
    CU_ASSERT_EQUAL(hashed, 2);
    /* The legitimate user, elsewhere, during the next burst. */
    sm_session_id elsewhere = connect_from(th, "198.51.100.1");
    uint64_t ne = send_login(th, elsewhere, "alice", "correct horse");
    CU_ASSERT_EQUAL(burst_of_wrong_logins(th, s, IN_PROGRESS, 1, &hashed), BURST - 2);
    expect_logged_in(sm_testhost_reply(th, elsewhere, ne), "alice", id);
    CU_ASSERT_EQUAL(hashed, 4);
    /* Four failures and one attempt in flight make five: the rest are
     * refused by the failure limit, for a second (the last may succeed). */
    CU_ASSERT_EQUAL(burst_of_wrong_logins(th, s, TOO_MANY_FAILED, 1, &hashed), BURST - 1);
    CU_ASSERT_EQUAL(hashed, 5);
    CU_ASSERT_EQUAL(burst_of_wrong_logins(th, s, TOO_MANY_FAILED, 60, &hashed), BURST);
    CU_ASSERT_EQUAL(hashed, 5);
    sm_testhost_free(th);
}

/* Attempts in flight count toward the address's failure limit: with a
 * large hash share, 40 parallel wrong logins still hash only 5. */
static void login_attempts_in_flight_count_toward_the_address_limit(void)
{
    sm_testhost *th = start_with("max_hashes_per_address = 40;", NULL);
    json_int_t id = register_ok(th, connect_from(th, "10.1.0.1"), "alice", "correct horse");
    sm_session_id s[BURST];
    for (int i = 0; i < BURST; i++)
        s[i] = connect_from(th, "192.0.2.8");
    int hashed = 0;
    CU_ASSERT_EQUAL(burst_of_wrong_logins(th, s, TOO_MANY_FAILED, 1, &hashed), BURST - 5);
    CU_ASSERT_EQUAL(hashed, 5);
    CU_ASSERT_EQUAL(burst_of_wrong_logins(th, s, TOO_MANY_FAILED, 60, &hashed), BURST);
    CU_ASSERT_EQUAL(hashed, 5);
    expect_logged_in(login(th, connect_from(th, "198.51.100.1"), "alice", "correct horse"),
                     "alice", id);
    sm_testhost_free(th);
}

/* A full table forgets the least recently used address, but not one with
 * attempts in flight: its reservations would be lost with it. */
static void reservations_survive_eviction_from_a_full_table(void)
{
    sm_testhost *th = start_with("max_tracked_keys = 2; max_hashes_per_address = 40;", NULL);
    register_ok(th, connect_from(th, "10.1.0.1"), "alice", "correct horse");
    enum { N = 5 };
    sm_session_id s[N + 1];
    uint64_t n[N];
    for (int i = 0; i <= N; i++)
        s[i] = connect_from(th, "192.0.2.9");
    for (int i = 0; i < N; i++)
        n[i] = send_login(th, s[i], "alice", "wrong horse");
    /* Two other addresses fail (ill-formed names: no hash, counted at
     * once), so the table must drop a key to make room. */
    const char *others[] = {"203.0.113.1", "203.0.113.2"};
    for (int i = 0; i < 2; i++) {
        sm_session_id o = connect_from(th, others[i]);
        expect_and_free_error(sm_testhost_reply(th, o, send_login(th, o, "x", "wrong horse")),
                              1001, "login");
    }
    /* The five in flight still count. */
    expect_refusal(sm_testhost_reply(th, s[N], send_login(th, s[N], "alice", "wrong horse")),
                   "login", TOO_MANY_FAILED, 1);
    sm_testhost_run_workers(th);
    for (int i = 0; i < N; i++)
        expect_and_free_error(sm_testhost_reply(th, s[i], n[i]), 1001, "login");
    expect_refusal(login(th, s[N], "alice", "wrong horse"), "login", TOO_MANY_FAILED, 60);
    sm_testhost_free(th);
}

/* Registrations hash too: they share the address's part of the queue. */
static void register_hashes_per_address_are_capped_while_in_flight(void)
{
    sm_testhost *th = start();
    enum { N = 5 };
    sm_session_id s[N];
    uint64_t n[N];
    char names[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "user%d", i);
        s[i] = connect_from(th, "10.2.0.1");
        char payload[96];
        snprintf(payload, sizeof payload, "{\"username\": \"%s\", \"password\": \"password123\"}",
                 names[i]);
        n[i] = sm_testhost_send(th, s[i], "register", payload);
        CU_ASSERT_FATAL(n[i] != 0);
    }
    for (int i = 2; i < N; i++)
        expect_refusal(sm_testhost_reply(th, s[i], n[i]), "register", IN_PROGRESS, 1);
    /* A login from the same address waits its turn as well. */
    sm_session_id t = connect_from(th, "10.2.0.1");
    expect_refusal(sm_testhost_reply(th, t, send_login(th, t, "user0", "password123")),
                   "login", IN_PROGRESS, 1);
    CU_ASSERT_EQUAL(sm_testhost_pending(th, s[0]), 0);
    sm_testhost_run_workers(th);
    expect_registered(sm_testhost_reply(th, s[0], n[0]), "user0");
    expect_registered(sm_testhost_reply(th, s[1], n[1]), "user1");
    CU_ASSERT_EQUAL(user_count(th), 2);
    /* Done hashes give their slots back. */
    for (int i = 2; i < N; i++)
        register_ok(th, s[i], names[i], "password123");
    CU_ASSERT_EQUAL(user_count(th), N);
    sm_testhost_free(th);
}

/* Many people behind one address (NAT) may log in at the same moment: past
 * the address's share of the hash queue they are asked to retry in a
 * second, and successful logins leave no trace in the failure limit. */
static void parallel_logins_from_one_address_beyond_its_share_retry_after_1(void)
{
    sm_testhost *th = start_with("failed_logins = 3;", NULL);
    enum { N = 4 };
    const char *names[N] = {"user0", "user1", "user2", "user3"};
    json_int_t ids[N];
    sm_session_id s[N];
    uint64_t n[N];
    for (int i = 0; i < N; i++)
        ids[i] = register_ok(th, connect_from(th, "10.1.0.1"), names[i], "correct horse");
    for (int i = 0; i < N; i++) {
        s[i] = connect_from(th, "192.0.2.1");
        n[i] = send_login(th, s[i], names[i], "correct horse");
    }
    /* The first two hold the address's share of the hash queue. */
    expect_refusal(sm_testhost_reply(th, s[2], n[2]), "login", IN_PROGRESS, 1);
    expect_refusal(sm_testhost_reply(th, s[3], n[3]), "login", IN_PROGRESS, 1);
    sm_testhost_run_workers(th);
    for (int i = 0; i < 2; i++)
        expect_logged_in(sm_testhost_reply(th, s[i], n[i]), names[i], ids[i]);
    for (int i = 2; i < N; i++)
        expect_logged_in(login(th, s[i], names[i], "correct horse"), names[i], ids[i]);
    /* Four successes, and the address still has its three failures. */
    sm_session_id t = connect_from(th, "192.0.2.1");
    for (int i = 0; i < 3; i++)
        expect_and_free_error(login(th, t, names[i], "wrong horse"), 1001, "login");
    expect_refusal(login(th, t, "user3", "correct horse"), "login", TOO_MANY_FAILED, 60);
    sm_testhost_free(th);
}

/* The review's lockout: five wrong passwords from one address stopped the
 * right one from everywhere, again each window. Now that address is
 * throttled, for that user as for any, and the user is not. */
static void wrong_passwords_from_one_address_do_not_lock_out_another(void)
{
    sm_testhost *th = start();
    json_int_t id = register_ok(th, connect_from(th, "10.1.0.1"), "alice", "correct horse");
    sm_session_id attacker = connect_from(th, "203.0.113.5");
    sm_session_id owner = connect_from(th, "198.51.100.20");
    for (int window = 0; window < 3; window++) {
        for (int i = 0; i < 5; i++)
            expect_and_free_error(login(th, attacker, "alice", "wrong horse"), 1001, "login");
        /* The address's own limit: even the right password is refused. */
        expect_refusal(login(th, attacker, "alice", "correct horse"), "login", TOO_MANY_FAILED,
                       60);
        expect_refusal(login(th, attacker, "alice", "wrong horse"), "login", TOO_MANY_FAILED,
                       60);
        expect_logged_in(login(th, owner, "alice", "correct horse"), "alice", id);
        sm_testhost_advance(th, 60);
    }
    sm_testhost_free(th);
}

/* Distributed guessing is still throttled: each address adds at most its
 * failed_logins to the user's count (its refused attempts add nothing), and
 * past failed_logins_per_user the user gets 1008, the same reply whatever
 * the password, so the refusal tells nothing about it. */
static void failures_spread_over_enough_addresses_throttle_the_user(void)
{
    sm_testhost *th = start_with("failed_logins = 2; failed_logins_per_user = 6;", NULL);
    json_int_t id = register_ok(th, connect_from(th, "10.1.0.1"), "alice", "correct horse");
    sm_session_id a = connect_from(th, "203.0.113.1"), b = connect_from(th, "203.0.113.2");
    sm_session_id c = connect_from(th, "203.0.113.3");
    for (int i = 0; i < 2; i++)
        expect_and_free_error(login(th, a, "alice", "wrong horse"), 1001, "login");
    for (int i = 0; i < 5; i++)
        expect_refusal(login(th, a, "alice", "wrong horse"), "login", TOO_MANY_FAILED, 60);
    for (int i = 0; i < 2; i++)
        expect_and_free_error(login(th, b, "alice", "wrong horse"), 1001, "login");
    /* Four failures counted for alice, not nine. */
    expect_logged_in(login(th, connect_from(th, "198.51.100.20"), "alice", "correct horse"),
                     "alice", id);
    sm_testhost_advance(th, 10);
    for (int i = 0; i < 2; i++)
        expect_and_free_error(login(th, c, "alice", "wrong horse"), 1001, "login");
    sm_session_id d = connect_from(th, "198.51.100.21");
    json_t *right = login(th, d, "alice", "correct horse");
    json_t *wrong = login(th, d, "alice", "wrong horse");
    expect_error(right, 1008, "login");
    CU_ASSERT_TRUE(json_equal(payload_of(right), payload_of(wrong)));
    CU_ASSERT_STRING_EQUAL(expect_error(wrong, 1008, "login"), TOO_MANY_FAILED);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(payload_of(wrong), "retry_after")), 50);
    json_decref(right);
    json_decref(wrong);
    CU_ASSERT_PTR_NULL(username_of(th, d));
    /* Other users are not affected. */
    expect_and_free_error(login(th, d, "bob", "wrong horse"), 1001, "login");
    sm_testhost_advance(th, 50);
    expect_logged_in(login(th, d, "alice", "correct horse"), "alice", id);
    sm_testhost_free(th);
}

static void limit_keys_are_checked_at_load(void)
{
    CU_ASSERT_NOT_EQUAL(load_status("auth = { " WEAK " failed_logins_per_user = 5; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("auth = { " WEAK " failed_logins = 10;"
                                    " failed_logins_per_user = 10; };"),
                        SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("auth = { " WEAK " failed_logins_per_user = 1; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("auth = { " WEAK " max_hashes_per_address = 0; };"), SM_OK);
    CU_ASSERT_EQUAL(load_status("auth = { " WEAK " failed_logins_per_user = 6; };"), SM_OK);
    CU_ASSERT_EQUAL(load_status("auth = { " WEAK " failed_logins = 10;"
                                " failed_logins_per_user = 11; max_hashes_per_address = 1; };"),
                    SM_OK);
}

/* An IPv4 peer seen as ::ffff:a.b.c.d is the same peer; an IPv6 peer is
 * limited by its /64. */
static void address_limit_keys_ipv4_mapped_and_ipv6_slash_64(void)
{
    sm_testhost *th = start_with("failed_logins = 2;", NULL);
    expect_and_free_error(login(th, connect_from(th, "::ffff:198.51.100.7"), "u1", "wrong horse"),
                          1001, "login");
    expect_and_free_error(login(th, connect_from(th, "198.51.100.7"), "u2", "wrong horse"), 1001,
                          "login");
    expect_retry_after(login(th, connect_from(th, "198.51.100.7"), "u3", "wrong horse"), "login",
                       60);
    expect_and_free_error(login(th, connect_from(th, "2001:db8:1:2::1"), "u1", "wrong horse"),
                          1001, "login");
    expect_and_free_error(login(th, connect_from(th, "2001:db8:1:2:ffff::9"), "u2", "wrong horse"),
                          1001, "login");
    expect_retry_after(login(th, connect_from(th, "2001:db8:1:2::77"), "u4", "wrong horse"),
                       "login", 60);
    /* The next /64 is someone else. */
    expect_and_free_error(login(th, connect_from(th, "2001:db8:1:3::1"), "u5", "wrong horse"),
                          1001, "login");
    sm_testhost_free(th);
}

/* ---- hashing -------------------------------------------------------------- */

static void default_parameters_store_m19456_t2_p1(void)
{
    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new(NULL, &th), SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, AUTH_SO, "auth"), SM_OK);
    sm_session_id s = connect_from(th, NULL);
    json_int_t id = register_ok(th, s, "alice", "correct horse");
    /* prefix, 22 base64 characters of a 16-byte salt, '$', 43 of a 32-byte hash */
    CU_ASSERT_EQUAL(query(th, "SELECT password_hash LIKE '$argon2id$v=19$m=19456,t=2,p=1$%'"
                              " AND length(password_hash) = 31 + 22 + 1 + 43 FROM auth_users"),
                    1);
    expect_logged_in(login(th, connect_from(th, NULL), "alice", "correct horse"), "alice", id);
    expect_and_free_error(login(th, connect_from(th, NULL), "alice", "wrong horse"), 1001,
                          "login");
    expect_and_free_error(login(th, connect_from(th, NULL), "nobody", "wrong horse"), 1001,
                          "login");
    sm_testhost_free(th);
}

static void weak_parameters_refused_unless_explicitly_allowed(void)
{
    CU_ASSERT_NOT_EQUAL(load_status("auth = { argon2_memory_kib = 19455; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("auth = { argon2_passes = 1; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("auth = { argon2_memory_kib = 64; argon2_passes = 1;"
                                    " allow_weak_argon2 = false; };"),
                        SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("auth = { allow_weak_argon2 = true; argon2_memory_kib = 8;"
                                    " argon2_lanes = 2; };"),
                        SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("auth = { argon2_lanes = 0; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("auth = { failed_logins = 0; };"), SM_OK);
    CU_ASSERT_NOT_EQUAL(load_status("auth = { max_concurrent_hashes = \"two\"; };"), SM_OK);
    CU_ASSERT_EQUAL(load_status("auth = { allow_weak_argon2 = true; argon2_memory_kib = 64;"
                                " argon2_passes = 1; };"),
                    SM_OK);
    CU_ASSERT_EQUAL(load_status("auth = { argon2_memory_kib = 20000; argon2_passes = 3;"
                                " argon2_lanes = 2; };"),
                    SM_OK);
}

/* Inserts carol with a hash made here with the given parameters. */
static void insert_carol(sm_testhost *th, uint32_t m_kib, uint32_t passes, char *hash,
                         size_t hash_len)
{
    const unsigned char salt[16] = "0123456789abcdef";
    CU_ASSERT_EQUAL_FATAL(argon2id_hash_encoded(passes, m_kib, 1, "carol's password", 16, salt,
                                                sizeof salt, 32, hash, hash_len),
                          ARGON2_OK);
    char sql[640];
    /* With an id taken from auth_ids, as auth's own insert does. */
    snprintf(sql, sizeof sql,
             "UPDATE auth_ids SET last_id = last_id + 1;"
             "INSERT INTO auth_users (id, username, username_lower, password_hash, created_at)"
             " VALUES ((SELECT last_id FROM auth_ids), 'Carol', 'carol', '%s', 0)",
             hash);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_exec(th, sql), SM_OK);
}

static void login_rehashes_a_hash_made_with_other_parameters(void)
{
    sm_testhost *th = start();
    char hash[256], sql[512];
    insert_carol(th, 32, 2, hash, sizeof hash);
    CU_ASSERT_PTR_NOT_NULL(strstr(hash, "$m=32,t=2,p=1$"));
    expect_and_free_error(login(th, connect_from(th, NULL), "carol", "wrong password"), 1001,
                          "login");
    snprintf(sql, sizeof sql, "SELECT password_hash = '%s' FROM auth_users", hash);
    CU_ASSERT_EQUAL(query(th, sql), 1); /* a failure changes nothing */
    int64_t id = query(th, "SELECT id FROM auth_users");
    expect_logged_in(login(th, connect_from(th, NULL), "carol", "carol's password"), "Carol", id);
    CU_ASSERT_EQUAL(query(th, sql), 0);
    CU_ASSERT_EQUAL(query(th, "SELECT password_hash LIKE '" WEAK_PREFIX "%' FROM auth_users"), 1);
    /* The new hash works, and the wrong password still fails. */
    expect_logged_in(login(th, connect_from(th, NULL), "carol", "carol's password"), "Carol", id);
    expect_and_free_error(login(th, connect_from(th, NULL), "carol", "wrong password"), 1001,
                          "login");
    sm_testhost_free(th);
}

static void login_keeps_a_hash_made_with_the_configured_parameters(void)
{
    sm_testhost *th = start();
    char hash[256], sql[512];
    insert_carol(th, 64, 1, hash, sizeof hash);
    int64_t id = query(th, "SELECT id FROM auth_users");
    expect_logged_in(login(th, connect_from(th, NULL), "carol", "carol's password"), "Carol", id);
    snprintf(sql, sizeof sql, "SELECT password_hash = '%s' FROM auth_users", hash);
    CU_ASSERT_EQUAL(query(th, sql), 1);
    sm_testhost_free(th);
}

static void one_hash_at_a_time_still_completes_every_login(void)
{
    sm_testhost *th = start_with("max_concurrent_hashes = 1; max_hashes_per_address = 6; " FEW_LIMITS, NULL);
    json_int_t id = register_ok(th, connect_from(th, NULL), "alice", "correct horse");
    enum { N = 6 };
    sm_session_id s[N];
    uint64_t n[N];
    for (int i = 0; i < N; i++) {
        s[i] = connect_from(th, NULL);
        const char *pw = i % 2 ? "wrong horse" : "correct horse";
        const char *who = i == 5 ? "nobody" : "alice";
        char payload[128];
        snprintf(payload, sizeof payload, "{\"username\": \"%s\", \"password\": \"%s\"}", who,
                 pw);
        n[i] = sm_testhost_send(th, s[i], "login", payload);
        CU_ASSERT_FATAL(n[i] != 0);
    }
    sm_testhost_run_workers(th);
    for (int i = 0; i < N; i++) {
        json_t *r = sm_testhost_reply(th, s[i], n[i]);
        if (i % 2)
            expect_and_free_error(r, 1001, "login");
        else
            expect_logged_in(r, "alice", id);
    }
    sm_testhost_free(th);
}

static void full_hash_queue_answers_1008_busy(void)
{
    sm_testhost *th = start_with("max_concurrent_hashes = 1; max_queued_hashes = 1;", NULL);
    register_ok(th, connect_from(th, NULL), "alice", "correct horse");
    sm_session_id s[3];
    uint64_t n[3];
    for (int i = 0; i < 3; i++) {
        char addr[32];
        snprintf(addr, sizeof addr, "10.0.0.%d", i + 1);
        s[i] = connect_from(th, addr);
        n[i] = sm_testhost_send(th, s[i], "login",
                                "{\"username\": \"alice\", \"password\": \"correct horse\"}");
    }
    expect_retry_after(sm_testhost_reply(th, s[2], n[2]), "login", 1);
    sm_testhost_run_workers(th);
    expect_logged_in(sm_testhost_reply(th, s[0], n[0]), "alice", 1);
    expect_logged_in(sm_testhost_reply(th, s[1], n[1]), "alice", 1);
    /* The refused attempt did not count as a failure. */
    expect_logged_in(login(th, s[2], "alice", "correct horse"), "alice", 1);
    sm_testhost_free(th);
}

/* A job whose session closed before its turn is not run. */
static void waiting_job_of_a_closed_session_is_dropped(void)
{
    sm_testhost *th = start_with("max_concurrent_hashes = 1;", NULL);
    sm_session_id a = connect_from(th, NULL), b = connect_from(th, NULL);
    uint64_t na = sm_testhost_send(th, a, "register",
                                   "{\"username\": \"first\", \"password\": \"password123\"}");
    uint64_t nb = sm_testhost_send(th, b, "register",
                                   "{\"username\": \"second\", \"password\": \"password123\"}");
    CU_ASSERT_FATAL(na && nb);
    CU_ASSERT_EQUAL(sm_testhost_disconnect(th, b), SM_OK);
    sm_testhost_run_workers(th);
    expect_registered(sm_testhost_reply(th, a, na), "first");
    CU_ASSERT_PTR_NULL(sm_testhost_reply(th, b, nb));
    CU_ASSERT_EQUAL(user_count(th), 1);
    sm_testhost_free(th);
}

/* Shutdown with hashes running and waiting: every hash job and every
 * register or login waiting for one ends. The plugin counts both and logs
 * what is left at unload; LeakSanitizer checks the memory as well. */
static void unloading_with_hashes_in_flight_frees_everything(void)
{
    capture cap;
    CU_ASSERT_EQUAL_FATAL(capture_begin(&cap), 0);
    sm_testhost *th = start_with("max_concurrent_hashes = 1; max_hashes_per_address = 4;",
                                 "log = { level = \"debug\"; };\n");
    sm_session_id s[4];
    for (int i = 0; i < 4; i++) {
        char payload[96];
        snprintf(payload, sizeof payload,
                 "{\"username\": \"user%d\", \"password\": \"password123\"}", i);
        s[i] = connect_from(th, NULL);
        CU_ASSERT(sm_testhost_send(th, s[i], i % 2 ? "login" : "register", payload) != 0);
    }
    /* All four are in flight: one on the pool, three waiting, none answered. */
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(sm_testhost_pending(th, s[i]), 0);
    sm_testhost_free(th);
    char *log = capture_end(&cap);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "[auth] unloading: 0 hash jobs and 0 requests left"));
    CU_ASSERT_PTR_NULL(strstr(log, "still on the worker pool"));
    free(log);
}

static void passwords_never_reach_the_log(void)
{
    capture cap;
    CU_ASSERT_EQUAL_FATAL(capture_begin(&cap), 0);
    sm_testhost *th = start_with("failed_logins = 2;", "log = { level = \"debug\"; };\n");
    sm_session_id s = connect_from(th, NULL);
    register_ok(th, s, "alice", "Pw-Register-9f3a");
    expect_and_free_error(reg(th, connect_from(th, NULL), "alice", "Pw-Duplicate-5e21"), 1010,
                          "register");
    expect_and_free_error(reg(th, connect_from(th, NULL), "bo", "Pw-BadName-4411"), 1004,
                          "register");
    expect_logged_in(login(th, connect_from(th, NULL), "alice", "Pw-Register-9f3a"), "alice", 1);
    expect_and_free_error(login(th, s, "alice", "Pw-Wrong-77c1"), 1001, "login");
    /* A password typed into the name field is not logged either. */
    expect_and_free_error(login(th, s, "Typo.Pw.88d1", "Pw-Unknown-0b9e"), 1001, "login");
    expect_retry_after(login(th, s, "alice", "Pw-Limited-6c2d"), "login", 60);
    expect_and_free_error(login(th, connect_from(th, "10.9.9.9"), "no", "Pw-Illformed-31d8"),
                          1001, "login");
    sm_testhost_free(th);
    char *log = capture_end(&cap);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "registered"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "failed login from 127.0.0.1"));
    const char *secrets[] = {"Pw-Register-9f3a", "Pw-Duplicate-5e21", "Pw-BadName-4411",
                             "Pw-Wrong-77c1", "Typo.Pw.88d1", "Pw-Unknown-0b9e",
                             "Pw-Limited-6c2d", "Pw-Illformed-31d8", "$argon2id$", NULL};
    for (const char **p = secrets; *p; p++) {
        if (strstr(log, *p))
            fprintf(stderr, "the log contains \"%s\"\n", *p);
        CU_ASSERT_PTR_NULL(strstr(log, *p));
    }
    free(log);
}


/* ---- admin commands (safemessenger-admin users ...) ---------------------- */

static json_t *admin(sm_testhost *th, const char *command, const char *user)
{
    json_t *args = json_pack("{s:s}", "user", user);
    json_t *r = sm_testhost_admin(th, command, args);
    json_decref(args);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    return r;
}

static void expect_admin_ok(json_t *r)
{
    CU_ASSERT_TRUE(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
}

static void expect_admin_status(json_t *r, const char *status)
{
    const char *got = json_string_value(json_object_get(r, "status"));
    CU_ASSERT_STRING_EQUAL(got ? got : "<ok>", status);
    json_decref(r);
}

static void admin_disable_closes_sessions_and_login_gets_the_wrong_password_reply(void)
{
    sm_testhost *th = start_with(FEW_LIMITS, NULL);
    sm_session_id s1 = connect_from(th, NULL);
    register_ok(th, s1, "Alice", "correct horse");
    json_t *r = admin(th, "users.disable", "ALICE");
    json_t *result = json_object_get(r, "result");
    CU_ASSERT_TRUE(json_is_true(json_object_get(result, "disabled")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(result, "sessions_closed")), 1);
    json_decref(r);
    int code = 0;
    CU_ASSERT_EQUAL(sm_testhost_closed(th, s1, &code), 1);
    CU_ASSERT_EQUAL(code, 1008);

    sm_session_id s2 = connect_from(th, NULL);
    json_t *disabled = login(th, s2, "alice", "correct horse");
    json_t *wrong = login(th, s2, "alice", "wrong horse");
    CU_ASSERT_STRING_EQUAL(expect_error(disabled, 1001, "login"), BAD_CREDENTIALS);
    /* The very same reply as a wrong password, but for reply_to. */
    json_object_del(disabled, "reply_to");
    json_object_del(wrong, "reply_to");
    CU_ASSERT_TRUE(json_equal(disabled, wrong));
    json_decref(disabled);
    json_decref(wrong);
    CU_ASSERT_PTR_NULL(username_of(th, s2));
    /* Still taken. */
    expect_and_free_error(reg(th, s2, "alice", "another horse"), 1010, "register");

    expect_admin_ok(admin(th, "users.enable", "alice"));
    json_decref(login(th, s2, "alice", "correct horse"));
    CU_ASSERT_STRING_EQUAL(username_of(th, s2), "Alice");
    sm_testhost_free(th);
}

static void login_being_checked_when_the_user_is_disabled_fails(void)
{
    sm_testhost *th = start_with(FEW_LIMITS, NULL);
    register_ok(th, connect_from(th, NULL), "alice", "correct horse");
    sm_session_id s = connect_from(th, NULL);
    uint64_t n = sm_testhost_send(th, s, "login",
                                  "{\"username\": \"alice\", \"password\": \"correct horse\"}");
    CU_ASSERT_FATAL(n != 0);
    /* The hash job waits on the pool while the operator disables. */
    expect_admin_ok(admin(th, "users.disable", "alice"));
    sm_testhost_run_workers(th);
    json_t *r = sm_testhost_reply(th, s, n);
    CU_ASSERT_STRING_EQUAL(expect_error(r, 1001, "login"), BAD_CREDENTIALS);
    json_decref(r);
    CU_ASSERT_PTR_NULL(username_of(th, s));
    sm_testhost_free(th);
}

static void admin_passwd_delete_and_errors(void)
{
    sm_testhost *th = start_with(FEW_LIMITS, NULL);
    sm_session_id s = connect_from(th, NULL);
    register_ok(th, s, "alice", "correct horse");
    json_t *args = json_pack("{s:s, s:s}", "user", "alice", "password", "battery staple");
    expect_admin_ok(sm_testhost_admin(th, "users.passwd", args));
    json_decref(args);
    sm_session_id s2 = connect_from(th, NULL);
    expect_and_free_error(login(th, s2, "alice", "correct horse"), 1001, "login");
    json_decref(login(th, s2, "alice", "battery staple"));
    CU_ASSERT_STRING_EQUAL(username_of(th, s2), "alice");
    args = json_pack("{s:s, s:s}", "user", "alice", "password", "short");
    expect_admin_status(sm_testhost_admin(th, "users.passwd", args), "invalid");
    json_decref(args);

    json_t *list = sm_testhost_admin(th, "users.list", NULL);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(json_object_get(list, "result"), "users")),
                    1);
    json_decref(list);
    expect_admin_ok(admin(th, "users.delete", "alice"));
    int code = 0;
    CU_ASSERT_EQUAL(sm_testhost_closed(th, s, &code), 1);
    CU_ASSERT_EQUAL(code, 1008);
    CU_ASSERT_EQUAL(sm_testhost_closed(th, s2, &code), 1);
    CU_ASSERT_EQUAL(query(th, "SELECT count(*) FROM auth_users"), 0);
    expect_admin_status(admin(th, "users.show", "alice"), "not_found");
    expect_admin_status(admin(th, "users.delete", "alice"), "not_found");
    expect_admin_status(admin(th, "users.disable", "no such user!"), "not_found");
    expect_admin_status(sm_testhost_admin(th, "users.show", NULL), "invalid");
    register_ok(th, connect_from(th, NULL), "alice", "a new horse");
    sm_testhost_free(th);
}

/* ---- ids and the schema (the same on SQLite and PostgreSQL) ---------- */

/* Ids come from auth_ids: increasing, and never given twice, also after
 * the newest account was deleted (SQLite's rowid gave it again). */
static void user_ids_are_never_given_twice(void)
{
    sm_testhost *th = start_with(FEW_LIMITS, NULL);
    json_int_t alice = register_ok(th, connect_from(th, NULL), "alice", "correct horse");
    json_int_t bob = register_ok(th, connect_from(th, NULL), "bob", "correct horse");
    CU_ASSERT_TRUE(bob > alice);
    expect_admin_ok(admin(th, "users.delete", "bob"));
    /* A time a 4-byte float (PostgreSQL's REAL) would round by 128 s. */
    sm_testhost_advance(th, 100);
    json_int_t carol = register_ok(th, connect_from(th, NULL), "carol", "correct horse");
    CU_ASSERT_TRUE(carol > bob);
    CU_ASSERT_EQUAL(query(th, "SELECT last_id FROM auth_ids"), carol);
    CU_ASSERT_EQUAL(query(th, "SELECT created_at FROM auth_users WHERE username_lower = 'carol'"),
                    (int64_t)SM_TESTHOST_EPOCH + 100);
    expect_logged_in(login(th, connect_from(th, NULL), "carol", "correct horse"), "carol", carol);
    sm_testhost_free(th);
}

/* A database at version 2, as servers before auth_ids left it (the
 * schema as it was shipped, REAL included): migration 3 starts the ids
 * after the highest one, and its accounts still log in. */
static void upgrade_from_version_2_continues_after_the_highest_id(void)
{
    sm_testhost *th = NULL;
    CU_ASSERT_EQUAL_FATAL(sm_testhost_new("auth = { " WEAK " };", &th), SM_OK);
    char hash[256];
    const unsigned char salt[16] = "0123456789abcdef";
    CU_ASSERT_EQUAL_FATAL(argon2id_hash_encoded(1, 64, 1, "dave's password", 15, salt,
                                                sizeof salt, 32, hash, sizeof hash),
                          ARGON2_OK);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "CREATE TABLE auth_users (id INTEGER PRIMARY KEY, username TEXT NOT NULL,"
             " username_lower TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,"
             " public_key TEXT, created_at REAL NOT NULL);"
             "ALTER TABLE auth_users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;"
             "INSERT INTO sm_migrations (owner, version, applied_at) VALUES ('auth', 1, 0);"
             "INSERT INTO sm_migrations (owner, version, applied_at) VALUES ('auth', 2, 0);"
             "INSERT INTO auth_users (id, username, username_lower, password_hash, created_at)"
             " VALUES (3, 'Early', 'early', 'x', 0);"
             "INSERT INTO auth_users (id, username, username_lower, password_hash, created_at)"
             " VALUES (7, 'Dave', 'dave', '%s', 0)",
             hash);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_exec(th, sql), SM_OK);
    CU_ASSERT_EQUAL_FATAL(sm_testhost_load(th, AUTH_SO, "auth"), SM_OK);
    sm_testhost_run_workers(th);
    CU_ASSERT_EQUAL(query(th, "SELECT MAX(version) FROM sm_migrations WHERE owner = 'auth'"), 3);
    CU_ASSERT_EQUAL(query(th, "SELECT last_id FROM auth_ids"), 7);
    CU_ASSERT_EQUAL(register_ok(th, connect_from(th, NULL), "erin", "correct horse"), 8);
    expect_logged_in(login(th, connect_from(th, NULL), "dave", "dave's password"), "Dave", 7);
    sm_testhost_free(th);
}

/* A row written behind auth_ids's back holds the next id: the register
 * fails as an internal error, logged, never as "username already taken",
 * and the next one goes on after it. */
static void an_id_taken_behind_auth_ids_is_an_internal_error(void)
{
    sm_testhost *th = start_with(FEW_LIMITS, NULL);
    CU_ASSERT_EQUAL_FATAL(
        sm_testhost_exec(th, "INSERT INTO auth_users (id, username, username_lower,"
                             " password_hash, created_at) VALUES (1, 'Manual', 'manual', 'x', 0)"),
        SM_OK);
    capture cap;
    CU_ASSERT_EQUAL_FATAL(capture_begin(&cap), 0);
    json_t *r = reg(th, connect_from(th, NULL), "alice", "correct horse");
    char *log = capture_end(&cap);
    CU_ASSERT_STRING_EQUAL(expect_error(r, 1005, "register"), "internal server error");
    json_decref(r);
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "user id 1 is already taken: auth_ids is behind"));
    free(log);
    CU_ASSERT_EQUAL(register_ok(th, connect_from(th, NULL), "alice", "correct horse"), 2);
    CU_ASSERT_EQUAL(user_count(th), 2);
    sm_testhost_free(th);
}

static const sm_test_case cases[] = {
    SM_TEST(register_logs_the_session_in_and_replies_registration_success),
    SM_TEST(register_refuses_each_malformed_field_with_1004_naming_it),
    SM_TEST(register_password_length_bounds_are_8_and_1024_bytes),
    SM_TEST(register_public_key_rsa_2048_and_ed25519_accepted),
    SM_TEST(register_public_key_weak_foreign_or_oversized_refused),
    SM_TEST(register_taken_name_gets_1010_regardless_of_case),
    SM_TEST(register_race_for_one_name_has_exactly_one_winner),
    SM_TEST(register_limit_per_address_per_hour),
    SM_TEST(login_replies_with_the_name_as_first_written),
    SM_TEST(login_same_reply_for_unknown_user_and_wrong_password),
    SM_TEST(login_ill_formed_credentials_get_1001_missing_ones_1004),
    SM_TEST(login_reply_carries_room_and_unread_count_from_session_attributes),
    SM_TEST(users_service_finds_accounts_by_name_and_id),
    SM_TEST(logout_ends_the_login_and_needs_one),
    SM_TEST(failed_login_or_register_still_ends_the_old_login),
    SM_TEST(one_user_on_two_sessions_logout_ends_only_one),
    SM_TEST(failed_logins_per_username_get_1008_until_the_window_passes),
    SM_TEST(failed_logins_per_address_get_1008_before_the_payload_check),
    SM_TEST(reload_changes_limits_and_argon2_parameters),
    SM_TEST(login_attempts_in_flight_count_toward_the_username_limit),
    SM_TEST(login_hashes_per_address_are_capped_while_in_flight),
    SM_TEST(login_attempts_in_flight_count_toward_the_address_limit),
    SM_TEST(reservations_survive_eviction_from_a_full_table),
    SM_TEST(register_hashes_per_address_are_capped_while_in_flight),
    SM_TEST(parallel_logins_from_one_address_beyond_its_share_retry_after_1),
    SM_TEST(wrong_passwords_from_one_address_do_not_lock_out_another),
    SM_TEST(failures_spread_over_enough_addresses_throttle_the_user),
    SM_TEST(limit_keys_are_checked_at_load),
    SM_TEST(address_limit_keys_ipv4_mapped_and_ipv6_slash_64),
    SM_TEST(default_parameters_store_m19456_t2_p1),
    SM_TEST(weak_parameters_refused_unless_explicitly_allowed),
    SM_TEST(login_rehashes_a_hash_made_with_other_parameters),
    SM_TEST(login_keeps_a_hash_made_with_the_configured_parameters),
    SM_TEST(one_hash_at_a_time_still_completes_every_login),
    SM_TEST(full_hash_queue_answers_1008_busy),
    SM_TEST(waiting_job_of_a_closed_session_is_dropped),
    SM_TEST(unloading_with_hashes_in_flight_frees_everything),
    SM_TEST(passwords_never_reach_the_log),
    SM_TEST(admin_disable_closes_sessions_and_login_gets_the_wrong_password_reply),
    SM_TEST(login_being_checked_when_the_user_is_disabled_fails),
    SM_TEST(admin_passwd_delete_and_errors),
    SM_TEST(user_ids_are_never_given_twice),
    SM_TEST(upgrade_from_version_2_continues_after_the_highest_id),
    SM_TEST(an_id_taken_behind_auth_ids_is_an_internal_error),
    SM_TEST_END,
};

int main(void) { return sm_test_run("plugin.auth", cases, NULL, NULL); }
