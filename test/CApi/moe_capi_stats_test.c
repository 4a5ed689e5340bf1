/*===- moe_capi_stats_test.c - Routing and load through the C API --------===*
 *
 * Part of moe-opt. Records the routing of a layer through include/moe/moe.h
 * (test/CApi/capi-stats.test):
 *
 *   moe_capi_stats_test PKG OUTDIR
 *
 * runs the first MoE layer of PKG (emu) on OUTDIR/x1.npy (13 tokens) and
 * then OUTDIR/x2.npy (7 tokens) with recording on, writes the last routing
 * (OUTDIR/ids.npy int32, OUTDIR/weights.npy float32) and prints the load
 * summed over both runs, for a numpy recount of moe-run --routing-out on the
 * same inputs. Then the error returns.
 *
 *===----------------------------------------------------------------------===*/

#include "moe/moe.h"
#include "npy_write.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  char error[512], path[4096];
  moe_model *model = NULL;
  moe_routing_stats st;
  int64_t layer, hidden, tokens = 0, slots = 0, experts = 0, e;
  float *x, *y, *weights;
  int32_t *ids;
  int64_t *counts;
  double *mass;
  int i, rc, run;
  const int64_t T[2] = {13, 7};

  if (argc != 3) {
    fprintf(stderr, "usage: %s PKG OUTDIR\n", argv[0]);
    return 2;
  }
  if (moe_model_open(argv[1], "emu", 0, &model, error, sizeof error)) {
    printf("open failed: %s\n", error);
    return 1;
  }
  layer = moe_model_layer(model, 0);
  hidden = moe_model_hidden(model, layer);
  x = malloc((size_t)(13 * hidden) * sizeof(float));
  y = malloc((size_t)(13 * hidden) * sizeof(float));
  if (!x || !y)
    return 1;

  rc = moe_model_routing_stats(model, layer, 0, &st, NULL, NULL, error,
                               sizeof error);
  printf("before recording: rc %d: %s\n", rc, error);

  moe_model_record_routing(model, 1);
  for (run = 0; run < 2; ++run) {
    for (i = 0; i < T[run] * hidden; ++i)
      x[i] = (float)sin(0.37 * i + 0.1 + run) * 1.5f;
    snprintf(path, sizeof path, "%s/x%d.npy", argv[2], run + 1);
    if (write_npy(path, "<f4", x, sizeof(float), T[run], hidden))
      return 1;
    rc = moe_model_run_layer(model, layer, x, T[run], y, error, sizeof error);
    printf("run %d: rc %d\n", run + 1, rc);
  }

  printf("routers: %d\n", moe_model_num_routers(model, layer, error,
                                                 sizeof error));
  rc = moe_model_last_routing_shape(model, layer, 0, &tokens, &slots,
                                    &experts, error, sizeof error);
  printf("last routing: rc %d, tokens %lld slots %lld experts %lld\n", rc,
         (long long)tokens, (long long)slots, (long long)experts);
  ids = malloc((size_t)(tokens * slots) * sizeof(int32_t));
  weights = malloc((size_t)(tokens * slots) * sizeof(float));
  if (!ids || !weights)
    return 1;
  rc = moe_model_last_routing(model, layer, 0, ids, weights, error,
                              sizeof error);
  printf("ids: rc %d\n", rc);
  snprintf(path, sizeof path, "%s/ids.npy", argv[2]);
  write_npy(path, "<i4", ids, sizeof(int32_t), tokens, slots);
  snprintf(path, sizeof path, "%s/weights.npy", argv[2]);
  write_npy(path, "<f4", weights, sizeof(float), tokens, slots);

  rc = moe_model_routing_stats(model, layer, 0, &st, NULL, NULL, error,
                               sizeof error);
  counts = malloc((size_t)st.experts * sizeof(int64_t));
  mass = malloc((size_t)st.experts * sizeof(double));
  if (!counts || !mass)
    return 1;
  rc |= moe_model_routing_stats(model, layer, 0, &st, counts, mass, error,
                                sizeof error);
  printf("stats: rc %d tokens %lld slots %lld experts %lld routed %lld "
         "empty %lld invalid %lld min %lld max %lld mean %.9g imbalance "
         "%.9g unused %lld\n",
         rc, (long long)st.tokens, (long long)st.slots, (long long)st.experts,
         (long long)st.routed_slots, (long long)st.empty_slots,
         (long long)st.invalid_slots, (long long)st.min_load,
         (long long)st.max_load, st.mean_load, st.imbalance,
         (long long)st.unused_experts);
  printf("counts:");
  for (e = 0; e < st.experts; ++e)
    printf(" %lld", (long long)counts[e]);
  printf("\nmass:");
  for (e = 0; e < st.experts; ++e)
    printf(" %.9g", mass[e]);
  printf("\n");

  /* Errors. */
  rc = moe_model_last_routing_shape(model, layer, 3, NULL, NULL, NULL, error,
                                    sizeof error);
  printf("router out of range: rc %d: %s\n", rc, error);
  rc = moe_model_routing_stats(model, 999, 0, &st, NULL, NULL, error,
                               sizeof error);
  printf("unknown layer: rc %d: %s\n", rc, error);
  rc = moe_model_last_routing(model, layer, 0, NULL, weights, error,
                              sizeof error);
  printf("null ids: rc %d: %s\n", rc, error);
  moe_model_reset_routing_stats(model);
  rc = moe_model_routing_stats(model, layer, 0, &st, NULL, NULL, error,
                               sizeof error);
  printf("after reset: rc %d: %s\n", rc, error);
  moe_model_close(model);
  free(x), free(y), free(ids), free(weights), free(counts), free(mass);
  printf("done\n");
  return 0;
}
