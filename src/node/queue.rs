//! The frame queue between the source and perception: bounded, and when full the source evicts
//! the oldest pending frame instead of waiting (a frame older than its deadline is useless to a
//! planner). In lockstep mode (replay "as fast as possible") the source waits instead, so every
//! frame is processed and runs are deterministic.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// A bounded multi-producer queue that can drop its oldest evictable item.
pub struct FrameQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    space: Condvar,
    cap: usize,
}

impl<T> FrameQueue<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(cap.max(1)),
                closed: false,
            }),
            ready: Condvar::new(),
            space: Condvar::new(),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic elsewhere must not wedge the pipeline: the data is a plain queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Push without ever waiting: when the queue is full, remove and return the oldest item for
    /// which `evictable` holds (items that are not evictable, e.g. bad-frame reports, stay and may
    /// briefly exceed the bound: they are a few bytes).
    pub fn push_evict(&self, item: T, evictable: impl Fn(&T) -> bool) -> Option<T> {
        let mut st = self.lock();
        let mut evicted = None;
        if st.items.len() >= self.cap {
            if let Some(pos) = st.items.iter().position(&evictable) {
                evicted = st.items.remove(pos);
            }
        }
        st.items.push_back(item);
        drop(st);
        self.ready.notify_one();
        evicted
    }

    /// Push, waiting while the queue is full (lockstep replay).
    pub fn push_wait(&self, item: T) {
        let mut st = self.lock();
        while st.items.len() >= self.cap && !st.closed {
            st = self.space.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.items.push_back(item);
        drop(st);
        self.ready.notify_one();
    }

    /// The oldest item, waiting for one; `None` once closed and drained.
    pub fn pop(&self) -> Option<T> {
        let mut st = self.lock();
        loop {
            if let Some(x) = st.items.pop_front() {
                drop(st);
                self.space.notify_one();
                return Some(x);
            }
            if st.closed {
                return None;
            }
            st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// No more pushes: `pop` drains what is left, then returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.space.notify_all();
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_evictable_and_drains_after_close() {
        let q = FrameQueue::new(2);
        assert_eq!(q.push_evict(1, |_| true), None);
        assert_eq!(q.push_evict(-2, |_| true), None);
        // -2 is not evictable: 1 goes, then 3 is the oldest evictable.
        assert_eq!(q.push_evict(3, |x: &i32| *x > 0), Some(1));
        assert_eq!(q.push_evict(4, |x: &i32| *x > 0), Some(3));
        q.close();
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(-2), Some(4), None));
    }
}
