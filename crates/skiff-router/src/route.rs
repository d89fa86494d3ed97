//! Where one host's requests go: a single revision's pool, or several by percent (a
//! traffic split). Owns the choice of pool per request; it must not look inside pools.
//!
//! The choice is deterministic, not random: nginx's smooth weighted round robin. Every
//! 100 consecutive requests of a route follow its percents exactly, and a target's
//! requests are spread evenly among the others' (90/10 sends one in ten to the 10 %, never
//! ten in a row).

use crate::access::Private;
use crate::pool::RevisionPool;
use std::sync::{Arc, Mutex};

/// The pools a host's requests go to, with their percents.
pub struct Route {
    /// Pools with a share above zero, with their percent.
    targets: Vec<(Arc<RevisionPool>, i64)>,
    /// Each target's running credit (smooth weighted round robin); only for splits.
    credit: Mutex<Vec<i64>>,
    /// Who may call, when the service is private.
    private: Option<Arc<Private>>,
    /// The service it belongs to (empty until named).
    service: Arc<str>,
}

impl Route {
    /// Every request to `pool`.
    pub fn single(pool: Arc<RevisionPool>) -> Route {
        Route {
            targets: vec![(pool, 100)],
            credit: Mutex::new(Vec::new()),
            private: None,
            service: Arc::from(""),
        }
    }

    /// Requests spread over `split` by percent. Pools at 0 % are left out; `None` when
    /// the percents do not add up to 100.
    pub fn split(split: Vec<(Arc<RevisionPool>, u32)>) -> Option<Route> {
        let targets: Vec<_> = split
            .into_iter()
            .filter(|(_, percent)| *percent > 0)
            .map(|(pool, percent)| (pool, i64::from(percent)))
            .collect();
        let total: i64 = targets.iter().map(|(_, w)| w).sum();
        (total == 100).then(|| Route {
            credit: Mutex::new(vec![0; targets.len()]),
            targets,
            private: None,
            service: Arc::from(""),
        })
    }

    /// The same route, answering only the callers `private` lets in (`None`: everyone).
    pub fn with_access(mut self, private: Option<Arc<Private>>) -> Route {
        self.private = private;
        self
    }

    /// The same route, as service `service`'s (async invocations are kept under it).
    pub fn named(mut self, service: &str) -> Route {
        self.service = Arc::from(service);
        self
    }

    /// The service it belongs to (empty when not named).
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// Who may call, when the service is private.
    pub(crate) fn private(&self) -> Option<&Private> {
        self.private.as_deref()
    }

    /// The pool for the next request.
    pub fn pick(&self) -> &Arc<RevisionPool> {
        if let [(only, _)] = self.targets.as_slice() {
            return only;
        }
        let mut credit = self.credit.lock().unwrap_or_else(|p| p.into_inner());
        let mut best = 0;
        for (i, (_, weight)) in self.targets.iter().enumerate() {
            credit[i] += weight;
            if credit[i] > credit[best] {
                best = i;
            }
        }
        credit[best] -= 100;
        &self.targets[best].0
    }

    /// Every pool this route can pick.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<RevisionPool>> {
        self.targets.iter().map(|(p, _)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolConfig;
    use std::time::Duration;

    fn pool(name: &str) -> Arc<RevisionPool> {
        RevisionPool::new(PoolConfig {
            revision: name.into(),
            concurrency: 1,
            queue_limit: 1,
            timeout: Duration::from_secs(1),
        })
    }

    fn picks(route: &Route, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| route.pick().config().revision.clone())
            .collect()
    }

    #[test]
    fn a_split_is_exact_per_hundred_and_interleaved() {
        let r = Route::split(vec![(pool("a"), 90), (pool("b"), 10), (pool("c"), 0)]).unwrap();
        let got = picks(&r, 1000);
        for hundred in got.chunks(100) {
            assert_eq!(hundred.iter().filter(|p| *p == "b").count(), 10);
            assert!(!hundred.iter().any(|p| p == "c"));
        }
        // Interleaved: never more than nine a-s in a row.
        let longest_a = got.split(|p| p == "b").map(<[String]>::len).max().unwrap();
        assert!(longest_a <= 9, "{longest_a} requests in a row to a");
        assert_eq!(r.pools().count(), 2);
    }

    #[test]
    fn odd_splits_add_up_and_bad_ones_are_refused() {
        let r = Route::split(vec![(pool("a"), 33), (pool("b"), 33), (pool("c"), 34)]).unwrap();
        let got = picks(&r, 300);
        let count = |n: &str| got.iter().filter(|p| *p == n).count();
        assert_eq!((count("a"), count("b"), count("c")), (99, 99, 102));
        assert!(Route::split(vec![(pool("a"), 50)]).is_none());
        assert_eq!(picks(&Route::single(pool("s")), 3), ["s", "s", "s"]);
    }
}
