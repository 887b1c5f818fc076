// Plain-C access to Open MPI for orthohash. See README.md.
#include "ohmpi.h"

#include <mpi.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

static MPI_Comm ohmpi_comm = MPI_COMM_NULL;   // collectives
static MPI_Comm ohmpi_notes = MPI_COMM_NULL;  // watchdog notes ("I am waiting in collective #n")
// Ranks that share a node sum their gradients through a shared-memory window instead of passing
// them through Open MPI's point-to-point layer, and each updates one shard of the parameters,
// which the others copy from the same window; see shard_sum().
static MPI_Comm ohmpi_node = MPI_COMM_NULL;   // the ranks of this node
static MPI_Comm ohmpi_cross = MPI_COMM_NULL;  // the ranks with this node rank, one per node
static int ohmpi_node_rank = 0, ohmpi_node_size = 1, ohmpi_cross_size = 1;
static int ohmpi_shared_enabled = 0;
static MPI_Win ohmpi_window = MPI_WIN_NULL;
static float **ohmpi_segments = NULL;         // each node rank's segment, mapped in this process
static size_t ohmpi_capacity = 0;             // gradients per segment (parameters follow them)
static int ohmpi_shared_lent = 0;             // a buffer uses the window now
static int ohmpi_my_rank = 0, ohmpi_world = 1;
static double ohmpi_timeout = 0;
static int64_t ohmpi_step = -1;
static int64_t ohmpi_sequence = 0;            // collectives entered so far, the same on every rank
// Watchdog. With MPI_THREAD_MULTIPLE, collectives are the fast blocking ones and a helper thread
// watches the clock; otherwise collectives are non-blocking and polled against the deadline.
static int ohmpi_threaded = 0;
static atomic_int ohmpi_waiting = 0;            // 1 while the main thread is inside a collective
static _Atomic double ohmpi_entered = 0;        // when it entered
static _Atomic(const char *) ohmpi_what = NULL;
static atomic_llong ohmpi_waiting_sequence = 0;
enum { OHMPI_NOTE_TAG = 4242 };
// MPI counts are ints: large buffers go in pieces.
#define OHMPI_CHUNK ((size_t)1 << 28)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void timed_out(const char *what, int64_t sequence);

static void *watchdog(void *unused) {
    (void)unused;
    for (;;) {
        struct timespec pause = {0, 200 * 1000 * 1000};
        nanosleep(&pause, NULL);
        if (ohmpi_timeout > 0 && atomic_load(&ohmpi_waiting) && now() - atomic_load(&ohmpi_entered) > ohmpi_timeout)
            timed_out(atomic_load(&ohmpi_what), (int64_t)atomic_load(&ohmpi_waiting_sequence));
    }
    return NULL;
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

static void check(int rc, const char *call, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(rc, text, &length);
    char message[MPI_MAX_ERROR_STRING + 256];
    snprintf(message, sizeof message, "error: %s failed in %s: %s", call, what ? what : "?", text);
    ohmpi_abort(message, 3);
}

int ohmpi_init(void) {
    int provided = 0;
    check(MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread", "start-up");
    // Errors come back as codes, which check() turns into an abort with a message.
    check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", "start-up");
    check(MPI_Comm_dup(MPI_COMM_WORLD, &ohmpi_comm), "MPI_Comm_dup", "start-up");
    check(MPI_Comm_dup(MPI_COMM_WORLD, &ohmpi_notes), "MPI_Comm_dup", "start-up");
    check(MPI_Comm_rank(ohmpi_comm, &ohmpi_my_rank), "MPI_Comm_rank", "start-up");
    check(MPI_Comm_size(ohmpi_comm, &ohmpi_world), "MPI_Comm_size", "start-up");
    if (provided == MPI_THREAD_MULTIPLE) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, watchdog, NULL) == 0) {
            pthread_detach(thread);
            ohmpi_threaded = 1;
        }
    }
    // The ranks of each node, and for each node rank the ranks holding it on the other nodes.
    check(MPI_Comm_split_type(ohmpi_comm, MPI_COMM_TYPE_SHARED, ohmpi_my_rank, MPI_INFO_NULL, &ohmpi_node),
          "MPI_Comm_split_type", "start-up");
    check(MPI_Comm_rank(ohmpi_node, &ohmpi_node_rank), "MPI_Comm_rank", "start-up");
    check(MPI_Comm_size(ohmpi_node, &ohmpi_node_size), "MPI_Comm_size", "start-up");
    check(MPI_Comm_split(ohmpi_comm, ohmpi_node_rank, ohmpi_my_rank, &ohmpi_cross), "MPI_Comm_split", "start-up");
    check(MPI_Comm_size(ohmpi_cross, &ohmpi_cross_size), "MPI_Comm_size", "start-up");
    // Shared-memory sums need the same number of ranks on every node (so that shards line up
    // across nodes) and more than one. Rank 0's environment decides for the whole job.
    int sizes[2] = {ohmpi_node_size, -ohmpi_node_size};
    check(MPI_Allreduce(MPI_IN_PLACE, sizes, 2, MPI_INT, MPI_MAX, ohmpi_comm), "MPI_Allreduce", "start-up");
    const char *setting = getenv("ORTHOHASH_SHARED_MEMORY_REDUCE");
    int wanted = !(setting && strcmp(setting, "0") == 0);
    check(MPI_Bcast(&wanted, 1, MPI_INT, 0, ohmpi_comm), "MPI_Bcast", "start-up");
    ohmpi_shared_enabled = wanted && ohmpi_node_size > 1 && sizes[0] == -sizes[1];
    return 0;
}

