#ifndef OHMPI_H
#define OHMPI_H
#include <stddef.h>
#include <stdint.h>

/// 1 if this process was started by an MPI launcher (mpirun, srun --mpi=pmix, ...).
int ohmpi_launched(void);
/// MPI_Init_thread, duplicates COMM_WORLD for collectives and for the watchdog's notes, and
/// starts the watchdog thread when the library offers MPI_THREAD_MULTIPLE (otherwise collectives
/// are non-blocking and polled against the deadline). Returns 0 on success (failures abort).
int ohmpi_init(void);
void ohmpi_finalize(void);
int ohmpi_rank(void);
int ohmpi_size(void);
/// Seconds a collective may wait before the job is aborted (<= 0: forever).
void ohmpi_set_timeout(double seconds);
/// The next collective this rank enters may wait this long instead (if longer): a wait for work
/// one rank does alone (rank 0 reading or writing checkpoints). Every rank calls it before it.
void ohmpi_allow_next_wait(double seconds);
/// What this rank does outside collectives ("evaluating"), for the other ranks' watchdog messages.
void ohmpi_set_activity(const char *what);
/// A label for messages: the current training step (-1: none).
void ohmpi_set_step(int64_t step);

/// In-place sums over all ranks. `what` names the collective in error messages.
void ohmpi_allreduce_sum_f32(float *buffer, size_t count, const char *what);
void ohmpi_allreduce_sum_f64(double *buffer, size_t count, const char *what);
/// This rank's segment of a node-wide shared-memory window: 2 x `count` zeroed float32, the
/// gradients then the parameters. Valid until ohmpi_finalize and lent until ohmpi_shared_release.
/// NULL when ranks do not share nodes evenly, when rank 0's environment has
/// ORTHOHASH_SHARED_MEMORY_REDUCE=0, while the window is lent, or when `count` exceeds the first
/// request. Every rank must call it (collective).
float *ohmpi_shared_buffer(size_t count);
/// Sums `gradients` over all ranks, but only the shard [lo, hi) this rank updates: the whole
/// buffer (lo = 0, hi = count) unless it is the window's gradients. Outside the shard the buffer
/// still holds this rank's addends, which the other ranks have summed (the caller clears them).
void ohmpi_reduce_shard_f32(float *gradients, size_t count, size_t *lo, size_t *hi, const char *what);
/// Copies into the window's `parameters` the shards the node's other ranks updated.
void ohmpi_gather_shards_f32(float *parameters, size_t count, const char *what);
/// The same for a private buffer (optimizer state) updated shard-wise: MPI_Allgatherv on the node.
void ohmpi_gather_node_shards_f32(float *buffer, size_t count, const char *what);
void ohmpi_shared_release(void);
/// 1 when gradient buffers are placed in shared memory; fills ranks per node and nodes.
int ohmpi_shared_layout(int *ranks_per_node, int *nodes);
/// From now on, gradient sums that cross the network (MPI_Allreduce of the whole buffer, or of the
/// shards across nodes; not the node's shared-memory sum) round to bfloat16 and sum in it. Every
/// rank must set the same (collective only in that the first call creates the reduction).
void ohmpi_set_gradient_bf16(int on);
/// 1 when gradient buckets can be summed by the background worker while the backward pass runs
/// (the library gives MPI_THREAD_MULTIPLE; every rank agrees).
int ohmpi_overlap_available(void);
/// Hands [lo, hi) of `gradients` (`count` elements: the window's gradients or a private buffer)
/// to the background worker, which sums it over the ranks as ohmpi_reduce_shard_f32 sums the
/// whole buffer. Every rank begins the same buckets in the same order; together they cover it.
void ohmpi_bucket_begin(float *gradients, size_t count, size_t lo, size_t hi);
/// Waits (watched against the collective timeout) until every bucket begun is summed, and gives
/// the shard this rank updates as ohmpi_reduce_shard_f32 does. Fills each bucket's start and end
/// (CLOCK_MONOTONIC seconds) and bytes, up to `capacity`, and returns how many buckets there were.
int ohmpi_buckets_finish(float *gradients, size_t count, size_t *lo, size_t *hi, double *starts, double *ends,
                         size_t *bytes, int capacity, const char *what);
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
/// Prints `[rank r] message` on stderr and ends every rank of the job.
void ohmpi_abort(const char *message, int code) __attribute__((noreturn));

#endif
