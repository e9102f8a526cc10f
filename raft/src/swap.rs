//! A value replaced whole while others read it: credentials reloaded from their files,
//! and the peer client rebuilt around a new CA. A reader takes a cheap clone of what is
//! in place (an `Arc`, a `reqwest::Client` handle) and keeps it for as long as it needs
//! it, so a replacement never changes anything under a request in progress.

/// Holds one value; [`Swap::get`] clones it out, [`Swap::set`] replaces it.
pub struct Swap<T: Clone>(std::sync::RwLock<T>);

impl<T: Clone> Swap<T> {
    pub fn new(value: T) -> Swap<T> {
        Swap(std::sync::RwLock::new(value))
    }

    /// A clone of the value in place now.
    pub fn get(&self) -> T {
        // Only whole values are stored: a panic elsewhere cannot leave one half written.
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Readers from now on get `value`; those that took the old one keep it.
    pub fn set(&self, value: T) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_reader_keeps_what_it_took_and_later_readers_see_the_replacement() {
        let swap = Swap::new(Arc::new(1));
        let taken = swap.get();
        swap.set(Arc::new(2));
        assert_eq!((*taken, *swap.get()), (1, 2));
    }
}
