/*
 * bench_serve_run.c: one run of skv_bench_serve, and the only file that talks gRPC.
 *
 * The main thread paces the requests: it sleeps until each Poisson arrival (none when the rate
 * is infinite), waits for a free in-flight slot (fixed concurrency is rate inf with the limit
 * N, as in vLLM), and starts one detached thread per request. A request thread opens the
 * public Generate stream with the per-request deadline, timestamps every chunk that carries
 * tokens (TTFT, inter-token gaps, end), writes its own result slot and then, under the run's
 * mutex, merges its gaps, frees its slot and draws the progress bar. Every wait is bounded:
 * gRPC ends each stream by its deadline, and the pacer's waits for slots and for the last
 * request give up (INTERNAL) after the deadline plus a grace period.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_serve.h"
#include "skv/v1/generate.pb-c.h"

#define SKV_BENCH_GRACE_MS     10000 /* beyond the request deadline before a run gives up */
#define SKV_BENCH_STACK_BYTES  (512 * 1024)
#define SKV_BENCH_PROGRESS_NS  100000000ll /* redraw at most every 100 ms */
#define SKV_BENCH_BAR_WIDTH    30
#define SKV_BENCH_GRPC_UNKNOWN 2

typedef struct skv_bench_runstate skv_bench_runstate_t;

/* One request: what a thread needs. */
typedef struct {
    skv_bench_runstate_t *run;
    size_t index;
} skv_bench_task_t;

struct skv_bench_runstate {
    skv_grpc_channel_t *channel;
    const skv_bench_config_t *cfg;
    const skv_bench_prompt_t *prompts;
    skv_bench_result_t *results;
    skv_bench_task_t *tasks;
    size_t n;
    const char *label;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a request ended */
    int inflight, peak;
    size_t done, failed;
    skv_bench_vec_t itl_ms; /* guarded by mu */
    skv_status_t merge_status;
    int64_t start_ns, end_ns, drawn_ns;
};

/* ---- one request ---- */

static double skv_bench_ms(int64_t ns)
{
    return (double)ns / 1e6;
}

/* Timestamps one chunk of tokens: TTFT for the first, an inter-token gap for the others. */
static skv_status_t skv_bench_on_tokens(skv_bench_result_t *r, skv_bench_vec_t *itl, size_t k,
                                        int64_t t0, int64_t *last_ns)
{
    int64_t now = skv_clock_now_ns();
    skv_status_t st = SKV_STATUS_OK;
    if (r->output_tokens == 0) {
        r->ttft_ms = skv_bench_ms(now - t0);
    } else {
        st = skv_bench_vec_push(itl, skv_bench_ms(now - *last_ns));
    }
    *last_ns = now;
    r->output_tokens += (uint32_t)k;
    return st;
}

/* Fills the request message from a prompt (every pointer into p, sp, stop, tids). */
static void skv_bench_build(const skv_bench_config_t *cfg, const skv_bench_prompt_t *p,
                            Skv__V1__GenerateRequest *req, Skv__V1__SamplingParams *sp,
                            Skv__V1__StopCriteria *stop, Skv__V1__TokenIds *tids)
{
    req->sampling = sp;
    req->stop = stop;
    sp->temperature = (float)cfg->temperature;
    stop->max_tokens = p->max_tokens;
    stop->ignore_eos = !cfg->allow_eos;
    if (p->text != NULL) {
        req->input_case = SKV__V1__GENERATE_REQUEST__INPUT_TEXT;
        req->text = p->text;
        return;
    }
    tids->ids = p->ids;
    tids->n_ids = p->n_ids;
    req->input_case = SKV__V1__GENERATE_REQUEST__INPUT_TOKEN_IDS;
    req->token_ids = tids;
}

/* Records a failure in r (code, message). */
static void skv_bench_fail(skv_bench_result_t *r, int code, const char *message)
{
    r->ok = 0;
    r->grpc_code = code;
    snprintf(r->message, sizeof(r->message), "%s", message);
}

