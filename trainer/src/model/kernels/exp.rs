//! e^x over a slice, several lanes at once, with the bits of the `expf` the scalar code called: glibc's x86-64
//! `expf` on a CPU with FMA and AVX2 (`__expf_fma`, the variant its ifunc picks there), itself the algorithm
//! of Szabolcs Nagy's `expf` in ARM's optimized-routines (`math/expf.c`, `math/exp2f_data.c`; the same code as
//! glibc's `sysdeps/ieee754/flt-32/e_expf.c`):
//!
//! x·N/ln 2 = k + r with N = 32, an integer k (rounded to nearest, even on ties) and |r| ≤ 1/2; then
//! e^x = 2^(k/N) · 2^(r/N), 2^(k/N) from a table of the 32 values 2^(i/N) with k/N's integer part added to
//! the exponent, 2^(r/N) ≈ 1 + C₂r + C₁r² + C₀r³ (in double precision, rounded to `f32` once at the end).
//!
//! Every operation is the one `__expf_fma` runs, in its order and with its fusions (read off its machine code:
//! `vfmadd` for the shifted k, `vfmsub` for r, three `vfmadd` for the polynomial). A test compares it with
//! `f32::exp` on every 97th bit pattern of `f32`, and one left out of the default run (`--ignored`) on all of
//! them. Inputs outside its fast path (|x| ≥ 88, infinities, NaN) are passed to `f32::exp` itself.

use super::isa::Isa;

/// Whether [`exp_in_place`]'s lanes give the bits of `f32::exp` on this platform: glibc on x86-64, where
/// `expf` is `__expf_fma` on a CPU with FMA and AVX2 (the instruction sets the vector kernels are compiled for).
const MATCHES_LIBM: bool = cfg!(all(target_arch = "x86_64", target_env = "gnu"));

/// log2(e) · N (`__exp2f_data.invln2_scaled`).
const INV_LN2_N: f64 = f64::from_bits(0x4047_1547_652b_82fe);
/// 1.5 · 2⁵²: added and taken away again, it rounds a double to an integer (`__exp2f_data.shift`).
const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
/// The polynomial's coefficients for r in units of 1/N (`__exp2f_data.poly_scaled`): C₀ of r³, C₁ of r², C₂ of r.
const C: [f64; 3] = [
    f64::from_bits(0x3ebc_6af8_4b91_2394),
    f64::from_bits(0x3f2e_bfce_50fa_c4f3),
    f64::from_bits(0x3f96_2e42_ff0c_52d6),
];
/// The bits of 2^(i/N), less i << (52 − 5) so that adding k << (52 − 5) gives 2^(k/N) (`__exp2f_data.tab`).
const TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// How [`exp_in_place`] takes e^x on an instruction set: `f32::exp` one element at a time, or the lanes with
/// their table read as that instruction set allows ([`Lookup`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Exp {
    Libm,
    Lanes(Lookup),
}

impl Exp {
    /// [`Exp::Lanes`] with AVX2 or AVX-512 (so with FMA, where glibc's `expf` is the function they repeat), the
    /// table permuted with AVX-512; [`Exp::Libm`] on the baseline.
    pub(super) fn for_isa(isa: Isa) -> Self {
        match isa {
            Isa::Baseline => Self::Libm,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Self::Lanes(Lookup::Indexed),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Self::Lanes(Lookup::Permuted),
        }
    }
}

/// How the lanes read 2^(k/N) from [`TABLE`]: by index (the compiler gathers the lanes' entries from memory),
/// or by permuting the table held in four AVX-512 registers, two permutes and a blend per eight lanes (on the
/// Zen 4 the gather was most of the forward's e^x). The same entries either way, so the same bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Lookup {
    Indexed,
    /// Only where the CPU has AVX-512F ([`Exp::for_isa`]).
    #[cfg(target_arch = "x86_64")]
    Permuted,
}

/// e^x of every element of `xs`, in place, `exp`'s way: the lanes have the bits of `f32::exp` where
/// [`MATCHES_LIBM`] (elsewhere they are `f32::exp`). Inline into a function compiled with FMA, or each fused
/// multiply-add is a call; `exp` must be one [`Exp::for_isa`] allows for the instruction set that function is
/// compiled for ([`Lookup::Permuted`] only with AVX-512).
#[inline(always)]
pub(super) fn exp_in_place(xs: &mut [f32], exp: Exp) {
    let lookup = match exp {
        Exp::Lanes(lookup) if MATCHES_LIBM => lookup,
        _ => {
            xs.iter_mut().for_each(|x| *x = x.exp());
            return;
        }
    };
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        let chunk: &mut [f32; LANES] = chunk.try_into().expect("chunks_exact gives LANES");
        *chunk = lanes(*chunk, lookup);
    }
    // The rest a half chunk at a time (the softmax's rows are whole half chunks), the last one zero-padded.
    let mut halves = chunks.into_remainder().chunks_exact_mut(HALF);
    for half in &mut halves {
        let half: &mut [f32; HALF] = half.try_into().expect("chunks_exact gives HALF");
        *half = lanes(*half, lookup);
    }
    let rest = halves.into_remainder();
    if !rest.is_empty() {
        let mut padded = [0.0f32; HALF];
        padded[..rest.len()].copy_from_slice(rest);
        rest.copy_from_slice(&lanes(padded, lookup)[..rest.len()]);
    }
}

