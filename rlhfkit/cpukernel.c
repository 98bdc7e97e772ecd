/* A decode step's kernels over oneDNN's packed decode weights, for AVX2 + FMA CPUs (and AVX-512).
 *
 * skinny_linear: out[M, N] = x[M, K] @ W + bias (+ residual) (optionally its tanh GELU), M small (a
 * decode step: one token per row), W in the blocked layout oneDNN's reorder gives a decode weight:
 * (ceil(N / Y), K, Y) floats, Y output columns innermost, zeros past N in the last block.
 * skinny_linear512 is the same product for up to 128 rows on blocks of 64 with AVX-512 (linear_rows
 * picks the form: the AVX-512 one on blocks of 64 wherever the CPU has it), and
 * decode_attention a step's attention over the KV cache, attention_forward and attention_backward
 * the causal attention of training forwards over whole sequences. rlhfkit/cpukernel.py compiles this file
 * with the system C compiler on first use and calls it through ctypes; see that module for why.
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
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#define KC 256
#define MAX_ROWS 16

/* exp(x) for x <= 0, Cephes' polynomial; -inf gives 0. */
static inline __m256 exp8(__m256 x) {
    __m256 zero = _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3365447505531f));
    __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, z, x), _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(zero, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* tanh(c (x + k x^3)) of 8 floats, the one form both directions of the GELU use. */
static inline __m256 gelu_tanh8(__m256 x) {
    const __m256 c = _mm256_set1_ps(0.7978845608028654f), k = _mm256_set1_ps(0.044715f);
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    __m256 u = _mm256_mul_ps(c, _mm256_fmadd_ps(_mm256_mul_ps(k, x), _mm256_mul_ps(x, x), x));
    __m256 e = exp8(_mm256_mul_ps(_mm256_set1_ps(-2.0f), _mm256_andnot_ps(sign, u)));
    __m256 t = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
    return _mm256_or_ps(t, _mm256_and_ps(sign, u));
}

/* tanh-approximated GELU of n floats from src into dst (may be the same), as GPT-2's gelu_new:
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2|u|). */
static inline __m256 gelu8(__m256 x) {
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    return _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, gelu_tanh8(x)));
}

/* (masked loads and stores only for a last partial vector: AMD CPUs microcode the masked store) */
static inline void gelu_row(const float *src, float *dst, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(dst + j, gelu8(_mm256_loadu_ps(src + j)));
    if (j < n) {
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_maskstore_ps(dst + j, m, gelu8(_mm256_maskload_ps(src + j, m)));
    }
}

/* d gelu(x) / dx * g of n floats into dx: 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3k x^2). */
static inline __m256 gelu_grad8(__m256 g, __m256 x) {
    const __m256 c = _mm256_set1_ps(0.7978845608028654f), k3 = _mm256_set1_ps(3 * 0.044715f);
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    __m256 t = gelu_tanh8(x);
    __m256 du = _mm256_mul_ps(c, _mm256_fmadd_ps(k3, _mm256_mul_ps(x, x), one));
    __m256 d = _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_mul_ps(_mm256_fnmadd_ps(t, t, one), du));
    return _mm256_mul_ps(_mm256_fmadd_ps(half, _mm256_add_ps(one, t), d), g);
}

static inline void gelu_grad_row(const float *g, const float *src, float *dx, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(dx + j, gelu_grad8(_mm256_loadu_ps(g + j), _mm256_loadu_ps(src + j)));
    if (j < n) {
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_maskstore_ps(dx + j, m, gelu_grad8(_mm256_maskload_ps(g + j, m), _mm256_maskload_ps(src + j, m)));
    }
}

/* One output row of a column block: out = acc + bias (+ residual); with act, GELU of it too, into
 * act_out where given (the pre-activation stays in out), else in place. */
static inline void epilogue(const float *a, int ncols, const float *bias, const float *q, float *o, int act,
                            float *act_out) {
    for (int j = 0; j < ncols; j++) o[j] = a[j] + (bias ? bias[j] : 0.f) + (q ? q[j] : 0.f);
    if (act) gelu_row(o, act_out ? act_out : o, ncols);
}

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
                  const float *res, float *out, int ldo, int act, float *act_out) {
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
        epilogue(acc + r * Y, ncols, bias, res ? res + (size_t)r * ldo : 0, o, act,
                 act_out ? act_out + (size_t)r * ldo : 0);
    }
}

/* Returns 0, or -1 for arguments it does not take (then it writes nothing). */
int skinny_linear(const float *x, int M, int K, const float *w, int N, int Y, const float *bias,
                  const float *res, float *out, int act, float *act_out, int threads) {
    if (M < 1 || M > MAX_ROWS || K < 1 || N < 1 || Y < 16 || Y > 64 || Y % 16 || threads < 1) return -1;
    int nblocks = (N + Y - 1) / Y;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int b = 0; b < nblocks; b++) {
        int c0 = b * Y;
        int nc = N - c0 < Y ? N - c0 : Y;
        block(x, M, K, w + (size_t)b * K * Y, Y, nc, bias ? bias + c0 : 0, res ? res + c0 : 0, out + c0, N, act,
              act_out ? act_out + c0 : 0);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * One decode step's attention: each (row, head) has one query against the n keys and values its
 * cache holds. Done as batched matmuls, it is a softmax between two calls of B*H tiny products,
 * each paying the library's per-matrix cost and reading the cache through strided views; here each
 * (row, head) is one thread's pass over its keys, then over its values (fixed order: the same bits
 * at any thread count).
 */
