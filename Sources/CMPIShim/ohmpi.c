// Plain-C access to Open MPI for orthohash. See README.md.
#include "ohmpi.h"

#include <mpi.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static MPI_Comm ohmpi_comm = MPI_COMM_NULL;   // collectives
static MPI_Comm ohmpi_notes = MPI_COMM_NULL;  // watchdog notes ("I am waiting in collective #n")
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
    return 0;
}

void ohmpi_finalize(void) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
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

static void allreduce(void *buffer, size_t count, MPI_Datatype type, size_t size, const char *what) {
    char *p = buffer;
    do {
        size_t n = count < OHMPI_CHUNK ? count : OHMPI_CHUNK;
        if (ohmpi_threaded) {
            // Open MPI's blocking all-reduce is much faster than its non-blocking one (libnbc).
            enter(what);
            check(MPI_Allreduce(MPI_IN_PLACE, p, (int)n, type, MPI_SUM, ohmpi_comm), "MPI_Allreduce", what);
            leave();
        } else {
            MPI_Request request;
            check(MPI_Iallreduce(MPI_IN_PLACE, p, (int)n, type, MPI_SUM, ohmpi_comm, &request), "MPI_Iallreduce", what);
            wait_for(&request, what);
        }
        p += n * size;
        count -= n;
    } while (count > 0);
}

void ohmpi_allreduce_sum_f32(float *buffer, size_t count, const char *what) {
    if (ohmpi_world > 1 && count > 0) allreduce(buffer, count, MPI_FLOAT, sizeof(float), what);
}

void ohmpi_allreduce_sum_f64(double *buffer, size_t count, const char *what) {
    if (ohmpi_world > 1 && count > 0) allreduce(buffer, count, MPI_DOUBLE, sizeof(double), what);
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

void ohmpi_barrier(const char *what) {
    if (ohmpi_world == 1) return;
    if (ohmpi_threaded) {
        enter(what);
        check(MPI_Barrier(ohmpi_comm), "MPI_Barrier", what);
        leave();
        return;
    }
    MPI_Request request;
    check(MPI_Ibarrier(ohmpi_comm, &request), "MPI_Ibarrier", what);
    wait_for(&request, what);
}
