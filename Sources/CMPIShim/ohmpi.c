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
// Gradient sums that cross the network in bfloat16 (ohmpi_set_gradient_bf16): halves the bytes.
static int ohmpi_gradient_bf16 = 0;
static MPI_Op ohmpi_bf16_sum = MPI_OP_NULL;
static MPI_Win ohmpi_window = MPI_WIN_NULL;
static float **ohmpi_segments = NULL;         // each node rank's segment, mapped in this process
static size_t ohmpi_capacity = 0;             // gradients per segment (parameters follow them)
static int ohmpi_shared_lent = 0;             // a buffer uses the window now
static int ohmpi_my_rank = 0, ohmpi_world = 1;
static double ohmpi_timeout = 0;               // seconds a collective may wait (<= 0: forever)
static double ohmpi_next_allowance = 0;        // the next collective may wait this long instead (ohmpi_allow_next_wait)
static int64_t ohmpi_step = -1;
static int64_t ohmpi_sequence = 0;            // collectives entered so far, the same on every rank
// The watchdog. With MPI_THREAD_MULTIPLE, collectives are the fast blocking ones and a helper
// thread watches the clock and answers the other ranks' questions; otherwise collectives are
// non-blocking and the waiting thread does both while it polls. What it watches is copied here
// (under ohmpi_lock), so a message never reads a caller's string after the call returned.
static int ohmpi_threaded = 0;
static pthread_mutex_t ohmpi_lock = PTHREAD_MUTEX_INITIALIZER;
// Held by the watchdog thread while it calls MPI; ohmpi_finalize takes it to stop the thread
// before the communicators go.
static pthread_mutex_t ohmpi_watch_lock = PTHREAD_MUTEX_INITIALIZER;
static int ohmpi_watch_stopped = 0;
static int64_t ohmpi_waiting_sequence = 0;    // the collective waited in now (0: none)
static double ohmpi_entered = 0;               // when the wait began
static double ohmpi_deadline = 0;              // seconds it may last
static char ohmpi_what[256];                   // the collective's name
static char ohmpi_activity[256] = "starting";  // what this rank does outside collectives
// Questions between watchdogs: a rank whose wait nears its deadline asks every other rank where
// it is; each answers with the collective it waits in (its sequence number) or what it is doing.
enum { OHMPI_QUERY_TAG = 4242, OHMPI_ANSWER_TAG = 4243 };
typedef struct { int64_t asked; int64_t sequence; int64_t step; char label[232]; } ohmpi_answer;
// MPI counts are ints: large buffers go in pieces.
#define OHMPI_CHUNK ((size_t)1 << 28)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *watchdog(void *unused);
static void overlap_start(void);
static void overlap_stop(void);
static void watch(void);
static void restart_if_stopped(double gap);

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
    if (ohmpi_threaded && ohmpi_world > 1) overlap_start();
    return 0;
}

void ohmpi_finalize(void) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    pthread_mutex_lock(&ohmpi_watch_lock);
    ohmpi_watch_stopped = 1;
    pthread_mutex_unlock(&ohmpi_watch_lock);
    overlap_stop();
    if (ohmpi_bf16_sum != MPI_OP_NULL) MPI_Op_free(&ohmpi_bf16_sum);
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

void ohmpi_allow_next_wait(double seconds) { ohmpi_next_allowance = seconds; }

void ohmpi_set_activity(const char *what) {
    pthread_mutex_lock(&ohmpi_lock);
    snprintf(ohmpi_activity, sizeof ohmpi_activity, "%s", what ? what : "");
    pthread_mutex_unlock(&ohmpi_lock);
}

static void enter(const char *what) {
    double allowed = ohmpi_timeout;
    if (ohmpi_next_allowance > 0) {
        if (allowed > 0 && ohmpi_next_allowance > allowed) allowed = ohmpi_next_allowance;
        ohmpi_next_allowance = 0;
    }
    pthread_mutex_lock(&ohmpi_lock);
    snprintf(ohmpi_what, sizeof ohmpi_what, "%s", what ? what : "?");
    ohmpi_deadline = allowed;
    ohmpi_entered = now();
    ohmpi_waiting_sequence = ++ohmpi_sequence;
    pthread_mutex_unlock(&ohmpi_lock);
}

