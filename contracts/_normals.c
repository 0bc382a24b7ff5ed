/* The seed contract's latents drawn in C, without the interpreter lock (contracts/native_latents.py).

   For each seed s < 2**32: SeedSequence(s).generate_state(4, uint64) (Melissa O'Neill's seed_seq hash as
   NumPy implements it; the same steps as contracts/seed_sequence.py), PCG64 seeded from those words (the
   PCG paper's setseq 128-bit LCG with the XSL-RR output, 32-bit draws taken low half first), then NumPy's
   own float32 ziggurat, random_standard_normal_fill_f, from the static library NumPy ships for extensions
   (numpy/random/lib/libnpyrandom.a). The Python side compares the result with NumPy's at import and does
   not use this module when they differ. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "numpy/random/distributions.h"

/* numpy/random/bit_generator.pyx: the seed sequence's hash constants */
#define INIT_A 0x43B0D7E5u
#define MULT_A 0x931E8875u
#define INIT_B 0x8B51F9DDu
#define MULT_B 0x58F38DEDu
#define MIX_MULT_L 0xCA01F9DDu
#define MIX_MULT_R 0x4973F715u
#define XSHIFT 16
#define POOL_SIZE 4
#define STATE_WORDS 4 /* uint64 words PCG64 asks of its seed sequence */

typedef unsigned __int128 u128;

/* PCG's default 128-bit multiplier */
#define PCG_MULT (((u128)2549297995355413924ULL << 64) | 4865540595714422341ULL)

typedef struct {
  u128 state, inc;
  int has_uint32;
  uint32_t uinteger;
} pcg64_t;

static inline uint32_t hashmix(uint32_t value, uint32_t *hash_const) {
  value ^= *hash_const;
  *hash_const *= MULT_A;
  value *= *hash_const;
  return value ^ (value >> XSHIFT);
}

static inline uint32_t mix(uint32_t x, uint32_t y) {
  uint32_t result = MIX_MULT_L * x - MIX_MULT_R * y;
  return result ^ (result >> XSHIFT);
}

static void seed_words(uint32_t seed, uint64_t words[STATE_WORDS]) {
  uint32_t pool[POOL_SIZE], hash_const = INIT_A, halves[2 * STATE_WORDS];
  pool[0] = hashmix(seed, &hash_const);
  for (int i = 1; i < POOL_SIZE; i++) pool[i] = hashmix(0, &hash_const);
  for (int src = 0; src < POOL_SIZE; src++)
    for (int dst = 0; dst < POOL_SIZE; dst++)
      if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src], &hash_const));
  hash_const = INIT_B;
  for (int i = 0; i < 2 * STATE_WORDS; i++) {
    uint32_t value = pool[i % POOL_SIZE] ^ hash_const;
    hash_const *= MULT_B;
    value *= hash_const;
    halves[i] = value ^ (value >> XSHIFT);
  }
  for (int k = 0; k < STATE_WORDS; k++)
    words[k] = (uint64_t)halves[2 * k] | ((uint64_t)halves[2 * k + 1] << 32);
}

static inline void step(pcg64_t *rng) { rng->state = rng->state * PCG_MULT + rng->inc; }

/* words [state high, state low, sequence high, sequence low] */
static void pcg64_seed(pcg64_t *rng, const uint64_t words[STATE_WORDS]) {
  u128 initstate = ((u128)words[0] << 64) | words[1];
  u128 initseq = ((u128)words[2] << 64) | words[3];
  rng->state = 0;
  rng->inc = (initseq << 1) | 1;
  step(rng);
  rng->state += initstate;
  step(rng);
  rng->has_uint32 = 0;
  rng->uinteger = 0;
}

static uint64_t pcg64_next64(void *st) {
  pcg64_t *rng = st;
  step(rng);
  uint64_t folded = (uint64_t)(rng->state >> 64) ^ (uint64_t)rng->state;
  unsigned rot = (unsigned)(rng->state >> 122);
  return (folded >> rot) | (folded << ((-rot) & 63));
}

static uint32_t pcg64_next32(void *st) {
  pcg64_t *rng = st;
  if (rng->has_uint32) {
    rng->has_uint32 = 0;
    return rng->uinteger;
  }
  uint64_t next = pcg64_next64(st);
  rng->has_uint32 = 1;
  rng->uinteger = (uint32_t)(next >> 32);
  return (uint32_t)next;
}

static double pcg64_next_double(void *st) { return (double)(pcg64_next64(st) >> 11) * (1.0 / 9007199254740992.0); }

/* A C-contiguous buffer of 4-byte items of one of the struct codes in `codes` (NumPy writes uint32 as 'I' or
   'L', float32 as 'f', maybe behind a byte-order character), or -1 with a TypeError naming `what`. */
static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *codes, const char *what) {
  int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
  const char *format = view->format ? view->format : "B";
  size_t length = strlen(format);
  char code = length ? format[length - 1] : 'B';
  int native_order = length == 1 || (length == 2 && strchr("@=<", format[0]) != NULL);
  if (view->itemsize != 4 || !native_order || strchr(codes, code) == NULL) {
    PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous %s array, got format '%s'", what,
                 writable ? "writable float32" : "uint32", format);
    PyBuffer_Release(view);
    return -1;
  }
  return 0;
}

static PyObject *standard_normal(PyObject *self, PyObject *args) {
  PyObject *seeds_obj, *out_obj;
  Py_buffer seeds, out;
  Py_ssize_t dim;
  if (!PyArg_ParseTuple(args, "OOn", &seeds_obj, &out_obj, &dim)) return NULL;
  if (get_buffer(seeds_obj, &seeds, 0, "IL", "seeds") < 0) return NULL;
  if (get_buffer(out_obj, &out, 1, "f", "out") < 0) {
    PyBuffer_Release(&seeds);
    return NULL;
  }
  Py_ssize_t n = seeds.len / 4;
  /* out holds n rows of dim floats (the product checked without overflowing) */
  if (dim < 0 || (n > 0 && dim > PY_SSIZE_T_MAX / 4 / n) || out.len != n * dim * 4) {
    PyBuffer_Release(&seeds);
    PyBuffer_Release(&out);
    PyErr_SetString(PyExc_ValueError, "out must hold len(seeds) rows of dim floats");
    return NULL;
  }
  const uint32_t *seed = seeds.buf;
  float *row = out.buf;
  Py_BEGIN_ALLOW_THREADS;
  pcg64_t rng;
  bitgen_t bitgen = {&rng, pcg64_next64, pcg64_next32, pcg64_next_double, pcg64_next64};
  uint64_t words[STATE_WORDS];
  for (Py_ssize_t i = 0; i < n; i++, row += dim) {
    seed_words(seed[i], words);
    pcg64_seed(&rng, words);
    random_standard_normal_fill_f(&bitgen, dim, row);
  }
  Py_END_ALLOW_THREADS;
  PyBuffer_Release(&seeds);
  PyBuffer_Release(&out);
  Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"standard_normal", standard_normal, METH_VARARGS,
     "standard_normal(seeds, out, dim): row i of out = the float32 standard normals of PCG64(seeds[i])"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_normals", NULL, -1, methods};

PyMODINIT_FUNC PyInit__normals(void) { return PyModule_Create(&module); }