/* One (row, head): s holds room for n rounded up to 8. Inlined with hs = 64 for the GPT-2 shapes. */
static inline __attribute__((always_inline)) void head_attention(
    const float *q, const float *k, const float *v, int hs, int n, const unsigned char *invalid, float scale,
    float *s, float *y) {
    int nv = hs / 8;
    float mx = -INFINITY;
    int j = 0;
    for (; j + 4 <= n; j += 4) { /* four keys at a time: four independent FMA chains */
        const float *kj = k + (size_t)j * hs;
        __m256 q0 = _mm256_loadu_ps(q);
        __m256 d0 = _mm256_mul_ps(q0, _mm256_loadu_ps(kj)), d1 = _mm256_mul_ps(q0, _mm256_loadu_ps(kj + hs));
        __m256 d2 = _mm256_mul_ps(q0, _mm256_loadu_ps(kj + 2 * hs)), d3 = _mm256_mul_ps(q0, _mm256_loadu_ps(kj + 3 * hs));
        for (int c = 1; c < nv; c++) {
            __m256 qc = _mm256_loadu_ps(q + 8 * c);
            d0 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kj + 8 * c), d0);
            d1 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kj + hs + 8 * c), d1);
            d2 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kj + 2 * hs + 8 * c), d2);
            d3 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kj + 3 * hs + 8 * c), d3);
        }
        s[j] = scale * hsum8(d0);
        s[j + 1] = scale * hsum8(d1);
        s[j + 2] = scale * hsum8(d2);
        s[j + 3] = scale * hsum8(d3);
    }
    for (; j < n; j++) {
        const float *kj = k + (size_t)j * hs;
        __m256 d = _mm256_mul_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(kj));
        for (int c = 1; c < nv; c++) d = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), _mm256_loadu_ps(kj + 8 * c), d);
        s[j] = scale * hsum8(d);
    }
    for (j = 0; j < n; j++) {
        if (invalid && invalid[j])
            s[j] = -INFINITY;
        else
            mx = s[j] > mx ? s[j] : mx;
    }
    int n8 = (n + 7) & ~7;
    for (int j = n; j < n8; j++) s[j] = -INFINITY;
    __m256 m = _mm256_set1_ps(mx), tot = _mm256_setzero_ps();
    for (int j = 0; j < n8; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
        _mm256_storeu_ps(s + j, e);
        tot = _mm256_add_ps(tot, e);
    }
    float inv = 1.0f / hsum8(tot);
    for (int c0 = 0; c0 < nv; c0 += 8) {
        int w = nv - c0 < 8 ? nv - c0 : 8;
        __m256 acc[8];
        for (int c = 0; c < w; c++) acc[c] = _mm256_setzero_ps();
        for (int j = 0; j < n; j++) {
            __m256 p = _mm256_set1_ps(s[j]);
            const float *vj = v + (size_t)j * hs + 8 * c0;
            for (int c = 0; c < w; c++) acc[c] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 8 * c), acc[c]);
        }
        for (int c = 0; c < w; c++) _mm256_storeu_ps(y + 8 * (c0 + c), _mm256_mul_ps(acc[c], _mm256_set1_ps(inv)));
    }
}

/* y[b, h*hs : (h+1)*hs] = softmax_j(scale * q_bh . k_bh[j]) @ v_bh over j < n, leaving out j where
 * invalid[b * ldm + j] (invalid may be NULL). q_bh = q + b*ldq + h*hs; k_bh = k + (b*H + h)*ldkv,
 * rows of hs floats, v_bh likewise from v. Returns 0, or -1 for arguments it does not take. */
int decode_attention(const float *q, int ldq, const float *k, const float *v, long ldkv, int B, int H, int hs,
                     int n, const unsigned char *invalid, int ldm, float scale, float *y, int ldy, int threads) {
    if (B < 1 || H < 1 || hs < 8 || hs % 8 || n < 1 || n > 16384 || threads < 1) return -1;
#pragma omp parallel num_threads(threads)
    {
        float *s = (float *)__builtin_alloca(sizeof(float) * (size_t)((n + 7) & ~7));
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H;
            const float *qb = q + (size_t)b * ldq + (size_t)h * hs;
            const float *kb = k + (size_t)bh * ldkv, *vb = v + (size_t)bh * ldkv;
            const unsigned char *m = invalid ? invalid + (size_t)b * ldm : 0;
            float *yb = y + (size_t)b * ldy + (size_t)h * hs;
            if (hs == 64)
                head_attention(qb, kb, vb, 64, n, m, scale, s, yb);
            else
                head_attention(qb, kb, vb, hs, n, m, scale, s, yb);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The same product for AVX-512 CPUs and wider decodes (up to MAX_ROWS_512 rows), on blocks of
 * Y = 64 columns: a block's row is four 16-float registers, and tiles of up to 6 rows keep 24
 * accumulators. Compiled for AVX-512 by function attribute (the file's flags stay AVX2), called
 * only where the CPU has it.
 */
#define MAX_ROWS_512 128
#define A512 __attribute__((target("avx512f,fma")))

#define DEF_TILE512(NR)                                                                           \
    static inline A512 __attribute__((always_inline)) void tile512_##NR(                          \
        const float *xa, int ldx, const float *w, int k0, int k1, float *acc, int first, const float *pf) { \
        __m512 c0[NR], c1[NR], c2[NR], c3[NR];                                                    \
        for (int r = 0; r < NR; r++) {                                                            \
            if (first) {                                                                          \
                c0[r] = c1[r] = c2[r] = c3[r] = _mm512_setzero_ps();                              \
            } else {                                                                              \
                c0[r] = _mm512_loadu_ps(acc + r * 64);                                            \
                c1[r] = _mm512_loadu_ps(acc + r * 64 + 16);                                       \
                c2[r] = _mm512_loadu_ps(acc + r * 64 + 32);                                       \
                c3[r] = _mm512_loadu_ps(acc + r * 64 + 48);                                       \
            }                                                                                     \
        }                                                                                         \
        for (int k = k0; k < k1; k++, w += 64) {                                                  \
            __m512 b0 = _mm512_loadu_ps(w), b1 = _mm512_loadu_ps(w + 16);                         \
            __m512 b2 = _mm512_loadu_ps(w + 32), b3 = _mm512_loadu_ps(w + 48);                    \
            if (pf) {                                                                             \
                const char *p = (const char *)(pf + (size_t)(k - k0) * 64);                       \
                _mm_prefetch(p, _MM_HINT_T1); _mm_prefetch(p + 64, _MM_HINT_T1);                  \
                _mm_prefetch(p + 128, _MM_HINT_T1); _mm_prefetch(p + 192, _MM_HINT_T1);           \
            }                                                                                     \
            for (int r = 0; r < NR; r++) {                                                        \
                __m512 a = _mm512_set1_ps(xa[(size_t)r * ldx + k]);                               \
                c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);                                            \
                c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);                                            \
                c2[r] = _mm512_fmadd_ps(a, b2, c2[r]);                                            \
                c3[r] = _mm512_fmadd_ps(a, b3, c3[r]);                                            \
            }                                                                                     \
        }                                                                                         \
        for (int r = 0; r < NR; r++) {                                                            \
            _mm512_storeu_ps(acc + r * 64, c0[r]);                                                \
            _mm512_storeu_ps(acc + r * 64 + 16, c1[r]);                                           \
            _mm512_storeu_ps(acc + r * 64 + 32, c2[r]);                                           \
            _mm512_storeu_ps(acc + r * 64 + 48, c3[r]);                                           \
        }                                                                                         \
    }
