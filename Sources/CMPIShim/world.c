// Lifecycle and communicators: start-up, this rank's place in the job, the end of the job.
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

ohmpi_comms ohmpi_main = {MPI_COMM_NULL, MPI_COMM_NULL, MPI_COMM_NULL};
MPI_Comm ohmpi_notes = MPI_COMM_NULL;
int ohmpi_my_rank = 0, ohmpi_world = 1;
int ohmpi_node_rank = 0, ohmpi_node_size = 1, ohmpi_cross_size = 1;
int ohmpi_threaded = 0;
static int ohmpi_uniform = 1;                 // every node runs the same number of ranks

double ohmpi_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int ohmpi_launched(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", NULL};
    for (int i = 0; vars[i]; i++) if (getenv(vars[i])) return 1;
    return 0;
}

void ohmpi_abort(const char *message, int code) {
    fprintf(stderr, "[rank %d] %s\n", ohmpi_my_rank, message);
    fflush(stderr);
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

void ohmpi_check(int rc, const char *call, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(rc, text, &length);
    char message[MPI_MAX_ERROR_STRING + 256];
    snprintf(message, sizeof message, "error: %s failed in %s: %s", call, what ? what : "?", text);
    ohmpi_abort(message, 3);
}

MPI_Comm ohmpi_group(const ohmpi_comms *comms, int group) {
    switch (group) {
    case OHMPI_WORLD: return comms->world;
    case OHMPI_NODE: return comms->node;
    case OHMPI_CROSS: return comms->cross;
    default: ohmpi_abort("error: internal: no such group of ranks", 3);
    }
}

// Open MPI's TCP transport sends a message above btl_tcp_eager_limit (64 KB by default) with a
// rendezvous: the receiver's "clear to send" comes back over the same links, queued behind what
// that direction carries. A gradient bucket's all-reduce sends both ways at once, so at 1 Gb/s
// each handshake waited behind megabytes and the sums ran at half the link's rate; sent eagerly
// they run at its rate (docs/SCALING.md, "AlexNet across hosts"). Messages up to a bucket
// (--gradient-bucket-mb's default, 4 MB) and their headers go eagerly. Only where the job set
// none of the three (mpirun --mca or OMPI_MCA_*): they must agree (rndv <= eager).
#define OHMPI_TCP_EAGER_BYTES "4259840"
static void ohmpi_tcp_defaults(void) {
    const char *vars[] = {"OMPI_MCA_btl_tcp_eager_limit", "OMPI_MCA_btl_tcp_rndv_eager_limit", "OMPI_MCA_btl_tcp_max_send_size", NULL};
    for (int i = 0; vars[i]; i++) if (getenv(vars[i])) return;
    for (int i = 0; vars[i]; i++) setenv(vars[i], OHMPI_TCP_EAGER_BYTES, 0);
}

long long ohmpi_tcp_eager_limit(void) {
    int provided = 0, index = 0, count = 0;
    if (MPI_T_init_thread(MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS) return -1;
    long long result = -1;
    MPI_T_cvar_handle handle;
    if (MPI_T_cvar_get_index("btl_tcp_eager_limit", &index) == MPI_SUCCESS &&
        MPI_T_cvar_handle_alloc(index, NULL, &handle, &count) == MPI_SUCCESS) {
        unsigned long long value[4] = {0};     // a size_t (MPI_UNSIGNED_LONG); room for any scalar
        if (count == 1 && MPI_T_cvar_read(handle, value) == MPI_SUCCESS) result = (long long)value[0];
        MPI_T_cvar_handle_free(&handle);
    }
    MPI_T_finalize();
    return result;
}

int ohmpi_init(void) {
    const char *what = "start-up";
    int provided = 0;
    ohmpi_tcp_defaults();
    ohmpi_check(MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread", what);
    // Errors come back as codes, which ohmpi_check turns into an abort with a message.
    ohmpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", what);
    ohmpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &ohmpi_main.world), "MPI_Comm_dup", what);
    ohmpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &ohmpi_notes), "MPI_Comm_dup", what);
    ohmpi_check(MPI_Comm_rank(ohmpi_main.world, &ohmpi_my_rank), "MPI_Comm_rank", what);
    ohmpi_check(MPI_Comm_size(ohmpi_main.world, &ohmpi_world), "MPI_Comm_size", what);
    ohmpi_threaded = provided == MPI_THREAD_MULTIPLE && ohmpi_watchdog_start();
    // The ranks of each node, and for each node rank the ranks holding it on the other nodes.
    ohmpi_check(MPI_Comm_split_type(ohmpi_main.world, MPI_COMM_TYPE_SHARED, ohmpi_my_rank, MPI_INFO_NULL, &ohmpi_main.node),
                "MPI_Comm_split_type", what);
    ohmpi_check(MPI_Comm_rank(ohmpi_main.node, &ohmpi_node_rank), "MPI_Comm_rank", what);
    ohmpi_check(MPI_Comm_size(ohmpi_main.node, &ohmpi_node_size), "MPI_Comm_size", what);
    ohmpi_check(MPI_Comm_split(ohmpi_main.world, ohmpi_node_rank, ohmpi_my_rank, &ohmpi_main.cross), "MPI_Comm_split", what);
    ohmpi_check(MPI_Comm_size(ohmpi_main.cross, &ohmpi_cross_size), "MPI_Comm_size", what);
    int sizes[2] = {ohmpi_node_size, -ohmpi_node_size};
    ohmpi_check(MPI_Allreduce(MPI_IN_PLACE, sizes, 2, MPI_INT, MPI_MAX, ohmpi_main.world), "MPI_Allreduce", what);
    ohmpi_uniform = sizes[0] == -sizes[1];
    ohmpi_bf16_start();
    if (ohmpi_threaded && ohmpi_world > 1) ohmpi_worker_start();
    return 0;
}

void ohmpi_finalize(void) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    ohmpi_watchdog_stop();
    ohmpi_worker_stop();
    ohmpi_bf16_stop();
    ohmpi_window_free();
    MPI_Comm *comms[] = {&ohmpi_main.node, &ohmpi_main.cross, &ohmpi_main.world, &ohmpi_notes};
    for (size_t i = 0; i < sizeof comms / sizeof comms[0]; i++)
        if (*comms[i] != MPI_COMM_NULL) MPI_Comm_free(comms[i]);
    MPI_Finalize();
}

int ohmpi_rank(void) { return ohmpi_my_rank; }
int ohmpi_size(void) { return ohmpi_world; }

void ohmpi_node_layout(int *node_rank, int *node_size, int *nodes, int *uniform) {
    *node_rank = ohmpi_node_rank;
    *node_size = ohmpi_node_size;
    *nodes = ohmpi_cross_size;
    *uniform = ohmpi_uniform;
}
