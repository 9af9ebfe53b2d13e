//! The frame queue between the source and perception: bounded, and when full the source evicts
//! the oldest pending frame instead of waiting (a frame older than its deadline is useless to a
//! planner). In lockstep mode (replay "as fast as possible") the source waits instead, so every
//! frame is processed and runs are deterministic.

use super::clock::POLL;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// What [`FrameQueue::pop_timeout`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<T> {
    /// The oldest item.
    Item(T),
    /// Nothing came within the timeout.
    Empty,
    /// Closed and drained: nothing will come.
    Closed,
}

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
    /// A queue holding at most `cap` items (at least 1).
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
    /// briefly exceed the bound: they are a few bytes). On a closed queue the item comes back as
    /// `Err`: nobody will take it.
    pub fn push_evict(&self, item: T, evictable: impl Fn(&T) -> bool) -> Result<Option<T>, T> {
        let mut st = self.lock();
        if st.closed {
            return Err(item);
        }
        let mut evicted = None;
        if st.items.len() >= self.cap {
            if let Some(pos) = st.items.iter().position(&evictable) {
                evicted = st.items.remove(pos);
            }
        }
        st.items.push_back(item);
        drop(st);
        self.ready.notify_one();
        Ok(evicted)
    }

    /// Push, waiting while the queue is full (lockstep replay), but at most until `give_up()`
    /// says so (it is asked every [`POLL`]), or the queue is closed; then the item comes back.
    pub fn push_wait(&self, item: T, give_up: &dyn Fn() -> bool) -> Result<(), T> {
        let mut st = self.lock();
        loop {
            if st.closed || (st.items.len() >= self.cap && give_up()) {
                return Err(item);
            }
            if st.items.len() < self.cap {
                break;
            }
            st = self
                .space
                .wait_timeout(st, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.items.push_back(item);
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    /// The oldest item, waiting up to `timeout` for one.
    pub fn pop_timeout(&self, timeout: Duration) -> Pop<T> {
        let mut st = self.lock();
        let mut waited = false;
        loop {
            if let Some(x) = st.items.pop_front() {
                drop(st);
                self.space.notify_one();
                return Pop::Item(x);
            }
            if st.closed {
                return Pop::Closed;
            }
            if waited {
                return Pop::Empty;
            }
            st = self
                .ready
                .wait_timeout(st, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            waited = true;
        }
    }

    /// Everything still queued, oldest first.
    pub fn drain(&self) -> Vec<T> {
        let items: Vec<T> = self.lock().items.drain(..).collect();
        self.space.notify_all();
        items
    }

    /// No more pushes: `pop` drains what is left, then returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.space.notify_all();
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is queued.
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
        assert_eq!(q.push_evict(1, |_| true), Ok(None));
        assert_eq!(q.push_evict(-2, |_| true), Ok(None));
        // -2 is not evictable: 1 goes, then 3 is the oldest evictable.
        assert_eq!(q.push_evict(3, |x: &i32| *x > 0), Ok(Some(1)));
        assert_eq!(q.push_evict(4, |x: &i32| *x > 0), Ok(Some(3)));
        q.close();
        // Closed: nothing more goes in.
        assert_eq!(q.push_evict(5, |_| true), Err(5));
        assert_eq!(q.push_wait(6, &|| false), Err(6));
        let pop = || q.pop_timeout(Duration::ZERO);
        assert_eq!(
            (pop(), pop(), pop()),
            (Pop::Item(-2), Pop::Item(4), Pop::Closed)
        );
    }

    #[test]
    fn a_full_lockstep_push_gives_up_when_told_and_pop_times_out_when_empty() {
        let q = FrameQueue::new(1);
        assert_eq!(q.pop_timeout(Duration::ZERO), Pop::Empty);
        assert_eq!(q.push_wait(1, &|| true), Ok(()));
        // Full: the push waits until give_up says so, then hands the item back.
        let asked = std::cell::Cell::new(0);
        let r = q.push_wait(2, &|| {
            asked.set(asked.get() + 1);
            asked.get() > 2
        });
        assert_eq!(r, Err(2));
        assert_eq!(asked.get(), 3);
        assert_eq!(q.drain(), vec![1]);
        assert!(q.is_empty());
    }
}