DEF_TILE512(1) DEF_TILE512(2) DEF_TILE512(3) DEF_TILE512(4) DEF_TILE512(5) DEF_TILE512(6)

static A512 __attribute__((noinline)) void block512(const float *x, int M, int K, const float *w, int ncols,
                                                    const float *bias, const float *res, float *out, int ldo,
                                                    int act, float *act_out) {
    float acc[MAX_ROWS_512 * 64];
    int ntiles = (M + 5) / 6;
    for (int k0 = 0; k0 < K; k0 += KC) {
        int k1 = k0 + KC < K ? k0 + KC : K;
        /* the next chunk, fetched by the first tile; after the last, the next block's first (blocks lie
         * one after another, as in the AVX2 form: prefetches past the weight's end do not fault) */
        const float *pf = w + (size_t)k1 * 64;
        for (int t = 0, r0 = 0; t < ntiles; t++) {
            int nr = M / ntiles + (t < M % ntiles);
            const float *xa = x + (size_t)r0 * K, *wb = w + (size_t)k0 * 64;
            const float *p = t == 0 ? pf : 0;
            float *ac = acc + r0 * 64;
            switch (nr) {
            case 6: tile512_6(xa, K, wb, k0, k1, ac, k0 == 0, p); break;
            case 5: tile512_5(xa, K, wb, k0, k1, ac, k0 == 0, p); break;
            case 4: tile512_4(xa, K, wb, k0, k1, ac, k0 == 0, p); break;
            case 3: tile512_3(xa, K, wb, k0, k1, ac, k0 == 0, p); break;
            case 2: tile512_2(xa, K, wb, k0, k1, ac, k0 == 0, p); break;
            default: tile512_1(xa, K, wb, k0, k1, ac, k0 == 0, p); break;
            }
            r0 += nr;
        }
    }
    for (int r = 0; r < M; r++) {
        float *o = out + (size_t)r * ldo;
        epilogue(acc + r * 64, ncols, bias, res ? res + (size_t)r * ldo : 0, o, act,
                 act_out ? act_out + (size_t)r * ldo : 0);
    }
}

/* skinny_linear for up to MAX_ROWS_512 rows on blocks of 64 columns, with AVX-512; the caller
 * checks the CPU. Returns 0, or -1 for arguments it does not take. */
int skinny_linear512(const float *x, int M, int K, const float *w, int N, int Y, const float *bias,
                     const float *res, float *out, int act, float *act_out, int threads) {
    if (M < 1 || M > MAX_ROWS_512 || K < 1 || N < 1 || Y != 64 || threads < 1) return -1;
    int nblocks = (N + 63) / 64;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int b = 0; b < nblocks; b++) {
        int c0 = b * 64;
        int nc = N - c0 < 64 ? N - c0 : 64;
        block512(x, M, K, w + (size_t)b * K * 64, nc, bias ? bias + c0 : 0, res ? res + c0 : 0, out + c0, N, act,
                 act_out ? act_out + c0 : 0);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The tanh GELU of a training forward and its backward, elementwise over n floats in chunks of
 * 4096 (one thread each). ATen's runs at about one element per nanosecond on the CPUs measured,
 * where a matmul's output is written ten times faster.
 */
#define GELU_CHUNK 4096

int gelu_forward(const float *x, float *y, long n, int threads) {
    if (n < 0 || threads < 1) return -1;
    long chunks = (n + GELU_CHUNK - 1) / GELU_CHUNK;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long i = 0; i < chunks; i++) {
        long j = i * GELU_CHUNK;
        gelu_row(x + j, y + j, (int)(n - j < GELU_CHUNK ? n - j : GELU_CHUNK));
    }
    return 0;
}

int gelu_backward(const float *g, const float *x, float *dx, long n, int threads) {
    if (n < 0 || threads < 1) return -1;
    long chunks = (n + GELU_CHUNK - 1) / GELU_CHUNK;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long i = 0; i < chunks; i++) {
        long j = i * GELU_CHUNK;
        gelu_grad_row(g + j, x + j, dx + j, (int)(n - j < GELU_CHUNK ? n - j : GELU_CHUNK));
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Attention over whole sequences (training forwards, scoring), forward and backward: queries at
 * positions off .. off+Tq-1 against keys 0 .. Tk-1, query i seeing key j when j <= off + i (causal)
 * and, where a mask is given, mask[i, j]. SDPA's CPU flash kernel cuts a short sequence into
 * blocks of 32 queries and calls the BLAS for each tiny product; here each (row, head) is one
 * thread's task (fixed order: the same bits at any thread count), with its keys transposed into a
 * scratch so that the products run on the register tiles below, and the causal part skipped in
 * blocks of 6 queries. The backward recomputes the probabilities from the saved log-sum-exp.
 */
#define ATT_MAX_T 256

/* C[R x n] = A[R x (k0 .. k1)] @ Bm[(k0 .. k1) x n] for n a multiple of 16: A's element (r, k) at
 * A[r * lda + k * ak] (ak = 1: rows; lda = 1: A stored transposed), Bm's rows ldb apart, C's ldc. */
#define DEF_MM(NR)                                                                                \
    static inline void mm_##NR(const float *A, long lda, long ak, const float *Bm, long ldb, int k0,  \
                               int k1, float *C, long ldc, int n) {                               \
        for (int c = 0; c < n; c += 16) {                                                         \
            __m256 c0[NR], c1[NR];                                                                \
            for (int r = 0; r < NR; r++) c0[r] = c1[r] = _mm256_setzero_ps();                     \
            const float *b = Bm + (size_t)k0 * ldb + c, *a = A + (size_t)k0 * ak;                 \
            for (int k = k0; k < k1; k++, b += ldb, a += ak) {                                    \
                __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);                      \
                for (int r = 0; r < NR; r++) {                                                    \
                    __m256 av = _mm256_broadcast_ss(a + (size_t)r * lda);                         \
                    c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);                                       \
                    c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);                                       \
                }                                                                                 \
            }                                                                                     \
            for (int r = 0; r < NR; r++) {                                                        \
                _mm256_storeu_ps(C + (size_t)r * ldc + c, c0[r]);                                 \
                _mm256_storeu_ps(C + (size_t)r * ldc + c + 8, c1[r]);                             \
            }                                                                                     \
        }                                                                                         \
    }
