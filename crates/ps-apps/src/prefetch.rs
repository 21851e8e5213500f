//! Cache prefetch hints for the CPU engines' loops over rows they reach at random (MF's user
//! rows, LDA's word rows): asking for a later item's memory while the current one computes.
//! A hint reads nothing and changes no result; on targets other than x86-64 it does nothing.

/// Bytes in a cache line.
const LINE: usize = 64;

/// Asks for every cache line of `items` (none if `None`).
#[inline(always)]
pub fn slice<T>(items: Option<&[T]>) {
    if let Some(items) = items {
        let (start, bytes) = (items.as_ptr().cast::<u8>(), std::mem::size_of_val(items));
        for offset in (0..bytes).step_by(LINE) {
            // SAFETY: in bounds of the slice; `line` only computes the address.
            line(unsafe { start.add(offset) });
        }
    }
}

/// Asks for the cache lines of the first `n` of `items` (all of them if fewer).
#[inline(always)]
pub fn first<T>(items: &[T], n: usize) {
    slice(Some(&items[..items.len().min(n)]));
}

/// Asks for the cache line holding `item`.
#[inline(always)]
pub fn item<T>(item: &T) {
    line((item as *const T).cast());
}

#[inline(always)]
fn line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint: it reads nothing and faults on no address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    #[test]
    fn hints_on_any_slice_are_harmless() {
        super::slice::<f32>(None);
        super::slice(Some(&[] as &[f32]));
        super::slice(Some(&[1.0f32; 100][..]));
        super::first(&[1u32; 40], 8);
        super::first(&[] as &[u32], 8);
        super::item(&7u64);
    }
}
