//! `[auth]`, `server.tls` and a function's `grants`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{key, Checker};
use crate::auth::Scope;
use crate::config::locate::Anchor;
use crate::config::raw::{RawConfig, RawGrants, RawTls, RawTopic};
use crate::config::{AuthConfig, AuthMode, ServerConfig, TlsConfig};

/// What `keel serve` says when it would listen beyond loopback with every route open.
const TURN_AUTH_ON: &str = "create an admin key with `keel keys create --name admin --scope admin -c keel.toml`, \
    then set [auth] mode = \"keys\" (or listen on 127.0.0.1)";

impl Checker {
    /// `[auth] mode`; `none` only while the API listens on a loopback address.
    pub(super) fn auth(&mut self, raw: &RawConfig, server: Option<&ServerConfig>) -> Option<AuthConfig> {
        let mode = match raw.auth.mode.as_deref() {
            None | Some("none") => AuthMode::None,
            Some("keys") => AuthMode::Keys,
            Some(other) => {
                let message = format!(r#"expected "keys" or "none" (got "{other}")"#);
                self.report(key(&["auth", "mode"]), Anchor::Value, message);
                return None;
            }
        };
        if let (AuthMode::None, Some(server)) = (mode, server) {
            if !server.listen.ip().is_loopback() {
                let message = format!(
                    "{} is not a loopback address and auth is off: anyone who can reach it could call every route; {TURN_AUTH_ON}",
                    server.listen
                );
                self.report(key(&["server", "listen"]), Anchor::Value, message);
                return None;
            }
        }
        Some(AuthConfig { mode })
    }

    /// `server.tls`: both files given, readable, a certificate chain and a private key.
    pub(super) fn tls(&mut self, raw: &RawTls) -> Option<TlsConfig> {
        let at = |field: &str| key(&["server", "tls", field]);
        let (Some(cert), Some(key_file)) = (&raw.cert, &raw.key) else {
            let message = "needs both `cert` and `key` (PEM files): tls = { cert = \"cert.pem\", key = \"key.pem\" }";
            self.report(key(&["server", "tls"]), Anchor::Value, message.to_owned());
            return None;
        };
        let cert = self.pem_file(at("cert"), cert, |pem| match CertificateDer::pem_slice_iter(pem).count() {
            0 => Err(r#"holds no PEM certificate ("-----BEGIN CERTIFICATE-----")"#.to_owned()),
            _ => Ok(()),
        });
        let key_path = self.pem_file(at("key"), key_file, |pem| {
            PrivateKeyDer::from_pem_slice(pem)
                .map(drop)
                .map_err(|e| format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))
        });
        Some(TlsConfig { cert: cert?, key: key_path? })
    }

    /// A PEM file relative to the config file's directory, read and checked by `check`.
    fn pem_file(
        &mut self,
        path: Vec<String>,
        text: &str,
        check: impl FnOnce(&[u8]) -> Result<(), String>,
    ) -> Option<PathBuf> {
        let file = match &self.dir {
            Some(dir) if Path::new(text).is_relative() => dir.join(text),
            _ => PathBuf::from(text),
        };
        let problem = match std::fs::read(&file) {
            Err(e) => format!("cannot read {}: {e}", file.display()),
            Ok(pem) => match check(&pem) {
                Ok(()) => return Some(file),
                Err(why) => format!("{} {why}", file.display()),
            },
        };
        self.report(path, Anchor::Value, problem);
        None
    }

    /// A function's `grants`, as scopes: `kv = ["NS:read", "NS:write"]`, `publish = [TOPIC]`,
    /// `invoke = [FN]` (names may end in `*`; plain names must be declared).
    pub(super) fn grants(
        &mut self,
        function: &str,
        raw: &RawGrants,
        functions: &[&str],
        topics: &BTreeMap<String, RawTopic>,
    ) -> Vec<Scope> {
        let mut scopes = Vec::new();
        let lists = [("kv", &raw.kv), ("publish", &raw.publish), ("invoke", &raw.invoke)];
        for (kind, list) in lists {
            for (i, entry) in list.iter().flatten().enumerate() {
                let path = key(&["functions", function, "grants", kind, &format!("[{i}]")]);
                let text = format!("{kind}:{entry}");
                let scope = match text.parse::<Scope>() {
                    Ok(scope) => scope,
                    Err(e) => {
                        let hint =
                            if kind == "kv" { r#" (expected "NAMESPACE:read" or "NAMESPACE:write")"# } else { "" };
                        self.report(path, Anchor::Value, format!("{}{hint}", e.why));
                        continue;
                    }
                };
                let unknown = match &scope {
                    Scope::Invoke(name) if !name.ends_with('*') && !functions.contains(&name.as_str()) => {
                        Some(format!(r#"unknown function "{name}": add a [functions.{name}] table"#))
                    }
                    Scope::Publish(topic) if !topic.ends_with('*') && !topics.contains_key(topic) => {
                        Some(format!(r#"unknown topic "{topic}": declare it with [topics."{topic}"]"#))
                    }
                    _ => None,
                };
                match unknown {
                    Some(message) => self.report(path, Anchor::Value, message),
                    None if !scopes.contains(&scope) => scopes.push(scope),
                    None => {}
                }
            }
        }
        scopes
    }
}
