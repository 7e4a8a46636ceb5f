//! Connection limits of the RTMP listener: a global cap and a per-address cap on open
//! connections, the table of handshakes in progress (a full table evicts its oldest),
//! the node-wide budget for partial messages, and the budget for the warnings that peers
//! can cause at will.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::LimitsConfig;
use crate::rtmp::framing::{PartialBudget, PartialPool};

/// Connection caps: global and per source address.
#[derive(Debug)]
pub struct ConnLimits {
    global: Arc<Semaphore>,
    /// Handshakes in progress.
    pub handshakes: Arc<HandshakeSlots>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    pub max_per_ip: usize,
    /// Budget for the warnings peers cause (refusals, closed connections).
    pub warnings: WarnBudget,
    /// Bytes declared by the partial messages of every connection (`limits.max_partial_bytes`).
    pub partial: Arc<PartialPool>,
    /// `limits.max_partial_bytes_per_connection`.
    pub max_partial_per_connection: usize,
}

/// Held for the life of a connection; releases its counts when dropped.
#[derive(Debug)]
pub struct ConnPermit {
    _permit: OwnedSemaphorePermit,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl ConnLimits {
    pub fn new(limits: &LimitsConfig) -> ConnLimits {
        ConnLimits {
            global: Arc::new(Semaphore::new(limits.max_connections)),
            handshakes: Arc::new(HandshakeSlots::new(limits.max_handshakes)),
            per_ip: Default::default(),
            max_per_ip: limits.max_connections_per_ip,
            warnings: WarnBudget::new(CONN_WARNINGS_PER_SEC),
            partial: Arc::new(PartialPool::new(limits.max_partial_bytes)),
            max_partial_per_connection: limits.max_partial_bytes_per_connection,
        }
    }

    /// A connection's partial-message budget: its own cap and a share of the node's.
    pub fn partial_budget(&self) -> PartialBudget {
        PartialBudget::new(self.max_partial_per_connection, Some(self.partial.clone()))
    }

    /// Waits for room under the global cap.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.global.clone().acquire_owned().await.ok()
    }

    /// Admits a connection from `ip` under its per-address cap; `None` when full.
    pub fn admit(&self, permit: OwnedSemaphorePermit, ip: IpAddr) -> Option<ConnPermit> {
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(ConnPermit {
            _permit: permit,
            per_ip: self.per_ip.clone(),
            ip,
        })
    }
}

/// The handshakes in progress, oldest first. When all `max` slots are taken, a newcomer
/// closes the oldest one instead of being refused: a real client finishes its handshake
/// within a round trip, so peers that hold slots without finishing cannot lock the door
/// (they would have to open connections faster than real clients complete handshakes).
#[derive(Debug)]
pub struct HandshakeSlots {
    max: usize,
    inner: Mutex<(u64, VecDeque<(u64, CancellationToken)>)>,
}

/// A place in [`HandshakeSlots`]; `evicted` fires when a newcomer took it.
#[derive(Debug)]
pub struct HandshakeTicket {
    slots: Arc<HandshakeSlots>,
    id: u64,
    pub evicted: CancellationToken,
}

impl HandshakeSlots {
    pub fn new(max: usize) -> HandshakeSlots {
        HandshakeSlots {
            max: max.max(1),
            inner: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Takes a slot; returns it and whether an older handshake was evicted for it.
    pub fn enter(self: &Arc<Self>) -> (HandshakeTicket, bool) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (next, queue) = &mut *g;
        let mut evicted = false;
        while queue.len() >= self.max {
            if let Some((_, token)) = queue.pop_front() {
                token.cancel();
                evicted = true;
            }
        }
        *next += 1;
        let token = CancellationToken::new();
        queue.push_back((*next, token.clone()));
        let slot = HandshakeTicket {
            slots: self.clone(),
            id: *next,
            evicted: token,
        };
        (slot, evicted)
    }

    /// Handshakes in progress.
    pub fn in_progress(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1.len()
    }
}

impl Drop for HandshakeTicket {
    fn drop(&mut self) {
        let mut g = self.slots.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = g.1.iter().position(|(id, _)| *id == self.id) {
            g.1.remove(i);
        }
    }
}

/// A budget for the warnings that peers can cause at will (refusals, closed connections):
/// at most `per_sec` a second are logged; the rest are only counted (the metrics count every
/// one) and their number is reported with the next warning logged, so a flood of hostile
/// connections cannot flood the log.
#[derive(Debug)]
pub struct WarnBudget {
    per_sec: u64,
    second: std::sync::atomic::AtomicU64,
    used: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl WarnBudget {
    pub const fn new(per_sec: u64) -> WarnBudget {
        use std::sync::atomic::AtomicU64;
        WarnBudget {
            per_sec,
            second: AtomicU64::new(0),
            used: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last logged one)` when a warning may be logged now.
    pub fn take(&self) -> Option<u64> {
        self.take_at(crate::clock::unix_now())
    }

    fn take_at(&self, now_sec: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.second.swap(now_sec, Relaxed) != now_sec {
            self.used.store(0, Relaxed);
        }
        if self.used.fetch_add(1, Relaxed) < self.per_sec {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Warnings about connections a node logs per second at most.
pub const CONN_WARNINGS_PER_SEC: u64 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_beyond_the_budget_are_counted_and_reported_later() {
        let b = WarnBudget::new(2);
        assert_eq!(b.take_at(100), Some(0));
        assert_eq!(b.take_at(100), Some(0));
        assert_eq!(b.take_at(100), None);
        assert_eq!(b.take_at(100), None);
        // A new second: the two held back are reported with the first warning.
        assert_eq!(b.take_at(101), Some(2));
        assert_eq!(b.take_at(101), Some(0));
        assert_eq!(b.take_at(101), None);
        assert_eq!(b.take_at(102), Some(1));
    }

    #[test]
    fn a_full_handshake_table_evicts_the_oldest() {
        let slots = Arc::new(HandshakeSlots::new(2));
        let (a, ev) = slots.enter();
        assert!(!ev);
        let (b, ev) = slots.enter();
        assert!(!ev);
        let (c, ev) = slots.enter();
        assert!(ev, "the third newcomer evicts");
        assert!(a.evicted.is_cancelled());
        assert!(!b.evicted.is_cancelled() && !c.evicted.is_cancelled());
        assert_eq!(slots.in_progress(), 2);
        // The evicted one's drop frees nothing more; a finished one frees its slot.
        drop(a);
        assert_eq!(slots.in_progress(), 2);
        drop(c);
        assert_eq!(slots.in_progress(), 1);
        let (_d, ev) = slots.enter();
        assert!(!ev);
        assert!(!b.evicted.is_cancelled());
    }
}