static void leave(void) {
    pthread_mutex_lock(&ohmpi_lock);
    ohmpi_waiting_sequence = 0;
    pthread_mutex_unlock(&ohmpi_lock);
}

// Answers the other ranks' questions: where this rank is.
static void answer_queries(void) {
    for (;;) {
        int flag = 0;
        MPI_Status status;
        MPI_Iprobe(MPI_ANY_SOURCE, OHMPI_QUERY_TAG, ohmpi_notes, &flag, &status);
        if (!flag) return;
        int64_t asked = 0;
        MPI_Recv(&asked, 1, MPI_INT64_T, status.MPI_SOURCE, OHMPI_QUERY_TAG, ohmpi_notes, MPI_STATUS_IGNORE);
        ohmpi_answer answer;
        memset(&answer, 0, sizeof answer);
        answer.asked = asked;
        answer.step = ohmpi_step;
        pthread_mutex_lock(&ohmpi_lock);
        answer.sequence = ohmpi_waiting_sequence;
        snprintf(answer.label, sizeof answer.label, "%s", ohmpi_waiting_sequence ? ohmpi_what : ohmpi_activity);
        pthread_mutex_unlock(&ohmpi_lock);
        MPI_Send(&answer, (int)sizeof answer, MPI_BYTE, status.MPI_SOURCE, OHMPI_ANSWER_TAG, ohmpi_notes);
    }
}

// One look at the clock by the watching thread. A wait that comes within a second (or half its
// allowance) of its deadline asks every other rank where it is; at the deadline the job is
// aborted, naming the ranks that are not in the same collective: those that gave no answer
// (stopped, hung in a system call, or gone) and those that answered from elsewhere. So the
// abort comes at the deadline given, not a grace period later. A rank that learns that a
// lower-numbered rank waits in the same collective leaves the message to it for a second, so
// the job's last words are usually one line.
static struct {
    int64_t sequence;                  // the wait being asked about (0: none)
    int64_t payload;
    char *answered;                    // per rank: 0 no answer, 1 same collective, 2 elsewhere
    ohmpi_answer *answers;
} ohmpi_query;

