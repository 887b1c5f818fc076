// The job's collectives, each a start function for ohmpi_call (watched; big buffers in pieces).
#include "internal.h"

#include <stdlib.h>

typedef struct { void *buffer; int count; MPI_Datatype type; MPI_Op op; MPI_Comm comm; } allreduce_args;
static int allreduce_start(void *a, MPI_Request *request) {
    const allreduce_args *x = a;
    return request ? MPI_Iallreduce(MPI_IN_PLACE, x->buffer, x->count, x->type, x->op, x->comm, request)
                   : MPI_Allreduce(MPI_IN_PLACE, x->buffer, x->count, x->type, x->op, x->comm);
}

void ohmpi_allreduce(void *buffer, size_t count, MPI_Datatype type, size_t size, MPI_Op op, MPI_Comm comm,
                     int watched, const char *what) {
    char *p = buffer;
    while (count > 0) {
        const size_t n = count < OHMPI_CHUNK ? count : OHMPI_CHUNK;
        allreduce_args args = {p, (int)n, type, op, comm};
        ohmpi_call(allreduce_start, &args, "MPI_Allreduce", what, watched);
        p += n * size;
        count -= n;
    }
}

void ohmpi_allreduce_sum_f64(double *buffer, size_t count, const char *what) {
    if (ohmpi_world > 1) ohmpi_allreduce(buffer, count, MPI_DOUBLE, sizeof(double), MPI_SUM, ohmpi_main.world, 1, what);
}

static int barrier_start(void *comm, MPI_Request *request) {
    return request ? MPI_Ibarrier(*(MPI_Comm *)comm, request) : MPI_Barrier(*(MPI_Comm *)comm);
}

void ohmpi_barrier_on(MPI_Comm comm, int watched, const char *what) {
    ohmpi_call(barrier_start, &comm, "MPI_Barrier", what, watched);
}

void ohmpi_barrier(const char *what) {
    if (ohmpi_world > 1) ohmpi_barrier_on(ohmpi_main.world, 1, what);
}

typedef struct { void *buffer; int count; int root; } bcast_args;
static int bcast_start(void *a, MPI_Request *request) {
    const bcast_args *x = a;
    return request ? MPI_Ibcast(x->buffer, x->count, MPI_BYTE, x->root, ohmpi_main.world, request)
                   : MPI_Bcast(x->buffer, x->count, MPI_BYTE, x->root, ohmpi_main.world);
}

void ohmpi_bcast_bytes(void *buffer, size_t count, int root, const char *what) {
    if (ohmpi_world == 1) return;
    char *p = buffer;
    while (count > 0) {
        const size_t n = count < OHMPI_CHUNK ? count : OHMPI_CHUNK;
        bcast_args args = {p, (int)n, root};
        ohmpi_call(bcast_start, &args, "MPI_Bcast", what, 1);
        p += n;
        count -= n;
    }
}

typedef struct { int64_t mine; int64_t *counts; } allgather_args;
static int allgather_start(void *a, MPI_Request *request) {
    allgather_args *x = a;
    return request ? MPI_Iallgather(&x->mine, 1, MPI_INT64_T, x->counts, 1, MPI_INT64_T, ohmpi_main.world, request)
                   : MPI_Allgather(&x->mine, 1, MPI_INT64_T, x->counts, 1, MPI_INT64_T, ohmpi_main.world);
}

void ohmpi_allgather_counts(int64_t my_count, int64_t *counts, const char *what) {
    allgather_args args = {my_count, counts};
    ohmpi_call(allgather_start, &args, "MPI_Allgather", what, 1);
}

// MPI_Allgatherv, in place when `send` is NULL.
typedef struct { const void *send; int count; void *receive; const int *counts, *offsets; MPI_Datatype type; MPI_Comm comm; } allgatherv_args;
static int allgatherv_start(void *a, MPI_Request *request) {
    const allgatherv_args *x = a;
    const void *send = x->send ? x->send : MPI_IN_PLACE;
    const MPI_Datatype sendType = x->send ? x->type : MPI_DATATYPE_NULL;
    return request ? MPI_Iallgatherv(send, x->count, sendType, x->receive, x->counts, x->offsets, x->type, x->comm, request)
                   : MPI_Allgatherv(send, x->count, sendType, x->receive, x->counts, x->offsets, x->type, x->comm);
}

// Counts and offsets as MPI's ints, from `n` ranks' [bounds[k], bounds[k + 1]) (NULL: from counts).
static void int_counts(int n, const size_t *bounds, const int64_t *counts, int *c, int *d, const char *too_large) {
    int64_t offset = 0;
    for (int k = 0; k < n; k++) {
        const int64_t lo = bounds ? (int64_t)bounds[k] : offset, count = bounds ? (int64_t)(bounds[k + 1] - bounds[k]) : counts[k];
        if (count > 0x7fffffff || lo > 0x7fffffff) ohmpi_abort(too_large, 3);
        c[k] = (int)count;
        d[k] = (int)lo;
        offset = lo + count;
    }
}

void ohmpi_allgatherv_bytes(const void *send, int64_t my_count, void *receive, const int64_t *counts, const char *what) {
    int *c = calloc((size_t)ohmpi_world, sizeof(int)), *d = calloc((size_t)ohmpi_world, sizeof(int));
    int_counts(ohmpi_world, NULL, counts, c, d, "error: allgather of more than 2 GiB is not supported");
    allgatherv_args args = {send, (int)my_count, receive, c, d, MPI_BYTE, ohmpi_main.world};
    ohmpi_call(allgatherv_start, &args, "MPI_Allgatherv", what, 1);
    free(c);
    free(d);
}

void ohmpi_node_allgatherv_f32(float *buffer, const size_t *bounds, const char *what) {
    if (ohmpi_node_size == 1) return;
    int *c = calloc((size_t)ohmpi_node_size, sizeof(int)), *d = calloc((size_t)ohmpi_node_size, sizeof(int));
    int_counts(ohmpi_node_size, bounds, NULL, c, d, "error: a gather of more than 2^31 float32 is not supported");
    allgatherv_args args = {NULL, 0, buffer, c, d, MPI_FLOAT, ohmpi_main.node};
    ohmpi_call(allgatherv_start, &args, "MPI_Allgatherv", what, 1);
    free(c);
    free(d);
}
