//! Scopes (`invoke:FN`, `publish:TOPIC`, `read`, `dlq`, `kv:NS:read`, `kv:NS:write`,
//! `workflows:NAME`, `metrics`, `admin`, and a function token's `egress:DEP`) and the one
//! decision of access control: does a set of scopes grant what a request [`Need`]s.

use std::fmt;

/// One permission a key or token holds. A name may end in `*` (a prefix match): `publish:user.*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Everything.
    Admin,
    /// Every read-only route (functions, invocations, events, dependencies, cluster, DLQ list).
    Read,
    /// Redrive and discard in the DLQ, cancel invocations.
    Dlq,
    /// `GET /metrics`.
    Metrics,
    Invoke(String),
    Publish(String),
    KvRead(String),
    KvWrite(String),
    Workflows(String),
    /// Calling a dependency through egress: held only by function tokens.
    Egress(String),
}

/// What one request needs, derived from its route and path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nobody is asked (`/healthz`, `/readyz`).
    Open,
    Admin,
    Read,
    Dlq,
    Metrics,
    Invoke(String),
    Publish(String),
    KvRead(String),
    KvWrite(String),
    Workflows(String),
    Egress(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{scope}` is not a scope: {why}")]
pub struct ScopeError {
    pub scope: String,
    pub why: String,
}

impl Scope {
    /// Whether holding this scope grants `need`.
    pub fn allows(&self, need: &Need) -> bool {
        match (self, need) {
            (_, Need::Open) | (Scope::Admin, _) => true,
            (Scope::Read, Need::Read) | (Scope::Dlq, Need::Dlq) | (Scope::Metrics, Need::Metrics) => true,
            (Scope::Invoke(p), Need::Invoke(n))
            | (Scope::Publish(p), Need::Publish(n))
            | (Scope::KvRead(p), Need::KvRead(n))
            | (Scope::KvWrite(p), Need::KvWrite(n))
            | (Scope::Workflows(p), Need::Workflows(n))
            | (Scope::Egress(p), Need::Egress(n)) => matches(p, n),
            _ => false,
        }
    }

    /// Whether any of `scopes` grants `need` ([`Need::Open`] is always granted).
    pub fn any_allows(scopes: &[Scope], need: &Need) -> bool {
        matches!(need, Need::Open) || scopes.iter().any(|s| s.allows(need))
    }
}

/// A scope's name against a requested one: equal, or a prefix when the scope's ends in `*`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// A name inside a scope: not empty, printable without spaces or `:`, `*` only at the end.
fn name(scope: &str, text: &str) -> Result<String, ScopeError> {
    let why = if text.is_empty() {
        "the name after `:` is empty"
    } else if text.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':') {
        "a name may not hold spaces or `:`"
    } else if text.trim_end_matches('*').contains('*') || text.ends_with("**") {
        "`*` may only end a name"
    } else {
        return Ok(text.to_owned());
    };
    Err(ScopeError { scope: scope.to_owned(), why: why.to_owned() })
}

impl std::str::FromStr for Scope {
    type Err = ScopeError;

    fn from_str(text: &str) -> Result<Self, ScopeError> {
        let error = |why: &str| ScopeError { scope: text.to_owned(), why: why.to_owned() };
        match text {
            "admin" => return Ok(Scope::Admin),
            "read" => return Ok(Scope::Read),
            "dlq" => return Ok(Scope::Dlq),
            "metrics" => return Ok(Scope::Metrics),
            _ => {}
        }
        let Some((kind, rest)) = text.split_once(':') else {
            return Err(error(
                "expected admin, read, dlq, metrics, invoke:FN, publish:TOPIC, kv:NS:read, kv:NS:write or workflows:NAME",
            ));
        };
        match kind {
            "invoke" => Ok(Scope::Invoke(name(text, rest)?)),
            "publish" => Ok(Scope::Publish(name(text, rest)?)),
            "workflows" => Ok(Scope::Workflows(name(text, rest)?)),
            "egress" => Ok(Scope::Egress(name(text, rest)?)),
            "kv" => match rest.rsplit_once(':') {
                Some((ns, "read")) => Ok(Scope::KvRead(name(text, ns)?)),
                Some((ns, "write")) => Ok(Scope::KvWrite(name(text, ns)?)),
                _ => Err(error("a kv scope is kv:NS:read or kv:NS:write")),
            },
            _ => Err(error(&format!("unknown kind `{kind}` (invoke, publish, kv, workflows)"))),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::Read => f.write_str("read"),
            Scope::Dlq => f.write_str("dlq"),
            Scope::Metrics => f.write_str("metrics"),
            Scope::Invoke(n) => write!(f, "invoke:{n}"),
            Scope::Publish(n) => write!(f, "publish:{n}"),
            Scope::KvRead(n) => write!(f, "kv:{n}:read"),
            Scope::KvWrite(n) => write!(f, "kv:{n}:write"),
            Scope::Workflows(n) => write!(f, "workflows:{n}"),
            Scope::Egress(n) => write!(f, "egress:{n}"),
        }
    }
}

impl fmt::Display for Need {
    /// The scope that would grant exactly this need, as a 403 names it (`invoke:purchase`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = match self {
            Need::Open => return f.write_str("(none)"),
            Need::Admin => Scope::Admin,
            Need::Read => Scope::Read,
            Need::Dlq => Scope::Dlq,
            Need::Metrics => Scope::Metrics,
            Need::Invoke(n) => Scope::Invoke(n.clone()),
            Need::Publish(n) => Scope::Publish(n.clone()),
            Need::KvRead(n) => Scope::KvRead(n.clone()),
            Need::KvWrite(n) => Scope::KvWrite(n.clone()),
            Need::Workflows(n) => Scope::Workflows(n.clone()),
            Need::Egress(n) => Scope::Egress(n.clone()),
        };
        scope.fmt(f)
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(text: &str) -> Scope {
        text.parse().unwrap()
    }

    #[test]
    fn scopes_read_back_as_written() {
        for text in [
            "admin",
            "read",
            "dlq",
            "metrics",
            "invoke:purchase",
            "publish:user.*",
            "kv:balances:write",
            "kv:*:read",
            "workflows:checkout",
            "egress:email",
            "invoke:*",
        ] {
            assert_eq!(scope(text).to_string(), text);
        }
    }

    #[test]
    fn bad_scopes_say_why() {
        for (text, why) in [
            ("root", "expected admin"),
            ("invoke:", "empty"),
            ("invoke:a b", "spaces"),
            ("publish:a*b", "`*` may only end"),
            ("kv:users", "kv:NS:read"),
            ("kv:users:delete", "kv:NS:read"),
            ("deploy:x", "unknown kind `deploy`"),
        ] {
            let error = text.parse::<Scope>().unwrap_err();
            assert!(error.to_string().contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn a_scope_grants_its_need_and_nothing_else() {
        let need = |n: Need| n;
        assert!(scope("invoke:purchase").allows(&need(Need::Invoke("purchase".into()))));
        assert!(!scope("invoke:purchase").allows(&Need::Invoke("purchase-2".into())));
        assert!(scope("invoke:purch*").allows(&Need::Invoke("purchase-2".into())));
        assert!(scope("publish:user.*").allows(&Need::Publish("user.registered".into())));
        assert!(!scope("publish:user.*").allows(&Need::Publish("users".into())));
        assert!(!scope("kv:balances:write").allows(&Need::KvRead("balances".into())));
        assert!(!scope("kv:balances:read").allows(&Need::KvWrite("balances".into())));
        assert!(!scope("read").allows(&Need::KvRead("balances".into())));
        assert!(!scope("read").allows(&Need::Dlq));
        assert!(!scope("dlq").allows(&Need::Read));
        assert!(!scope("invoke:*").allows(&Need::Publish("x".into())));
        assert!(!scope("metrics").allows(&Need::Admin));
        assert!(scope("admin").allows(&Need::Egress("email".into())));
        assert!(Scope::any_allows(&[], &Need::Open));
        assert!(!Scope::any_allows(&[], &Need::Read));
        assert_eq!(Need::KvWrite("users".into()).to_string(), "kv:users:write");
    }

    /// The API's access layer skips making the need of a request whose caller holds `admin`
    /// (`api::access::admit`): that is right only while `admin` grants every need there is.
    #[test]
    fn admin_grants_every_need() {
        let name = || "x".to_string();
        for need in [
            Need::Open,
            Need::Admin,
            Need::Read,
            Need::Dlq,
            Need::Metrics,
            Need::Invoke(name()),
            Need::Publish(name()),
            Need::KvRead(name()),
            Need::KvWrite(name()),
            Need::Workflows(name()),
            Need::Egress(name()),
        ] {
            // A need added to the enum must be added here (the match fails to compile without it).
            match &need {
                Need::Open | Need::Admin | Need::Read | Need::Dlq | Need::Metrics => {}
                Need::Invoke(_) | Need::Publish(_) | Need::KvRead(_) | Need::KvWrite(_) => {}
                Need::Workflows(_) | Need::Egress(_) => {}
            }
            assert!(Scope::any_allows(&[Scope::Admin], &need), "{need:?}");
        }
    }
}
