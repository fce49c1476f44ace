//! [`SeqMap`]: values keyed by sequence number, in ascending order.

use std::collections::VecDeque;

/// Values keyed by sequence number, kept in ascending order.
///
/// Sequence numbers mostly arrive at the back and leave from the front
/// (queued messages, a reorder window), so this is a sorted `VecDeque`:
/// both ends are O(1), the middle is a binary search and a shift. It stands
/// in for `BTreeMap`, whose code alone would be a fifth of the npm
/// package's wasm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqMap<V> {
    entries: VecDeque<(u64, V)>,
}

impl<V> Default for SeqMap<V> {
    fn default() -> Self {
        SeqMap {
            entries: VecDeque::new(),
        }
    }
}

impl<V> SeqMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        SeqMap::default()
    }

    /// Where `seq` is, or where it would go.
    fn find(&self, seq: u64) -> Result<usize, usize> {
        // The common cases first: appending, and the front.
        match self.entries.back() {
            None => return Err(0),
            Some(&(last, _)) if seq > last => return Err(self.entries.len()),
            _ => {}
        }
        self.entries.binary_search_by_key(&seq, |&(k, _)| k)
    }

    /// Insert or replace the value for `seq`; returns the old one.
    pub fn insert(&mut self, seq: u64, value: V) -> Option<V> {
        match self.find(seq) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (seq, value));
                None
            }
        }
    }

    /// Remove and return the value for `seq`.
    pub fn remove(&mut self, seq: u64) -> Option<V> {
        let i = self.find(seq).ok()?;
        self.entries.remove(i).map(|(_, v)| v)
    }

    /// The value for `seq`.
    pub fn get(&self, seq: u64) -> Option<&V> {
        let i = self.find(seq).ok()?;
        self.entries.get(i).map(|(_, v)| v)
    }

    /// The value for `seq`, mutably.
    pub fn get_mut(&mut self, seq: u64) -> Option<&mut V> {
        let i = self.find(seq).ok()?;
        self.entries.get_mut(i).map(|(_, v)| v)
    }

    /// The keys in `first..=last`, ascending.
    pub fn keys_in(&self, first: u64, last: u64) -> Vec<u64> {
        self.keys()
            .skip_while(|&k| k < first)
            .take_while(|&k| k <= last)
            .collect()
    }

    /// All keys, ascending.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|&(k, _)| k)
    }

    /// All entries, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        self.entries.iter().map(|(k, v)| (*k, v))
    }

    /// All values, ascending by key.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.iter().map(|(_, v)| v)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Remove everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Random operations agree with `BTreeMap`.
    #[test]
    fn behaves_like_a_btree_map() {
        let seed = 0x5eed_u64;
        let mut rng = crate::Rng::new(seed);
        let mut map = SeqMap::new();
        let mut model = BTreeMap::new();
        for step in 0..20_000u32 {
            let seq = rng.up_to(63);
            let first = rng.up_to(63);
            let last = first + rng.up_to(15);
            match rng.up_to(4) {
                0 | 1 => assert_eq!(
                    map.insert(seq, step),
                    model.insert(seq, step),
                    "seed {seed} step {step}"
                ),
                2 => assert_eq!(
                    map.remove(seq),
                    model.remove(&seq),
                    "seed {seed} step {step}"
                ),
                3 => {
                    if let Some(v) = map.get_mut(seq) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&seq) {
                        *v += 1;
                    }
                }
                _ => assert_eq!(
                    map.keys_in(first, last),
                    model
                        .range(first..=last)
                        .map(|(&k, _)| k)
                        .collect::<Vec<_>>(),
                    "seed {seed} step {step}"
                ),
            }
            assert_eq!(map.get(seq), model.get(&seq), "seed {seed} step {step}");
            assert_eq!(map.len(), model.len(), "seed {seed} step {step}");
        }
        let all: Vec<(u64, &u32)> = map.iter().collect();
        let expected: Vec<(u64, &u32)> = model.iter().map(|(&k, v)| (k, v)).collect();
        assert_eq!(all, expected, "seed {seed}");
    }
}
