/*===- moe_capi_test.c - The C API from a C99 program --------------------===*
 *
 * Part of moe-opt. Exercises include/moe/moe.h as a C program linked to
 * libmoe_runtime.so does (test/CApi/capi.test):
 *
 *   moe_capi_test PKG OUTDIR
 *
 * opens PKG with the emu backend, prints its layers and hidden sizes, runs
 * the first MoE layer and then every layer on a fixed input, prints
 * checksums and the first values, and writes OUTDIR/x.npy (the input),
 * OUTDIR/y_layer.npy, OUTDIR/y_all.npy and OUTDIR/y_all_MODE.npy (each
 * chain mode; float32 [T, H]) for comparison with moe-run. Then the error
 * returns: a missing package, an unknown backend, an unknown layer, null
 * arguments, an unknown chain mode, zero tokens, a device run on emu, a short
 * error buffer. It also prints what the package holds (layers' widths and
 * activation types, kernels, weight tensors) as the C API describes it.
 *
 *===----------------------------------------------------------------------===*/

#include "moe/moe.h"
#include "npy_write.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKENS 5

static int failures = 0;

static void expect(int condition, const char *what) {
  if (!condition) {
    printf("FAILED: %s\n", what);
    ++failures;
  }
}

static double checksum(const float *y, size_t n) {
  double s = 0;
  size_t i;
  for (i = 0; i < n; ++i)
    s += (double)y[i] * (double)((i % 7) + 1);
  return s;
}

static void print_values(const char *tag, const float *y, size_t n) {
  size_t i;
  printf("%s checksum: %.9g\n", tag, checksum(y, n));
  printf("%s first:", tag);
  for (i = 0; i < 4 && i < n; ++i)
    printf(" %.9g", y[i]);
  printf("\n");
}

