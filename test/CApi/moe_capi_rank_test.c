/*===- moe_capi_rank_test.c - The C API on rank packages -----------------===*
 *
 * Part of moe-opt. The expert-parallel entry points of include/moe/moe.h
 * from a C99 program (test/CApi/capi-rank.test):
 *
 *   moe_capi_rank_test route RANK_PKG LAYER X.f32 T OUTDIR
 *     moe_model_route on a [T, H] float32 raw input: writes OUTDIR/ids.i32
 *     and OUTDIR/weights.f32 (raw [T, K]) and prints K and the flags.
 *   moe_capi_rank_test dispatched RANK_PKG LAYER PREFIX N
 *     moe_model_run_layer_dispatched on PREFIX.x.f32 [N, H], PREFIX.ids.i32
 *     and PREFIX.weights.f32 [N, K] (physical slot ids): writes PREFIX.y.f32.
 *   moe_capi_rank_test errors RANK_PKG PLAIN_PKG LAYER
 *     the error returns: a rank layer through moe_model_run_layer, a plain
 *     package's layer through moe_model_run_layer_dispatched, null
 *     arguments.
 *
 *===----------------------------------------------------------------------===*/

#include "moe/moe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *read_raw(const char *path, size_t bytes) {
  FILE *f = fopen(path, "rb");
  void *data = malloc(bytes ? bytes : 1);
  if (!f || !data || fread(data, 1, bytes, f) != bytes) {
    fprintf(stderr, "cannot read %zu bytes from %s\n", bytes, path);
    exit(2);
  }
  fclose(f);
  return data;
}

static void write_raw(const char *path, const void *data, size_t bytes) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, bytes, f) != bytes || fclose(f) != 0) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(2);
  }
}

static moe_model *open_model(const char *dir) {
  char error[512];
  moe_model *model = NULL;
  if (moe_model_open(dir, "emu", 0, &model, error, sizeof error)) {
    fprintf(stderr, "open %s: %s\n", dir, error);
    exit(2);
  }
  return model;
}

int main(int argc, char **argv) {
  char error[512], path[1024];
  if (argc == 7 && strcmp(argv[1], "route") == 0) {
    moe_model *model = open_model(argv[2]);
    int64_t layer = atoll(argv[3]), tokens = atoll(argv[5]);
    int64_t hidden = moe_model_hidden(model, layer);
    int64_t k = moe_model_routing_slots(model, layer);
    float *x = read_raw(argv[4], (size_t)(tokens * hidden) * sizeof(float));
    int32_t *ids = malloc((size_t)(tokens * k) * sizeof(int32_t));
    float *w = malloc((size_t)(tokens * k) * sizeof(float));
    int rc = moe_model_route(model, layer, x, tokens, ids, w, error,
                             sizeof error);
    printf("route: rc %d, K %lld, takes routing %d\n", rc, (long long)k,
           moe_model_takes_routing(model, layer));
    if (rc)
      printf("route error: %s\n", error);
    snprintf(path, sizeof path, "%s/ids.i32", argv[6]);
    write_raw(path, ids, (size_t)(tokens * k) * sizeof(int32_t));
    snprintf(path, sizeof path, "%s/weights.f32", argv[6]);
    write_raw(path, w, (size_t)(tokens * k) * sizeof(float));
    moe_model_close(model);
    return rc;
  }
  if (argc == 6 && strcmp(argv[1], "dispatched") == 0) {
    moe_model *model = open_model(argv[2]);
    int64_t layer = atoll(argv[3]), rows = atoll(argv[5]);
    int64_t hidden = moe_model_hidden(model, layer);
    int64_t k = moe_model_routing_slots(model, layer);
    float *x, *w, *y;
    int32_t *ids;
    int rc;
    snprintf(path, sizeof path, "%s.x.f32", argv[4]);
    x = read_raw(path, (size_t)(rows * hidden) * sizeof(float));
    snprintf(path, sizeof path, "%s.ids.i32", argv[4]);
    ids = read_raw(path, (size_t)(rows * k) * sizeof(int32_t));
    snprintf(path, sizeof path, "%s.weights.f32", argv[4]);
    w = read_raw(path, (size_t)(rows * k) * sizeof(float));
    y = malloc((size_t)(rows * hidden) * sizeof(float));
    rc = moe_model_run_layer_dispatched(model, layer, x, ids, w, rows, y,
                                        error, sizeof error);
    if (rc) {
      printf("dispatched error: %s\n", error);
      return 1;
    }
    snprintf(path, sizeof path, "%s.y.f32", argv[4]);
    write_raw(path, y, (size_t)(rows * hidden) * sizeof(float));
    moe_model_close(model);
    return 0;
  }
  if (argc == 5 && strcmp(argv[1], "errors") == 0) {
    moe_model *rank = open_model(argv[2]), *plain = open_model(argv[3]);
    int64_t layer = atoll(argv[4]);
    int64_t hidden = moe_model_hidden(rank, layer);
    int64_t k = moe_model_routing_slots(plain, layer);
    float *x = calloc((size_t)(2 * hidden), sizeof(float));
    float *y = calloc((size_t)(2 * hidden), sizeof(float));
    int32_t ids[64] = {0};
    float w[64] = {0};
    int rc = moe_model_run_layer(rank, layer, x, 2, y, error, sizeof error);
    printf("run_layer on a rank layer: rc %d: %s\n", rc, rc ? error : "");
    rc = moe_model_run_layer_dispatched(plain, layer, x, ids, w, 2, y, error,
                                        sizeof error);
    printf("dispatched on a plain layer: rc %d: %s\n", rc, rc ? error : "");
    printf("plain: takes routing %d, K %lld\n",
           moe_model_takes_routing(plain, layer), (long long)k);
    rc = moe_model_run_layer_dispatched(rank, layer, x, NULL, w, 2, y, error,
                                        sizeof error);
    printf("null ids: rc %d: %s\n", rc, rc ? error : "");
    rc = moe_model_route(rank, 999, x, 2, ids, w, error, sizeof error);
    printf("route unknown layer: rc %d: %s\n", rc, rc ? error : "");
    moe_model_close(rank);
    moe_model_close(plain);
    return 0;
  }
  fprintf(stderr, "usage: see the header of moe_capi_rank_test.c\n");
  return 2;
}
