//! 8 × 8 blocks of `f32` transposed in AVX registers, for the kernels whose loops read a matrix across its rows
//! (LayerNorm's backward, the attention heads' kᵀ and vᵀ): written element by element, such a loop compiles to
//! a scatter (AVX-512) or a strided scalar copy with a bounds check per element (AVX2), which was ~60 % of
//! LayerNorm's backward on an AMD Zen 4 and ~16 % of the attention forward on a Zen 3. A transpose only moves
//! values, so the results have the same bits either way.

/// `out[c · out_stride + r] = src[r · stride + c]` (times `scale[c]` where given) for r, c < 8: rows paired
/// by unpacking, pairs by shuffling, halves by a lane permute.
///
/// # Safety
/// The CPU has AVX; `src` holds 7 · stride + 8 elements, `out` 7 · out_stride + 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
pub(super) unsafe fn transpose_8x8(
    src: &[f32],
    stride: usize,
    scale: Option<&[f32]>,
    out: &mut [f32],
    out_stride: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(src.len() >= 7 * stride + 8 && out.len() >= 7 * out_stride + 8);
    let p = src.as_ptr();
    // SAFETY: within `src` (the caller's contract).
    let r = unsafe {
        [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(stride)),
            _mm256_loadu_ps(p.add(2 * stride)),
            _mm256_loadu_ps(p.add(3 * stride)),
            _mm256_loadu_ps(p.add(4 * stride)),
            _mm256_loadu_ps(p.add(5 * stride)),
            _mm256_loadu_ps(p.add(6 * stride)),
            _mm256_loadu_ps(p.add(7 * stride)),
        ]
    };
    // t: rows 2i and 2i + 1 interleaved (elements 0, 1 | 4, 5 of each, then 2, 3 | 6, 7).
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    // s[k] (k < 4): column k of rows 0–3 in its low half and column k + 4 in its high half; s[k + 4] the
    // same of rows 4–7.
    let s = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    let columns = [
        _mm256_permute2f128_ps::<0x20>(s[0], s[4]),
        _mm256_permute2f128_ps::<0x20>(s[1], s[5]),
        _mm256_permute2f128_ps::<0x20>(s[2], s[6]),
        _mm256_permute2f128_ps::<0x20>(s[3], s[7]),
        _mm256_permute2f128_ps::<0x31>(s[0], s[4]),
        _mm256_permute2f128_ps::<0x31>(s[1], s[5]),
        _mm256_permute2f128_ps::<0x31>(s[2], s[6]),
        _mm256_permute2f128_ps::<0x31>(s[3], s[7]),
    ];
    for (c, column) in columns.into_iter().enumerate() {
        let column = match scale {
            Some(scale) => _mm256_mul_ps(column, _mm256_set1_ps(scale[c])),
            None => column,
        };
        let out = &mut out[c * out_stride..][..8];
        // SAFETY: `out` is 8 elements long.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), column) };
    }
}
