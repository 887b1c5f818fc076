#ifndef OHMPI_H
#define OHMPI_H
#include <stddef.h>
#include <stdint.h>

// The mechanisms of the MPI back end. Which of them a run uses (the path of the gradient sums,
// the shards, the buckets, bfloat16) is decided in Swift (OrthoHashMPI's GradientSumPlan).
// Every call that waits for other ranks is watched against the collective timeout; every MPI
// error ends the whole job with `[rank r] error: ...`.

// ---- world.c: lifecycle, communicators, this rank's place -----------------------------------

/// 1 if this process was started by an MPI launcher (mpirun, srun --mpi=pmix, ...).
int ohmpi_launched(void);
/// MPI_Init_thread; duplicates COMM_WORLD for collectives and for the watchdog's notes; splits
/// it into nodes and across nodes; starts the watchdog thread and the gradient worker when the
/// library offers MPI_THREAD_MULTIPLE (otherwise collectives are non-blocking and polled against
/// the deadline, and there is no worker). Before it, Open MPI's TCP transport is told to send
/// messages up to OHMPI_TCP_EAGER_BYTES eagerly, unless the job set any of those settings.
/// Returns 0 (failures abort).
int ohmpi_init(void);
/// Open MPI's btl_tcp_eager_limit as this process's library has it (MPI_T), in bytes; -1 where
/// it has no such setting (not Open MPI, or no TCP transport).
long long ohmpi_tcp_eager_limit(void);
void ohmpi_finalize(void);
int ohmpi_rank(void);
int ohmpi_size(void);
/// This rank's place: its rank on its node, the node's ranks, the number of nodes (ranks that
/// hold this node rank), and whether every node runs the same number of ranks.
void ohmpi_node_layout(int *node_rank, int *node_size, int *nodes, int *uniform);
/// Prints `[rank r] message` on stderr and ends every rank of the job.
void ohmpi_abort(const char *message, int code) __attribute__((noreturn));

// ---- watchdog.c: deadlines and the ranks' notes to each other --------------------------------

/// Seconds a collective may wait before the job is aborted (<= 0: forever).
void ohmpi_set_timeout(double seconds);
/// The next collective this rank enters may wait this long instead (if longer): a wait for work
/// one rank does alone (rank 0 reading or writing checkpoints). Every rank calls it before it.
void ohmpi_allow_next_wait(double seconds);
/// What this rank does outside collectives ("evaluating"), for the other ranks' watchdog messages.
void ohmpi_set_activity(const char *what);
/// A label for messages: the current training step (-1: none).
void ohmpi_set_step(int64_t step);

// ---- collectives.c: the job's collectives -----------------------------------------------------

/// The groups of ranks a collective spans.
enum { OHMPI_WORLD = 0, OHMPI_NODE = 1, OHMPI_CROSS = 2 };
/// In-place sums over the world. `what` names the collective in error messages.
void ohmpi_allreduce_sum_f64(double *buffer, size_t count, const char *what);
/// Returns when every rank has called it.
void ohmpi_barrier(const char *what);
/// Root's `count` bytes into every rank's buffer.
void ohmpi_bcast_bytes(void *buffer, size_t count, int root, const char *what);
/// Every rank's byte count, into `counts` (one per rank), so that each can size its buffer for
/// ohmpi_allgatherv_bytes.
void ohmpi_allgather_counts(int64_t my_count, int64_t *counts, const char *what);
/// Every rank's `my_count` bytes (counts from ohmpi_allgather_counts), concatenated in rank order
/// into `receive`.
void ohmpi_allgatherv_bytes(const void *send, int64_t my_count, void *receive, const int64_t *counts, const char *what);
/// Node rank k's elements [bounds[k], bounds[k + 1]) of `buffer` from it to every rank of the node.
void ohmpi_node_allgatherv_f32(float *buffer, const size_t *bounds, const char *what);

// ---- window.c: the node's shared-memory window ------------------------------------------------

/// Allocates the node's window (collective over the node, once per job): per node rank 2 x
/// `count` float32, the gradients then the parameters, each segment on its own pages. Returns
/// this rank's segment, zeroed; it lives until ohmpi_finalize. Failures abort.
float *ohmpi_window_allocate(size_t count);
/// Adds node ranks 1..L-1's gradients over [lo, hi) to node rank 0's, in node-rank order, into
/// this rank's gradient segment: the same additions in the same order on every rank and run.
void ohmpi_window_add(size_t lo, size_t hi);
/// Copies [lo, hi) of node rank k's parameters into this rank's.
void ohmpi_window_copy_parameters(int k, size_t lo, size_t hi);
/// A barrier of the node that also orders the ranks' accesses to the window.
void ohmpi_window_barrier(const char *what);

// ---- sums.c: one gradient sum, by the main thread or the gradient worker ----------------------

/// One sum of float32 gradients over the ranks, as the plan describes it.
typedef struct {
    float *buffer;  // the gradients (with `window`: this rank's gradient segment)
    size_t lo, hi;  // the elements this rank sums (may be empty)
    int window;     // 1: first a barrier of the node, then the node's addends added over [lo, hi)
    int group;      // then [lo, hi) summed over this group (OHMPI_WORLD or OHMPI_CROSS; -1: none)
    int bf16;       // that sum rounded to bfloat16 and summed in it
} ohmpi_sum;
/// Runs `sum` on the main thread, watched.
void ohmpi_sum_f32(const ohmpi_sum *sum, const char *what);

// ---- worker.c: gradient sums behind the backward pass -----------------------------------------

/// 1 when the gradient worker runs (the library gives MPI_THREAD_MULTIPLE; every rank agrees).
int ohmpi_worker_available(void);
/// Room for `buckets` sums a step. Only between steps (no sum begun and not finished).
void ohmpi_worker_reserve(int buckets);
/// Hands `sum` to the worker, which runs it on its own communicators while this thread goes on.
/// Every rank begins the same sums in the same order.
void ohmpi_worker_begin(const ohmpi_sum *sum);
/// Waits (watched against the collective timeout) until every sum begun is done; fills each one's
/// start and end (CLOCK_MONOTONIC seconds), up to `capacity`, and returns how many there were.
int ohmpi_worker_finish(double *starts, double *ends, int capacity, const char *what);

#endif
