//! Output buffers written chunk by chunk in parallel tasks, each chunk zeroed by the task that then writes it.
//!
//! `vec![0.0; n]` zeroes the whole buffer on the calling thread before any task starts (with the allocator
//! reusing freed pages, a memset on the one thread the other core waits for: ~3 % of induction's training
//! step); here every task zeroes its own chunks, on its own core, just before writing them (still in cache).
//! What the tasks see is exactly what `vec![0.0; n]` would have given them, so no result changes.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `N` buffers of `lens[i]` floats, cut into chunks of `chunk[i]` (the last one shorter where it does not
/// divide), which must give every buffer the same number of chunks; `task(c, chunks)` gets chunk `c` of each,
/// zeroed, and tasks run in parallel, at least `min_len` chunks per rayon job. Returns the buffers and each
/// task's result in chunk order.
pub(super) fn par_zeroed_chunks<const N: usize, R: Send>(
    lens: [usize; N],
    chunk: [usize; N],
    min_len: usize,
    task: impl Fn(usize, [&mut [f32]; N]) -> R + Sync + Send,
) -> ([Vec<f32>; N], Vec<R>) {
    let count = |i: usize| lens[i].div_ceil(chunk[i].max(1));
    let n_chunks = (0..N).map(count).max().unwrap_or(0);
    assert!(
        (0..N).all(|i| lens[i] == 0 || count(i) == n_chunks),
        "par_zeroed_chunks: buffers cut into different numbers of chunks"
    );
    let mut out: [Vec<f32>; N] = std::array::from_fn(|i| Vec::with_capacity(lens[i]));
    let results = {
        let mut parts: Vec<_> = out
            .iter_mut()
            .zip(lens.iter().zip(chunk))
            .map(|(buffer, (&len, chunk))| {
                buffer.spare_capacity_mut()[..len].chunks_mut(chunk.max(1))
            })
            .collect();
        let by_chunk: Vec<[&mut [MaybeUninit<f32>]; N]> = (0..n_chunks)
            .map(|_| std::array::from_fn(|i| parts[i].next().unwrap_or_default()))
            .collect();
        by_chunk
            .into_par_iter()
            .enumerate()
            .with_min_len(min_len.max(1))
            .map(|(c, chunks)| task(c, chunks.map(zeroed)))
            .collect()
    };
    for (buffer, len) in out.iter_mut().zip(lens) {
        // SAFETY: the chunks cover the first `len` elements of the buffer's capacity, and every chunk was
        // zeroed (`zeroed`) before its task ran.
        unsafe { buffer.set_len(len) };
    }
    (out, results)
}

/// `chunk`, every element set to 0.
fn zeroed(chunk: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    chunk.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just written, and `MaybeUninit<f32>` has the layout of `f32`.
    unsafe { &mut *(std::ptr::from_mut(chunk) as *mut [f32]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk arrives zeroed and in place, the last one shorter, and results come back in chunk order.
    #[test]
    fn chunks_arrive_zeroed_in_place_and_results_in_order() {
        let ([a, b], results) = par_zeroed_chunks([10, 5], [4, 2], 1, |c, [a, b]| {
            assert!(a.iter().chain(b.iter()).all(|&x| x.to_bits() == 0));
            a.iter_mut().for_each(|x| *x = c as f32);
            if let Some(x) = b.first_mut() {
                *x = 10.0 + c as f32;
            }
            (c, a.len(), b.len())
        });
        assert_eq!(a, [0., 0., 0., 0., 1., 1., 1., 1., 2., 2.]);
        assert_eq!(b, [10., 0., 11., 0., 12.]);
        assert_eq!(results, [(0, 4, 2), (1, 4, 2), (2, 2, 1)]);
        let ([empty], none) = par_zeroed_chunks([0], [3], 1, |_, _| ());
        assert!(empty.is_empty() && none.is_empty());
    }
}
