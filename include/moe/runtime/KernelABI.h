/*===- KernelABI.h - How host code passes buffers to kernels -----*- C -*-===*
 *
 * Part of moe-opt. Shared by host code (the runtime, moe-run) and device
 * code (kernels compiled by NVRTC or by the host compiler for the CPU
 * emulation): plain C, no includes.
 *
 * Every generated kernel is `extern "C" __global__ void NAME(MoEKernelArgs)`.
 * Which buffer sits in which slot is recorded by the code generator in the
 * launch plan of the kernel.
 *
 *===---------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_KERNELABI_H
#define MOE_RUNTIME_KERNELABI_H

#define MOE_MAX_KERNEL_BUFFERS 32

typedef struct MoEKernelArgs {
  /* Device pointers (host pointers under the CPU emulation). */
  void *buffers[MOE_MAX_KERNEL_BUFFERS];
  /* The token count T of this launch (the IR's dynamic dimension). */
  long long num_tokens;
  /* Spare scalar operands (for example the routed row count R). */
  long long scalars[4];
} MoEKernelArgs;

/* The CPU emulation exports, for each kernel NAME, a C entry point
 *   int moe_emu_launch_NAME(const MoEKernelArgs *args,
 *                           unsigned grid_x, unsigned grid_y, unsigned grid_z,
 *                           unsigned block_x, unsigned block_y,
 *                           unsigned block_z, unsigned dynamic_shared_bytes,
 *                           char *error, unsigned error_size);
 * returning 0 on success, else non-zero with a message in `error`. */
typedef int (*MoEEmuLaunchFn)(const MoEKernelArgs *, unsigned, unsigned,
                              unsigned, unsigned, unsigned, unsigned,
                              unsigned, char *, unsigned);

/* Argument slots of the elementwise glue kernels (moe_elementwise.cuh):
 * the result [T, N], then the operands [T, N] in the order the generated
 * expression reads them. */
enum {
  MOE_ELEMENTWISE_SLOT_OUTPUT = 0,
  MOE_ELEMENTWISE_SLOT_FIRST_INPUT = 1,
  MOE_ELEMENTWISE_MAX_INPUTS = MOE_MAX_KERNEL_BUFFERS - 1
};

#endif /* MOE_RUNTIME_KERNELABI_H */