/* Reads the stream to its end, timestamping token chunks into r and itl. */
static void skv_bench_read_all(skv_grpc_stream_t *s, skv_bench_result_t *r, skv_bench_vec_t *itl,
                               int64_t t0)
{
    skv_grpc_error_t err = {0};
    ProtobufCMessage *msg = NULL;
    skv_status_t st = SKV_STATUS_OK;
    int64_t last_ns = t0;
    while (st == SKV_STATUS_OK && (st = skv_grpc_stream_read(s, &msg, &err)) == SKV_STATUS_OK &&
           msg != NULL) {
        const Skv__V1__GenerateChunk *c = (const Skv__V1__GenerateChunk *)msg;
        if (c->n_token_ids > 0) {
            st = skv_bench_on_tokens(r, itl, c->n_token_ids, t0, &last_ns);
        }
        if (c->usage != NULL && c->usage->prompt_tokens > 0) {
            r->input_tokens = c->usage->prompt_tokens;
        }
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    r->e2e_ms = skv_bench_ms(skv_clock_now_ns() - t0);
    r->ok = st == SKV_STATUS_OK;
    if (st == SKV_STATUS_NO_MEMORY) {
        skv_bench_fail(r, SKV_BENCH_GRPC_UNKNOWN, "out of memory for inter-token gaps");
    } else if (!r->ok) {
        skv_bench_fail(r, err.grpc_code ? err.grpc_code : skv_status_grpc_code(st),
                       err.message[0] ? err.message : skv_status_str(st));
    }
}

/* Sends one request and measures it into r (its own inter-token gaps into itl). */
static void skv_bench_request(skv_grpc_channel_t *channel, const skv_bench_config_t *cfg,
                              const skv_bench_prompt_t *p, skv_bench_result_t *r,
                              skv_bench_vec_t *itl)
{
    Skv__V1__GenerateRequest req = SKV__V1__GENERATE_REQUEST__INIT;
    Skv__V1__SamplingParams sp = SKV__V1__SAMPLING_PARAMS__INIT;
    Skv__V1__StopCriteria stop = SKV__V1__STOP_CRITERIA__INIT;
    Skv__V1__TokenIds tids = SKV__V1__TOKEN_IDS__INIT;
    skv_grpc_call_opts_t opts = {.timeout_ms = cfg->timeout_ms};
    skv_grpc_stream_t *s = NULL;
    skv_bench_build(cfg, p, &req, &sp, &stop, &tids);
    *r = (skv_bench_result_t){.input_tokens = (uint32_t)p->n_ids};
    int64_t t0 = skv_clock_now_ns();
    skv_status_t st = skv_grpc_stream_open(channel, "/skv.v1.Generation/Generate", &req.base,
                                           &skv__v1__generate_chunk__descriptor, &opts, &s);
    if (st != SKV_STATUS_OK) {
        skv_bench_fail(r, skv_status_grpc_code(st), skv_status_str(st));
        return;
    }
    skv_bench_read_all(s, r, itl, t0);
    skv_grpc_stream_destroy(s);
}

/* ---- progress bar ---- */

/* Draws the bar (mu held); `force` draws even within the redraw period. */
static void skv_bench_progress(skv_bench_runstate_t *run, int force)
{
    int64_t now = skv_clock_now_ns();
    if (run->label == NULL || (!force && now - run->drawn_ns < SKV_BENCH_PROGRESS_NS)) {
        return;
    }
    run->drawn_ns = now;
    int fill = run->n ? (int)(run->done * SKV_BENCH_BAR_WIDTH / run->n) : SKV_BENCH_BAR_WIDTH;
    char bar[SKV_BENCH_BAR_WIDTH + 1];
    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '.', (size_t)(SKV_BENCH_BAR_WIDTH - fill));
    bar[SKV_BENCH_BAR_WIDTH] = '\0';
    fprintf(stderr, "\r%s [%s] %zu/%zu  %d in flight  %zu failed  %.1f s ", run->label, bar,
            run->done, run->n, run->inflight, run->failed, skv_bench_ms(now - run->start_ns) / 1e3);
    fflush(stderr);
}

