/*
 * cuda_backend.cu: the CUDA backend's lifetime, memory, copies, weight upload and GEMMs, and
 * its ops table. Element kernels live in cuda_kernels.cu, attention in cuda_attention.cu.
 *
 * One stream per backend: every op is enqueued on it in call order, so ops need no events
 * between them and sync is one cudaStreamSynchronize. All device memory (model weights,
 * workspace, KV pool, our own scratch) is taken in create/alloc at startup; ops never
 * allocate. The device must be current (cudaSetDevice) on the driving thread: create makes
 * it current on the calling thread.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_internal.h"

extern "C" {
#include "base/alloc.h"
}

skv_status_t skv_cuda_attention_init(skv_backend_t *be);
void skv_cuda_profile_maybe_wrap(const skv_ops_t **ops);

skv_status_t skv_cuda_error(cudaError_t err, const char *what, const char *file, int line)
{
    skv_log_write(SKV_LOG_LEVEL_ERROR, file, line, "CUDA call %s failed: %s (%s)", what,
                  cudaGetErrorString(err), cudaGetErrorName(err));
    return err == cudaErrorMemoryAllocation ? SKV_STATUS_NO_MEMORY : SKV_STATUS_DEVICE;
}

skv_status_t skv_cublas_error(cublasStatus_t st, const char *what, const char *file, int line)
{
    skv_log_write(SKV_LOG_LEVEL_ERROR, file, line, "cuBLAS call %s failed: %s", what,
                  cublasGetStatusString(st));
    return st == CUBLAS_STATUS_ALLOC_FAILED ? SKV_STATUS_NO_MEMORY : SKV_STATUS_DEVICE;
}

static void skv_cuda_destroy(skv_backend_t *be)
{
    skv_cuda_backend_t *c = skv_cuda(be);
    if (c->stream != NULL) {
        cudaStreamSynchronize(c->stream);
    }
    for (int i = 0; i < c->n_graphs; i++) {
        cudaGraphExecDestroy(c->graphs[i].exec);
    }
    for (int i = 0; i < 2; i++) {
        if (c->stage_done[i] != NULL) {
            cudaEventDestroy(c->stage_done[i]);
        }
        cudaFreeHost(c->h_stage[i]);
    }
    cudaFree(c->d_stage);
    cudaFree(c->d_attn_ws);
    cudaFree(c->d_cublas_ws);
    if (c->cublas != NULL) {
        cublasDestroy(c->cublas);
    }
    if (c->stream != NULL) {
        cudaStreamDestroy(c->stream);
    }
    skv_free(c);
}

static skv_status_t skv_cuda_alloc(skv_backend_t *be, size_t bytes, void **ptr_p)
{
    /* Zeroed like the CPU backend's, so a fresh KV pool never holds NaN garbage. The memset is
     * on our stream, so later ops see it in order. */
    void *p = NULL;
    size_t n = bytes ? bytes : 256;
    cudaError_t err = cudaMalloc(&p, n);
    if (err != cudaSuccess) {
        SKV_LOG_ERROR("cudaMalloc of %zu bytes failed: %s", bytes, cudaGetErrorString(err));
        return SKV_STATUS_NO_MEMORY;
    }
    err = cudaMemsetAsync(p, 0, n, skv_cuda(be)->stream);
    if (err != cudaSuccess) {
        cudaFree(p);
        return skv_cuda_error(err, "cudaMemsetAsync", __FILE__, __LINE__);
    }
    *ptr_p = p;
    return SKV_STATUS_OK;
}

static void skv_cuda_free(skv_backend_t *be, void *ptr)
{
    /* cudaFree synchronizes the device, so no op still using ptr can be running. */
    cudaFree(ptr);
}

static skv_status_t skv_cuda_copy_h2d(skv_backend_t *be, void *dst, const void *src, size_t bytes)
{
    /* Pageable source: the runtime stages it before returning, so the caller may reuse src
     * at once (the model's metadata staging buffer relies on this). */
    SKV_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, skv_cuda(be)->stream));
    return SKV_STATUS_OK;
}

static skv_status_t skv_cuda_copy_d2h(skv_backend_t *be, void *dst, const void *src, size_t bytes)
{
    /* Asynchronous with respect to the host only for pinned dst; callers sync before reading. */
    SKV_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, skv_cuda(be)->stream));
    return SKV_STATUS_OK;
}

static skv_status_t skv_cuda_sync(skv_backend_t *be)
{
    SKV_CUDA_CHECK(cudaStreamSynchronize(skv_cuda(be)->stream));
    return SKV_STATUS_OK;
}