static void watch(void) {
    answer_queries();
    pthread_mutex_lock(&ohmpi_lock);
    int64_t sequence = ohmpi_waiting_sequence;
    double waited = now() - ohmpi_entered, deadline = ohmpi_deadline;
    char what[sizeof ohmpi_what];
    memcpy(what, ohmpi_what, sizeof what);
    pthread_mutex_unlock(&ohmpi_lock);
    if (sequence == 0 || deadline <= 0) { ohmpi_query.sequence = 0; return; }
    double grace = deadline / 2 < 1 ? deadline / 2 : 1;
    if (waited < deadline - grace) return;
    if (ohmpi_query.sequence != sequence) {
        if (!ohmpi_query.answered) {
            ohmpi_query.answered = calloc((size_t)ohmpi_world, 1);
            ohmpi_query.answers = calloc((size_t)ohmpi_world, sizeof(ohmpi_answer));
        }
        memset(ohmpi_query.answered, 0, (size_t)ohmpi_world);
        ohmpi_query.answered[ohmpi_my_rank] = 1;
        ohmpi_query.sequence = sequence;
        ohmpi_query.payload = sequence;
        for (int r = 0; r < ohmpi_world; r++) {
            if (r == ohmpi_my_rank) continue;
            MPI_Request request;
            MPI_Isend(&ohmpi_query.payload, 1, MPI_INT64_T, r, OHMPI_QUERY_TAG, ohmpi_notes, &request);
            MPI_Request_free(&request);
        }
    }
    for (;;) {
        int flag = 0;
        MPI_Status status;
        MPI_Iprobe(MPI_ANY_SOURCE, OHMPI_ANSWER_TAG, ohmpi_notes, &flag, &status);
        if (!flag) break;
        ohmpi_answer answer;
        MPI_Recv(&answer, (int)sizeof answer, MPI_BYTE, status.MPI_SOURCE, OHMPI_ANSWER_TAG, ohmpi_notes, MPI_STATUS_IGNORE);
        if (answer.asked != sequence) continue;               // an answer to an earlier question
        answer.label[sizeof answer.label - 1] = 0;
        // Waiting in a collective (this one, or another that is blocked on the same rank: a
        // collective completes on some ranks before others), or busy outside collectives.
        ohmpi_query.answered[status.MPI_SOURCE] = answer.sequence != 0 ? 1 : 2;
        ohmpi_query.answers[status.MPI_SOURCE] = answer;
    }
    if (waited < deadline) return;
    for (int r = 0; r < ohmpi_my_rank; r++)
        if (ohmpi_query.answered[r] == 1 && waited < deadline + 1) return;    // rank r will say it
    // The ranks that did not arrive: those that gave no answer, and those busy elsewhere.
    char missing[4096] = "";
    size_t used = 0;
    int count = 0, elsewhere = 0;
    for (int r = 0; r < ohmpi_world && used < sizeof missing - 320; r++) {
        if (ohmpi_query.answered[r] == 1) {
            if (ohmpi_query.answers[r].sequence != sequence && r != ohmpi_my_rank) elsewhere++;
            continue;
        }
        char detail[300];
        if (ohmpi_query.answered[r] == 0) {
            snprintf(detail, sizeof detail, "no answer: stopped, hung or gone");
        } else {
            char at[48] = "";
            if (ohmpi_query.answers[r].step >= 0) snprintf(at, sizeof at, ", at step %lld", (long long)ohmpi_query.answers[r].step);
            snprintf(detail, sizeof detail, "busy: %s%s", ohmpi_query.answers[r].label, at);
        }
        used += (size_t)snprintf(missing + used, sizeof missing - used, "%s%d (%s)", count ? ", " : "", r, detail);
        count++;
    }
    char message[5120];
    char step[64] = "";
    if (ohmpi_step >= 0) snprintf(step, sizeof step, " at step %lld", (long long)ohmpi_step);
    snprintf(message, sizeof message,
             "error: collective '%s'%s waited more than %.0f s (%s); ranks that did not arrive: %s%s",
             what, step, deadline, deadline > ohmpi_timeout ? "--io-timeout" : "--collective-timeout",
             count ? missing : "none: every rank waits in a collective, not all in the same one",
             count && elsewhere ? "; the others wait in collectives" : "");
    ohmpi_abort(message, 4);
}

// A watching thread whose own pauses took far longer than asked was not running: the process
// was stopped (SIGSTOP, a debugger) or starved. The wait's clock restarts, so that a rank
// continued after a stop does not blame the others for the time it was stopped.
static void restart_if_stopped(double gap) {
    if (gap < 2) return;
    pthread_mutex_lock(&ohmpi_lock);
    ohmpi_entered = now();
    pthread_mutex_unlock(&ohmpi_lock);
    ohmpi_query.sequence = 0;
}

static void *watchdog(void *unused) {
    (void)unused;
    double last = now();
    for (;;) {
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
        pthread_mutex_lock(&ohmpi_watch_lock);
        if (ohmpi_watch_stopped) { pthread_mutex_unlock(&ohmpi_watch_lock); return NULL; }
        double t = now();
        restart_if_stopped(t - last);
        last = t;
        watch();
        pthread_mutex_unlock(&ohmpi_watch_lock);
    }
}