/* ---- threads and pacing ---- */

static void *skv_bench_thread(void *arg)
{
    skv_bench_task_t *task = arg;
    skv_bench_runstate_t *run = task->run;
    skv_bench_result_t *r = &run->results[task->index];
    skv_bench_vec_t itl = {0};
    skv_bench_request(run->channel, run->cfg, &run->prompts[task->index], r, &itl);
    pthread_mutex_lock(&run->mu);
    if (r->ok) {
        skv_status_t st = skv_bench_vec_extend(&run->itl_ms, &itl);
        run->merge_status = st != SKV_STATUS_OK ? st : run->merge_status;
    }
    run->failed += !r->ok;
    run->done++;
    run->inflight--;
    run->end_ns = skv_clock_now_ns();
    skv_bench_progress(run, 0);
    pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);
    skv_bench_vec_free(&itl);
    return NULL;
}

/* Waits (mu held) until fewer than `limit` requests are in flight; 0 or ETIMEDOUT. */
static int skv_bench_wait_inflight(skv_bench_runstate_t *run, int limit)
{
    int64_t deadline = skv_clock_deadline_ms(run->cfg->timeout_ms + SKV_BENCH_GRACE_MS);
    struct timespec ts = {.tv_sec = deadline / 1000000000, .tv_nsec = deadline % 1000000000};
    while (run->inflight >= limit) {
        if (pthread_cond_timedwait(&run->cv, &run->mu, &ts) == ETIMEDOUT) {
            return ETIMEDOUT;
        }
    }
    return 0;
}

/* Sleeps until the monotonic time at_ns. */
static void skv_bench_sleep_until(int64_t at_ns)
{
    struct timespec ts = {.tv_sec = at_ns / 1000000000, .tv_nsec = at_ns % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Starts request i on a detached thread (mu held, a slot free); a thread that cannot start
 * is a failed request. */
static void skv_bench_start(skv_bench_runstate_t *run, pthread_attr_t *attr, size_t i)
{
    pthread_t tid;
    run->tasks[i] = (skv_bench_task_t){run, i};
    run->inflight++;
    run->peak = run->inflight > run->peak ? run->inflight : run->peak;
    skv_bench_progress(run, 0);
    if (pthread_create(&tid, attr, skv_bench_thread, &run->tasks[i]) != 0) {
        run->inflight--;
        skv_bench_fail(&run->results[i], -1, "could not start a request thread");
        run->failed++;
        run->done++;
        run->end_ns = skv_clock_now_ns();
    }
}

/* Paces and starts every request; returns 0 or ETIMEDOUT (a slot never freed). */
static int skv_bench_dispatch(skv_bench_runstate_t *run, double rate, int limit, uint64_t seed)
{
    pthread_attr_t attr;
    skv_bench_rng_t rng;
    double at_s = 0.0;
    int rc = 0;
    skv_bench_rng_seed(&rng, seed);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, SKV_BENCH_STACK_BYTES);
    for (size_t i = 0; i < run->n && rc == 0; i++) {
        if (isfinite(rate) && i > 0) {
            at_s += -log(1.0 - skv_bench_rng_uniform(&rng)) / rate;
            skv_bench_sleep_until(run->start_ns + (int64_t)(at_s * 1e9));
        }
        pthread_mutex_lock(&run->mu);
        rc = skv_bench_wait_inflight(run, limit);
        if (rc == 0) {
            skv_bench_start(run, &attr, i);
        }
        pthread_mutex_unlock(&run->mu);
    }
    pthread_attr_destroy(&attr);
    return rc;
}

/* Waits for every started request to end; 0 or ETIMEDOUT. */
static int skv_bench_wait_all(skv_bench_runstate_t *run)
{
    pthread_mutex_lock(&run->mu);
    int rc = skv_bench_wait_inflight(run, 1);
    skv_bench_progress(run, 1);
    pthread_mutex_unlock(&run->mu);
    if (run->label != NULL) {
        fputc('\n', stderr);
    }
    return rc;
}

static skv_status_t skv_bench_runstate_init(skv_bench_runstate_t *run)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&run->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0 || pthread_mutex_init(&run->mu, NULL) != 0) {
        return SKV_STATUS_INTERNAL;
    }
    run->tasks = calloc(run->n ? run->n : 1, sizeof(*run->tasks));
    return run->tasks != NULL ? SKV_STATUS_OK : SKV_STATUS_NO_MEMORY;
}

