// The node's shared-memory window: every node rank's gradients and parameters, mapped in every
// node rank's process, so that node rank l can add shard l of the node's gradients without
// copying them through Open MPI's point-to-point layer, and read the shards the others updated.
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static MPI_Win ohmpi_window = MPI_WIN_NULL;
static float **ohmpi_segments = NULL;         // each node rank's segment, mapped in this process
static size_t ohmpi_capacity = 0;             // gradients per segment (parameters follow them)

float *ohmpi_window_allocate(size_t count) {
    const char *what = "shared-memory window for the gradients";
    if (ohmpi_window != MPI_WIN_NULL || ohmpi_node_size < 2) ohmpi_abort("error: internal: one shared-memory window per job, on nodes of 2 or more ranks", 3);
    MPI_Info info;
    ohmpi_check(MPI_Info_create(&info), "MPI_Info_create", what);
    // Each segment on its own pages (the node ranks write their own at the same time).
    ohmpi_check(MPI_Info_set(info, "alloc_shared_noncontig", "true"), "MPI_Info_set", what);
    float *mine = NULL;
    ohmpi_enter(what);
    ohmpi_check(MPI_Win_allocate_shared((MPI_Aint)(2 * count * sizeof(float)), (int)sizeof(float), info, ohmpi_main.node, &mine,
                                        &ohmpi_window),
                "MPI_Win_allocate_shared", what);
    ohmpi_leave();
    MPI_Info_free(&info);
    ohmpi_segments = calloc((size_t)ohmpi_node_size, sizeof(float *));
    for (int r = 0; r < ohmpi_node_size; r++) {
        MPI_Aint bytes = 0;
        int unit = 0;
        ohmpi_check(MPI_Win_shared_query(ohmpi_window, r, &bytes, &unit, &ohmpi_segments[r]), "MPI_Win_shared_query", what);
    }
    ohmpi_check(MPI_Win_lock_all(MPI_MODE_NOCHECK, ohmpi_window), "MPI_Win_lock_all", what);
    memset(mine, 0, 2 * count * sizeof(float));
    ohmpi_capacity = count;
    return mine;
}

void ohmpi_window_free(void) {
    if (ohmpi_window == MPI_WIN_NULL) return;
    MPI_Win_unlock_all(ohmpi_window);
    MPI_Win_free(&ohmpi_window);
    free(ohmpi_segments);
    ohmpi_segments = NULL;
}

static void check_range(size_t lo, size_t hi, const char *call) {
    if (ohmpi_window == MPI_WIN_NULL || lo > hi || hi > ohmpi_capacity) {
        char message[160];
        snprintf(message, sizeof message, "error: internal: %s outside the shared window", call);
        ohmpi_abort(message, 3);
    }
}

// Nothing is copied into or out of a transfer buffer as Open MPI's shared-memory transport does:
// this rank reads its part of the node's addends once, in blocks that stay in the L1 cache.
void ohmpi_window_add(size_t lo, size_t hi) {
    check_range(lo, hi, "ohmpi_window_add");
    const int L = ohmpi_node_size;
    float *const *segment = ohmpi_segments;
    float *out = segment[ohmpi_node_rank];
    enum { BLOCK = 1024 };
    float partial[BLOCK];
    for (size_t start = lo; start < hi; start += BLOCK) {
        const size_t n = hi - start < BLOCK ? hi - start : BLOCK;
        const float *a = segment[0] + start, *b = segment[1] + start;
        for (size_t i = 0; i < n; i++) partial[i] = a[i] + b[i];
        for (int k = 2; k < L; k++) {
            const float *c = segment[k] + start;
            for (size_t i = 0; i < n; i++) partial[i] += c[i];
        }
        memcpy(out + start, partial, n * sizeof(float));
    }
}

void ohmpi_window_copy_parameters(int k, size_t lo, size_t hi) {
    check_range(lo, hi, "ohmpi_window_copy_parameters");
    if (k < 0 || k >= ohmpi_node_size) ohmpi_abort("error: internal: ohmpi_window_copy_parameters from no such node rank", 3);
    memcpy(ohmpi_segments[ohmpi_node_rank] + ohmpi_capacity + lo, ohmpi_segments[k] + ohmpi_capacity + lo, (hi - lo) * sizeof(float));
}

void ohmpi_window_barrier_on(MPI_Comm node, int watched, const char *what) {
    MPI_Win_sync(ohmpi_window);
    ohmpi_barrier_on(node, watched, what);
    MPI_Win_sync(ohmpi_window);
}

void ohmpi_window_barrier(const char *what) { ohmpi_window_barrier_on(ohmpi_main.node, 1, what); }