DEF_MM(1) DEF_MM(2) DEF_MM(3) DEF_MM(4) DEF_MM(5) DEF_MM(6)

static void mm_rows(int nr, const float *A, long lda, long ak, const float *Bm, long ldb, int k0, int k1, float *C,
                    long ldc, int n) {
    switch (nr) {
    case 6: mm_6(A, lda, ak, Bm, ldb, k0, k1, C, ldc, n); break;
    case 5: mm_5(A, lda, ak, Bm, ldb, k0, k1, C, ldc, n); break;
    case 4: mm_4(A, lda, ak, Bm, ldb, k0, k1, C, ldc, n); break;
    case 3: mm_3(A, lda, ak, Bm, ldb, k0, k1, C, ldc, n); break;
    case 2: mm_2(A, lda, ak, Bm, ldb, k0, k1, C, ldc, n); break;
    default: mm_1(A, lda, ak, Bm, ldb, k0, k1, C, ldc, n); break;
    }
}

static inline int up16(int n) { return (n + 15) & ~15; }

/* t[d * ldt + j] = x[j * ldx + d] for j < n, d < hs (a multiple of 8); zeros for n <= j < ldt.
 * Eight rows at a time through an 8 x 8 register transpose. */
static void transpose_into(const float *x, long ldx, int n, int hs, float *t, int ldt) {
    int j0 = 0;
    for (; j0 + 8 <= n; j0 += 8) {
        for (int d0 = 0; d0 < hs; d0 += 8) {
            __m256 r[8], u[8];
            for (int l = 0; l < 8; l++) r[l] = _mm256_loadu_ps(x + (size_t)(j0 + l) * ldx + d0);
            for (int l = 0; l < 8; l += 2) {
                u[l] = _mm256_unpacklo_ps(r[l], r[l + 1]);
                u[l + 1] = _mm256_unpackhi_ps(r[l], r[l + 1]);
            }
            for (int l = 0; l < 8; l += 4) {
                r[l] = _mm256_shuffle_ps(u[l], u[l + 2], 0x44);
                r[l + 1] = _mm256_shuffle_ps(u[l], u[l + 2], 0xEE);
                r[l + 2] = _mm256_shuffle_ps(u[l + 1], u[l + 3], 0x44);
                r[l + 3] = _mm256_shuffle_ps(u[l + 1], u[l + 3], 0xEE);
            }
            /* r[0..3] hold columns 0,1,2,3 of rows 0-3 (low lanes) and 4-7 of them (high), r[4..7] rows 4-7 */
            for (int l = 0; l < 4; l++) {
                _mm256_storeu_ps(t + (size_t)(d0 + l) * ldt + j0, _mm256_permute2f128_ps(r[l], r[l + 4], 0x20));
                _mm256_storeu_ps(t + (size_t)(d0 + l + 4) * ldt + j0, _mm256_permute2f128_ps(r[l], r[l + 4], 0x31));
            }
        }
    }
    for (int d = 0; d < hs; d++) {
        float *row = t + (size_t)d * ldt;
        for (int j = j0; j < n; j++) row[j] = x[(size_t)j * ldx + d];
        for (int j = n; j < ldt; j++) row[j] = 0.f;
    }
}

/* The last key query i sees, plus one (0: none). */
static inline int keys_seen(int i, int off, int Tk) { return off + i + 1 < Tk ? off + i + 1 : Tk; }

/* Row i of the scores s (n16 wide) into probabilities exp(scale s - shift), zero where not seen;
 * shift is the row's max (then returns the sum) or its saved log-sum-exp (backward). */
static inline float probabilities(float *s, int n16, int seen, const unsigned char *mrow, float scale, int have_shift,
                                  float *shift) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY), sc = _mm256_set1_ps(scale);
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 vmax = ninf;
    for (int j = 0; j < n16; j += 8) {
        /* lanes j + l < seen, and mask[j + l] where there is a mask */
        __m256i idx = _mm256_add_epi32(iota, _mm256_set1_epi32(j));
        __m256 ok = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(seen), idx));
        if (mrow && j < seen) {
            unsigned char bytes[8] = {0};
            int w = seen - j < 8 ? seen - j : 8;
            __builtin_memcpy(bytes, mrow + j, (size_t)w);
            __m256i mb = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)bytes));
            ok = _mm256_and_ps(ok, _mm256_castsi256_ps(_mm256_cmpgt_epi32(mb, _mm256_setzero_si256())));
        }
        __m256 x = _mm256_blendv_ps(ninf, _mm256_mul_ps(sc, _mm256_loadu_ps(s + j)), ok);
        _mm256_storeu_ps(s + j, x);
        vmax = _mm256_max_ps(vmax, x);
    }
    if (!have_shift) {
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        *shift = _mm_cvtss_f32(m4);
    }
    if (*shift == -INFINITY) { /* a query that sees no key: zeros */
        for (int j = 0; j < n16; j++) s[j] = 0.f;
        return 0.f;
    }
    __m256 m = _mm256_set1_ps(*shift), tot = _mm256_setzero_ps();
    for (int j = 0; j < n16; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
        _mm256_storeu_ps(s + j, e);
        tot = _mm256_add_ps(tot, e);
    }
    return hsum8(tot);
}

