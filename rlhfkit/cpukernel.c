/* Skinny fp32 matmul over oneDNN's packed decode weights, for AVX2 + FMA CPUs.
 *
 * out[M, N] = x[M, K] @ W + bias (+ residual), M small (a decode step: one token per row), W in
 * the blocked layout oneDNN's reorder gives a decode weight: (ceil(N / Y), K, Y) floats, Y output
 * columns innermost, zeros past N in the last block. rlhfkit/cpukernel.py compiles this file with
 * the system C compiler on first use and calls it through ctypes; see that module for why.
 *
 * Each thread takes a contiguous run of column blocks (OpenMP, static schedule: every output
 * element is one thread's fixed-order sum, so results do not depend on the thread count). Inside a
 * block, K is cut into chunks of KC rows; each chunk is multiplied in strips of 16 columns by
 * register tiles of up to 6 rows (12 accumulators, the widest tile AVX2's 16 registers hold; the
 * tiles are inlined through a switch: called through pointers they ran half as fast), and each
 * tile prefetches the next chunk's cache lines of its strip in address order, so that the weights
 * stream from memory while the arithmetic runs.
 */
#include <immintrin.h>
#include <stddef.h>

#define KC 256
#define MAX_ROWS 16

#define DEF_TILE(NR)                                                                              \
    static inline void tile_##NR(const float *xa, int ldx, const float *w, int ldw, int k0, int k1, \
                                 float *acc, int ldacc, int first, const float *pf) {             \
        __m256 c0[NR], c1[NR];                                                                    \
        for (int r = 0; r < NR; r++) {                                                            \
            if (first) {                                                                          \
                c0[r] = _mm256_setzero_ps();                                                      \
                c1[r] = _mm256_setzero_ps();                                                      \
            } else {                                                                              \
                c0[r] = _mm256_loadu_ps(acc + r * ldacc);                                         \
                c1[r] = _mm256_loadu_ps(acc + r * ldacc + 8);                                     \
            }                                                                                     \
        }                                                                                         \
        for (int k = k0; k < k1; k++, w += ldw) {                                                 \
            __m256 b0 = _mm256_loadu_ps(w), b1 = _mm256_loadu_ps(w + 8);                          \
            _mm_prefetch((const char *)(pf + (size_t)(k - k0) * 16), _MM_HINT_T1);        \
            for (int r = 0; r < NR; r++) {                                                        \
                __m256 a = _mm256_broadcast_ss(xa + (size_t)r * ldx + k);                         \
                c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);                                            \
                c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);                                            \
            }                                                                                     \
        }                                                                                         \
        for (int r = 0; r < NR; r++) {                                                            \
            _mm256_storeu_ps(acc + r * ldacc, c0[r]);                                             \
            _mm256_storeu_ps(acc + r * ldacc + 8, c1[r]);                                         \
        }                                                                                         \
    }
DEF_TILE(1) DEF_TILE(2) DEF_TILE(3) DEF_TILE(4) DEF_TILE(5) DEF_TILE(6)

/* One column block: Y columns (ncols of them real) of out. */
static void block(const float *x, int M, int K, const float *w, int Y, int ncols, const float *bias,
                  const float *res, float *out, int ldo) {
    float acc[MAX_ROWS * 64];
    int ntiles = (M + 5) / 6;
    for (int k0 = 0; k0 < K; k0 += KC) {
        int k1 = k0 + KC < K ? k0 + KC : K;
        for (int s = 0; s < Y; s += 16) {
            /* rows in ntiles tiles as even as they go: 16 -> 6, 5, 5 */
            for (int t = 0, r0 = 0; t < ntiles; t++) {
                int nr = M / ntiles + (t < M % ntiles);
                const float *pf = w + (size_t)k1 * Y + (size_t)s * KC;
                const float *xa = x + (size_t)r0 * K, *wb = w + (size_t)k0 * Y + s;
                float *ac = acc + r0 * Y + s;
                switch (nr) {
                case 6: tile_6(xa, K, wb, Y, k0, k1, ac, Y, k0 == 0, pf); break;
                case 5: tile_5(xa, K, wb, Y, k0, k1, ac, Y, k0 == 0, pf); break;
                case 4: tile_4(xa, K, wb, Y, k0, k1, ac, Y, k0 == 0, pf); break;
                case 3: tile_3(xa, K, wb, Y, k0, k1, ac, Y, k0 == 0, pf); break;
                case 2: tile_2(xa, K, wb, Y, k0, k1, ac, Y, k0 == 0, pf); break;
                default: tile_1(xa, K, wb, Y, k0, k1, ac, Y, k0 == 0, pf); break;
                }
                r0 += nr;
            }
        }
    }
    for (int r = 0; r < M; r++) {
        float *o = out + (size_t)r * ldo;
        const float *a = acc + r * Y;
        const float *q = res ? res + (size_t)r * ldo : 0;
        for (int j = 0; j < ncols; j++) o[j] = a[j] + (bias ? bias[j] : 0.f) + (q ? q[j] : 0.f);
    }
}

/* Returns 0, or -1 for arguments it does not take (then it writes nothing). */
int skinny_linear(const float *x, int M, int K, const float *w, int N, int Y, const float *bias,
                  const float *res, float *out, int threads) {
    if (M < 1 || M > MAX_ROWS || K < 1 || N < 1 || Y < 16 || Y > 64 || Y % 16 || threads < 1) return -1;
    int nblocks = (N + Y - 1) / Y;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int b = 0; b < nblocks; b++) {
        int c0 = b * Y;
        int nc = N - c0 < Y ? N - c0 : Y;
        block(x, M, K, w + (size_t)b * K * Y, Y, nc, bias ? bias + c0 : 0, res ? res + c0 : 0, out + c0, N);
    }
    return 0;
}
