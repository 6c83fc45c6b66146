/*
 * test_router.c: the router's pieces that need no worker: endpoint-set diffing, the worker
 * registry and least-outstanding-work picker (back-off, exclusion, removal while held),
 * name resolution (literal addresses, localhost, pass-through schemes, malformed targets),
 * and request validation with the gRPC codes and field names the router answers with.
 * Channels are real gRPC channels; they connect lazily, so no server is needed.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "router/router_resolve.h"
#include "router/router_validate.h"
#include "router/router_workers.h"
#include "tests/unit/tiny_tokenizer.h"

static void test_addrs_diff(void **state)
{
    const char *old[] = {"a", "c", "e"};
    const char *new_addrs[] = {"b", "c", "d", "e", "f"};
    size_t added[5], removed[3], n_added, n_removed;
    skv_router_addrs_diff(old, 3, new_addrs, 5, added, &n_added, removed, &n_removed);
    assert_int_equal(n_added, 3);
    assert_int_equal(added[0], 0);
    assert_int_equal(added[1], 2);
    assert_int_equal(added[2], 4);
    assert_int_equal(n_removed, 1);
    assert_int_equal(removed[0], 0);
    skv_router_addrs_diff(old, 3, NULL, 0, added, &n_added, removed, &n_removed);
    assert_int_equal(n_added, 0);
    assert_int_equal(n_removed, 3);

    const char *dup[] = {"z:1", "a:1", "z:1", "m:2", "a:1"};
    assert_int_equal(skv_router_addrs_sort_unique(dup, 5), 3);
    assert_string_equal(dup[0], "a:1");
    assert_string_equal(dup[1], "m:2");
    assert_string_equal(dup[2], "z:1");
}

static skv_router_workers_t *skv_three_workers(void)
{
    skv_router_workers_t *w = NULL;
    const char *addrs[] = {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:2"};
    size_t added, removed;
    assert_int_equal(skv_router_workers_create(60000, NULL, &w), SKV_STATUS_OK);
    assert_int_equal(skv_router_workers_set(w, SKV_ROUTER_ROLE_DECODE, addrs, 4, &added, &removed),
                     0);
    assert_int_equal(added, 3);
    assert_int_equal(removed, 0);
    assert_int_equal(skv_router_workers_count(w, SKV_ROUTER_ROLE_DECODE), 3);
    assert_int_equal(skv_router_workers_count(w, SKV_ROUTER_ROLE_PREFILL), 0);
    return w;
}

static void test_least_work_picker(void **state)
{
    skv_router_workers_t *w = skv_three_workers();
    skv_router_endpoint_t *e[4];
    assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 100, NULL, &e[0]), 0);
    assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 10, NULL, &e[1]), 0);
    assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 50, NULL, &e[2]), 0);
    assert_true(e[0] != e[1] && e[1] != e[2] && e[0] != e[2]); /* idle ones first */
    assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 1, NULL, &e[3]), 0);
    assert_ptr_equal(e[3], e[1]); /* least outstanding tokens */
    assert_int_equal(skv_router_endpoint_work(w, e[1]), 11);
    assert_int_equal(skv_router_endpoint_active(w, e[1]), 2);

    skv_router_endpoint_t *none = NULL;
    assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_PREFILL, 1, NULL, &none),
                     SKV_STATUS_UNAVAILABLE);
    assert_null(none);

    skv_router_workers_release(w, e[3], 1);
    skv_router_workers_release(w, e[1], 10);
    skv_router_workers_release(w, e[2], 50);
    skv_router_workers_release(w, e[0], 100);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(skv_router_endpoint_work(w, e[i]), 0);
        assert_int_equal(skv_router_endpoint_active(w, e[i]), 0);
    }
    skv_router_workers_destroy(w);
}

static void test_backoff_and_exclude(void **state)
{
    skv_router_workers_t *w = skv_three_workers();
    skv_router_endpoint_t *a, *b, *c, *x;
    assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 0, NULL, &a), 0);
    skv_router_workers_backoff(w, a);
    skv_router_workers_release(w, a, 0);
    /* a is idle but backing off: 20 picks never land on it */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 5, NULL, &x), 0);
        assert_ptr_not_equal(x, a);
        skv_router_workers_release(w, x, 5);
    }
    /* exclude */
    assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 0, NULL, &b), 0);
    assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 0, b, &c), 0);
    assert_ptr_not_equal(b, c);
    assert_ptr_not_equal(c, a);
    /* all backing off: still picks one rather than failing */
    skv_router_workers_backoff(w, b);
    skv_router_workers_backoff(w, c);
    assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 0, NULL, &x), 0);
    skv_router_workers_release(w, x, 0);
    skv_router_workers_release(w, b, 0);
    skv_router_workers_release(w, c, 0);
    skv_router_workers_destroy(w);
}