/// Elements at once: as many as two AVX-512 registers of doubles.
const LANES: usize = 16;
/// The elements of one AVX-512 register of doubles.
const HALF: usize = LANES / 2;

/// e^x of each lane: all through the fast path, then the rare lanes it does not serve through `f32::exp`.
/// Plain index loops: a library function left out of line (`array::map` was) would be compiled without FMA,
/// and each fused multiply-add in it a call.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn lanes<const W: usize>(xs: [f32; W], lookup: Lookup) -> [f32; W] {
    let mut ki = [0u64; W];
    let mut r = [0.0f64; W];
    let mut slow = false;
    for i in 0..W {
        (ki[i], r[i]) = reduce(xs[i]);
        slow |= !fast(xs[i]);
    }
    let entries = match lookup {
        Lookup::Indexed => {
            let mut entries = [0u64; W];
            for i in 0..W {
                entries[i] = TABLE[(ki[i] % N) as usize];
            }
            entries
        }
        // SAFETY: `Exp::for_isa` gives `Permuted` only for AVX-512, which `Isa::detect` found on this CPU.
        #[cfg(target_arch = "x86_64")]
        Lookup::Permuted => unsafe { permuted(&ki) },
    };
    let mut out = [0.0f32; W];
    for i in 0..W {
        out[i] = scaled(ki[i], r[i], entries[i]);
    }
    if slow {
        for i in 0..W {
            if !fast(xs[i]) {
                out[i] = xs[i].exp();
            }
        }
    }
    out
}

/// [`TABLE`]`[k % N]` of each lane, from the table in four AVX-512 registers: `vpermt2q` picks entry k % 16
/// of the first or the second half of the table, a blend on bit 4 of k picks the half. `W` is a multiple of
/// [`HALF`], the lanes of a register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn permuted<const W: usize>(ki: &[u64; W]) -> [u64; W] {
    use std::arch::x86_64::{
        _mm512_loadu_si512, _mm512_mask_blend_epi64, _mm512_permutex2var_epi64, _mm512_set1_epi64,
        _mm512_storeu_si512, _mm512_test_epi64_mask,
    };
    const { assert!(W.is_multiple_of(HALF)) };
    let table = TABLE;
    let mut out = [0u64; W];
    // SAFETY: every load and store is of HALF u64s inside `table` (32 = 4 · HALF), `ki` or `out` (W, a multiple
    // of HALF).
    unsafe {
        let [t0, t1, t2, t3] =
            [0, 1, 2, 3].map(|i| _mm512_loadu_si512(table[i * HALF..].as_ptr().cast()));
        for (ki, out) in ki.chunks_exact(HALF).zip(out.chunks_exact_mut(HALF)) {
            let k = _mm512_loadu_si512(ki.as_ptr().cast());
            let low = _mm512_permutex2var_epi64(t0, k, t1);
            let high = _mm512_permutex2var_epi64(t2, k, t3);
            let upper = _mm512_test_epi64_mask(k, _mm512_set1_epi64(16));
            _mm512_storeu_si512(
                out.as_mut_ptr().cast(),
                _mm512_mask_blend_epi64(upper, low, high),
            );
        }
    }
    out
}

/// Whether `expf` takes its fast path for `x`: the top 12 bits of |x| below 0x42b, |x| < 88.
#[inline(always)]
fn fast(x: f32) -> bool {
    (x.to_bits() >> 20) & 0x7ff < 0x42b
}

/// N: the table's entries per doubling.
const N: u64 = 32;

/// The first half of `__expf_fma`'s fast path (|x| < 88), operation for operation: k (in the low bits of the
/// first value) and r.
#[inline(always)]
fn reduce(x: f32) -> (u64, f64) {
    let xd = f64::from(x);
    // k + 1.5·2⁵², rounded once (vfmadd), so its low bits are k.
    let shifted = INV_LN2_N.mul_add(xd, SHIFT);
    let kd = shifted - SHIFT;
    // r = x·N/ln 2 − k, rounded once (vfmsub).
    (shifted.to_bits(), INV_LN2_N.mul_add(xd, -kd))
}

