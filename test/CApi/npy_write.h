/*===- npy_write.h - .npy writer shared by the C API tests -----*- C -*-===*
 *
 * Part of moe-opt.
 *
 *===-------------------------------------------------------------------===*/
#ifndef MOE_TEST_CAPI_NPY_WRITE_H
#define MOE_TEST_CAPI_NPY_WRITE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Writes a [rows, cols] array of `descr` ('<f4', '<i4') elements of
 * `elementSize` bytes as .npy (format 1.0). Returns 0 on success. */
static int write_npy(const char *path, const char *descr, const void *data,
                     size_t elementSize, int64_t rows, int64_t cols) {
  char header[128];
  int n = snprintf(header, sizeof header,
                   "{'descr': '%s', 'fortran_order': False, 'shape': "
                   "(%lld, %lld), }",
                   descr, (long long)rows, (long long)cols);
  /* Magic (6) + version (2) + length (2) + header + '\n', padded to 64. */
  int total = 10 + n + 1;
  int pad = (64 - total % 64) % 64;
  unsigned short len = (unsigned short)(n + pad + 1);
  unsigned char lenBytes[2];
  FILE *f = fopen(path, "wb");
  int i;
  if (!f)
    return 1;
  lenBytes[0] = (unsigned char)(len & 0xff);
  lenBytes[1] = (unsigned char)(len >> 8);
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fwrite(lenBytes, 1, 2, f);
  fwrite(header, 1, (size_t)n, f);
  for (i = 0; i < pad; ++i)
    fputc(' ', f);
  fputc('\n', f);
  /* Little-endian hosts only (x86-64, aarch64), as the runtime. */
  fwrite(data, elementSize, (size_t)(rows * cols), f);
  return fclose(f) != 0;
}

#endif