static void test_set_changes_while_held(void **state)
{
    skv_router_workers_t *w = skv_three_workers();
    skv_router_endpoint_t *held[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 7, NULL, &held[i]),
                         0);
    }
    const char *next[] = {"127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:2"};
    size_t added, removed;
    assert_int_equal(skv_router_workers_set(w, SKV_ROUTER_ROLE_DECODE, next, 3, &added, &removed),
                     0);
    assert_int_equal(added, 1);
    assert_int_equal(removed, 1);
    assert_int_equal(skv_router_workers_count(w, SKV_ROUTER_ROLE_DECODE), 3);
    /* the new endpoint is idle, so it is picked; kept ones kept their work */
    skv_router_endpoint_t *n = NULL;
    assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 1, NULL, &n), 0);
    assert_string_equal(skv_router_endpoint_addr(n), "127.0.0.1:4");
    for (int i = 0; i < 3; i++) {
        /* the dropped endpoint stays usable until released */
        assert_non_null(skv_router_endpoint_channel(held[i]));
        assert_int_equal(skv_router_endpoint_work(w, held[i]), 7);
        skv_router_workers_release(w, held[i], 7);
    }
    skv_router_workers_release(w, n, 1);
    /* an empty set drops everything */
    assert_int_equal(skv_router_workers_set(w, SKV_ROUTER_ROLE_DECODE, NULL, 0, &added, &removed),
                     0);
    assert_int_equal(removed, 3);
    assert_int_equal(skv_router_workers_acquire(w, SKV_ROUTER_ROLE_DECODE, 1, NULL, &n),
                     SKV_STATUS_UNAVAILABLE);
    skv_router_workers_destroy(w);
}

/* Resolves target and checks the single expected endpoint. */
static void skv_resolve_one(const char *target, const char *want)
{
    char **addrs = NULL;
    size_t n = 0;
    assert_int_equal(skv_router_resolve(target, &addrs, &n), SKV_STATUS_OK);
    assert_int_equal(n, 1);
    assert_string_equal(addrs[0], want);
    skv_router_addrs_free(addrs, n);
}

static void test_resolve(void **state)
{
    skv_resolve_one("127.0.0.1:50051", "127.0.0.1:50051");
    skv_resolve_one("[::1]:7", "[::1]:7");
    skv_resolve_one("dns:///127.0.0.1:9", "127.0.0.1:9");
    skv_resolve_one("unix:/tmp/skv.sock", "unix:/tmp/skv.sock");
    char **addrs = NULL;
    size_t n = 0;
    assert_int_equal(skv_router_resolve("localhost:8", &addrs, &n), SKV_STATUS_OK);
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(addrs[i]);
        assert_true(len > 2 && strcmp(addrs[i] + len - 2, ":8") == 0);
        assert_true(i == 0 || strcmp(addrs[i - 1], addrs[i]) < 0); /* sorted, unique */
    }
    skv_router_addrs_free(addrs, n);
    assert_int_equal(skv_router_resolve("noport", &addrs, &n), SKV_STATUS_INVALID_ARGUMENT);
    assert_int_equal(skv_router_resolve(":80", &addrs, &n), SKV_STATUS_INVALID_ARGUMENT);
    assert_int_equal(skv_router_resolve("[::1:80", &addrs, &n), SKV_STATUS_INVALID_ARGUMENT);
    assert_int_equal(skv_router_resolve("skv-test.invalid:80", &addrs, &n), SKV_STATUS_NOT_FOUND);
}

static void test_resolver_unions_names(void **state)
{
    skv_router_workers_t *w = NULL;
    skv_router_resolver_t *r = NULL;
    const char *decode[] = {"127.0.0.1:11", "dns:///127.0.0.1:11", "127.0.0.2:11"};
    const char *prefill[] = {"skv-test.invalid:1"};
    const char *const *names[SKV_ROUTER_ROLE_COUNT_] = {decode, prefill};
    const size_t n_names[SKV_ROUTER_ROLE_COUNT_] = {3, 1};
    assert_int_equal(skv_router_workers_create(0, NULL, &w), 0);
    assert_int_equal(skv_router_resolver_create(w, names, n_names, 0, &r), 0);
    assert_int_equal(skv_router_workers_count(w, SKV_ROUTER_ROLE_DECODE), 2);
    assert_int_equal(skv_router_workers_count(w, SKV_ROUTER_ROLE_PREFILL), 0);
    skv_router_resolver_tick(r); /* stable set: nothing changes */
    assert_int_equal(skv_router_workers_count(w, SKV_ROUTER_ROLE_DECODE), 2);
    skv_router_resolver_destroy(r);

    const char *bad[] = {"nohost"};
    const char *const *bad_names[SKV_ROUTER_ROLE_COUNT_] = {bad, NULL};
    const size_t n_bad[SKV_ROUTER_ROLE_COUNT_] = {1, 0};
    assert_int_equal(skv_router_resolver_create(w, bad_names, n_bad, 0, &r),
                     SKV_STATUS_INVALID_ARGUMENT);
    skv_router_workers_destroy(w);
}