void ohmpi_finalize(void) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (ohmpi_window != MPI_WIN_NULL) {
        MPI_Win_unlock_all(ohmpi_window);
        MPI_Win_free(&ohmpi_window);
    }
    if (ohmpi_node != MPI_COMM_NULL) MPI_Comm_free(&ohmpi_node);
    if (ohmpi_cross != MPI_COMM_NULL) MPI_Comm_free(&ohmpi_cross);
    if (ohmpi_comm != MPI_COMM_NULL) MPI_Comm_free(&ohmpi_comm);
    if (ohmpi_notes != MPI_COMM_NULL) MPI_Comm_free(&ohmpi_notes);
    MPI_Finalize();
}

int ohmpi_rank(void) { return ohmpi_my_rank; }
int ohmpi_size(void) { return ohmpi_world; }
void ohmpi_set_timeout(double seconds) { ohmpi_timeout = seconds; }
void ohmpi_set_step(int64_t step) { ohmpi_step = step; }

// The watchdog fired: tell every other rank which collective we wait in, collect the same notes
// from the ranks that also wait in it for a short grace period, and abort naming the others.
static void timed_out(const char *what, int64_t sequence) {
    int64_t note = sequence;
    MPI_Request *sends = calloc((size_t)ohmpi_world, sizeof(MPI_Request));
    for (int r = 0; r < ohmpi_world; r++) {
        if (r == ohmpi_my_rank) continue;
        MPI_Isend(&note, 1, MPI_INT64_T, r, OHMPI_NOTE_TAG, ohmpi_notes, &sends[r]);
    }
    char *arrived = calloc((size_t)ohmpi_world, 1);
    arrived[ohmpi_my_rank] = 1;
    double grace = ohmpi_timeout < 10 ? ohmpi_timeout : 10;
    if (grace < 2) grace = 2;
    double until = now() + grace;
    while (now() < until) {
        int flag = 0;
        MPI_Status status;
        MPI_Iprobe(MPI_ANY_SOURCE, OHMPI_NOTE_TAG, ohmpi_notes, &flag, &status);
        if (!flag) { sched_yield(); continue; }
        int64_t theirs = -1;
        MPI_Recv(&theirs, 1, MPI_INT64_T, status.MPI_SOURCE, OHMPI_NOTE_TAG, ohmpi_notes, MPI_STATUS_IGNORE);
        if (theirs == sequence) arrived[status.MPI_SOURCE] = 1;
    }
    char missing[2048] = "";
    size_t used = 0;
    int count = 0;
    for (int r = 0; r < ohmpi_world && used < sizeof missing - 16; r++) {
        if (arrived[r]) continue;
        used += (size_t)snprintf(missing + used, sizeof missing - used, "%s%d", count ? ", " : "", r);
        count++;
    }
    char message[3072];
    char step[64] = "";
    if (ohmpi_step >= 0) snprintf(step, sizeof step, " at step %lld", (long long)ohmpi_step);
    snprintf(message, sizeof message,
             "error: collective '%s'%s waited more than %.0f s (--collective-timeout); ranks that did not arrive: %s",
             what, step, ohmpi_timeout, count ? missing : "none (all arrived late)");
    ohmpi_abort(message, 4);
}