/* Host-side copies into pinned staging run on this many threads: one thread's memcpy
 * (~6 GB/s) is far below PCIe, several together approach it. */
#define SKV_CUDA_STAGE_THREADS 8

typedef struct {
    char *dst;
    const char *src;
    size_t bytes;
} skv_cuda_copy_part_t;

static void *skv_cuda_copy_part(void *arg)
{
    skv_cuda_copy_part_t *p = (skv_cuda_copy_part_t *)arg;
    memcpy(p->dst, p->src, p->bytes);
    return NULL;
}

/* memcpy of bytes split over up to SKV_CUDA_STAGE_THREADS threads (this thread included);
 * falls back to one thread when a thread cannot be started. */
static void skv_cuda_parallel_memcpy(void *dst, const void *src, size_t bytes)
{
    pthread_t tids[SKV_CUDA_STAGE_THREADS];
    skv_cuda_copy_part_t parts[SKV_CUDA_STAGE_THREADS];
    int started[SKV_CUDA_STAGE_THREADS] = {0};
    int n = bytes >= ((size_t)4 << 20) ? SKV_CUDA_STAGE_THREADS : 1;
    size_t per = (bytes + (size_t)n - 1) / (size_t)n;
    for (int i = 0; i < n; i++) {
        size_t off = per * (size_t)i < bytes ? per * (size_t)i : bytes;
        size_t len = bytes - off < per ? bytes - off : per;
        parts[i] = (skv_cuda_copy_part_t){(char *)dst + off, (const char *)src + off, len};
        if (i > 0 && pthread_create(&tids[i], NULL, skv_cuda_copy_part, &parts[i]) == 0) {
            started[i] = 1;
        }
    }
    for (int i = 0; i < n; i++) {
        if (!started[i]) {
            skv_cuda_copy_part(&parts[i]);
        }
    }
    for (int i = 1; i < n; i++) {
        if (started[i]) {
            pthread_join(tids[i], NULL);
        }
    }
}

/* Weight upload: host rows -> pinned staging (memcpy) -> device, double-buffered so the
 * memcpy of one chunk overlaps the DMA of the other. bf16 sources land in dst directly (a
 * linear copy for dense rows, a 2-D copy for a row stride); f32/f16 sources land in d_stage
 * and a kernel converts them into dst. */
static skv_status_t skv_cuda_weight_upload(skv_backend_t *be, const skv_tensor_t *dst, int64_t row0,
                                           const void *src, skv_dtype_t src_dtype, int64_t n_rows)
{
    skv_cuda_backend_t *c = skv_cuda(be);
    SKV_ASSERT(dst->dtype == SKV_DTYPE_BF16 && row0 >= 0 && row0 + n_rows <= dst->rows);
    SKV_ASSERT(src_dtype == SKV_DTYPE_F32 || src_dtype == SKV_DTYPE_F16 ||
               src_dtype == SKV_DTYPE_BF16);
    size_t row_bytes = (size_t)dst->cols * skv_dtype_size(src_dtype);
    if (row_bytes > SKV_CUDA_STAGE_BYTES) {
        SKV_LOG_ERROR("weight rows of %zu bytes exceed the %zu-byte upload stage", row_bytes,
                      SKV_CUDA_STAGE_BYTES);
        return SKV_STATUS_UNSUPPORTED;
    }
    int64_t chunk_rows = (int64_t)(SKV_CUDA_STAGE_BYTES / row_bytes);
    for (int64_t r = 0, i = 0; r < n_rows; r += chunk_rows, i++) {
        int b = (int)(i & 1);
        int64_t n = n_rows - r < chunk_rows ? n_rows - r : chunk_rows;
        size_t bytes = (size_t)n * row_bytes;
        /* Wait until the DMA that last read this staging buffer is done. */
        SKV_CUDA_CHECK(cudaEventSynchronize(c->stage_done[b]));
        skv_cuda_parallel_memcpy(c->h_stage[b], (const char *)src + (size_t)r * row_bytes, bytes);
        if (src_dtype == SKV_DTYPE_BF16) {
            char *d = (char *)dst->data + (size_t)(row0 + r) * dst->ld * 2;
            if (dst->ld == dst->cols) { /* dense rows: one linear DMA (a 2-D copy of many short
                                         * rows runs at two thirds of the linear rate) */
                SKV_CUDA_CHECK(
                    cudaMemcpyAsync(d, c->h_stage[b], bytes, cudaMemcpyHostToDevice, c->stream));
            } else {
                SKV_CUDA_CHECK(cudaMemcpy2DAsync(d, (size_t)dst->ld * 2, c->h_stage[b], row_bytes,
                                                 row_bytes, (size_t)n, cudaMemcpyHostToDevice,
                                                 c->stream));
            }
            SKV_CUDA_CHECK(cudaEventRecord(c->stage_done[b], c->stream));
        } else {
            /* d_stage is reused per chunk; stream order keeps copy i+1 after convert i. */
            SKV_CUDA_CHECK(cudaMemcpyAsync(c->d_stage, c->h_stage[b], bytes, cudaMemcpyHostToDevice,
                                           c->stream));
            SKV_CUDA_CHECK(cudaEventRecord(c->stage_done[b], c->stream));
            SKV_CHECK(skv_cuda_convert_rows(be, dst, row0 + r, c->d_stage, src_dtype, n));
        }
    }
    return SKV_STATUS_OK;
}