// Polls a non-blocking collective until it completes, watching the clock meanwhile (no watchdog
// thread without MPI_THREAD_MULTIPLE).
static void wait_for(MPI_Request *request, const char *what) {
    int done = 0;
    enter(what);
    check(MPI_Test(request, &done, MPI_STATUS_IGNORE), "MPI_Test", what);
    double start = now(), looked = start;
    unsigned spins = 0;
    while (!done) {
        check(MPI_Test(request, &done, MPI_STATUS_IGNORE), "MPI_Test", what);
        if (done) break;
        if (++spins % 1024 == 0) {
            double t = now();
            if (t - looked > 0.05) { restart_if_stopped(t - looked); watch(); looked = t; }
            // Long waits (a slow peer) give the core away now and then instead of spinning hard.
            if (t - start > 0.01) sched_yield();
        }
    }
    leave();
}

// bfloat16: the top half of a float32, rounded to nearest even (NaN kept a NaN). Same exponent
// range as float32, so a sum that overflows is still inf and caught by the finiteness checks.
static inline float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// The reduction Open MPI applies to bfloat16 buffers: each pair added in float32, rounded back.
static void bf16_sum(void *in, void *inout, int *length, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *length; i++) b[i] = to_bf16(from_bf16(a[i]) + from_bf16(b[i]));
}

// The sum of float32 gradients over `comm` as they cross the network: float32, or (bf16 on)
// rounded to bfloat16 into a scratch buffer of the calling thread, summed so, and widened back.
static void network_allreduce(float *buffer, size_t count, MPI_Comm comm, int watched, const char *what);