static void enter(const char *what) {
    atomic_store(&ohmpi_what, what);
    atomic_store(&ohmpi_waiting_sequence, (long long)++ohmpi_sequence);
    atomic_store(&ohmpi_entered, now());
    atomic_store(&ohmpi_waiting, 1);
}

static void leave(void) { atomic_store(&ohmpi_waiting, 0); }

// Polls a non-blocking collective until it completes or the watchdog fires.
static void wait_for(MPI_Request *request, const char *what) {
    int64_t sequence = ++ohmpi_sequence;
    int done = 0;
    check(MPI_Test(request, &done, MPI_STATUS_IGNORE), "MPI_Test", what);
    if (done) return;
    double start = now();
    unsigned spins = 0;
    while (!done) {
        check(MPI_Test(request, &done, MPI_STATUS_IGNORE), "MPI_Test", what);
        if (done) break;
        if (++spins % 1024 == 0) {
            if (ohmpi_timeout > 0 && now() - start > ohmpi_timeout) timed_out(what, sequence);
            // Long waits (a slow peer) give the core away now and then instead of spinning hard.
            if (now() - start > 0.01) sched_yield();
        }
    }
}

static void allreduce(void *buffer, size_t count, MPI_Datatype type, size_t size, MPI_Comm comm, const char *what) {
    char *p = buffer;
    do {
        size_t n = count < OHMPI_CHUNK ? count : OHMPI_CHUNK;
        if (ohmpi_threaded) {
            // Open MPI's blocking all-reduce is much faster than its non-blocking one (libnbc).
            enter(what);
            check(MPI_Allreduce(MPI_IN_PLACE, p, (int)n, type, MPI_SUM, comm), "MPI_Allreduce", what);
            leave();
        } else {
            MPI_Request request;
            check(MPI_Iallreduce(MPI_IN_PLACE, p, (int)n, type, MPI_SUM, comm, &request), "MPI_Iallreduce", what);
            wait_for(&request, what);
        }
        p += n * size;
        count -= n;
    } while (count > 0);
}

float *ohmpi_shared_buffer(size_t count) {
    // One window per job; it lives until ohmpi_finalize and is lent to one buffer at a time.
    // All ranks agree on whether they get it, or their all-reduces would take different paths.
    if (!ohmpi_shared_enabled || count == 0) return NULL;
    const char *what = "shared-memory window for the gradients";
    int usable = !ohmpi_shared_lent && (ohmpi_window == MPI_WIN_NULL || count <= ohmpi_capacity);
    // Open MPI backs the window with a file in osc_sm_backing_directory (/dev/shm); a container's
    // small /dev/shm (Docker's default is 64 MB) would fail the allocation or, worse, fault when
    // the pages are touched. Without room for the node's segments, sum through MPI instead.
    int roomy = 1;
    double needed_mb = 0, free_mb = 0;
    const char *directory = getenv("OMPI_MCA_osc_sm_backing_directory");
    if (!directory || !*directory) directory = "/dev/shm";
    if (usable && ohmpi_window == MPI_WIN_NULL) {
        struct statvfs fs;
        const double needed = (double)ohmpi_node_size * 2.0 * (double)count * sizeof(float) * 1.25 + (16 << 20);
        needed_mb = needed / 1048576.0;
        if (statvfs(directory, &fs) == 0) {
            free_mb = (double)fs.f_bavail * (double)fs.f_frsize / 1048576.0;
            roomy = free_mb >= needed_mb;
        }
    }
    int votes[3] = {usable, roomy, roomy ? 0x7fffffff : (int)(free_mb < 2e9 ? free_mb : 2e9)};
    check(MPI_Allreduce(MPI_IN_PLACE, votes, 3, MPI_INT, MPI_MIN, ohmpi_comm), "MPI_Allreduce", what);
    if (!votes[1] && ohmpi_my_rank == 0) {
        fprintf(stderr, "[rank 0] warning: %s has %d MB free on a node; the shared-memory gradient window needs about %.0f MB per node, so gradients are summed with MPI_Allreduce (enlarge it, e.g. docker --shm-size, or set OMPI_MCA_osc_sm_backing_directory)\n",
                directory, votes[2], needed_mb);
        fflush(stderr);
    }
    if (!votes[0] || !votes[1]) return NULL;
    ohmpi_shared_lent = 1;
    if (ohmpi_window != MPI_WIN_NULL) {
        float *mine = ohmpi_segments[ohmpi_node_rank];
        memset(mine, 0, 2 * ohmpi_capacity * sizeof(float));
        return mine;
    }
    MPI_Info info;
    check(MPI_Info_create(&info), "MPI_Info_create", what);
    // Each segment on its own pages (the node ranks write their own at the same time).
    check(MPI_Info_set(info, "alloc_shared_noncontig", "true"), "MPI_Info_set", what);
    float *mine = NULL;
    enter(what);
    check(MPI_Win_allocate_shared((MPI_Aint)(2 * count * sizeof(float)), (int)sizeof(float), info, ohmpi_node, &mine, &ohmpi_window),
          "MPI_Win_allocate_shared", what);
    leave();
    MPI_Info_free(&info);
    ohmpi_segments = calloc((size_t)ohmpi_node_size, sizeof(float *));
    for (int r = 0; r < ohmpi_node_size; r++) {
        MPI_Aint bytes = 0;
        int unit = 0;
        check(MPI_Win_shared_query(ohmpi_window, r, &bytes, &unit, &ohmpi_segments[r]), "MPI_Win_shared_query", what);
    }
    check(MPI_Win_lock_all(MPI_MODE_NOCHECK, ohmpi_window), "MPI_Win_lock_all", what);
    memset(mine, 0, 2 * count * sizeof(float));
    ohmpi_capacity = count;
    return mine;
}

