//! Completed commands the caller has not retired yet.
//!
//! A program may keep many thousands of finished commands and retire them
//! in any order with `nbd_aio_command_completed`: each retirement must cost
//! little (the core's cookie map: O(1) for the usual order, O(log n)
//! amortised for any), and each record a fixed size (no server text is
//! kept, as in libnbd, whose record is the command's type and errno).
//!
//! A record holds the command's callbacks until it is retired: libnbd 1.24
//! frees them (`.free`) at retirement, not when the command completes.

use super::CommandHooks;
use nbd_proto::client::CookieMap;
use std::collections::VecDeque;
use std::mem::size_of;

/// A completed command the caller has not retired yet: a fixed-size record.
pub(crate) struct Done {
    /// The command's cookie.
    pub(crate) cookie: u64,
    /// 0, or why it failed.
    pub(crate) error: i32,
    /// The command's name as libnbd's messages give it ("write").
    pub(crate) name: &'static str,
    /// A fixed explanation that replaces "command failed", if any.
    pub(crate) detail: Option<&'static str>,
    /// The command's callbacks, released when the record drops.
    pub(crate) hooks: Option<Box<dyn CommandHooks>>,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done")
            .field("cookie", &self.cookie)
            .field("error", &self.error)
            .field("name", &self.name)
            .field("detail", &self.detail)
            .field("hooks", &self.hooks.is_some())
            .finish()
    }
}

/// The completed commands: retiring by cookie and finding the oldest are
/// both O(1) (amortised).
#[derive(Debug, Default)]
pub(crate) struct DoneList {
    by_cookie: CookieMap<Done>,
    /// Cookies in completion order; entries already retired are skipped
    /// (and dropped) lazily, so each cookie is pushed and popped once.
    order: VecDeque<u64>,
    /// Queue entries looked at, for the complexity test.
    #[cfg(test)]
    steps: usize,
}

impl DoneList {
    /// Records a completed command.
    pub(crate) fn push(&mut self, d: Done) {
        self.order.push_back(d.cookie);
        self.by_cookie.insert(d.cookie, d);
    }

    /// Retires `cookie`, if it completed.
    pub(crate) fn take(&mut self, cookie: u64) -> Option<Done> {
        let d = self.by_cookie.remove(cookie)?;
        self.trim();
        Some(d)
    }

    /// The oldest completed command not yet retired.
    pub(crate) fn first(&self) -> Option<u64> {
        // `trim` after every removal keeps the front live.
        self.order.front().copied()
    }

    /// How many are waiting to be retired.
    pub(crate) fn len(&self) -> usize {
        self.by_cookie.len()
    }

    /// Bytes allocated for the records, for `nbd_get_handle_size`.
    pub(crate) fn heap_size(&self) -> usize {
        self.by_cookie.len() * (size_of::<u64>() + size_of::<Done>())
            + self.order.capacity() * size_of::<u64>()
    }

    /// Drops retired cookies from the front of the queue.
    fn trim(&mut self) {
        if self.by_cookie.is_empty() {
            self.order.clear();
            return;
        }
        while let Some(&c) = self.order.front() {
            #[cfg(test)]
            {
                self.steps += 1;
            }
            if self.by_cookie.get(c).is_some() {
                break;
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(cookie: u64) -> Done {
        Done {
            cookie,
            error: 0,
            name: "flush",
            detail: None,
            hooks: None,
        }
    }

    /// 100,000 commands retired oldest first, newest first and interleaved:
    /// the work done is linear in the number of commands (a `Vec` searched
    /// with `position` and shifted by `remove` did n²/2 steps, ~5·10⁹).
    #[test]
    fn retiring_100000_commands_is_linear_in_any_order() {
        const N: u64 = 100_000;
        let orders: [Box<dyn Fn(u64) -> u64>; 3] = [
            Box::new(|i| i + 1),
            Box::new(|i| N - i),
            Box::new(|i| if i % 2 == 0 { i / 2 + 1 } else { N - i / 2 }),
        ];
        for order in orders {
            let mut l = DoneList::default();
            for c in 1..=N {
                l.push(done(c));
            }
            assert_eq!(l.len(), N as usize);
            for i in 0..N {
                let c = order(i);
                assert_eq!(l.take(c).map(|d| d.cookie), Some(c));
                assert!(l.take(c).is_none(), "retired once only");
                if let Some(f) = l.first() {
                    assert!(l.by_cookie.get(f).is_some(), "first is live");
                }
            }
            assert_eq!(l.len(), 0);
            assert_eq!(l.first(), None);
            assert!(l.steps <= 2 * N as usize, "{} steps", l.steps);
        }
    }

    #[test]
    fn first_is_the_oldest_live_one() {
        let mut l = DoneList::default();
        for c in [5, 3, 9] {
            l.push(done(c));
        }
        assert_eq!(l.first(), Some(5));
        l.take(3);
        assert_eq!(l.first(), Some(5));
        l.take(5);
        assert_eq!(l.first(), Some(9));
        assert!(l.take(42).is_none());
    }

    #[test]
    fn the_record_has_a_fixed_size() {
        // No String or Vec: a failed command holds no server text (the
        // callbacks are one boxed object).
        assert!(std::mem::size_of::<Done>() <= 64);
    }
}