/* The sizes attention_forward and attention_backward take. */
static int attention_takes(int B, int H, int Tq, int Tk, int hs, int off, int threads) {
    return B >= 1 && H >= 1 && Tq >= 1 && Tk >= 1 && Tq <= ATT_MAX_T && Tk <= ATT_MAX_T && off >= 0 && hs >= 16
           && hs % 16 == 0 && hs <= 256 && threads >= 1;
}

/* st: strides (batch, head, position) of q, k, v, o in that order; the last dimension is contiguous.
 * lse (B, H, Tq) contiguous, or NULL. mask: NULL, or bytes at mask + b * mask_sb + i * Tk + j.
 * Returns 0, -1 for arguments it does not take (then it writes nothing), -2 where it could not
 * allocate its scratch. */
int attention_forward(const float *q, const float *k, const float *v, float *o, float *lse, const long *st, int B,
                      int H, int Tq, int Tk, int hs, int off, const unsigned char *mask, long mask_sb, float scale,
                      int threads) {
    if (!attention_takes(B, H, Tq, Tk, hs, off, threads)) return -1;
    int nk = up16(Tk), failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *kt = (float *)malloc(sizeof(float) * ((size_t)hs * nk + (size_t)6 * nk)), *s = kt + (size_t)hs * nk;
        if (!kt) failed = 1;
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            if (!kt) continue;
            int b = bh / H, h = bh % H;
            const float *qb = q + b * st[0] + h * st[1], *kb = k + b * st[3] + h * st[4];
            const float *vb = v + b * st[6] + h * st[7];
            float *ob = o + b * st[9] + h * st[10];
            const unsigned char *mb = mask ? mask + b * mask_sb : 0;
            transpose_into(kb, st[5], Tk, hs, kt, nk);
            for (int i0 = 0; i0 < Tq; i0 += 6) {
                int nr = Tq - i0 < 6 ? Tq - i0 : 6;
                int seen = keys_seen(i0 + nr - 1, off, Tk), n16 = up16(seen);
                mm_rows(nr, qb + i0 * st[2], st[2], 1, kt, nk, 0, hs, s, nk, n16);
                float inv[6];
                for (int r = 0; r < nr; r++) {
                    int i = i0 + r;
                    float mx;
                    float tot = probabilities(s + r * nk, n16, keys_seen(i, off, Tk), mb ? mb + (size_t)i * Tk : 0,
                                              scale, 0, &mx);
                    inv[r] = tot > 0.f ? 1.0f / tot : 0.f;
                    if (lse) lse[(size_t)bh * Tq + i] = tot > 0.f ? mx + logf(tot) : -INFINITY;
                }
                float *orow = ob + i0 * st[11];
                mm_rows(nr, s, nk, 1, vb, st[8], 0, seen, orow, st[11], hs);
                for (int r = 0; r < nr; r++) {
                    __m256 f = _mm256_set1_ps(inv[r]);
                    float *y = orow + r * st[11];
                    for (int d = 0; d < hs; d += 8) _mm256_storeu_ps(y + d, _mm256_mul_ps(_mm256_loadu_ps(y + d), f));
                }
            }
        }
        free(kt);
    }
    return failed ? -2 : 0;
}

/* Gradients of attention_forward's output: dq (Tq rows), dk and dv (Tk rows). st: strides of q, k,
 * v, o, dout, dq, dk, dv (three each, as above); lse as attention_forward saved it. */
int attention_backward(const float *q, const float *k, const float *v, const float *o, const float *dout,
                       const float *lse, float *dq, float *dk, float *dv, const long *st, int B, int H, int Tq,
                       int Tk, int hs, int off, const unsigned char *mask, long mask_sb, float scale, int threads) {
    if (!attention_takes(B, H, Tq, Tk, hs, off, threads)) return -1;
    int nk = up16(Tk), failed = 0;
    size_t scratch = (size_t)2 * hs * nk + (size_t)2 * Tq * nk + (size_t)Tq;
#pragma omp parallel num_threads(threads)
    {
        float *buf = (float *)malloc(sizeof(float) * scratch);
        float *kt = buf, *vt = kt + (size_t)hs * nk, *p = vt + (size_t)hs * nk, *ds = p + (size_t)Tq * nk;
        float *delta = ds + (size_t)Tq * nk;
        if (!buf) failed = 1;
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            if (!buf) continue;
            int b = bh / H, h = bh % H;
            const float *qb = q + b * st[0] + h * st[1], *kb = k + b * st[3] + h * st[4];
            const float *vb = v + b * st[6] + h * st[7], *ob = o + b * st[9] + h * st[10];
            const float *gb = dout + b * st[12] + h * st[13];
            float *dqb = dq + b * st[15] + h * st[16], *dkb = dk + b * st[18] + h * st[19];
            float *dvb = dv + b * st[21] + h * st[22];
            const unsigned char *mb = mask ? mask + b * mask_sb : 0;
            transpose_into(kb, st[5], Tk, hs, kt, nk);
            transpose_into(vb, st[8], Tk, hs, vt, nk);
            for (int i = 0; i < Tq; i++) { /* delta_i = dout_i . o_i */
                const float *gi = gb + i * st[14], *oi = ob + i * st[11];
                __m256 acc = _mm256_setzero_ps();
                for (int d = 0; d < hs; d += 8)
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(gi + d), _mm256_loadu_ps(oi + d), acc);
                delta[i] = hsum8(acc);
            }
            for (int i0 = 0; i0 < Tq; i0 += 6) {
                int nr = Tq - i0 < 6 ? Tq - i0 : 6;
                int seen = keys_seen(i0 + nr - 1, off, Tk), n16 = up16(seen);
                float *pr = p + (size_t)i0 * nk, *dr = ds + (size_t)i0 * nk;
                mm_rows(nr, qb + i0 * st[2], st[2], 1, kt, nk, 0, hs, pr, nk, n16);
                mm_rows(nr, gb + i0 * st[14], st[14], 1, vt, nk, 0, hs, dr, nk, n16);
                for (int r = 0; r < nr; r++) {
                    int i = i0 + r;
                    float *pi = pr + r * nk, *di = dr + r * nk;
                    float shift = lse[(size_t)bh * Tq + i];
                    probabilities(pi, n16, keys_seen(i, off, Tk), mb ? mb + (size_t)i * Tk : 0, scale, 1, &shift);
                    __m256 dl = _mm256_set1_ps(delta[i]), sc = _mm256_set1_ps(scale);
                    for (int j = 0; j < n16; j += 8) { /* ds = scale * p * (dp - delta) */
                        __m256 pj = _mm256_loadu_ps(pi + j);
                        _mm256_storeu_ps(di + j, _mm256_mul_ps(sc, _mm256_mul_ps(pj, _mm256_sub_ps(_mm256_loadu_ps(di + j), dl))));
                    }
                    for (int j = n16; j < nk; j++) pi[j] = di[j] = 0.f;
                }
                mm_rows(nr, dr, nk, 1, kb, st[5], 0, seen, dqb + i0 * st[17], st[17], hs); /* dq = ds @ k */
            }
            for (int j0 = 0; j0 < Tk; j0 += 6) { /* dk = ds^T @ q, dv = p^T @ dout over the queries that see j0 on */
                int nr = Tk - j0 < 6 ? Tk - j0 : 6;
                int first = j0 - off > 0 ? j0 - off : 0;
                if (first > Tq) first = Tq;
                mm_rows(nr, ds + j0, 1, nk, qb, st[2], first, Tq, dkb + j0 * st[20], st[20], hs);
                mm_rows(nr, p + j0, 1, nk, gb, st[14], first, Tq, dvb + j0 * st[23], st[23], hs);
            }
        }
        free(buf);
    }
    return failed ? -2 : 0;
}