void ohmpi_shared_release(void) { ohmpi_shared_lent = 0; }

int ohmpi_shared_layout(int *ranks_per_node, int *nodes) {
    *ranks_per_node = ohmpi_node_size;
    *nodes = ohmpi_cross_size;
    return ohmpi_shared_enabled;
}

// A barrier of the node's ranks that also orders their accesses to the shared segments.
static void node_barrier(const char *what) {
    MPI_Win_sync(ohmpi_window);
    if (ohmpi_threaded) {
        enter(what);
        check(MPI_Barrier(ohmpi_node), "MPI_Barrier", what);
        leave();
    } else {
        MPI_Request request;
        check(MPI_Ibarrier(ohmpi_node, &request), "MPI_Ibarrier", what);
        wait_for(&request, what);
    }
    MPI_Win_sync(ohmpi_window);
}

static size_t shard_start(size_t count, int k) { return count * (size_t)k / (size_t)ohmpi_node_size; }

// Whether `gradients` is this rank's gradient segment (so its node's ranks can read it).
static int is_shared_gradients(const float *gradients, size_t count) {
    return ohmpi_window != MPI_WIN_NULL && gradients == ohmpi_segments[ohmpi_node_rank] && count <= ohmpi_capacity;
}

// Node rank l owns the l-th of L equal shards of the gradients: it adds that shard of every
// segment of the node, in node-rank order (the same order on every run), then sums the result
// with the same shard of the other nodes through MPI. Nothing is copied into or out of a transfer
// buffer as Open MPI's shared-memory transport does: each rank reads its shard of the node's
// addends once.
static void shard_sum(float *buffer, size_t lo, size_t hi, const char *what) {
    const int L = ohmpi_node_size;
    float *const *segment = ohmpi_segments;
    node_barrier(what);  // every segment holds its rank's addends
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
        memcpy(buffer + start, partial, n * sizeof(float));
    }
    if (ohmpi_cross_size > 1 && hi > lo) allreduce(buffer + lo, hi - lo, MPI_FLOAT, sizeof(float), ohmpi_cross, what);
    node_barrier(what);  // every shard holds its total; nobody reads addends any more
}

void ohmpi_allreduce_sum_f32(float *buffer, size_t count, const char *what) {
    if (ohmpi_world > 1 && count > 0) allreduce(buffer, count, MPI_FLOAT, sizeof(float), ohmpi_comm, what);
}

void ohmpi_reduce_shard_f32(float *gradients, size_t count, size_t *lo, size_t *hi, const char *what) {
    *lo = 0;
    *hi = count;
    if (ohmpi_world == 1 || count == 0) return;
    if (!is_shared_gradients(gradients, count)) {
        allreduce(gradients, count, MPI_FLOAT, sizeof(float), ohmpi_comm, what);
        return;
    }
    *lo = shard_start(count, ohmpi_node_rank);
    *hi = shard_start(count, ohmpi_node_rank + 1);
    shard_sum(gradients, *lo, *hi, what);
}

