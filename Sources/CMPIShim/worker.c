// Gradient sums behind the backward pass. A worker thread runs the sums the main thread hands it
// (ohmpi_worker_begin: buckets of the gradients the backward pass has finished, hash layer first)
// while the main thread goes on computing; the main thread waits for them before the update. The
// worker has its own duplicates of the communicators (collectives on one communicator must not
// run from two threads at once: the main thread still sums BatchNorm's statistics meanwhile) and
// waits on a condition variable between sums, so it takes no core while there is nothing to sum.
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct { ohmpi_sum sum; double start, end; } job;
static struct {
    int running;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    job *queue;
    int capacity, begun, finished, stop;
    ohmpi_comms comms;
} worker = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static void *work(void *unused) {
    (void)unused;
    pthread_mutex_lock(&worker.lock);
    for (;;) {
        while (!worker.stop && worker.finished == worker.begun) pthread_cond_wait(&worker.wake, &worker.lock);
        if (worker.stop) break;
        job *j = &worker.queue[worker.finished];
        pthread_mutex_unlock(&worker.lock);
        j->start = ohmpi_now();
        ohmpi_run_sum(&j->sum, &worker.comms, 0, "gradient bucket sum (background)");
        j->end = ohmpi_now();
        pthread_mutex_lock(&worker.lock);
        worker.finished++;
        pthread_cond_signal(&worker.done);
    }
    pthread_mutex_unlock(&worker.lock);
    return NULL;
}

void ohmpi_worker_start(void) {
    const char *what = "start-up";
    ohmpi_check(MPI_Comm_dup(ohmpi_main.world, &worker.comms.world), "MPI_Comm_dup", what);
    ohmpi_check(MPI_Comm_dup(ohmpi_main.node, &worker.comms.node), "MPI_Comm_dup", what);
    ohmpi_check(MPI_Comm_dup(ohmpi_main.cross, &worker.comms.cross), "MPI_Comm_dup", what);
    int started = pthread_create(&worker.thread, NULL, work, NULL) == 0;
    // Every rank must agree, or one would sum buckets that another sums whole.
    ohmpi_check(MPI_Allreduce(MPI_IN_PLACE, &started, 1, MPI_INT, MPI_MIN, ohmpi_main.world), "MPI_Allreduce", what);
    worker.running = started;
}

void ohmpi_worker_stop(void) {
    if (!worker.running) return;
    pthread_mutex_lock(&worker.lock);
    worker.stop = 1;
    pthread_cond_signal(&worker.wake);
    pthread_mutex_unlock(&worker.lock);
    pthread_join(worker.thread, NULL);
    worker.running = 0;
    MPI_Comm_free(&worker.comms.world);
    MPI_Comm_free(&worker.comms.node);
    MPI_Comm_free(&worker.comms.cross);
    free(worker.queue);
}

int ohmpi_worker_available(void) { return worker.running; }

void ohmpi_worker_reserve(int buckets) {
    pthread_mutex_lock(&worker.lock);
    const int idle = worker.begun == 0;
    if (idle && buckets > worker.capacity) {
        job *queue = realloc(worker.queue, (size_t)buckets * sizeof(job));
        if (!queue) ohmpi_abort("error: out of memory for the gradient worker's queue", 3);
        worker.queue = queue;
        worker.capacity = buckets;
    }
    pthread_mutex_unlock(&worker.lock);
    if (!idle) ohmpi_abort("error: internal: ohmpi_worker_reserve while sums are under way", 3);
}

void ohmpi_worker_begin(const ohmpi_sum *sum) {
    if (!worker.running) ohmpi_abort("error: internal: ohmpi_worker_begin without the gradient worker", 3);
    pthread_mutex_lock(&worker.lock);
    if (worker.begun == worker.capacity) {
        pthread_mutex_unlock(&worker.lock);
        ohmpi_abort("error: internal: more gradient sums in one step than ohmpi_worker_reserve made room for", 3);
    }
    worker.queue[worker.begun++] = (job){*sum, 0, 0};
    pthread_cond_signal(&worker.wake);
    pthread_mutex_unlock(&worker.lock);
}

int ohmpi_worker_finish(double *starts, double *ends, int capacity, const char *what) {
    ohmpi_enter(what);
    pthread_mutex_lock(&worker.lock);
    while (worker.finished < worker.begun) pthread_cond_wait(&worker.done, &worker.lock);
    const int n = worker.begun;
    for (int i = 0; i < n && i < capacity; i++) {
        starts[i] = worker.queue[i].start;
        ends[i] = worker.queue[i].end;
    }
    worker.begun = worker.finished = 0;
    pthread_mutex_unlock(&worker.lock);
    ohmpi_leave();
    return n;
}