static void skv_bench_runstate_destroy(skv_bench_runstate_t *run)
{
    pthread_mutex_destroy(&run->mu);
    pthread_cond_destroy(&run->cv);
    free(run->tasks);
    skv_bench_vec_free(&run->itl_ms);
    free(run);
}

skv_status_t skv_bench_run(skv_grpc_channel_t *channel, const skv_bench_config_t *cfg,
                           const skv_bench_prompt_t *prompts, size_t n, double rate, int limit,
                           uint64_t seed, const char *label, skv_bench_result_t *results,
                           skv_bench_vec_t *itl_ms, double *duration_s, int *peak_p)
{
    skv_bench_runstate_t *run = calloc(1, sizeof(*run));
    if (run == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    *run = (skv_bench_runstate_t){.channel = channel,
                                  .cfg = cfg,
                                  .prompts = prompts,
                                  .results = results,
                                  .n = n,
                                  .label = label};
    skv_status_t st = skv_bench_runstate_init(run);
    if (st != SKV_STATUS_OK) {
        free(run->tasks);
        free(run);
        return st;
    }
    run->start_ns = run->end_ns = skv_clock_now_ns();
    if (skv_bench_dispatch(run, rate, limit, seed) != 0 || skv_bench_wait_all(run) != 0) {
        fprintf(stderr,
                "skv_bench_serve: %d requests outlived their deadline by %d ms; "
                "giving up on them\n",
                run->inflight, SKV_BENCH_GRACE_MS);
        return SKV_STATUS_INTERNAL; /* late threads still use run: leaked on purpose */
    }
    st = run->merge_status != SKV_STATUS_OK ? run->merge_status
                                            : skv_bench_vec_extend(itl_ms, &run->itl_ms);
    *duration_s = skv_bench_ms(run->end_ns - run->start_ns) / 1e3;
    *peak_p = run->peak;
    skv_bench_runstate_destroy(run);
    return st;
}

skv_status_t skv_bench_model_info(skv_grpc_channel_t *channel, int64_t timeout_ms,
                                  skv_bench_model_t *model)
{
    Skv__V1__ModelInfoRequest req = SKV__V1__MODEL_INFO_REQUEST__INIT;
    skv_grpc_call_opts_t opts = {.timeout_ms = timeout_ms};
    skv_grpc_error_t err = {0};
    ProtobufCMessage *m = NULL;
    skv_status_t st = skv_grpc_unary(channel, "/skv.v1.Generation/ModelInfo", &req.base,
                                     &skv__v1__model_info_response__descriptor, &opts, &m, &err);
    if (st != SKV_STATUS_OK) {
        fprintf(stderr, "skv_bench_serve: ModelInfo on %s failed: %s (grpc %d: %s)\n",
                skv_grpc_channel_target(channel), skv_status_str(st), err.grpc_code, err.message);
        return st;
    }
    const Skv__V1__ModelInfoResponse *info = (const Skv__V1__ModelInfoResponse *)m;
    snprintf(model->name, sizeof(model->name), "%s", info->name);
    snprintf(model->backend, sizeof(model->backend), "%s", info->backend);
    model->vocab_size = info->vocab_size;
    model->context_length = info->context_length;
    protobuf_c_message_free_unpacked(m, NULL);
    return SKV_STATUS_OK;
}