/* ---------------------------------------------------------------------------------------------
 * Sampling one token per row from logits (B, V), as rlhfkit.policy._draw does from probabilities
 * (the inverse CDF at u * total, the first token whose running sum passes it), and the token's
 * log-softmax. One thread's pass per row: the max, exp(z - max) in chunks of 64 with each chunk's
 * sum, then a walk over the chunk sums and into the chunk that holds the draw, where ATen takes a
 * softmax, a float64 cumsum, a search and a second log-softmax pass over the whole (B, V).
 */
#define SAMPLE_CHUNK 64

/* tokens[b], logprob[b] for rows of z ld apart; u[b] in [0, 1). Returns 0, -1 for arguments it
 * does not take, -2 where a row has no finite logit or the scratch could not be allocated. */
int sample_rows(const float *z, long ld, int B, int V, const double *u, long long *tokens, float *logprob,
                int threads) {
    if (B < 1 || V < 1 || ld < V || threads < 1) return -1;
    int nchunk = (V + SAMPLE_CHUNK - 1) / SAMPLE_CHUNK, failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *e = (float *)malloc(sizeof(float) * (size_t)nchunk * SAMPLE_CHUNK);
        double *cs = (double *)malloc(sizeof(double) * (size_t)nchunk);
        if (!e || !cs) failed = 1;
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            if (!e || !cs) continue;
            const float *zr = z + (size_t)b * ld;
            __m256 vm = _mm256_set1_ps(-INFINITY);
            int j8 = 0;
            for (; j8 + 8 <= V; j8 += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(zr + j8));
            float mx = -INFINITY, lanes[8];
            _mm256_storeu_ps(lanes, vm);
            for (int l = 0; l < 8; l++) mx = lanes[l] > mx ? lanes[l] : mx;
            for (; j8 < V; j8++) mx = zr[j8] > mx ? zr[j8] : mx;
            if (!(mx > -INFINITY)) { /* no finite logit */
                failed = 1;
                tokens[b] = 0;
                logprob[b] = NAN;
                continue;
            }
            __m256 m = _mm256_set1_ps(mx);
            double total = 0.0;
            for (int c = 0; c < nchunk; c++) {
                __m256 acc = _mm256_setzero_ps();
                for (int j = c * SAMPLE_CHUNK; j < (c + 1) * SAMPLE_CHUNK; j += 8) {
                    __m256 x;
                    if (j + 8 <= V) {
                        x = _mm256_loadu_ps(zr + j);
                    } else { /* the row's end: -inf past V */
                        float tail[8];
                        for (int l = 0; l < 8; l++) tail[l] = j + l < V ? zr[j + l] : -INFINITY;
                        x = _mm256_loadu_ps(tail);
                    }
                    __m256 ex = exp8(_mm256_sub_ps(x, m));
                    _mm256_storeu_ps(e + j, ex);
                    acc = _mm256_add_ps(acc, ex);
                }
                cs[c] = (double)hsum8(acc);
                total += cs[c];
            }
            double x = u[b] * total;
            if (x >= total) x = nextafter(total, 0.0);
            double cum = 0.0;
            int c = 0;
            while (c < nchunk - 1 && cum + cs[c] <= x) cum += cs[c++];
            int j = c * SAMPLE_CHUNK, last = -1;
            for (; j < V; j++) {
                if (e[j] > 0.f) {
                    last = j;
                    cum += (double)e[j];
                    if (cum > x) break;
                }
            }
            int tok = j < V ? j : last; /* rounding past the end: the last token with mass */
            if (tok < 0) { /* no mass from that chunk on (rounding): the last token with mass */
                for (tok = V - 1; tok > 0 && !(e[tok] > 0.f); tok--) {}
            }
            tokens[b] = tok;
            logprob[b] = (float)((double)zr[tok] - (double)mx - log(total));
        }
        free(e);
        free(cs);
    }
    return failed ? -2 : 0;
}

/* ---------------------------------------------------------------------------------------------
 * A whole GPT-2 block of one decode step (tanh GELU) in one call: from Python each of its dozen
 * ops cost a dispatch about as long as the small kernels themselves (a layer norm over 64 rows of
 * 256 floats, the copy of the new keys and values into the cache, the wrappers of the matmuls).
 */
/* A decode's product on whichever form takes it: the AVX-512 one wherever the CPU has it (``wide``)
 * and the blocks are 64 wide, at any row count (a CPU whose 512-bit FMAs run at twice the rate of
 * its 256-bit ones, as AMD's family 26, gains at 4-16 rows too), else the AVX2 one. */
int linear_rows(const float *x, int M, int K, const float *w, int N, int Y, const float *bias, const float *res,
                float *out, int act, float *act_out, int wide, int threads) {
    if (wide && Y == 64) return skinny_linear512(x, M, K, w, N, Y, bias, res, out, act, act_out, threads);
    return skinny_linear(x, M, K, w, N, Y, bias, res, out, act, act_out, threads);
}