void ohmpi_gather_shards_f32(float *parameters, size_t count, const char *what) {
    if (ohmpi_window == MPI_WIN_NULL || parameters != ohmpi_segments[ohmpi_node_rank] + ohmpi_capacity || count > ohmpi_capacity) {
        ohmpi_abort("error: internal: ohmpi_gather_shards_f32 on a buffer outside the shared window", 3);
    }
    node_barrier(what);  // every shard is updated
    for (int k = 0; k < ohmpi_node_size; k++) {
        if (k == ohmpi_node_rank) continue;
        const size_t klo = shard_start(count, k), khi = shard_start(count, k + 1);
        memcpy(parameters + klo, ohmpi_segments[k] + ohmpi_capacity + klo, (khi - klo) * sizeof(float));
    }
    // No barrier after: the owners change their shards again only in the next update, after the
    // next step's shard_sum, whose first barrier every rank reaches only once it has copied.
}

void ohmpi_gather_node_shards_f32(float *buffer, size_t count, const char *what) {
    if (ohmpi_world == 1 || count == 0 || ohmpi_node_size == 1) return;
    const int L = ohmpi_node_size;
    int *counts = calloc((size_t)L, sizeof(int)), *offsets = calloc((size_t)L, sizeof(int));
    for (int k = 0; k < L; k++) {
        const size_t klo = shard_start(count, k), khi = shard_start(count, k + 1);
        if (khi > 0x7fffffff) ohmpi_abort("error: a gather of more than 2^31 float32 is not supported", 3);
        counts[k] = (int)(khi - klo);
        offsets[k] = (int)klo;
    }
    if (ohmpi_threaded) {
        enter(what);
        check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buffer, counts, offsets, MPI_FLOAT, ohmpi_node), "MPI_Allgatherv", what);
        leave();
    } else {
        MPI_Request request;
        check(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buffer, counts, offsets, MPI_FLOAT, ohmpi_node, &request),
              "MPI_Iallgatherv", what);
        wait_for(&request, what);
    }
    free(counts);
    free(offsets);
}

void ohmpi_allreduce_sum_f64(double *buffer, size_t count, const char *what) {
    if (ohmpi_world > 1 && count > 0) allreduce(buffer, count, MPI_DOUBLE, sizeof(double), ohmpi_comm, what);
}

void ohmpi_bcast_bytes(void *buffer, size_t count, int root, const char *what) {
    if (ohmpi_world == 1) return;
    char *p = buffer;
    do {
        size_t n = count < OHMPI_CHUNK ? count : OHMPI_CHUNK;
        if (ohmpi_threaded) {
            enter(what);
            check(MPI_Bcast(p, (int)n, MPI_BYTE, root, ohmpi_comm), "MPI_Bcast", what);
            leave();
        } else {
            MPI_Request request;
            check(MPI_Ibcast(p, (int)n, MPI_BYTE, root, ohmpi_comm, &request), "MPI_Ibcast", what);
            wait_for(&request, what);
        }
        p += n;
        count -= n;
    } while (count > 0);
}

void ohmpi_allgather_counts(int64_t my_count, int64_t *counts, const char *what) {
    if (ohmpi_threaded) {
        enter(what);
        check(MPI_Allgather(&my_count, 1, MPI_INT64_T, counts, 1, MPI_INT64_T, ohmpi_comm), "MPI_Allgather", what);
        leave();
        return;
    }
    MPI_Request request;
    check(MPI_Iallgather(&my_count, 1, MPI_INT64_T, counts, 1, MPI_INT64_T, ohmpi_comm, &request), "MPI_Iallgather", what);
    wait_for(&request, what);
}

void ohmpi_allgatherv_bytes(const void *send, int64_t my_count, void *receive, const int64_t *counts, const char *what) {
    int *c = calloc((size_t)ohmpi_world, sizeof(int)), *d = calloc((size_t)ohmpi_world, sizeof(int));
    int64_t offset = 0;
    for (int r = 0; r < ohmpi_world; r++) {
        if (counts[r] > 0x7fffffff || offset > 0x7fffffff) ohmpi_abort("error: allgather of more than 2 GiB is not supported", 3);
        c[r] = (int)counts[r];
        d[r] = (int)offset;
        offset += counts[r];
    }
    if (ohmpi_threaded) {
        enter(what);
        check(MPI_Allgatherv(send, (int)my_count, MPI_BYTE, receive, c, d, MPI_BYTE, ohmpi_comm), "MPI_Allgatherv", what);
        leave();
    } else {
        MPI_Request request;
        check(MPI_Iallgatherv(send, (int)my_count, MPI_BYTE, receive, c, d, MPI_BYTE, ohmpi_comm, &request), "MPI_Iallgatherv", what);
        wait_for(&request, what);
    }
    free(c);
    free(d);
}
