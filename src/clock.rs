//! The time source of background work and of the use cases it shares rules with. The
//! system clock in production; tests use a clock they move forward instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Microseconds added to the system time: zero unless a test moved the clock.
    offset: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { offset: None }
    }

    /// A clock that `advance` moves forward (every clone moves with it).
    pub fn adjustable() -> Clock {
        Clock { offset: Some(Arc::new(AtomicI64::new(0))) }
    }

    /// Moves an adjustable clock forward; does nothing to the system clock.
    pub fn advance(&self, by: std::time::Duration) {
        if let Some(offset) = &self.offset {
            let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
            offset.fetch_add(micros, Ordering::SeqCst);
        }
    }

    /// Sets an adjustable clock to `at` (earlier or later; it runs on from there, as
    /// time passes); does nothing to the system clock. For benchmarks that replay a
    /// moment of a population's life.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Some(offset) = &self.offset {
            let micros = (at - crate::service::now()).num_microseconds().unwrap_or(i64::MAX);
            offset.store(micros, Ordering::SeqCst);
        }
    }

    /// Now, at the precision every backend stores (see `service::now`).
    pub fn now(&self) -> DateTime<Utc> {
        let now = crate::service::now();
        match &self.offset {
            None => now,
            Some(offset) => now + chrono::Duration::microseconds(offset.load(Ordering::SeqCst)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_every_clone() {
        let clock = Clock::adjustable();
        let copy = clock.clone();
        let before = copy.now();
        clock.advance(std::time::Duration::from_secs(3600));
        assert!(copy.now() - before >= chrono::Duration::hours(1));
        let target = Utc::now() - chrono::Duration::days(30);
        clock.set(target);
        assert!((copy.now() - target).abs() < chrono::Duration::minutes(1), "set moves it back too");
        let system = Clock::system();
        system.advance(std::time::Duration::from_secs(3600));
        assert!(system.now() - Utc::now() < chrono::Duration::minutes(1));
    }
}
