//! Rate limiting of repeats: the same event about the same job and
//! replicas goes out once per `repeat_after`. A failing job on an hourly
//! schedule, or a stale one checked every minute, would otherwise fill an
//! inbox; the first notification says all there is to say until something
//! changes (a different event, other replicas, or a recovery).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Event, Notification};

/// What makes two notifications "the same".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Key {
    event: Event,
    job: Option<String>,
    /// Sorted, so the order a run lists them in does not matter.
    replicas: Vec<String>,
}

impl Key {
    pub(super) fn of(n: &Notification) -> Key {
        let mut replicas = n.replicas.clone();
        replicas.sort();
        replicas.dedup();
        Key {
            event: n.event,
            job: n.job.clone(),
            replicas,
        }
    }

    /// Whether a recovery described by `self` ends what `other` reported:
    /// the same job, or for notifications about no job, a shared replica.
    fn recovered_by(&self, recovery: &Key) -> bool {
        match (&self.job, &recovery.job) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.replicas.iter().any(|r| recovery.replicas.contains(r)),
            _ => false,
        }
    }
}

pub(super) enum Admit {
    Send,
    Suppressed {
        ago: Duration,
        repeat_after: Duration,
    },
}

/// When each key last went out, for those that did within `repeat_after`
/// (older entries are dropped, so the map stays as small as the set of
/// things currently wrong).
pub(super) struct RateLimit {
    repeat_after: Duration,
    sent: HashMap<Key, Instant>,
}

impl RateLimit {
    pub(super) fn new(repeat_after: Duration) -> RateLimit {
        RateLimit {
            repeat_after,
            sent: HashMap::new(),
        }
    }

    /// Whether a notification with `key` may go out at `now`; if so it is
    /// recorded as sent then. A recovery always may, and lifts the
    /// suppression of everything about its job.
    pub(super) fn admit(&mut self, key: &Key, now: Instant) -> Admit {
        let repeat_after = self.repeat_after;
        self.sent
            .retain(|_, at| now.saturating_duration_since(*at) < repeat_after);
        if key.event == Event::Recovery {
            self.sent.retain(|k, _| !k.recovered_by(key));
            return Admit::Send;
        }
        if let Some(at) = self.sent.get(key) {
            return Admit::Suppressed {
                ago: now.saturating_duration_since(*at),
                repeat_after,
            };
        }
        if !repeat_after.is_zero() {
            self.sent.insert(key.clone(), now);
        }
        Admit::Send
    }

    /// Undo the record [`admit`](Self::admit) made at `at` for `key` (the
    /// notification reached nobody), unless a later one replaced it.
    pub(super) fn forget(&mut self, key: &Key, at: Instant) {
        if self.sent.get(key) == Some(&at) {
            self.sent.remove(key);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(event: Event, job: Option<&str>, replicas: &[&str]) -> Key {
        Key {
            event,
            job: job.map(String::from),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn sent(a: Admit) -> bool {
        matches!(a, Admit::Send)
    }

    #[test]
    fn repeats_wait_for_repeat_after_and_recovery_lifts_the_wait() {
        let hour = Duration::from_secs(3600);
        let mut l = RateLimit::new(hour);
        let t0 = Instant::now();
        let fail = key(Event::Failure, Some("nightly"), &["s3"]);
        assert!(sent(l.admit(&fail, t0)));
        match l.admit(&fail, t0 + Duration::from_secs(60)) {
            Admit::Suppressed { ago, repeat_after } => {
                assert_eq!((ago, repeat_after), (Duration::from_secs(60), hour))
            }
            Admit::Send => panic!("a repeat within the hour went out"),
        }
        // Something else about the same job is news.
        assert!(sent(l.admit(
            &key(Event::Failure, Some("nightly"), &["s3", "sftp"]),
            t0
        )));
        assert!(sent(
            l.admit(&key(Event::Partial, Some("nightly"), &["s3"]), t0)
        ));
        assert!(sent(
            l.admit(&key(Event::Failure, Some("weekly"), &["s3"]), t0)
        ));
        // After the hour, the repeat goes out (and the old entries are gone).
        assert!(sent(l.admit(&fail, t0 + hour)));
        assert_eq!(l.len(), 1);
        assert!(!sent(l.admit(&fail, t0 + hour + Duration::from_secs(1))));
        // A recovery always goes out, also twice, and clears its job only.
        let other = key(Event::Stale, Some("weekly"), &[]);
        assert!(sent(l.admit(&other, t0 + hour)));
        let rec = key(Event::Recovery, Some("nightly"), &["s3"]);
        assert!(sent(l.admit(&rec, t0 + hour)));
        assert!(sent(l.admit(&rec, t0 + hour)));
        assert!(sent(l.admit(&fail, t0 + hour + Duration::from_secs(2))));
        assert!(!sent(l.admit(&other, t0 + hour + Duration::from_secs(2))));
    }

    #[test]
    fn replica_notifications_recover_by_replica_and_zero_means_always() {
        let mut l = RateLimit::new(Duration::from_secs(60));
        let t = Instant::now();
        let stale = key(Event::Stale, None, &["s3"]);
        assert!(sent(l.admit(&stale, t)));
        assert!(!sent(l.admit(&stale, t)));
        assert!(sent(l.admit(&key(Event::Recovery, None, &["gcs"]), t)));
        assert!(!sent(l.admit(&stale, t)));
        assert!(sent(l.admit(&key(Event::Recovery, None, &["s3"]), t)));
        assert!(sent(l.admit(&stale, t)));

        let mut l = RateLimit::new(Duration::ZERO);
        assert!(sent(l.admit(&stale, t)));
        assert!(sent(l.admit(&stale, t)));
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn an_undelivered_notification_does_not_hold_back_the_next() {
        let mut l = RateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let fail = key(Event::Failure, Some("j"), &[]);
        assert!(sent(l.admit(&fail, t0)));
        l.forget(&fail, t0);
        assert!(sent(l.admit(&fail, t1)));
        // A stale forget (of the earlier send) leaves the later record.
        l.forget(&fail, t0);
        assert!(!sent(l.admit(&fail, t1)));
    }
}