int main(int argc, char **argv) {
  char error[512];
  char path[4096];
  moe_model *model = NULL;
  moe_model *none = NULL;
  int64_t layer, hidden, notMoE;
  float *x, *y, *big;
  size_t count;
  int i, rc;

  if (argc != 3) {
    fprintf(stderr, "usage: %s PKG OUTDIR\n", argv[0]);
    return 2;
  }

  /* Opening. */
  error[0] = '\0';
  rc = moe_model_open(argv[1], "emu", 0, &model, error, sizeof error);
  if (rc != 0) {
    printf("open failed: %s\n", error);
    return 1;
  }
  printf("backend: %s\n", moe_model_backend(model));
  printf("layers: %d\n", moe_model_num_layers(model));
  for (i = 0; i < moe_model_num_layers(model); ++i)
    printf("layer %lld hidden %lld\n", (long long)moe_model_layer(model, i),
           (long long)moe_model_hidden(model, moe_model_layer(model, i)));
  expect(moe_model_layer(model, -1) == -1, "moe_model_layer(-1) == -1");
  expect(moe_model_layer(model, moe_model_num_layers(model)) == -1,
         "moe_model_layer(num_layers) == -1");

  /* A layer on a fixed input. */
  layer = moe_model_layer(model, 0);
  /* The first model layer that is not an MoE layer (0 for a model whose
   * first layer is dense). */
  for (notMoE = 0; moe_model_hidden(model, notMoE) >= 0; ++notMoE)
    ;
  hidden = moe_model_hidden(model, layer);
  count = (size_t)(TOKENS * hidden);
  x = malloc(count * sizeof(float));
  y = malloc(count * sizeof(float));
  big = malloc(count * sizeof(float));
  if (!x || !y || !big)
    return 1;
  for (i = 0; i < (int)count; ++i)
    x[i] = (float)sin(0.37 * i + 0.1) * 1.5f;
  snprintf(path, sizeof path, "%s/x.npy", argv[2]);
  expect(write_npy(path, "<f4", x, sizeof(float), TOKENS, hidden) == 0,
         "writing x.npy");

  rc = moe_model_run_layer(model, layer, x, TOKENS, y, error, sizeof error);
  printf("run_layer %lld: rc %d\n", (long long)layer, rc);
  if (rc != 0)
    printf("error: %s\n", error);
  print_values("layer", y, count);
  expect(moe_model_last_ms(model) >= 0.0, "last_ms >= 0");
  snprintf(path, sizeof path, "%s/y_layer.npy", argv[2]);
  expect(write_npy(path, "<f4", y, sizeof(float), TOKENS, hidden) == 0,
         "writing y_layer.npy");

  rc = moe_model_run_all(model, x, TOKENS, y, error, sizeof error);
  printf("run_all: rc %d\n", rc);
  if (rc != 0)
    printf("error: %s\n", error);
  print_values("all", y, count);
  snprintf(path, sizeof path, "%s/y_all.npy", argv[2]);
  expect(write_npy(path, "<f4", y, sizeof(float), TOKENS, hidden) == 0,
         "writing y_all.npy");

  /* The same run again gives the same numbers (the model is reusable). */
  rc = moe_model_run_all(model, x, TOKENS, big, error, sizeof error);
  expect(rc == 0 && memcmp(big, y, count * sizeof(float)) == 0,
         "run_all twice gives the same result");

  /* Each chain mode; moe_model_run_all is MOE_CHAIN_PRENORM. The outputs
   * go to OUTDIR/y_all_MODE.npy (test/CApi/run-all-chain.test). */
  for (i = 0; i < 3; ++i) {
    static const int modes[3] = {MOE_CHAIN_PRENORM, MOE_CHAIN_RESIDUAL,
                                 MOE_CHAIN_NONE};
    static const char *names[3] = {"prenorm", "residual", "none"};
    error[0] = '\0';
    rc = moe_model_run_all_chain(model, x, TOKENS, big, modes[i], error,
                                 sizeof error);
    printf("run_all_chain %s: rc %d%s%s\n", names[i], rc, rc ? ": " : "",
           error);
    snprintf(path, sizeof path, "%s/y_all_%s.npy", argv[2], names[i]);
    expect(write_npy(path, "<f4", big, sizeof(float), TOKENS, hidden) == 0,
           "writing y_all_MODE");
    if (modes[i] == MOE_CHAIN_PRENORM)
      expect(memcmp(big, y, count * sizeof(float)) == 0,
             "run_all is run_all_chain with MOE_CHAIN_PRENORM");
    else
      expect(memcmp(big, y, count * sizeof(float)) != 0,
             "another chain mode gives other numbers");
  }

  /* Errors. Each leaves the model usable. */
  snprintf(path, sizeof path, "%s/no-such-package", argv[2]);
  error[0] = '\0';
  rc = moe_model_open(path, "emu", 0, &none, error, sizeof error);
  printf("missing package: rc %d, model %s: %s\n", rc, none ? "set" : "null",
         error);

  error[0] = '\0';
  rc = moe_model_open(argv[1], "bogus", 0, &none, error, sizeof error);
  printf("unknown backend: rc %d, model %s: %s\n", rc, none ? "set" : "null",
         error);

  error[0] = '\0';
  rc = moe_model_run_layer(model, notMoE, x, TOKENS, y, error, sizeof error);
  printf("unknown layer: rc %d: %s\n", rc, error);
  printf("unknown layer %lld hidden: %lld\n", (long long)notMoE,
         (long long)moe_model_hidden(model, notMoE));

  error[0] = '\0';
  rc = moe_model_run_layer(model, layer, NULL, TOKENS, y, error, sizeof error);
  printf("null x: rc %d: %s\n", rc, error);
  error[0] = '\0';
  rc = moe_model_run_all(model, x, TOKENS, NULL, error, sizeof error);
  printf("null y: rc %d: %s\n", rc, error);
  error[0] = '\0';
  rc = moe_model_run_all_chain(model, x, TOKENS, y, 7, error, sizeof error);
  printf("unknown chain: rc %d: %s\n", rc, error);
  error[0] = '\0';
  rc = moe_model_run_all_chain(model, x, TOKENS, NULL, MOE_CHAIN_NONE, error,
                               sizeof error);
  printf("null y chain: rc %d: %s\n", rc, error);
  error[0] = '\0';
  rc = moe_model_run_layer(NULL, layer, x, TOKENS, y, error, sizeof error);
  printf("null model: rc %d: %s\n", rc, error);
  error[0] = '\0';
  rc = moe_model_open(NULL, "emu", 0, &none, error, sizeof error);
  printf("null path: rc %d: %s\n", rc, error);
  /* A null error buffer: the return code alone. */
  rc = moe_model_run_layer(model, layer, NULL, TOKENS, y, NULL, 0);
  printf("null error buffer: rc %d\n", rc);
  printf("null model queries: backend '%s', layers %d, layer %lld, hidden "
         "%lld, last_ms %g\n",
         moe_model_backend(NULL), moe_model_num_layers(NULL),
         (long long)moe_model_layer(NULL, 0),
         (long long)moe_model_hidden(NULL, layer), moe_model_last_ms(NULL));
  moe_model_close(NULL);

  error[0] = '\0';
  rc = moe_model_run_layer(model, layer, x, 0, y, error, sizeof error);
  printf("zero tokens: rc %d: %s\n", rc, error);

  error[0] = '\0';
  rc = moe_model_run_layer_device(model, layer, x, y, TOKENS, NULL, error,
                                  sizeof error);
  printf("device run on emu: rc %d: %s\n", rc, error);

  /* Binding weight tensors: the checks (binding itself is tested with the
   * data of a package in test/Package/shape-only.test). */
  {
    int64_t tensors = moe_model_num_tensors(model);
    /* malloc's blocks are 16-byte aligned on the supported hosts. */
    unsigned char *buffer = malloc(64);
    printf("tensors: %lld, null model: %lld\n", (long long)tensors,
           (long long)moe_model_num_tensors(NULL));
    error[0] = '\0';
    rc = moe_model_bind_tensor(model, tensors, buffer, 16, error, sizeof error);
    printf("bind out of range: rc %d: %s\n", rc, error);
    error[0] = '\0';
    rc = moe_model_bind_tensor(model, -1, buffer, 16, error, sizeof error);
    printf("bind negative: rc %d: %s\n", rc, error);
    error[0] = '\0';
    rc = moe_model_bind_tensor(model, 0, buffer, 16, error, sizeof error);
    printf("bind wrong size: rc %d: %s\n", rc, error);
    error[0] = '\0';
    rc = moe_model_bind_tensor(model, 0, buffer + 1, 16, error, sizeof error);
    printf("bind misaligned: rc %d: %s\n", rc, error);
    error[0] = '\0';
    rc = moe_model_bind_tensor(model, 0, NULL, 16, error, sizeof error);
    printf("bind null data: rc %d: %s\n", rc, error);
    error[0] = '\0';
    rc = moe_model_bind_tensor(NULL, 0, buffer, 16, error, sizeof error);
    printf("bind null model: rc %d: %s\n", rc, error);
    free(buffer);
  }

  /* What the package holds, through the C API: each layer's widths and
   * activation type, the kernels, every weight tensor (compare_capi.py
   * checks these lines against manifest.json), and the out-of-range and
   * null-model answers. */
  {
    int64_t tensors = moe_model_num_tensors(model), t;
    int k, d;
    for (i = 0; i < moe_model_num_layers(model); ++i) {
      int64_t l = moe_model_layer(model, i);
      printf("layer %lld output %lld activation %s\n", (long long)l,
             (long long)moe_model_output_width(model, l),
             moe_model_activation_type(model, l));
    }
    printf("kernels: %d\n", moe_model_num_kernels(model));
    for (k = 0; k < moe_model_num_kernels(model); ++k)
      printf("kernel %d: %s\n", k, moe_model_kernel_name(model, k));
    for (t = 0; t < tensors; ++t) {
      int rank = moe_model_tensor_rank(model, t);
      int names = moe_model_tensor_num_names(model, t);
      printf("tensor %lld: dtype %s bytes %lld flags %d shape", (long long)t,
             moe_model_tensor_dtype(model, t),
             (long long)moe_model_tensor_bytes(model, t),
             moe_model_tensor_flags(model, t));
      for (d = 0; d < rank; ++d)
        printf(" %lld", (long long)moe_model_tensor_dim(model, t, d));
      printf(" names");
      for (k = 0; k < names; ++k)
        printf(" %s", moe_model_tensor_name(model, t, k));
      printf("\n");
    }
    printf("tensor out of range: rank %d dim %lld dtype '%s' bytes %lld "
           "names %d name %s flags %d\n",
           moe_model_tensor_rank(model, tensors),
           (long long)moe_model_tensor_dim(model, 0, 99),
           moe_model_tensor_dtype(model, -1),
           (long long)moe_model_tensor_bytes(model, tensors),
           moe_model_tensor_num_names(model, tensors),
           moe_model_tensor_name(model, 0, 99) ? "set" : "null",
           moe_model_tensor_flags(model, tensors));
    printf("unknown layer %lld: output %lld activation '%s'; kernel %d: "
           "%s\n",
           (long long)notMoE, (long long)moe_model_output_width(model, notMoE),
           moe_model_activation_type(model, notMoE),
           moe_model_num_kernels(model),
           moe_model_kernel_name(model, moe_model_num_kernels(model)) ? "set"
                                                                      : "null");
    printf("null model: output %lld activation '%s' kernels %d kernel %s "
           "rank %d dtype '%s' flags %d\n",
           (long long)moe_model_output_width(NULL, layer),
           moe_model_activation_type(NULL, layer), moe_model_num_kernels(NULL),
           moe_model_kernel_name(NULL, 0) ? "set" : "null",
           moe_model_tensor_rank(NULL, 0), moe_model_tensor_dtype(NULL, 0),
           moe_model_tensor_flags(NULL, 0));
  }

  /* A short buffer gets a truncated, NUL-terminated message. */
  memset(error, 'X', sizeof error);
  rc = moe_model_run_layer(model, notMoE, x, TOKENS, y, error, 9);
  printf("short buffer: rc %d: '%s' (length %u)\n", rc, error,
         (unsigned)strlen(error));

  /* Still usable after the errors. */
  rc = moe_model_run_all(model, x, TOKENS, big, error, sizeof error);
  expect(rc == 0 && memcmp(big, y, count * sizeof(float)) == 0,
         "run_all after the errors gives the same result");
  for (i = 0; i < (int)count; ++i)
    expect(isfinite(y[i]), "finite output");

  moe_model_close(model);
  free(x);
  free(y);
  free(big);
  printf("%s\n", failures ? "FAILURES" : "done");
  return failures ? 1 : 0;
}
