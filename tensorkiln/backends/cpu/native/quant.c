/* uint8 <-> float32 conversions and the quantized global average pool (tensorkiln, CPU backend).
 *
 * Quantize: y = clamp(round_half_even(x / scale) + zp, 0, 255), computed as the float32 division,
 * rounding and addition PyTorch's path does, so both give the same codes. Dequantize:
 * y = (float(q) - zp) * scale in float32. Both are elementwise over dense memory (any layout).
 *
 * Global average pool on uint8 NHWC codes: per image and channel the exact integer sum over the
 * pixels, then y = sat_u8(round_half_even((sum - HW * xz) * m) + yz) with m = xs / (HW * ys)
 * (float32, made by the caller), or the float (sum - HW * xz) * m for a float32 output.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

void tk_quantize_u8(const float *x, uint8_t *y, long n, float scale, float zp) {
    const __m256 s = _mm256_set1_ps(scale), z = _mm256_set1_ps(zp), lo = _mm256_setzero_ps(),
                 hi = _mm256_set1_ps(255.f);
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (long i0 = 0; i0 < n; i0 += 4096) {
        long i1 = i0 + 4096 < n ? i0 + 4096 : n, i = i0;
        for (; i + 8 <= i1; i += 8) {
            __m256 v = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, z), lo), hi);
            __m256i q = _mm256_cvtps_epi32(v);
            __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
            _mm_storel_epi64((__m128i *)(y + i), _mm_packus_epi16(w, w));
        }
        for (; i < i1; i++) {
            float v = __builtin_nearbyintf(x[i] / scale) + zp;
            v = v > 0.f ? v : 0.f; /* NaN -> 0, as the vector path */
            y[i] = (uint8_t)(v < 255.f ? v : 255.f);
        }
    }
}

void tk_dequantize_u8(const uint8_t *x, float *y, long n, float scale, float zp) {
    const __m256 s = _mm256_set1_ps(scale), z = _mm256_set1_ps(zp);
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (long i0 = 0; i0 < n; i0 += 4096) {
        long i1 = i0 + 4096 < n ? i0 + 4096 : n, i = i0;
        for (; i + 8 <= i1; i += 8) {
            __m128i b = _mm_loadl_epi64((const __m128i *)(x + i));
            __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_sub_ps(v, z), s));
        }
        for (; i < i1; i++) y[i] = ((float)x[i] - zp) * scale;
    }
}

/* x: [N][HW][C] uint8 (channels-last, dense); y: [N][C] uint8 (out_u8) or float32 */
void tk_qgap_nhwc_u8(const uint8_t *x, void *y, int N, int HW, int C, int xz, float m, float yz, int out_u8) {
    #pragma omp parallel for schedule(static) if ((long)N * HW * C > 65536)
    for (int n = 0; n < N; n++) {
        const uint8_t *xn = x + (long)n * HW * C;
        for (int c0 = 0; c0 < C; c0 += 256) {
            int32_t acc[256];
            const int nc = C - c0 < 256 ? C - c0 : 256;
            memset(acc, 0, sizeof(acc));
            for (int p = 0; p < HW; p++) {
                const uint8_t *row = xn + (long)p * C + c0;
                int c = 0;
                for (; c + 16 <= nc; c += 16) {
                    __m128i b = _mm_loadu_si128((const __m128i *)(row + c));
                    __m256i lo = _mm256_cvtepu8_epi32(b), hi = _mm256_cvtepu8_epi32(_mm_srli_si128(b, 8));
                    _mm256_storeu_si256((__m256i *)(acc + c), _mm256_add_epi32(_mm256_loadu_si256((__m256i *)(acc + c)), lo));
                    _mm256_storeu_si256((__m256i *)(acc + c + 8),
                                        _mm256_add_epi32(_mm256_loadu_si256((__m256i *)(acc + c + 8)), hi));
                }
                for (; c < nc; c++) acc[c] += row[c];
            }
            for (int c = 0; c < nc; c++) {
                float f = (float)(acc[c] - HW * xz) * m;
                if (out_u8) {
                    float v = __builtin_nearbyintf(f) + yz;
                    v = v > 0.f ? v : 0.f;
                    ((uint8_t *)y)[(long)n * C + c0 + c] = (uint8_t)(v < 255.f ? v : 255.f);
                } else {
                    ((float *)y)[(long)n * C + c0 + c] = f;
                }
            }
        }
    }
}

/* the chain executor's entries (chain.c): the arguments as one int64 array, floats as their bits */
static float tk_bits_f32(int64_t v) {
    uint32_t u = (uint32_t)v;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void tk_quantize_u8_packed(const int64_t *a) {
    tk_quantize_u8((const float *)a[0], (uint8_t *)a[1], (long)a[2], tk_bits_f32(a[3]), tk_bits_f32(a[4]));
}

void tk_dequantize_u8_packed(const int64_t *a) {
    tk_dequantize_u8((const uint8_t *)a[0], (float *)a[1], (long)a[2], tk_bits_f32(a[3]), tk_bits_f32(a[4]));
}

void tk_qgap_nhwc_u8_packed(const int64_t *a) {
    tk_qgap_nhwc_u8((const uint8_t *)a[0], (void *)a[1], (int)a[2], (int)a[3], (int)a[4], (int)a[5], tk_bits_f32(a[6]),
                    tk_bits_f32(a[7]), (int)a[8]);
}