static cudaDataType_t skv_cuda_dtype(skv_dtype_t t)
{
    return t == SKV_DTYPE_F32 ? CUDA_R_32F : t == SKV_DTYPE_F16 ? CUDA_R_16F : CUDA_R_16BF;
}

/* out[N,O] = x[N,I] w[O,I]^T. Row-major out is column-major out^T [O,N], so cuBLAS computes
 * out^T = w^T(op T of the column-major [I,O] view of w) x^T with fp32 accumulation. */
static skv_status_t skv_cuda_matmul(skv_backend_t *be, const skv_tensor_t *out,
                                    const skv_tensor_t *x, const skv_tensor_t *w)
{
    SKV_ASSERT(x->cols == w->cols && out->rows == x->rows && out->cols == w->rows);
    SKV_ASSERT(x->dtype == SKV_DTYPE_BF16 && w->dtype == SKV_DTYPE_BF16);
    SKV_ASSERT(out->dtype == SKV_DTYPE_BF16 || out->dtype == SKV_DTYPE_F32);
    if (x->rows == 0 || w->rows == 0) {
        return SKV_STATUS_OK;
    }
    if (skv_cuda_gemv_applies(out, x, w)) {
        return skv_cuda_gemv(be, out, x, w); /* decode at small batch: a weight stream */
    }
    const float alpha = 1.0f, beta = 0.0f;
    SKV_CUBLAS_CHECK(cublasGemmEx(skv_cuda(be)->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->rows,
                                  (int)x->rows, (int)x->cols, &alpha, w->data, CUDA_R_16BF,
                                  (int)w->ld, x->data, CUDA_R_16BF, (int)x->ld, &beta, out->data,
                                  skv_cuda_dtype(out->dtype), (int)out->ld, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
    return SKV_STATUS_OK;
}

/* CUDA graphs: a decode step is ~400 small launches; replaying one graph removes the host
 * launch cost and the gaps between kernels. Thread-local capture mode, so other threads'
 * CUDA calls are not affected while one backend records. */
static skv_status_t skv_cuda_graph_launch(skv_backend_t *be, uint64_t key)
{
    skv_cuda_backend_t *c = skv_cuda(be);
    for (int i = 0; i < c->n_graphs; i++) {
        if (c->graphs[i].key == key) {
            SKV_CUDA_CHECK(cudaGraphLaunch(c->graphs[i].exec, c->stream));
            return SKV_STATUS_OK;
        }
    }
    return SKV_STATUS_NOT_FOUND;
}

static skv_status_t skv_cuda_graph_capture_begin(skv_backend_t *be)
{
    SKV_CUDA_CHECK(cudaStreamBeginCapture(skv_cuda(be)->stream, cudaStreamCaptureModeThreadLocal));
    return SKV_STATUS_OK;
}

static skv_status_t skv_cuda_graph_capture_end(skv_backend_t *be, uint64_t key, int keep)
{
    skv_cuda_backend_t *c = skv_cuda(be);
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    SKV_CUDA_CHECK(cudaStreamEndCapture(c->stream, &graph));
    if (!keep) {
        cudaGraphDestroy(graph);
        return SKV_STATUS_OK;
    }
    cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (err != cudaSuccess) {
        return skv_cuda_error(err, "cudaGraphInstantiate", __FILE__, __LINE__);
    }
    SKV_CUDA_CHECK(cudaGraphLaunch(exec, c->stream));
    if (c->n_graphs == SKV_CUDA_MAX_GRAPHS) {
        /* Full: evict the oldest (its last launch is ordered before this one on the stream;
         * destroying an exec with a pending launch is allowed). */
        cudaGraphExecDestroy(c->graphs[0].exec);
        memmove(&c->graphs[0], &c->graphs[1], sizeof(c->graphs[0]) * (SKV_CUDA_MAX_GRAPHS - 1));
        c->n_graphs--;
    }
    c->graphs[c->n_graphs].key = key;
    c->graphs[c->n_graphs++].exec = exec;
    return SKV_STATUS_OK;
}

static const skv_ops_t skv_cuda_ops_table = {
    /* .name = */ "cuda",
    /* .act_dtype = */ SKV_DTYPE_BF16,
    /* .weight_dtype = */ SKV_DTYPE_BF16,
    /* .kv_dtype = */ SKV_DTYPE_BF16,
    /* .kv_dtypes = */ (1u << SKV_DTYPE_BF16) | (1u << SKV_DTYPE_F8E4M3),
    skv_cuda_destroy,
    skv_cuda_alloc,
    skv_cuda_free,
    skv_cuda_copy_h2d,
    skv_cuda_copy_d2h,
    skv_cuda_sync,
    skv_cuda_weight_upload,
    skv_cuda_embed,
    skv_cuda_rmsnorm,
    skv_cuda_add_rmsnorm,
    skv_cuda_matmul,
    skv_cuda_rope,
    skv_cuda_kv_write,
    skv_cuda_swiftkv_kv_write,
    skv_cuda_attention,
    skv_cuda_swiglu,
    skv_cuda_gather_rows,
    skv_cuda_weight_fill,
    skv_cuda_graph_launch,
    skv_cuda_graph_capture_begin,
    skv_cuda_graph_capture_end,
    skv_cuda_sample,
    skv_cuda_matmul_swiglu,
    skv_cuda_rope_kv_write,
};

int g_skv_cuda_pdl;

/* Creates the stream, handles and fixed workspace; on failure the caller destroys c. */
static skv_status_t skv_cuda_setup(skv_cuda_backend_t *c)
{
    int major = 0;
    SKV_CUDA_CHECK(cudaSetDevice(c->device));
    SKV_CUDA_CHECK(cudaDeviceGetAttribute(&c->n_sms, cudaDevAttrMultiProcessorCount, c->device));
    SKV_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device));
    g_skv_cuda_pdl = major >= 9 && getenv("SKV_NO_PDL") == NULL; /* cuda_internal.h */
    SKV_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    SKV_CUBLAS_CHECK(cublasCreate(&c->cublas));
    SKV_CUBLAS_CHECK(cublasSetStream(c->cublas, c->stream));
    SKV_CUDA_CHECK(cudaMalloc(&c->d_cublas_ws, SKV_CUDA_CUBLAS_WS_BYTES));
    SKV_CUBLAS_CHECK(cublasSetWorkspace(c->cublas, c->d_cublas_ws, SKV_CUDA_CUBLAS_WS_BYTES));
    SKV_CUDA_CHECK(cudaMalloc((void **)&c->d_attn_ws, SKV_CUDA_ATTN_WS_FLOATS * sizeof(float)));
    SKV_CUDA_CHECK(cudaMalloc(&c->d_stage, SKV_CUDA_STAGE_BYTES));
    for (int i = 0; i < 2; i++) {
        SKV_CUDA_CHECK(cudaHostAlloc(&c->h_stage[i], SKV_CUDA_STAGE_BYTES, cudaHostAllocDefault));
        SKV_CUDA_CHECK(cudaEventCreateWithFlags(&c->stage_done[i], cudaEventDisableTiming));
    }
    return skv_cuda_attention_init(&c->base);
}

skv_status_t skv_cuda_backend_create(int device, skv_backend_t **be_p)
{
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
        SKV_LOG_WARN("no CUDA device: %s",
                     err != cudaSuccess ? cudaGetErrorString(err) : "device count is 0");
        return SKV_STATUS_UNSUPPORTED;
    }
    if (device < 0 || device >= n) {
        SKV_LOG_ERROR("CUDA device %d requested; this machine has %d", device, n);
        return SKV_STATUS_UNSUPPORTED;
    }
    skv_cuda_backend_t *c = (skv_cuda_backend_t *)skv_calloc(1, sizeof(*c));
    if (c == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    c->base.ops = &skv_cuda_ops_table;
    c->device = device;
    skv_status_t status = skv_cuda_setup(c);
    if (status != SKV_STATUS_OK) {
        skv_cuda_destroy(&c->base);
        return status;
    }
    skv_cuda_profile_maybe_wrap(&c->base.ops); /* SKV_CUDA_PROFILE=1: per-op breakdown */
    *be_p = &c->base;
    return SKV_STATUS_OK;
}