/* y = (x - mean) / sqrt(var + eps) * g + b over each row of D floats (biased variance, as ATen). */
static void layer_norm_rows(const float *x, int M, int D, const float *g, const float *b, float eps, float *y,
                            int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int r = 0; r < M; r++) {
        const float *xr = x + (size_t)r * D;
        float *yr = y + (size_t)r * D;
        double s = 0.0, ss = 0.0;
        for (int j = 0; j < D; j++) s += xr[j];
        float mean = (float)(s / D);
        for (int j = 0; j < D; j++) {
            float c = xr[j] - mean;
            ss += (double)c * c;
        }
        float rstd = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int j = 0; j < D; j++) yr[j] = (xr[j] - mean) * rstd * g[j] + b[j];
    }
}

/* One block for B rows at cache slot t: x (B, D) the residual stream in; x_attn = x + attention,
 * x_out = x_attn + MLP (B, D) out; qkv (B, 3D) out; fc (B, F) out with the activation's input
 * where kept, else NULL; h (B, D), y (B, D), act (B, F) scratch (F: the MLP's width). kv (2, B, H, T, hs): the step's
 * keys and values go to slot t. w holds the 12 tensors of the block in _StepLayer's order (layer
 * norm 1 weight and bias, qkv blocks and bias, projection blocks and bias, layer norm 2, fc,
 * fc projection); ys the block widths of the four packed weights. */
int decode_block(const float *x, float *x_attn, float *x_out, float *qkv, float *fc, float *h, float *y, float *act,
                 const float *const *w, const int *ys, float *kv, int T, int t, const unsigned char *invalid,
                 int ldm, float scale, int B, int D, int H, int F, float eps, int wide, int threads) {
    int hs = D / H;
    if (B < 1 || D < 8 || H < 1 || D % H || hs % 8 || F < 1 || t < 0 || t >= T || threads < 1) return -1;
    layer_norm_rows(x, B, D, w[0], w[1], eps, h, threads);
    if (linear_rows(h, B, D, w[2], 3 * D, ys[0], w[3], 0, qkv, 0, 0, wide, threads)) return -1;
    for (int b = 0; b < B; b++) /* keys and values into slot t */
        for (int kvi = 0; kvi < 2; kvi++)
            for (int hh = 0; hh < H; hh++)
                __builtin_memcpy(kv + ((((size_t)kvi * B + b) * H + hh) * T + t) * hs,
                                 qkv + (size_t)b * 3 * D + (size_t)(kvi + 1) * D + (size_t)hh * hs,
                                 sizeof(float) * (size_t)hs);
    size_t half = (size_t)B * H * T * hs;
    if (decode_attention(qkv, 3 * D, kv, kv + half, (long)T * hs, B, H, hs, t + 1, invalid, ldm, scale, y, D,
                         threads))
        return -1;
    if (linear_rows(y, B, D, w[4], D, ys[1], w[5], x, x_attn, 0, 0, wide, threads)) return -1;
    layer_norm_rows(x_attn, B, D, w[6], w[7], eps, h, threads);
    if (fc) {
        if (linear_rows(h, B, D, w[8], F, ys[2], w[9], 0, fc, 1, act, wide, threads)) return -1;
    } else if (linear_rows(h, B, D, w[8], F, ys[2], w[9], 0, act, 1, 0, wide, threads)) {
        return -1;
    }
    return linear_rows(act, B, F, w[10], D, ys[3], w[11], x_attn, x_out, 0, 0, wide, threads);
}

/* ---------------------------------------------------------------------------------------------
 * The log-probability of a label and the entropy from one log-softmax, over rows of V logits, and
 * the backward of both (rlhfkit.fastgpt2._LogprobsEntropy): ATen takes a log-softmax, an exp, a
 * product, a sum and a gather, each a pass over the (N, V) tensors; here a row is one thread's
 * max, exp-sum and one pass that writes log p and p. The same saved tensors (log p, p).
 */
int logprob_entropy_forward(const float *z, int N, int V, const long long *labels, float *logp, float *p, float *lp,
                            float *ent, int threads) {
    if (N < 1 || V < 1 || threads < 1) return -1;
    int bad = 0;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int r = 0; r < N; r++) {
        const float *zr = z + (size_t)r * V;
        float *lr = logp + (size_t)r * V, *pr = p + (size_t)r * V;
        int j = 0, V8 = V & ~7;
        __m256 vm = _mm256_set1_ps(-INFINITY);
        for (; j < V8; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(zr + j));
        float mx = -INFINITY, lanes[8];
        _mm256_storeu_ps(lanes, vm);
        for (int l = 0; l < 8; l++) mx = lanes[l] > mx ? lanes[l] : mx;
        for (; j < V; j++) mx = zr[j] > mx ? zr[j] : mx;
        __m256 m = _mm256_set1_ps(mx), tot = _mm256_setzero_ps();
        for (j = 0; j < V8; j += 8) {
            __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(zr + j), m));
            _mm256_storeu_ps(pr + j, e);
            tot = _mm256_add_ps(tot, e);
        }
        float sum = hsum8(tot);
        for (; j < V; j++) {
            float tail[8] = {0}, out[8];
            tail[0] = zr[j] - mx;
            _mm256_storeu_ps(out, exp8(_mm256_loadu_ps(tail)));
            pr[j] = out[0];
            sum += out[0];
        }
        float lse = mx + logf(sum), inv = 1.0f / sum;
        __m256 vl = _mm256_set1_ps(lse), vi = _mm256_set1_ps(inv), acc = _mm256_setzero_ps();
        for (j = 0; j < V8; j += 8) {
            __m256 lg = _mm256_sub_ps(_mm256_loadu_ps(zr + j), vl), pj = _mm256_mul_ps(_mm256_loadu_ps(pr + j), vi);
            _mm256_storeu_ps(lr + j, lg);
            _mm256_storeu_ps(pr + j, pj);
            acc = _mm256_fmadd_ps(pj, lg, acc);
        }
        float h = hsum8(acc);
        for (; j < V; j++) {
            lr[j] = zr[j] - lse;
            pr[j] *= inv;
            h += pr[j] * lr[j];
        }
        ent[r] = -h;
        long long y = labels[r];
        if (y < 0 || y >= V) {
            bad = 1;
            lp[r] = NAN;
        } else {
            lp[r] = lr[y];
        }
    }
    return bad ? -2 : 0;
}

