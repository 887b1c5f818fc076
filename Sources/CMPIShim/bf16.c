// bfloat16 compression of gradient sums that cross the network: half the bytes, each partial sum
// rounded to 8 significant bits (Horovod's compression does the same with float16).
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static MPI_Op ohmpi_bf16_sum = MPI_OP_NULL;

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

// MPI_Op_create is local: every rank makes its own at start-up.
void ohmpi_bf16_start(void) { ohmpi_check(MPI_Op_create(bf16_sum, 1, &ohmpi_bf16_sum), "MPI_Op_create", "start-up"); }

void ohmpi_bf16_stop(void) {
    if (ohmpi_bf16_sum != MPI_OP_NULL) MPI_Op_free(&ohmpi_bf16_sum);
}

void ohmpi_allreduce_bf16(float *buffer, size_t count, MPI_Comm comm, int watched, const char *what) {
    static __thread uint16_t *scratch = NULL;
    static __thread size_t capacity = 0;
    if (count > capacity) {
        free(scratch);
        scratch = malloc(count * sizeof(uint16_t));
        if (!scratch) ohmpi_abort("error: out of memory for the bfloat16 gradient buffer", 3);
        capacity = count;
    }
    for (size_t i = 0; i < count; i++) scratch[i] = to_bf16(buffer[i]);
    ohmpi_allreduce(scratch, count, MPI_UINT16_T, sizeof(uint16_t), ohmpi_bf16_sum, comm, watched, what);
    for (size_t i = 0; i < count; i++) buffer[i] = from_bf16(scratch[i]);
}