/* ---- validation ---- */

typedef struct {
    skv_tokenizer_t *tok;
    skv_router_model_t model;
} skv_vfix_t;

static int skv_vsetup(void **state)
{
    skv_vfix_t *f = calloc(1, sizeof(*f));
    json_t *j = skv_tiny_tokenizer_json(), *c = skv_tiny_config_json(SKV_TINY_LLAMA3_TEMPLATE);
    char *js = json_dumps(j, 0), *cs = json_dumps(c, 0);
    assert_int_equal(skv_tokenizer_load_mem(js, strlen(js), cs, strlen(cs), &f->tok), 0);
    free(js);
    free(cs);
    json_decref(j);
    json_decref(c);
    f->model.context_length = 64;
    f->model.vocab_size = 306;
    f->model.eos_ids[0] = 301;
    f->model.n_eos = 1;
    *state = f;
    return 0;
}

static int skv_vteardown(void **state)
{
    skv_vfix_t *f = *state;
    skv_tokenizer_destroy(f->tok);
    free(f);
    return 0;
}

/* Validates req; checks the status and that the message names `field`. */
static void skv_expect(skv_vfix_t *f, const Skv__V1__GenerateRequest *req, skv_status_t want,
                       const char *field)
{
    skv_router_prompt_t p = {0};
    char msg[320] = "";
    skv_status_t st = skv_router_validate_request(req, f->tok, &f->model, &p, msg, sizeof(msg));
    if (st != want || (field != NULL && strstr(msg, field) == NULL)) {
        fail_msg("got %s '%s', want %s naming '%s'", skv_status_str(st), msg, skv_status_str(want),
                 field ? field : "");
    }
    skv_free(p.ids);
}

static void test_validate_inputs(void **state)
{
    skv_vfix_t *f = *state;
    Skv__V1__GenerateRequest req = SKV__V1__GENERATE_REQUEST__INIT;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "input");
    req.input_case = SKV__V1__GENERATE_REQUEST__INPUT_TEXT;
    req.text = "";
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "text");
    req.text = "hello there";
    skv_router_prompt_t p = {0};
    char msg[320];
    assert_int_equal(skv_router_validate_request(&req, f->tok, &f->model, &p, msg, sizeof(msg)),
                     SKV_STATUS_OK);
    assert_true(p.n_ids >= 2);
    assert_int_equal(p.ids[0], 300);              /* BOS from the post-processor */
    assert_int_equal(p.max_tokens, 64 - p.n_ids); /* 0 = until the context is full */
    skv_free(p.ids);

    Skv__V1__TokenIds tids = SKV__V1__TOKEN_IDS__INIT;
    int32_t ids[64] = {0};
    req.input_case = SKV__V1__GENERATE_REQUEST__INPUT_TOKEN_IDS;
    req.token_ids = &tids;
    tids.ids = ids;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "token_ids");
    tids.n_ids = 2;
    ids[1] = 306;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "token_ids.ids[1]");
    ids[1] = -1;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "token_ids.ids[1]");
    ids[1] = 305;
    skv_expect(f, &req, SKV_STATUS_OK, NULL);

    Skv__V1__ChatMessages chat = SKV__V1__CHAT_MESSAGES__INIT;
    Skv__V1__ChatMessage m = SKV__V1__CHAT_MESSAGE__INIT, *mp = &m;
    req.input_case = SKV__V1__GENERATE_REQUEST__INPUT_CHAT;
    req.chat = &chat;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "chat.messages");
    chat.messages = &mp;
    chat.n_messages = 1;
    m.content = "hi";
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "chat.messages[0].role");
    m.role = "user";
    skv_expect(f, &req, SKV_STATUS_OK, NULL);
}

