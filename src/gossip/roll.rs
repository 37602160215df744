//! A roll of members by name that clones for almost nothing: a base map shared between the
//! clones, and each clone's own changes beside it. A roll whose base nobody else holds writes
//! into the base directly (a node on its own, as shipped, never has changes beside it); a
//! roll that shares its base writes its changes into a small map of its own, and folds them
//! into a base of its own once they reach a quarter of it. Both layers (`swim`, `serf`) keep
//! their members in one, so the nodes that the simulator starts from one converged view
//! (`node::View`) hold 10,000 members each in shared memory, and a node that has seen 1,000
//! verdicts change holds those 1,000 records of its own, not a copy of the other 9,000.
//!
//! (A persistent B-tree was tried first: a change copied the 64-slot leaf it fell in, so at
//! 10 % packet loss, where every node sees thousands of suspicions and refutations, nearly
//! every leaf became private and a 1,000-node cluster held 128 MB of copied leaves.)

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map;
use std::iter::Peekable;
use std::sync::Arc;

/// Records of type `V` by member name.
#[derive(Debug, Clone)]
pub struct Roll<V: Clone> {
    /// The records as they were when this roll last had a base of its own.
    base: Arc<BTreeMap<Arc<str>, Arc<V>>>,
    /// What changed since, while the base is shared: a record, or `None` for one taken off.
    changes: BTreeMap<Arc<str>, Option<Arc<V>>>,
    /// How many records the roll holds.
    len: usize,
}

impl<V: Clone> Default for Roll<V> {
    fn default() -> Self {
        Roll {
            base: Arc::default(),
            changes: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<V: Clone> Roll<V> {
    /// An empty roll.
    pub fn new() -> Self {
        Self::default()
    }

    /// The record of `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        match self.changes.get(name) {
            Some(change) => change.as_deref(),
            None => self.base.get(name).map(|v| &**v),
        }
    }

    /// The record of `name`, to change: this roll's own copy from now on.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        if self.own_base() {
            return Arc::make_mut(&mut self.base)
                .get_mut(name)
                .map(Arc::make_mut);
        }
        if !self.changes.contains_key(name) {
            let (k, v) = self.base.get_key_value(name)?;
            self.changes.insert(k.clone(), Some(v.clone()));
        }
        self.changes.get_mut(name)?.as_mut().map(Arc::make_mut)
    }

    /// Whether `name` is on the roll.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Puts `record` on the roll as `name`, replacing any record of that name.
    pub fn insert(&mut self, name: impl Into<Arc<str>>, record: V) {
        let (name, record) = (name.into(), Arc::new(record));
        if !self.contains_key(&name) {
            self.len += 1;
        }
        if self.own_base() {
            Arc::make_mut(&mut self.base).insert(name, record);
        } else {
            self.changes.insert(name, Some(record));
        }
    }

    /// Takes `name` off the roll; its record.
    pub fn remove(&mut self, name: &str) -> Option<V> {
        let gone = if self.own_base() {
            Arc::make_mut(&mut self.base).remove(name)?
        } else {
            let old = Arc::new(self.get(name)?.clone());
            let key = self.base.get_key_value(name).map(|(k, _)| k.clone());
            match key {
                // Still in the shared base: remember that it is gone.
                Some(k) => self.changes.insert(k, None),
                None => self.changes.remove(name),
            };
            old
        };
        self.len -= 1;
        Some(Arc::unwrap_or_clone(gone))
    }

    /// Every record, in name order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        Merged {
            base: self.base.iter().peekable(),
            changes: self.changes.iter().peekable(),
        }
    }

    /// How many members are on the roll.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the roll is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether to write into the base, which is then this roll's own: nobody else holds it
    /// (the changes kept beside it are folded in first), or the changes have grown to a
    /// quarter of it (then it is copied, once).
    fn own_base(&mut self) -> bool {
        let shared = Arc::get_mut(&mut self.base).is_none();
        if shared && self.changes.len() <= self.base.len() / 4 + 16 {
            return false;
        }
        let base = Arc::make_mut(&mut self.base);
        for (k, change) in std::mem::take(&mut self.changes) {
            match change {
                Some(v) => base.insert(k, v),
                None => base.remove(&k),
            };
        }
        true
    }
}

