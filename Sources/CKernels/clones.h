// Internal to CKernels: build a function for x86-64-v4 (AVX-512), v3 (AVX2) and baseline x86-64,
// chosen at run time by the loader (target_clones); elsewhere, the one build.
#ifndef OH_CLONES_H
#define OH_CLONES_H
#if defined(__x86_64__) && defined(__linux__)
#define OH_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define OH_CLONES
#endif
#endif
