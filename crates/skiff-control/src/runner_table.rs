//! The revisions at work, found by revision name and by service: a deploy, a traffic
//! change or a removal asks for one service's runners, and with ten thousand services
//! a walk over all of them on each was a cost that grew with the host's size.
//!
//! This module keeps the index only; it must not start, stop or retire anything.

use std::collections::HashMap;

/// Entries (the control plane's runners) by revision, with each service's revisions.
pub(crate) struct RunnerTable<T> {
    by_revision: HashMap<String, (String, T)>,
    revisions_of: HashMap<String, Vec<String>>,
}

impl<T> Default for RunnerTable<T> {
    fn default() -> Self {
        RunnerTable {
            by_revision: HashMap::new(),
            revisions_of: HashMap::new(),
        }
    }
}

impl<T: Clone> RunnerTable<T> {
    /// Keeps `entry` as revision `revision` of `service`, in place of any before it.
    pub(crate) fn insert(&mut self, service: &str, revision: &str, entry: T) {
        let before = self
            .by_revision
            .insert(revision.to_owned(), (service.to_owned(), entry));
        match before {
            Some((owner, _)) if owner == service => {}
            Some((owner, _)) => {
                self.forget_revision_of(&owner, revision);
                self.add_revision_of(service, revision);
            }
            None => self.add_revision_of(service, revision),
        }
    }

    /// Revision `revision`'s entry.
    pub(crate) fn get(&self, revision: &str) -> Option<&T> {
        self.by_revision.get(revision).map(|(_, entry)| entry)
    }

    /// Forgets revision `revision` when `is_it` says its entry is the one meant (a newer
    /// one may have taken its place); whether it did.
    pub(crate) fn remove_if(&mut self, revision: &str, is_it: impl FnOnce(&T) -> bool) -> bool {
        let Some((service, entry)) = self.by_revision.get(revision) else {
            return false;
        };
        if !is_it(entry) {
            return false;
        }
        let service = service.clone();
        self.by_revision.remove(revision);
        self.forget_revision_of(&service, revision);
        true
    }

    /// The entries of `service`'s revisions.
    pub(crate) fn of_service(&self, service: &str) -> Vec<T> {
        self.revisions_of
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|r| self.get(r).cloned())
            .collect()
    }

    /// Every entry.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.by_revision.values().map(|(_, entry)| entry)
    }

    fn add_revision_of(&mut self, service: &str, revision: &str) {
        self.revisions_of
            .entry(service.to_owned())
            .or_default()
            .push(revision.to_owned());
    }

    fn forget_revision_of(&mut self, service: &str, revision: &str) {
        if let Some(revisions) = self.revisions_of.get_mut(service) {
            revisions.retain(|r| r != revision);
            if revisions.is_empty() {
                self.revisions_of.remove(service);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<u32>) -> Vec<u32> {
        v.sort_unstable();
        v
    }

    #[test]
    fn entries_are_found_by_revision_and_by_service() {
        let mut t = RunnerTable::default();
        t.insert("api", "api-00001", 1);
        t.insert("api", "api-00002", 2);
        t.insert("web", "web-00001", 3);
        assert_eq!(sorted(t.of_service("api")), [1, 2]);
        assert_eq!(t.of_service("web"), [3]);
        assert_eq!(t.of_service("nobody"), Vec::<u32>::new());
        assert_eq!(t.get("api-00002"), Some(&2));
        assert_eq!(sorted(t.values().copied().collect()), [1, 2, 3]);
    }

    #[test]
    fn a_newer_entry_of_a_revision_takes_the_place_of_the_older() {
        let mut t = RunnerTable::default();
        t.insert("api", "api-00001", 1);
        t.insert("api", "api-00001", 10);
        assert_eq!(t.of_service("api"), [10], "one entry per revision");
        assert!(
            !t.remove_if("api-00001", |e| *e == 1),
            "the older one's end leaves the newer"
        );
        assert_eq!(t.get("api-00001"), Some(&10));
        assert!(t.remove_if("api-00001", |e| *e == 10));
        assert_eq!(t.get("api-00001"), None);
        assert_eq!(t.of_service("api"), Vec::<u32>::new());
        assert!(
            t.revisions_of.is_empty(),
            "no service is kept without revisions"
        );
        assert!(!t.remove_if("api-00001", |_| true), "gone already");
    }

    /// A service removed and created again may give a revision name to another service
    /// (names are the caller's when given): the index follows the newest owner.
    #[test]
    fn a_revision_name_taken_by_another_service_moves_with_it() {
        let mut t = RunnerTable::default();
        t.insert("api", "shared", 1);
        t.insert("web", "shared", 2);
        assert_eq!(t.of_service("api"), Vec::<u32>::new());
        assert_eq!(t.of_service("web"), [2]);
    }
}
