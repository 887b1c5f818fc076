// One gradient sum as the plan in Swift describes it (ohmpi_sum), run by the main thread
// (watched) or by the gradient worker on its own communicators (its wait is the main thread's).
#include "internal.h"

void ohmpi_run_sum(const ohmpi_sum *sum, const ohmpi_comms *comms, int watched, const char *what) {
    if (sum->window) {
        ohmpi_window_barrier_on(comms->node, watched, what);  // every segment holds its rank's addends
        if (sum->hi > sum->lo) ohmpi_window_add(sum->lo, sum->hi);
    }
    if (sum->group < 0 || sum->hi <= sum->lo) return;
    const MPI_Comm comm = ohmpi_group(comms, sum->group);
    int size = 1;
    ohmpi_check(MPI_Comm_size(comm, &size), "MPI_Comm_size", what);
    if (size == 1) return;
    float *part = sum->buffer + sum->lo;
    const size_t count = sum->hi - sum->lo;
    if (sum->bf16) ohmpi_allreduce_bf16(part, count, comm, watched, what);
    else ohmpi_allreduce(part, count, MPI_FLOAT, sizeof(float), MPI_SUM, comm, watched, what);
}

void ohmpi_sum_f32(const ohmpi_sum *sum, const char *what) { ohmpi_run_sum(sum, &ohmpi_main, 1, what); }