static void test_validate_context(void **state)
{
    skv_vfix_t *f = *state;
    Skv__V1__GenerateRequest req = SKV__V1__GENERATE_REQUEST__INIT;
    Skv__V1__TokenIds tids = SKV__V1__TOKEN_IDS__INIT;
    Skv__V1__StopCriteria stop = SKV__V1__STOP_CRITERIA__INIT;
    int32_t ids[64] = {0};
    req.input_case = SKV__V1__GENERATE_REQUEST__INPUT_TOKEN_IDS;
    req.token_ids = &tids;
    req.stop = &stop;
    tids.ids = ids;
    tids.n_ids = 64;
    skv_expect(f, &req, SKV_STATUS_OUT_OF_RANGE, "context length is 64");
    tids.n_ids = 60;
    stop.max_tokens = 5;
    skv_expect(f, &req, SKV_STATUS_OUT_OF_RANGE, "stop.max_tokens");
    stop.max_tokens = 4;
    skv_expect(f, &req, SKV_STATUS_OK, NULL);
    stop.max_tokens = 0;
    skv_router_prompt_t p = {0};
    char msg[320];
    assert_int_equal(skv_router_validate_request(&req, f->tok, &f->model, &p, msg, sizeof(msg)),
                     SKV_STATUS_OK);
    assert_int_equal(p.max_tokens, 4);
    skv_free(p.ids);
    stop.min_tokens = 5;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "stop.min_tokens");
    stop.max_tokens = 3;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "stop.min_tokens");
}

static void test_validate_params(void **state)
{
    skv_vfix_t *f = *state;
    Skv__V1__GenerateRequest req = SKV__V1__GENERATE_REQUEST__INIT;
    Skv__V1__SamplingParams s = SKV__V1__SAMPLING_PARAMS__INIT;
    Skv__V1__StopCriteria stop = SKV__V1__STOP_CRITERIA__INIT;
    req.input_case = SKV__V1__GENERATE_REQUEST__INPUT_TEXT;
    req.text = "x";
    req.sampling = &s;
    req.stop = &stop;
    struct {
        float *field;
        float bad;
        const char *name;
    } floats[] = {
        {&s.temperature, -0.5f, "sampling.temperature"},
        {&s.temperature, NAN, "sampling.temperature"},
        {&s.top_p, 1.5f, "sampling.top_p"},
        {&s.min_p, -0.1f, "sampling.min_p"},
        {&s.presence_penalty, 3.0f, "sampling.presence_penalty"},
        {&s.frequency_penalty, -2.5f, "sampling.frequency_penalty"},
        {&s.repetition_penalty, -1.0f, "sampling.repetition_penalty"},
        {&s.repetition_penalty, INFINITY, "sampling.repetition_penalty"},
    };
    for (size_t i = 0; i < sizeof(floats) / sizeof(floats[0]); i++) {
        float keep = *floats[i].field;
        *floats[i].field = floats[i].bad;
        skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, floats[i].name);
        *floats[i].field = keep;
    }
    s.temperature = 0.7f, s.top_p = 0.9f, s.min_p = 0.05f, s.top_k = 40;
    skv_expect(f, &req, SKV_STATUS_OK, NULL);
    s.top_k = -1;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "sampling.top_k");
    s.top_k = 0;

    char *stops[] = {"ok", ""};
    stop.stop = stops;
    stop.n_stop = 2;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "stop.stop[1]");
    stop.n_stop = 1;
    int32_t sids[] = {301, 999};
    stop.stop_token_ids = sids;
    stop.n_stop_token_ids = 2;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "stop.stop_token_ids[1]");
    stop.n_stop_token_ids = 1;
    skv_expect(f, &req, SKV_STATUS_OK, NULL);
    req.logprobs = SKV_ROUTER_MAX_LOGPROBS + 1;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "logprobs");
    req.logprobs = 0;
    char long_id[SKV_ROUTER_MAX_REQUEST_ID + 2];
    memset(long_id, 'r', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    req.request_id = long_id;
    skv_expect(f, &req, SKV_STATUS_INVALID_ARGUMENT, "request_id");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addrs_diff),
        cmocka_unit_test(test_least_work_picker),
        cmocka_unit_test(test_backoff_and_exclude),
        cmocka_unit_test(test_set_changes_while_held),
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_resolver_unions_names),
        cmocka_unit_test_setup_teardown(test_validate_inputs, skv_vsetup, skv_vteardown),
        cmocka_unit_test_setup_teardown(test_validate_context, skv_vsetup, skv_vteardown),
        cmocka_unit_test_setup_teardown(test_validate_params, skv_vsetup, skv_vteardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
