// What the shim's files share; not part of the API Swift sees (include/ohmpi.h).
#ifndef OHMPI_INTERNAL_H
#define OHMPI_INTERNAL_H
#include "ohmpi.h"

#include <mpi.h>

// MPI counts are ints: large buffers go in pieces.
#define OHMPI_CHUNK ((size_t)1 << 28)

// ---- world.c
/// The communicators of one thread: the main thread's, or the gradient worker's duplicates
/// (collectives on one communicator must not run from two threads at once).
typedef struct { MPI_Comm world, node, cross; } ohmpi_comms;
extern ohmpi_comms ohmpi_main;
extern MPI_Comm ohmpi_notes;                  // the watchdogs' questions and answers
extern int ohmpi_my_rank, ohmpi_world;
extern int ohmpi_node_rank, ohmpi_node_size, ohmpi_cross_size;
extern int ohmpi_threaded;                    // MPI_THREAD_MULTIPLE: blocking collectives, watched by a thread
double ohmpi_now(void);
/// Aborts the job naming `call` and `what` unless `rc` is MPI_SUCCESS.
void ohmpi_check(int rc, const char *call, const char *what);
/// The communicator of `group` (OHMPI_WORLD, ...) among `comms`.
MPI_Comm ohmpi_group(const ohmpi_comms *comms, int group);

// ---- watchdog.c
/// Starts the watchdog thread; 0 if it could not (then collectives are polled).
int ohmpi_watchdog_start(void);
void ohmpi_watchdog_stop(void);
/// Starts one collective: non-blocking into `*request` when `request` is not NULL, else blocking.
typedef int (*ohmpi_collective)(void *args, MPI_Request *request);
/// The one way a collective is called. Watched: with the watchdog thread, blocking (Open MPI's
/// blocking collectives are much faster than its non-blocking ones here) between marks of where
/// this rank waits; without it, non-blocking and polled against the deadline. Unwatched (the
/// gradient worker, whose wait the main thread's is): blocking. MPI errors abort.
void ohmpi_call(ohmpi_collective start, void *args, const char *call, const char *what, int watched);
/// Marks this rank as waiting in `what` for the watchdog (and the other ranks' questions); `leave` unmarks.
void ohmpi_enter(const char *what);
void ohmpi_leave(void);

// ---- collectives.c
/// In-place MPI_SUM of `count` elements of `type` (`size` bytes each) over `comm`, in pieces.
void ohmpi_allreduce(void *buffer, size_t count, MPI_Datatype type, size_t size, MPI_Op op, MPI_Comm comm,
                     int watched, const char *what);

/// A barrier of `comm`, watched or not.
void ohmpi_barrier_on(MPI_Comm comm, int watched, const char *what);

// ---- bf16.c
void ohmpi_bf16_start(void);
void ohmpi_bf16_stop(void);
/// The float32 sum of `buffer` over `comm`, rounded to bfloat16 in a scratch buffer of the calling
/// thread, summed in bfloat16, and widened back.
void ohmpi_allreduce_bf16(float *buffer, size_t count, MPI_Comm comm, int watched, const char *what);

// ---- window.c
void ohmpi_window_free(void);
/// ohmpi_window_barrier on the node communicator `node`.
void ohmpi_window_barrier_on(MPI_Comm node, int watched, const char *what);

// ---- sums.c
/// Runs `sum` on `comms`, watched or not.
void ohmpi_run_sum(const ohmpi_sum *sum, const ohmpi_comms *comms, int watched, const char *what);

// ---- worker.c
void ohmpi_worker_start(void);
void ohmpi_worker_stop(void);

#endif