/// The second half: 2^(k/N) from the table's `entry` for k, times the polynomial in r.
#[inline(always)]
fn scaled(ki: u64, r: f64, entry: u64) -> f32 {
    let s = f64::from_bits(entry.wrapping_add(ki << 47));
    let z = C[0].mul_add(r, C[1]);
    let r2 = r * r;
    let y = C[2].mul_add(r, 1.0);
    let y = z.mul_add(r2, y);
    (y * s) as f32
}

#[cfg(test)]
mod tests {
    use super::super::isa::compiled_for_isa;
    use super::*;

    compiled_for_isa! {
        /// [`exp_in_place`] compiled for `isa`.
        fn exp_on(xs: &mut [f32], exp: Exp) => exp_in_place
    }

    /// Whether glibc's `expf` here is `__expf_fma`, the function [`exp_in_place`] repeats (and so the ISAs
    /// whose kernels use it exist).
    fn libm_is_expf_fma() -> bool {
        MATCHES_LIBM && Isa::detect() != Isa::Baseline
    }

    /// Every `stride`-th bit pattern of `f32` from `first`, through [`exp_in_place`] on every ISA, against
    /// `f32::exp` (NaNs: both NaN), a block of them at a time.
    fn check_patterns(first: u32, stride: u32) {
        let mut patterns = (first..=u32::MAX).step_by(stride as usize).peekable();
        while patterns.peek().is_some() {
            let inputs: Vec<f32> = patterns
                .by_ref()
                .take(1 << 20)
                .map(f32::from_bits)
                .collect();
            check(&inputs);
        }
        // Slices of every length up to a few chunks, so the padded remainder is covered too.
        check(&(0..50).map(|i| -(i as f32) * 0.37).collect::<Vec<_>>());
    }

    fn check(inputs: &[f32]) {
        let expected: Vec<f32> = inputs.iter().map(|x| x.exp()).collect();
        // The lanes on every instruction set (the baseline's too), and what each one uses.
        let runs = Isa::all_available().into_iter().flat_map(|isa| {
            let mut ways = vec![Exp::Lanes(Lookup::Indexed), Exp::for_isa(isa)];
            ways.dedup();
            ways.into_iter().map(move |exp| (isa, exp))
        });
        for (isa, exp) in runs {
            let mut got = inputs.to_vec();
            for piece in got.chunks_mut(1 << 12) {
                for (start, len) in [(0, 1), (1, 15), (16, 17)] {
                    if start + len <= piece.len() {
                        exp_on(isa, &mut piece[start..][..len], exp);
                    }
                }
                let done = 33.min(piece.len());
                exp_on(isa, &mut piece[done..], exp);
            }
            for ((x, e), g) in inputs.iter().zip(&expected).zip(&got) {
                assert!(
                    e.to_bits() == g.to_bits() || (e.is_nan() && g.is_nan()),
                    "{isa:?}, {exp:?}: exp({x:e} = {:#010x}) = {e:e} by libm, {g:e} here",
                    x.to_bits()
                );
            }
        }
    }

    #[test]
    fn has_the_bits_of_libm_on_every_97th_float() {
        if !libm_is_expf_fma() {
            eprintln!("skipped: f32::exp is not glibc's __expf_fma on this platform and CPU");
            return;
        }
        check_patterns(0, 97);
    }

    /// All 2³² inputs (about two minutes in release on two cores): `cargo test --release --workspace --lib
    /// exp::tests -- --ignored`.
    #[test]
    #[ignore = "every f32: two minutes in release"]
    fn has_the_bits_of_libm_on_every_float() {
        assert!(libm_is_expf_fma(), "f32::exp is not __expf_fma here");
        std::thread::scope(|scope| {
            for part in 0..2u32 {
                scope.spawn(move || check_patterns(part, 2));
            }
        });
    }

    #[test]
    fn special_inputs_and_a_softmax_row() {
        let mut xs = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            88.0,
            88.7,
            89.0,
            -88.0,
            -103.5,
            -104.0,
            -200.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -1e-30,
            0.5,
            -7.25,
        ];
        let expected = xs.map(f32::exp);
        exp_in_place(&mut xs, Exp::Lanes(Lookup::Indexed));
        assert_eq!(xs.map(f32::to_bits), expected.map(f32::to_bits));
        let mut nan = [f32::NAN; 3];
        exp_in_place(&mut nan, Exp::Lanes(Lookup::Indexed));
        assert!(nan.iter().all(|x| x.is_nan()));
    }
}
