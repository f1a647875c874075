/* Row-wise epilogues for GEMM-based layers (tensorkiln, CPU backend).
 *
 * y is a row-major [rows][K] float32 matrix (an NHWC activation seen as pixels x channels):
 * y[r][k] = act(y[r][k] + bias[k]), act: 0 none, 1 relu, 2 clip(lo, hi). One pass, in place,
 * rows split across the OpenMP threads; called right after the GEMM of the same rows, while
 * they are still in cache.
 */
void tk_bias_act_rows(float *y, long rows, int K, const float *bias, int act, float lo, float hi) {
    #pragma omp parallel for schedule(static) if (rows * K > 32768)
    for (long r = 0; r < rows; r++) {
        float *row = y + r * K;
        if (act == 1) {
            for (int k = 0; k < K; k++) {
                float v = row[k] + bias[k];
                row[k] = v > 0.f ? v : 0.f;
            }
        } else if (act == 2) {
            for (int k = 0; k < K; k++) {
                float v = row[k] + bias[k];
                v = v < lo ? lo : v;
                row[k] = v > hi ? hi : v;
            }
        } else {
            for (int k = 0; k < K; k++) row[k] += bias[k];
        }
    }
}
