//! The instruction sets the kernels' loops are compiled for, one chosen at run time ([`Isa::detect`]).
//!
//! A kernel's loop is written once, `#[inline(always)]`, and [`compiled_for_isa!`] compiles it again inside
//! functions with AVX2 or AVX-512 switched on (each with FMA, which every CPU with either has). The loops never
//! fuse a multiply into an add themselves (Rust never contracts `a * b + c`) and keep every sum's order, so every
//! instruction set gives the same bits (each kernel has a test that checks it); the wider ones only run more
//! lanes at once. The one explicit fusion is `exp`'s, which repeats glibc's `__expf_fma` and is used where
//! glibc would pick that function itself: with AVX2 and FMA; and the one explicit instruction is `exp`'s table
//! lookup with AVX-512 (`vpermt2q`, where the compiler would gather from memory).

/// An instruction set a kernel's loop can run with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Isa {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The widest this CPU has.
    pub(super) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Self::Avx2;
            }
        }
        Self::Baseline
    }

    /// Whether the CPU has AVX, which every instruction set above the baseline implies: where the 8 × 8
    /// transposes in registers (`transpose.rs`) may run.
    pub(super) fn has_avx(self) -> bool {
        self != Self::Baseline
    }

    /// Every instruction set this CPU has, the baseline first (for the tests that compare their bits).
    #[cfg(test)]
    pub(super) fn all_available() -> Vec<Self> {
        let mut all = vec![Self::Baseline];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                all.push(Self::Avx2);
            }
            if is_x86_feature_detected!("avx512f") {
                all.push(Self::Avx512);
            }
        }
        all
    }
}

/// `fn $name(isa: Isa, args…)` that runs the `#[inline(always)]` function `$body` compiled for `isa`.
macro_rules! compiled_for_isa {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$doc])*
        fn $name(isa: $crate::model::kernels::isa::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::model::kernels::isa::Isa;
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx512f,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match isa {
                    // SAFETY (both): `Isa::detect` chose the instruction set because this CPU has it.
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    Isa::Baseline => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = isa;
            $body($($arg),*)
        }
    };
}
pub(super) use compiled_for_isa;
