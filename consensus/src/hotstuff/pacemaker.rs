//! The pacemaker: the current view, its timer, and exponential backoff.
//!
//! A view ends with a QC for it (progress: the backoff resets) or a TC (the next timer doubles, up
//! to a cap). The timer also allows for the idle interval, since a leader with nothing to propose
//! waits that long before proposing an empty block.

use quorate_ledger::View;

pub(crate) struct Pacemaker {
    view: View,
    consecutive_timeouts: u32,
    timeout_ms: u64,
    timeout_ms_max: u64,
    idle_interval_ms: u64,
    timeouts_total: u64,
}

impl Pacemaker {
    pub fn new(view: View, timeout_ms: u64, timeout_ms_max: u64, idle_interval_ms: u64) -> Self {
        Pacemaker {
            view,
            consecutive_timeouts: 0,
            timeout_ms,
            timeout_ms_max,
            idle_interval_ms,
            timeouts_total: 0,
        }
    }

    pub fn view(&self) -> View {
        self.view
    }

    /// Moves to `view` if it is later. `by_timeout` says a TC (not a QC) ended the last view.
    pub fn advance(&mut self, view: View, by_timeout: bool) -> bool {
        if view <= self.view {
            return false;
        }
        self.view = view;
        if by_timeout {
            self.consecutive_timeouts = self.consecutive_timeouts.saturating_add(1);
        } else {
            self.consecutive_timeouts = 0;
        }
        true
    }

    /// A local timer fired in the current view.
    pub fn record_timeout(&mut self) {
        self.timeouts_total += 1;
    }

    pub fn timeouts_total(&self) -> u64 {
        self.timeouts_total
    }

    /// How long to wait in the current view before timing out.
    pub fn timer_ms(&self) -> u64 {
        let shift = self.consecutive_timeouts.min(20);
        let backoff = self
            .timeout_ms
            .saturating_mul(1u64 << shift)
            .min(self.timeout_ms_max);
        backoff.saturating_add(self.idle_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets_on_progress() {
        let mut pacemaker = Pacemaker::new(View(1), 100, 1000, 50);
        assert_eq!(pacemaker.timer_ms(), 150);
        assert!(pacemaker.advance(View(2), true));
        assert_eq!(pacemaker.timer_ms(), 250);
        assert!(pacemaker.advance(View(3), true));
        assert_eq!(pacemaker.timer_ms(), 450);
        for v in 4..20 {
            pacemaker.advance(View(v), true);
        }
        assert_eq!(pacemaker.timer_ms(), 1050);
        assert!(!pacemaker.advance(View(5), false), "never goes back");
        assert!(pacemaker.advance(View(20), false));
        assert_eq!(pacemaker.timer_ms(), 150);
    }
}
