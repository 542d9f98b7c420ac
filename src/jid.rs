//! JIDs (RFC 7622): parsing, comparison and the bare/full distinction.
//!
//! Localpart and domainpart are compared case-insensitively (lowercased on parse, a simplification
//! of PRECIS/nodeprep sufficient for the ASCII JIDs servers hand us); the resourcepart is kept exact.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    node: Option<String>,
    domain: String,
    resource: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JID {0:?}")]
pub struct JidError(pub String);

const MAX_PART: usize = 1023;

impl Jid {
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let err = || JidError(s.to_owned());
        let (rest, resource) = match s.find('/') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let (node, domain) = match rest.find('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if domain.is_empty()
            || domain.len() > MAX_PART
            || domain
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "@/\"&'<>".contains(c))
        {
            return Err(err());
        }
        if let Some(n) = node
            && (n.is_empty()
                || n.len() > MAX_PART
                || n.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "\"&'/:<>@".contains(c)))
        {
            return Err(err());
        }
        if let Some(r) = resource
            && (r.is_empty() || r.len() > MAX_PART || r.chars().any(|c| c.is_control()))
        {
            return Err(err());
        }
        Ok(Jid {
            node: node.map(str::to_lowercase),
            domain: domain.to_lowercase(),
            resource: resource.map(str::to_owned),
        })
    }

    /// A bare JID from its parts (already valid).
    pub fn from_parts(node: Option<&str>, domain: &str, resource: Option<&str>) -> Jid {
        Jid {
            node: node.map(str::to_lowercase),
            domain: domain.to_lowercase(),
            resource: resource.map(str::to_owned),
        }
    }

    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    pub fn is_bare(&self) -> bool {
        self.resource.is_none()
    }

    /// This JID without its resource.
    pub fn to_bare(&self) -> Jid {
        Jid {
            node: self.node.clone(),
            domain: self.domain.clone(),
            resource: None,
        }
    }

    /// The same JID with another resource.
    pub fn with_resource(&self, resource: &str) -> Jid {
        Jid {
            node: self.node.clone(),
            domain: self.domain.clone(),
            resource: Some(resource.to_owned()),
        }
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = &self.node {
            write!(f, "{n}@")?;
        }
        f.write_str(&self.domain)?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Jid {
    type Err = JidError;
    fn from_str(s: &str) -> Result<Jid, JidError> {
        Jid::parse(s)
    }
}

impl serde::Serialize for Jid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Jid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Jid, D::Error> {
        let s = String::deserialize(d)?;
        Jid::parse(&s).map_err(serde::de::Error::custom)
    }
}

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
        assert_eq!(j.to_bare().to_string(), "alice@localhost");
        assert_eq!(Jid::parse("pubsub.localhost").unwrap().node(), None);
    }

    #[test]
    fn rejects_invalid() {
        for bad in ["", "@localhost", "a@", "a@b/", "a b@c", "a@b c", "<x>@y"] {
            assert!(Jid::parse(bad).is_err(), "{bad}");
        }
    }
}
