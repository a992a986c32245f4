//! Interned names: symbols, strategy names and custom metric types.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::ops::Deref;
use std::sync::OnceLock;

use parking_lot::RwLock;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An interned, immutable string that costs one pointer to copy.
///
/// Symbols, strategy names and custom metric types repeat on every event, so they are
/// interned once and shared: a `Name` is `Copy`, compares by pointer and hashes with a
/// hash computed when it was interned. Interned text lives for the rest of the process,
/// which suits the small, repeating set of names a backtest uses; do not intern
/// unbounded, ever-changing text (ids, timestamps) as names.
///
/// ```
/// use backtest_perf::Name;
///
/// let a = Name::new("BTCUSDT");
/// let b: Name = "BTCUSDT".into();
/// assert_eq!(a, b);
/// assert_eq!(a.as_str(), "BTCUSDT");
/// ```
#[derive(Clone, Copy)]
pub struct Name(&'static Entry);

/// An interned text and its hash, made once and never freed.
struct Entry {
    hash: u64,
    text: &'static str,
}

/// Every name interned so far. A map that grows with the names (a few dozen in a
/// backtest), where the `ustr` crate used before took 6 MB of memory with its first name.
struct Interner {
    hasher: RandomState,
    names: RwLock<HashMap<&'static str, &'static Entry>>,
}

fn interner() -> &'static Interner {
    static INTERNER: OnceLock<Interner> = OnceLock::new();
    INTERNER.get_or_init(|| Interner {
        hasher: RandomState::new(),
        names: RwLock::new(HashMap::new()),
    })
}

impl Name {
    /// Interns `text` (or finds it already interned) and returns its name.
    ///
    /// ```
    /// # use backtest_perf::Name;
    /// assert_eq!(Name::new("my-strategy").len(), 11);
    /// ```
    pub fn new(text: &str) -> Self {
        if let Some(name) = Name::existing(text) {
            return name;
        }
        let interner = interner();
        let mut names = interner.names.write();
        // Another thread may have interned it between the two locks.
        if let Some(entry) = names.get(text) {
            return Name(entry);
        }
        let text: &'static str = Box::leak(Box::from(text));
        let entry: &'static Entry = Box::leak(Box::new(Entry {
            hash: interner.hasher.hash_one(text),
            text,
        }));
        names.insert(text, entry);
        Name(entry)
    }

    /// The name of `text` if it is interned already; never interns (a reader that must
    /// bound how many names it adds checks with this first).
    ///
    /// ```
    /// # use backtest_perf::Name;
    /// let _ = Name::new("SOLUSDT");
    /// assert_eq!(Name::existing("SOLUSDT"), Some(Name::new("SOLUSDT")));
    /// assert_eq!(Name::existing("never-interned-4f1c9a"), None);
    /// ```
    pub fn existing(text: &str) -> Option<Self> {
        interner().names.read().get(text).map(|entry| Name(entry))
    }

    /// The text of this name, valid for the rest of the process.
    ///
    /// ```
    /// # use backtest_perf::Name;
    /// let s: &'static str = Name::new("ETHUSDT").as_str();
    /// assert_eq!(s, "ETHUSDT");
    /// ```
    pub fn as_str(&self) -> &'static str {
        self.0.text
    }

    /// The hash computed when the name was interned.
    pub(crate) fn precomputed_hash(&self) -> u64 {
        self.0.hash
    }
}

impl PartialEq for Name {
    /// One entry per text: the same name is the same pointer.
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl Ord for Name {
    /// By text.
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Self {
        Name::new(text)
    }
}

impl From<&String> for Name {
    fn from(text: &String) -> Self {
        Name::new(text)
    }
}

impl From<String> for Name {
    fn from(text: String) -> Self {
        Name::new(&text)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Name::new(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::Name;

    #[test]
    fn threads_interning_the_same_text_get_the_same_name() {
        let texts: Vec<String> = (0..64).map(|i| format!("name-test-{i}")).collect();
        let per_thread: Vec<Vec<Name>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| texts.iter().map(|t| Name::new(t)).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for names in &per_thread[1..] {
            assert_eq!(names, &per_thread[0]);
        }
        for (name, text) in per_thread[0].iter().zip(&texts) {
            assert_eq!(name.as_str(), text);
            assert_eq!(Name::existing(text), Some(*name));
            assert_eq!(name.precomputed_hash(), Name::new(text).precomputed_hash());
        }
    }

    #[test]
    fn names_order_by_text_and_differ_by_text() {
        let (b, a) = (Name::new("name-order-b"), Name::new("name-order-a"));
        assert!(a < b);
        assert_ne!(a, b);
        assert_eq!(Name::new(""), Name::new(""));
        assert_eq!(Name::new("").as_str(), "");
    }
}
