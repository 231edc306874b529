//! Gathering a round: parked requests arrive, the journal answers what it can, a
//! request waiting on a re-attached batch is held until that batch is applied, and
//! the round goes when every live dialog waits, after the linger, or at the
//! provider's size limit.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::resume::Reattached;
use super::round::Task;
use crate::batching_model::{Msg, Parked};

/// What woke the gathering up.
enum Event {
    /// A message from a model or a guard; `None` once every sender is gone.
    Msg(Option<Msg>),
    /// A re-attached batch was applied (or its task failed).
    Reattached(Option<Reattached>),
    /// Nothing arrived for the linger.
    Linger,
}

/// What became of an arriving request.
pub(super) enum Admitted {
    /// Answered at once (from the journal, or failed for good).
    Answered,
    /// Waiting for a re-attached batch.
    Held,
    /// For the next round.
    Go(Box<Parked>),
}

impl Task {
    /// Adds arrivals to `pending` until a round should go. Returns with `pending`
    /// empty only once nothing more can come: every sender gone, no batch being
    /// re-attached.
    pub(super) async fn gather(&mut self, pending: &mut Vec<Parked>) {
        let mut last_arrival = Instant::now();
        loop {
            if self.round_ready(pending) {
                return;
            }
            if pending.is_empty() && self.rx_closed && self.reattaching.is_empty() {
                return;
            }
            match self.next_event(pending.is_empty(), last_arrival).await {
                Event::Msg(Some(Msg::Park(parked))) => {
                    self.arrive(*parked, pending);
                    last_arrival = Instant::now();
                }
                Event::Msg(Some(Msg::Wake)) => {}
                Event::Msg(None) => self.rx_closed = true,
                Event::Reattached(done) => self.reattached(done, pending),
                Event::Linger => return,
            }
        }
    }

    /// Whether `pending` should go now: every live dialog waits (held ones
    /// included), the provider's limit is reached, or nothing more can arrive.
    fn round_ready(&self, pending: &[Parked]) -> bool {
        if pending.is_empty() {
            return false;
        }
        let max = self.ctx.max_requests();
        let live = self.shared.live.load(Ordering::SeqCst);
        let all_parked = live > 0 && pending.len() + self.held.len() >= live;
        all_parked || pending.len() >= max || self.rx_closed
    }

    /// Waits for an arrival, a re-attached batch, or (with requests pending) the
    /// linger.
    async fn next_event(&mut self, idle: bool, last_arrival: Instant) -> Event {
        let deadline = last_arrival + self.ctx.settings.linger;
        let Task {
            rx,
            rx_closed,
            reattaching,
            ..
        } = self;
        tokio::select! {
            msg = rx.recv(), if !*rx_closed => Event::Msg(msg),
            done = reattaching.join_next(), if !reattaching.is_empty() => {
                Event::Reattached(done.and_then(Result::ok))
            }
            () = tokio::time::sleep_until(deadline), if !idle => Event::Linger,
        }
    }

    /// Takes in an arriving request; after a fatal outcome it fails at once, with no
    /// wait for a round that would not be sent.
    fn arrive(&mut self, parked: Parked, pending: &mut Vec<Parked>) {
        if let Some(error) = &self.fatal {
            self.ctx.state().report.permanent_failures += 1;
            let _ = parked.reply.send(Err(error.clone()));
            return;
        }
        match self.admit(parked) {
            Admitted::Answered => {}
            Admitted::Held => self.ctx.state().waiting += 1,
            Admitted::Go(parked) => {
                self.ctx.state().waiting += 1;
                pending.push(*parked);
            }
        }
    }

    /// A re-attached batch is applied: its answers join the cache and the requests
    /// held for it are admitted again.
    fn reattached(&mut self, done: Option<Reattached>, pending: &mut Vec<Parked>) {
        if let Some(done) = done {
            for id in &done.ids {
                self.in_flight.remove(id);
            }
            self.cache.extend(done.answers);
        }
        if self.reattaching.is_empty() {
            // A re-attach that failed outright named no ids: hold nothing longer.
            self.in_flight.clear();
        }
        for parked in std::mem::take(&mut self.held) {
            match self.admit(parked) {
                Admitted::Answered => {
                    let mut state = self.ctx.state();
                    state.waiting = state.waiting.saturating_sub(1);
                }
                Admitted::Held => {}
                Admitted::Go(parked) => pending.push(*parked),
            }
        }
    }
}
