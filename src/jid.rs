//! JIDs (RFC 7622, prepared as RFC 6122 says): parsing, comparison, and the bare/full
//! distinction as types.
//!
//! Every JID is kept in its prepared form: nodeprep on the localpart, IDNA and nameprep on the
//! domainpart, resourceprep on the resourcepart (NFKC and case folding included), as the servers
//! prepare the JIDs they stamp. Two spellings of one address (`ＣＡＲＯＬ@LocalHost`,
//! `carol@localhost`) are one value, so affiliations, subscriptions, rosters and configured lists
//! all compare what the server compares. The preparation is the `jid` crate's (xmpp-rs), which
//! implements these profiles with the `stringprep` and `idna` crates.
//!
//! [`Jid`] is any address; [`BareJid`] has no resource (accounts, affiliations, rosters, PEP
//! services); [`FullJid`] has one (a client's session). Both dereference to [`Jid`].

use std::fmt;
use std::ops::Deref;

/// Any JID, prepared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid(jid::Jid);

/// A JID without a resource.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BareJid(Jid);

/// A JID with a resource.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FullJid(Jid);

/// A string that is not a valid JID (RFC 6120 8.3.3.8, `jid-malformed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JID {input:?}: {why}")]
pub struct JidError {
    pub input: String,
    pub why: &'static str,
}

impl JidError {
    fn new(input: &str, why: &'static str) -> JidError {
        // An attacker's string is echoed in logs and error texts: keep it short.
        let input = match input.char_indices().nth(64) {
            Some((i, _)) => format!("{}...", &input[..i]),
            None => input.to_owned(),
        };
        JidError { input, why }
    }
}

fn why(e: jid::Error) -> &'static str {
    match e {
        jid::Error::ResourceEmpty => "empty resourcepart",
        jid::Error::NodeEmpty => "empty localpart",
        jid::Error::NodeTooLong => "localpart longer than 1023 bytes",
        jid::Error::ResourceTooLong => "resourcepart longer than 1023 bytes",
        jid::Error::NodePrep => "localpart not allowed by nodeprep",
        jid::Error::NamePrep | jid::Error::Idna => "domainpart not allowed by IDNA/nameprep",
        jid::Error::ResourcePrep => "resourcepart not allowed by resourceprep",
        jid::Error::TooManyAts => "more than one @ before the domainpart",
        jid::Error::ResourceMissingInFullJid => "a full JID has a resourcepart",
        jid::Error::ResourceInBareJid => "a bare JID has no resourcepart",
    }
}

impl Jid {
    /// Parses and prepares a JID.
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        jid::Jid::new(s)
            .map(Jid)
            .map_err(|e| JidError::new(s, why(e)))
    }

    pub fn node(&self) -> Option<&str> {
        self.0.node().map(|n| n.as_str())
    }

    pub fn domain(&self) -> &str {
        self.0.domain().as_str()
    }

    pub fn resource(&self) -> Option<&str> {
        self.0.resource().map(|r| r.as_str())
    }

    pub fn is_bare(&self) -> bool {
        self.0.is_bare()
    }

    /// The whole JID as prepared text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The bare part as prepared text, without allocating.
    pub fn bare_str(&self) -> &str {
        let s = self.0.as_str();
        match self.resource() {
            Some(r) => &s[..s.len() - r.len() - 1],
            None => s,
        }
    }

    /// This JID without its resource.
    pub fn to_bare(&self) -> BareJid {
        BareJid(Jid(jid::Jid::from(self.0.to_bare())))
    }

    /// This JID as a bare JID, if it has no resource.
    pub fn into_bare(self) -> Result<BareJid, Jid> {
        if self.is_bare() {
            Ok(BareJid(self))
        } else {
            Err(self)
        }
    }

    /// This JID as a full JID, if it has a resource.
    pub fn into_full(self) -> Result<FullJid, Jid> {
        if self.is_bare() {
            Err(self)
        } else {
            Ok(FullJid(self))
        }
    }
}

impl BareJid {
    /// Parses a JID that must have no resource.
    pub fn parse(s: &str) -> Result<BareJid, JidError> {
        Jid::parse(s)?
            .into_bare()
            .map_err(|_| JidError::new(s, "a bare JID has no resourcepart"))
    }

    /// The same account with a resource.
    pub fn with_resource(&self, resource: &str) -> Result<FullJid, JidError> {
        let bare = self.0.0.to_bare();
        bare.with_resource_str(resource)
            .map(|f| FullJid(Jid(jid::Jid::from(f))))
            .map_err(|e| JidError::new(resource, why(e)))
    }

