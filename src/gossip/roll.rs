//! A roll of members by name, in a persistent map: a clone costs nothing and shares every
//! entry with the original until one of them changes it, and a change copies only the path to
//! that entry (a few dozen pointers), never the records themselves. Both layers (`swim`,
//! `serf`) keep their members in one, so the nodes that the simulator starts from one
//! converged view (`node::View`) hold 10,000 members each in shared memory.

use std::sync::Arc;

use imbl::OrdMap;

/// Records of type `V` by member name.
#[derive(Debug, Clone)]
pub struct Roll<V: Clone> {
    map: OrdMap<Arc<str>, Arc<V>>,
}

impl<V: Clone> Default for Roll<V> {
    fn default() -> Self {
        Roll { map: OrdMap::new() }
    }
}

impl<V: Clone> Roll<V> {
    /// An empty roll.
    pub fn new() -> Self {
        Self::default()
    }

    /// The record of `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.map.get(name).map(|v| &**v)
    }

    /// The record of `name`, to change: this roll's own copy from now on.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        self.map.get_mut(name).map(Arc::make_mut)
    }

    /// Whether `name` is on the roll.
    pub fn contains_key(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Puts `record` on the roll as `name`, replacing any record of that name.
    pub fn insert(&mut self, name: impl Into<Arc<str>>, record: V) {
        self.map.insert(name.into(), Arc::new(record));
    }

    /// Takes `name` off the roll; its record.
    pub fn remove(&mut self, name: &str) -> Option<V> {
        self.map.remove(name).map(Arc::unwrap_or_clone)
    }

    /// Every record, in name order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|v| &**v)
    }

    /// How many members are on the roll.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the roll is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl<V: Clone> std::ops::Index<&str> for Roll<V> {
    type Output = V;

    fn index(&self, name: &str) -> &V {
        &self.map[name]
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
        let mut a: Roll<u32> = (0..100).map(|i| (format!("m{i}"), i)).collect();
        let b = a.clone();
        *a.get_mut("m7").unwrap() = 700;
        a.insert("new", 1);
        assert_eq!((a.get("m7"), b.get("m7")), (Some(&700), Some(&7)));
        assert_eq!((a.len(), b.len()), (101, 100));
        assert_eq!(a.remove("m8"), Some(8));
        assert_eq!(b["m8"], 8);
        // The records themselves are shared, not copied: the same allocation in both.
        let (x, y) = (a.map.get("m9").unwrap(), b.map.get("m9").unwrap());
        assert!(Arc::ptr_eq(x, y));
        assert_eq!(b.values().copied().sum::<u32>(), (0..100u32).sum::<u32>());
    }
}