/* dz = p * (c - g_ent * log p) + g_lp at the label, c = -(g_lp + g_ent * ent), per row. */
int logprob_entropy_backward(const float *logp, const float *p, const float *ent, const long long *labels,
                             const float *g_lp, const float *g_ent, float *dz, int N, int V, int threads) {
    if (N < 1 || V < 1 || threads < 1) return -1;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int r = 0; r < N; r++) {
        const float *lr = logp + (size_t)r * V, *pr = p + (size_t)r * V;
        float *dr = dz + (size_t)r * V;
        float ge = g_ent[r], c = -(g_lp[r] + ge * ent[r]);
        __m256 vc = _mm256_set1_ps(c), vg = _mm256_set1_ps(ge);
        int j = 0, V8 = V & ~7;
        for (; j < V8; j += 8)
            _mm256_storeu_ps(dr + j, _mm256_mul_ps(_mm256_loadu_ps(pr + j),
                                                   _mm256_fnmadd_ps(vg, _mm256_loadu_ps(lr + j), vc)));
        for (; j < V; j++) dr[j] = pr[j] * (c - ge * lr[j]);
        dr[labels[r]] += g_lp[r];
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * A weight's gradient, c (M, N) = x^T g for x (K, M) and g (K, N): the update's products over the
 * long token dimension (K = a minibatch's tokens), where the BLAS reaches 180-190 GFLOP/s on the
 * AVX-512 AMD CPU measured. Register tiles of 6 rows x 64 columns (24 accumulators of 16 floats),
 * the tokens in chunks of WKC so that a chunk of g's column block stays in cache while every row
 * tile of c passes over it; each thread takes whole column blocks (fixed order: the same bits at
 * any thread count). AVX-512 by function attribute, called only where the CPU has it.
 */
#define WKC 128
/* c rows i0 .. i0+NR-1, columns j0 .. j0+63 (+)= sum over k of x[k][i] g[k][j] */
#define DEF_WT(NR) \
static A512 inline void wt_##NR(const float *x, long ldx, const float *g, long ldg, int k0, int k1, float *c, long ldc, int first) { \
    __m512 a0[NR], a1[NR], a2[NR], a3[NR]; \
    for (int r = 0; r < NR; r++) { \
        if (first) { a0[r] = a1[r] = a2[r] = a3[r] = _mm512_setzero_ps(); } \
        else { a0[r] = _mm512_loadu_ps(c + r * ldc); a1[r] = _mm512_loadu_ps(c + r * ldc + 16); \
               a2[r] = _mm512_loadu_ps(c + r * ldc + 32); a3[r] = _mm512_loadu_ps(c + r * ldc + 48); } } \
    const float *xk = x + (size_t)k0 * ldx, *gk = g + (size_t)k0 * ldg; \
    for (int k = k0; k < k1; k++, xk += ldx, gk += ldg) { \
        __m512 b0 = _mm512_loadu_ps(gk), b1 = _mm512_loadu_ps(gk + 16), b2 = _mm512_loadu_ps(gk + 32), b3 = _mm512_loadu_ps(gk + 48); \
        for (int r = 0; r < NR; r++) { \
            __m512 a = _mm512_set1_ps(xk[r]); \
            a0[r] = _mm512_fmadd_ps(a, b0, a0[r]); a1[r] = _mm512_fmadd_ps(a, b1, a1[r]); \
            a2[r] = _mm512_fmadd_ps(a, b2, a2[r]); a3[r] = _mm512_fmadd_ps(a, b3, a3[r]); } } \
    for (int r = 0; r < NR; r++) { _mm512_storeu_ps(c + r * ldc, a0[r]); _mm512_storeu_ps(c + r * ldc + 16, a1[r]); \
        _mm512_storeu_ps(c + r * ldc + 32, a2[r]); _mm512_storeu_ps(c + r * ldc + 48, a3[r]); } }
DEF_WT(1) DEF_WT(2) DEF_WT(3) DEF_WT(4) DEF_WT(5) DEF_WT(6)

/* One column block j0 .. j0+63 of c, every row, over all K tokens. */
static A512 __attribute__((noinline)) void wg_block512(const float *x, long ldx, const float *g, long ldg, int K, int M,
                                                      int N, int j0, float *c) {
    for (int k0 = 0; k0 < K; k0 += WKC) {
        int k1 = k0 + WKC < K ? k0 + WKC : K;
        for (int i0 = 0; i0 < M; i0 += 6) {
            int nr = M - i0 < 6 ? M - i0 : 6;
            const float *xa = x + i0, *ga = g + j0;
            float *cc = c + (size_t)i0 * N + j0;
            switch (nr) {
            case 6: wt_6(xa, ldx, ga, ldg, k0, k1, cc, N, k0 == 0); break;
            case 5: wt_5(xa, ldx, ga, ldg, k0, k1, cc, N, k0 == 0); break;
            case 4: wt_4(xa, ldx, ga, ldg, k0, k1, cc, N, k0 == 0); break;
            case 3: wt_3(xa, ldx, ga, ldg, k0, k1, cc, N, k0 == 0); break;
            case 2: wt_2(xa, ldx, ga, ldg, k0, k1, cc, N, k0 == 0); break;
            default: wt_1(xa, ldx, ga, ldg, k0, k1, cc, N, k0 == 0); break;
            }
        }
    }
}

/* c (M, N) = x^T g, x rows ldx apart, g rows ldg apart. Returns 0, or -1 for arguments it does not
 * take (N not a multiple of 64). */
int weight_grad512(const float *x, long ldx, const float *g, long ldg, int K, int M, int N, float *c, int threads) {
    if (N < 64 || N % 64 || M < 1 || K < 1 || threads < 1) return -1;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int jb = 0; jb < N / 64; jb++) wg_block512(x, ldx, g, ldg, K, M, N, jb * 64, c);
    return 0;
}
