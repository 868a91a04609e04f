//! String interning: sensors, zones and label values become dense `u32` ids so per-reading state is plain arrays.

use ahash::AHashMap;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Id of "no value" (a reading without a zone, say).
pub(crate) const NONE: u32 = u32::MAX;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Vec<CompactString>", into = "Vec<CompactString>")]
pub(crate) struct Interner {
    names: Vec<CompactString>,
    /// Short names (sensor ids, zones) live inline in the key, so a lookup needs no second cache miss.
    index: AHashMap<CompactString, u32>,
}

impl Interner {
    /// The id of `name`, and whether it was new.
    pub(crate) fn intern(&mut self, name: &str) -> (u32, bool) {
        if let Some(&id) = self.index.get(name) {
            return (id, false);
        }
        // Ids are u32 and NONE is reserved; 4 billion distinct names in one partition is not a real workload.
        let id = u32::try_from(self.names.len()).unwrap_or(NONE - 1);
        let name = CompactString::from(name);
        self.names.push(name.clone());
        self.index.insert(name, id);
        (id, true)
    }

    pub(crate) fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(CompactString::as_str)
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// Keeps the names whose `keep[id]` is true, renumbered densely in their old order. Returns old id → new id
    /// (NONE for a name dropped).
    pub(crate) fn retain(&mut self, keep: &[bool]) -> Vec<u32> {
        let mut map = vec![NONE; self.names.len()];
        let mut names = Vec::with_capacity(self.names.len());
        for (old, name) in std::mem::take(&mut self.names).into_iter().enumerate() {
            if keep.get(old).copied().unwrap_or(false) {
                map[old] = names.len() as u32;
                names.push(name);
            }
        }
        *self = Self::from(names);
        map
    }
}

impl From<Vec<CompactString>> for Interner {
    fn from(names: Vec<CompactString>) -> Self {
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect();
        Self { names, index }
    }
}

impl From<Interner> for Vec<CompactString> {
    fn from(i: Interner) -> Self {
        i.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_survives_serialization() {
        let mut i = Interner::default();
        assert_eq!(i.intern("a"), (0, true));
        assert_eq!(i.intern("b"), (1, true));
        assert_eq!(i.intern("a"), (0, false));
        let back: Interner = postcard::from_bytes(&postcard::to_stdvec(&i).unwrap()).unwrap();
        assert_eq!(back.name(1), Some("b"));
        let mut back = back;
        assert_eq!(back.intern("b"), (1, false));
    }

    #[test]
    fn retain_renumbers_densely() {
        let mut i = Interner::default();
        for n in ["a", "b", "c"] {
            i.intern(n);
        }
        assert_eq!(i.retain(&[false, true, true]), vec![NONE, 0, 1]);
        assert_eq!((i.name(0), i.name(1), i.len()), (Some("b"), Some("c"), 2));
        assert_eq!(i.intern("a"), (2, true));
    }
}