// The gradient worker's all-reduce (see "Gradient sums behind the backward pass"): blocking, on
// its own communicators, and not watched itself: the main thread's wait for it is.
static void worker_allreduce(float *buffer, size_t count, MPI_Comm comm, const char *what) {
    network_allreduce(buffer, count, comm, 0, what);
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

// A barrier of `comm`, watched like every collective.
static void barrier(MPI_Comm comm, const char *what) {
    if (ohmpi_threaded) {
        enter(what);
        check(MPI_Barrier(comm), "MPI_Barrier", what);
        leave();
    } else {
        MPI_Request request;
        check(MPI_Ibarrier(comm, &request), "MPI_Ibarrier", what);
        wait_for(&request, what);
    }
}

// A barrier of the node's ranks that also orders their accesses to the shared segments.
static void node_barrier(const char *what) {
    MPI_Win_sync(ohmpi_window);
    barrier(ohmpi_node, what);
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
static void add_segments(float *buffer, size_t lo, size_t hi) {
    const int L = ohmpi_node_size;
    float *const *segment = ohmpi_segments;
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
}

static void network_allreduce(float *buffer, size_t count, MPI_Comm comm, int watched, const char *what) {
    if (!ohmpi_gradient_bf16) {
        if (watched) {
            allreduce(buffer, count, MPI_FLOAT, sizeof(float), comm, what);
        } else {
            while (count > 0) {
                size_t n = count < OHMPI_CHUNK ? count : OHMPI_CHUNK;
                check(MPI_Allreduce(MPI_IN_PLACE, buffer, (int)n, MPI_FLOAT, MPI_SUM, comm), "MPI_Allreduce", what);
                buffer += n;
                count -= n;
            }
        }
        return;
    }
    static __thread uint16_t *scratch = NULL;
    static __thread size_t capacity = 0;
    if (count > capacity) {
        free(scratch);
        scratch = malloc(count * sizeof(uint16_t));
        if (!scratch) ohmpi_abort("error: out of memory for the bfloat16 gradient buffer", 3);
        capacity = count;
    }
    for (size_t i = 0; i < count; i++) scratch[i] = to_bf16(buffer[i]);
    for (size_t done = 0; done < count;) {
        const size_t n = count - done < OHMPI_CHUNK ? count - done : OHMPI_CHUNK;
        if (watched && !ohmpi_threaded) {
            MPI_Request request;
            check(MPI_Iallreduce(MPI_IN_PLACE, scratch + done, (int)n, MPI_UINT16_T, ohmpi_bf16_sum, comm, &request), "MPI_Iallreduce", what);
            wait_for(&request, what);
        } else {
            if (watched) enter(what);
            check(MPI_Allreduce(MPI_IN_PLACE, scratch + done, (int)n, MPI_UINT16_T, ohmpi_bf16_sum, comm), "MPI_Allreduce", what);
            if (watched) leave();
        }
        done += n;
    }
    for (size_t i = 0; i < count; i++) buffer[i] = from_bf16(scratch[i]);
}

void ohmpi_set_gradient_bf16(int on) {
    if (on && ohmpi_bf16_sum == MPI_OP_NULL) check(MPI_Op_create(bf16_sum, 1, &ohmpi_bf16_sum), "MPI_Op_create", "start-up");
    ohmpi_gradient_bf16 = on;
}

static void shard_sum(float *buffer, size_t lo, size_t hi, const char *what) {
    node_barrier(what);  // every segment holds its rank's addends
    add_segments(buffer, lo, hi);
    if (ohmpi_cross_size > 1 && hi > lo) network_allreduce(buffer + lo, hi - lo, ohmpi_cross, 1, what);
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
        network_allreduce(gradients, count, ohmpi_comm, 1, what);
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

void ohmpi_barrier(const char *what) {
    if (ohmpi_world > 1) barrier(ohmpi_comm, what);
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

// ---- Gradient sums behind the backward pass ----------------------------------------------------
// A worker thread sums buckets of the gradients as the backward pass completes them (hash layer
// first), while the main thread goes on computing; the main thread waits for it before the
// update. The worker has its own duplicates of the communicators (collectives on one
// communicator must not run from two threads at once: the main thread still sums BatchNorm's
// statistics meanwhile) and waits on a condition variable between buckets, so it takes no core
// while there is nothing to sum. Each bucket takes the path the whole buffer would: through the
// node's window (after a node barrier, node rank l adds the part of the bucket inside its shard
// and sums that part across the nodes), or one MPI_Allreduce of the bucket. Per element the
// order of the additions is the window path's own, so that path gives the same bits.
enum { OHMPI_MAX_BUCKETS = 256 };
typedef struct { float *gradients; size_t count, lo, hi; double start, end; } ohmpi_bucket;
static struct {
    int running;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    ohmpi_bucket queue[OHMPI_MAX_BUCKETS];
    int begun, finished, stop;
    MPI_Comm comm, node, cross;
} ohmpi_overlap = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static void sum_bucket(const ohmpi_bucket *b) {
    const char *what = "gradient bucket sum (background)";
    if (!is_shared_gradients(b->gradients, b->count)) {
        worker_allreduce(b->gradients + b->lo, b->hi - b->lo, ohmpi_overlap.comm, what);
        return;
    }
    MPI_Win_sync(ohmpi_window);
    check(MPI_Barrier(ohmpi_overlap.node), "MPI_Barrier", what);   // every segment holds the bucket's addends
    MPI_Win_sync(ohmpi_window);
    const size_t slo = shard_start(b->count, ohmpi_node_rank), shi = shard_start(b->count, ohmpi_node_rank + 1);
    const size_t lo = b->lo > slo ? b->lo : slo, hi = b->hi < shi ? b->hi : shi;
    if (lo >= hi) return;
    add_segments(b->gradients, lo, hi);
    if (ohmpi_cross_size > 1) worker_allreduce(b->gradients + lo, hi - lo, ohmpi_overlap.cross, what);
}

static void *overlap_worker(void *unused) {
    (void)unused;
    pthread_mutex_lock(&ohmpi_overlap.lock);
    for (;;) {
        while (!ohmpi_overlap.stop && ohmpi_overlap.finished == ohmpi_overlap.begun) pthread_cond_wait(&ohmpi_overlap.wake, &ohmpi_overlap.lock);
        if (ohmpi_overlap.stop) break;
        ohmpi_bucket *b = &ohmpi_overlap.queue[ohmpi_overlap.finished];
        pthread_mutex_unlock(&ohmpi_overlap.lock);
        b->start = now();
        sum_bucket(b);
        b->end = now();
        pthread_mutex_lock(&ohmpi_overlap.lock);
        ohmpi_overlap.finished++;
        pthread_cond_signal(&ohmpi_overlap.done);
    }
    pthread_mutex_unlock(&ohmpi_overlap.lock);
    return NULL;
}

static void overlap_start(void) {
    check(MPI_Comm_dup(ohmpi_comm, &ohmpi_overlap.comm), "MPI_Comm_dup", "start-up");
    check(MPI_Comm_dup(ohmpi_node, &ohmpi_overlap.node), "MPI_Comm_dup", "start-up");
    check(MPI_Comm_dup(ohmpi_cross, &ohmpi_overlap.cross), "MPI_Comm_dup", "start-up");
    int started = pthread_create(&ohmpi_overlap.thread, NULL, overlap_worker, NULL) == 0;
    // Every rank must agree, or one would sum buckets that another sums whole.
    check(MPI_Allreduce(MPI_IN_PLACE, &started, 1, MPI_INT, MPI_MIN, ohmpi_comm), "MPI_Allreduce", "start-up");
    ohmpi_overlap.running = started;
}

static void overlap_stop(void) {
    if (!ohmpi_overlap.running) return;
    pthread_mutex_lock(&ohmpi_overlap.lock);
    ohmpi_overlap.stop = 1;
    pthread_cond_signal(&ohmpi_overlap.wake);
    pthread_mutex_unlock(&ohmpi_overlap.lock);
    pthread_join(ohmpi_overlap.thread, NULL);
    ohmpi_overlap.running = 0;
    MPI_Comm_free(&ohmpi_overlap.comm);
    MPI_Comm_free(&ohmpi_overlap.node);
    MPI_Comm_free(&ohmpi_overlap.cross);
}

int ohmpi_overlap_available(void) { return ohmpi_overlap.running; }

void ohmpi_bucket_begin(float *gradients, size_t count, size_t lo, size_t hi) {
    if (!ohmpi_overlap.running || hi <= lo) return;
    pthread_mutex_lock(&ohmpi_overlap.lock);
    if (ohmpi_overlap.begun == OHMPI_MAX_BUCKETS) {
        pthread_mutex_unlock(&ohmpi_overlap.lock);
        ohmpi_abort("error: internal: more than 256 gradient buckets in one step", 3);
    }
    ohmpi_overlap.queue[ohmpi_overlap.begun++] = (ohmpi_bucket){gradients, count, lo, hi, 0, 0};
    pthread_cond_signal(&ohmpi_overlap.wake);
    pthread_mutex_unlock(&ohmpi_overlap.lock);
}

int ohmpi_buckets_finish(float *gradients, size_t count, size_t *lo, size_t *hi, double *starts, double *ends,
                         size_t *bytes, int capacity, const char *what) {
    enter(what);
    pthread_mutex_lock(&ohmpi_overlap.lock);
    while (ohmpi_overlap.finished < ohmpi_overlap.begun) pthread_cond_wait(&ohmpi_overlap.done, &ohmpi_overlap.lock);
    const int n = ohmpi_overlap.begun;
    for (int i = 0; i < n && i < capacity; i++) {
        const ohmpi_bucket *b = &ohmpi_overlap.queue[i];
        starts[i] = b->start;
        ends[i] = b->end;
        bytes[i] = (b->hi - b->lo) * sizeof(float);
    }
    ohmpi_overlap.begun = ohmpi_overlap.finished = 0;
    pthread_mutex_unlock(&ohmpi_overlap.lock);
    leave();
    *lo = 0;
    *hi = count;
    if (is_shared_gradients(gradients, count)) {
        *lo = shard_start(count, ohmpi_node_rank);
        *hi = shard_start(count, ohmpi_node_rank + 1);
        node_barrier(what);  // every shard holds its total; nobody reads addends any more
    }
    return n;
}