    pub fn as_jid(&self) -> &Jid {
        &self.0
    }
}

impl FullJid {
    /// Parses a JID that must have a resource.
    pub fn parse(s: &str) -> Result<FullJid, JidError> {
        Jid::parse(s)?
            .into_full()
            .map_err(|_| JidError::new(s, "a full JID has a resourcepart"))
    }

    pub fn resource(&self) -> &str {
        self.0.resource().unwrap_or_default()
    }

    pub fn as_jid(&self) -> &Jid {
        &self.0
    }
}

impl Deref for BareJid {
    type Target = Jid;
    fn deref(&self) -> &Jid {
        &self.0
    }
}

impl Deref for FullJid {
    type Target = Jid;
    fn deref(&self) -> &Jid {
        &self.0
    }
}

impl From<BareJid> for Jid {
    fn from(b: BareJid) -> Jid {
        b.0
    }
}

impl From<FullJid> for Jid {
    fn from(f: FullJid) -> Jid {
        f.0
    }
}

impl PartialEq<BareJid> for Jid {
    fn eq(&self, other: &BareJid) -> bool {
        *self == other.0
    }
}

impl PartialEq<Jid> for BareJid {
    fn eq(&self, other: &Jid) -> bool {
        self.0 == *other
    }
}

impl PartialEq<FullJid> for Jid {
    fn eq(&self, other: &FullJid) -> bool {
        *self == other.0
    }
}

impl PartialEq<Jid> for FullJid {
    fn eq(&self, other: &Jid) -> bool {
        self.0 == *other
    }
}

macro_rules! text_forms {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Hash, equality and order are those of the prepared text, so maps keyed by JIDs
        /// can be searched with a `&str` already prepared (`Jid::bare_str`).
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                self.as_str()
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.as_str())
            }
        }

        impl std::str::FromStr for $t {
            type Err = JidError;
            fn from_str(s: &str) -> Result<$t, JidError> {
                <$t>::parse(s)
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

text_forms!(Jid, BareJid, FullJid);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let j = Jid::parse("Alice@LocalHost/Phone/1").unwrap();
        assert_eq!(j.node(), Some("alice"));
        assert_eq!(j.domain(), "localhost");
        assert_eq!(j.resource(), Some("Phone/1"));
        assert_eq!(j.to_string(), "alice@localhost/Phone/1");
        assert_eq!(j.bare_str(), "alice@localhost");
        assert_eq!(j.to_bare().to_string(), "alice@localhost");
        assert_eq!(Jid::parse("pubsub.localhost").unwrap().node(), None);
        assert_eq!(
            Jid::parse("pubsub.localhost.").unwrap().as_str(),
            "pubsub.localhost"
        );
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "",
            "@localhost",
            "a@",
            "a@b/",
            "a b@c",
            "a@b c",
            "<x>@y",
            "a@b@c",
            "a\u{0}@b",
        ] {
            assert!(Jid::parse(bad).is_err(), "{bad}");
        }
    }

    /// RFC 6122 appendix A (nodeprep): B.2 case folding and NFKC, so fullwidth and upper-case
    /// forms are the same localpart; RFC 6122 section 2.2 / RFC 3491 (nameprep) for the domain.
    #[test]
    fn equal_after_preparation() {
        let plain = Jid::parse("carol@localhost").unwrap();
        for form in [
            "CAROL@LOCALHOST",
            "\u{ff43}\u{ff41}\u{ff52}\u{ff4f}\u{ff4c}@localhost",
            "Carol@LocalHost.",
        ] {
            assert_eq!(Jid::parse(form).unwrap(), plain, "{form}");
        }
        // RFC 6122 appendix B (resourceprep) keeps case but applies NFKC.
        let r = Jid::parse("carol@localhost/\u{ff30}hone").unwrap();
        assert_eq!(r.resource(), Some("Phone"));
        assert_ne!(
            Jid::parse("carol@localhost/phone").unwrap(),
            Jid::parse("carol@localhost/Phone").unwrap()
        );
    }

    #[test]
    fn bare_and_full_are_distinct() {
        assert!(BareJid::parse("a@b/c").is_err());
        assert!(FullJid::parse("a@b").is_err());
        let f = FullJid::parse("A@b/c").unwrap();
        assert_eq!(f.resource(), "c");
        assert_eq!(f.to_bare(), BareJid::parse("a@B").unwrap());
        assert_eq!(f.to_bare().with_resource("c").unwrap(), f);
        let j: Jid = f.clone().into();
        assert_eq!(j, f);
    }
}
