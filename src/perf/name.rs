//! Interned names: symbols, strategy names and custom metric types.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ustr::Ustr;

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
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Ustr);

impl Name {
    /// Interns `text` (or finds it already interned) and returns its name.
    ///
    /// ```
    /// # use backtest_perf::Name;
    /// assert_eq!(Name::new("my-strategy").len(), 11);
    /// ```
    pub fn new(text: &str) -> Self {
        Name(Ustr::from(text))
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
        ustr::existing_ustr(text).map(Name)
    }

    /// The text of this name, valid for the rest of the process.
    ///
    /// ```
    /// # use backtest_perf::Name;
    /// let s: &'static str = Name::new("ETHUSDT").as_str();
    /// assert_eq!(s, "ETHUSDT");
    /// ```
    pub fn as_str(&self) -> &'static str {
        self.0.as_str()
    }

    /// The hash computed when the name was interned.
    pub(crate) fn precomputed_hash(&self) -> u64 {
        self.0.precomputed_hash()
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