/// The records of a base and its changes, merged in name order.
struct Merged<'a, V> {
    base: Peekable<btree_map::Iter<'a, Arc<str>, Arc<V>>>,
    changes: Peekable<btree_map::Iter<'a, Arc<str>, Option<Arc<V>>>>,
}

impl<'a, V> Iterator for Merged<'a, V> {
    type Item = &'a V;

    fn next(&mut self) -> Option<&'a V> {
        loop {
            let order = match (self.base.peek(), self.changes.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((b, _)), Some((c, _))) => b.cmp(c),
            };
            if order != Ordering::Greater {
                let (_, v) = self.base.next()?;
                if order == Ordering::Less {
                    return Some(&**v);
                }
            }
            // A change (which hides the base's record of the same name).
            if let Some((_, Some(v))) = self.changes.next() {
                return Some(&**v);
            }
        }
    }
}

impl<V: Clone> std::ops::Index<&str> for Roll<V> {
    type Output = V;

    fn index(&self, name: &str) -> &V {
        self.get(name).expect("no record of that name on the roll")
    }
}

impl<V: Clone, K: Into<Arc<str>>> FromIterator<(K, V)> for Roll<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(items: I) -> Self {
        let mut roll = Roll::new();
        for (k, v) in items {
            roll.insert(k, v);
        }
        roll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_shares_until_changed_and_a_change_stays_its_own() {
        let mut a: Roll<u32> = (0..100).map(|i| (format!("m{i:02}"), i)).collect();
        let b = a.clone();
        *a.get_mut("m07").unwrap() = 700;
        a.insert("new", 1);
        assert_eq!((a.get("m07"), b.get("m07")), (Some(&700), Some(&7)));
        assert_eq!((a.len(), b.len()), (101, 100));
        assert_eq!(a.remove("m08"), Some(8));
        assert_eq!((a.get("m08"), a.len()), (None, 100));
        assert_eq!(b["m08"], 8);
        // The records themselves are shared, not copied: the same allocation in both, and
        // the changes are the only thing `a` holds of its own.
        assert!(Arc::ptr_eq(&a.base, &b.base));
        assert_eq!(a.changes.len(), 3);
        assert_eq!(b.values().copied().sum::<u32>(), (0..100u32).sum::<u32>());
        // In name order, with the changes in their places.
        let names: Vec<u32> = a.values().copied().take(9).collect();
        assert_eq!(names, [0, 1, 2, 3, 4, 5, 6, 700, 9]);
        assert_eq!(a.values().count(), 100);
        assert_eq!(a.values().last(), Some(&1));
    }

    #[test]
    fn changes_fold_into_a_base_of_its_own_once_large_or_unshared() {
        let mut a: Roll<u32> = (0..100).map(|i| (format!("m{i:02}"), i)).collect();
        let b = a.clone();
        // A quarter of the roll (and 16 more) changes: then `a` copies the base once.
        for i in 0..43 {
            *a.get_mut(&format!("m{i:02}")).unwrap() += 1000;
        }
        assert!(!Arc::ptr_eq(&a.base, &b.base));
        assert!(a.changes.is_empty());
        assert_eq!((a["m41"], b["m41"], a.len()), (1041, 41, 100));
        // Once the other holder is gone, changes go straight into the base.
        let mut c = a.clone();
        c.insert("m00", 5);
        assert_eq!(c.changes.len(), 1);
        drop(a);
        c.remove("m01");
        assert!(c.changes.is_empty());
        assert_eq!((c["m00"], c.get("m01"), c.len()), (5, None, 99));
        assert_eq!(c.values().count(), 99);
    }

    #[test]
    fn taking_off_what_was_added_since_the_clone_leaves_no_trace() {
        let mut a: Roll<u32> = (0..10).map(|i| (format!("m{i}"), i)).collect();
        let _b = a.clone();
        a.insert("x", 1);
        assert_eq!(a.remove("x"), Some(1));
        assert!(a.changes.is_empty());
        assert_eq!(a.remove("x"), None);
        assert_eq!(a.len(), 10);
        a.insert("m3", 33);
        assert_eq!((a.len(), a["m3"]), (10, 33));
    }
}
