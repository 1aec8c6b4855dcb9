//! `mtls`: the client identity Envoy verified on the TLS connection. Envoy sends it as `source.principal`
//! (the SPIFFE URI SAN, else a DNS SAN, else the subject) and, with `include_peer_certificate`, the
//! certificate as URL-encoded PEM in `source.certificate`. portcullis does no TLS itself: it trusts what
//! Envoy verified, and narrows it to the configured trust domains and SAN patterns.

use std::sync::Arc;

use serde_json::Value;
use x509_parser::extensions::GeneralName;

use super::Outcome;
use crate::config::providers::MtlsConfig;
use crate::config::ProviderConfig;
use crate::decision::DenyReason;
use crate::identity::{Identity, PrincipalKind};
use crate::identity::{IdentityBuilder, Principal};
use crate::request::RequestView;

pub struct Mtls {
    name: Arc<str>,
    trust_domains: Vec<String>,
    san_patterns: Vec<Vec<String>>,
    claims: IdentityBuilder,
}

impl Mtls {
    pub fn new(common: &ProviderConfig, config: &MtlsConfig) -> Mtls {
        Mtls {
            name: Arc::from(common.name.as_str()),
            trust_domains: config.trust_domains.clone(),
            san_patterns: config
                .san_patterns
                .iter()
                .map(|p| p.split('/').map(str::to_owned).collect())
                .collect(),
            claims: IdentityBuilder::mapping_only(&common.claims_mapping),
        }
    }

    pub fn authenticate(&self, request: &RequestView<'_>) -> Outcome {
        let sans = if request.peer_certificate.is_empty() {
            Vec::new()
        } else {
            match certificate_sans(request.peer_certificate) {
                Some(sans) => sans,
                None => return Outcome::Rejected(DenyReason::UntrustedPeer),
            }
        };
        let principal = match request.peer_principal {
            "" => match sans
                .iter()
                .find(|s| s.starts_with("spiffe://"))
                .or(sans.first())
            {
                Some(san) => san.clone(),
                None => return Outcome::NoCredential,
            },
            p => p.to_owned(),
        };
        if !crate::identity::header_safe(&principal) || !self.trusted(&principal) {
            return Outcome::Rejected(DenyReason::UntrustedPeer);
        }
        Outcome::Authenticated(Arc::new(self.identity(principal, sans)))
    }

    fn trusted(&self, principal: &str) -> bool {
        let domain_ok = self.trust_domains.is_empty()
            || spiffe_trust_domain(principal)
                .is_some_and(|d| self.trust_domains.iter().any(|t| t.eq_ignore_ascii_case(d)));
        let pattern_ok = self.san_patterns.is_empty()
            || self
                .san_patterns
                .iter()
                .any(|p| segments_match(p, principal));
        domain_ok && pattern_ok
    }

    fn identity(&self, name: String, sans: Vec<String>) -> Identity {
        let mut principal = Principal::new(name.as_str(), PrincipalKind::Machine);
        if let Some(domain) = spiffe_trust_domain(&name) {
            principal
                .attributes
                .insert("spiffe-trust-domain".to_owned(), vec![domain.to_owned()]);
            principal
                .claims
                .insert("spiffe_trust_domain".into(), Value::from(domain));
        }
        if !sans.is_empty() {
            principal.claims.insert("sans".into(), Value::from(sans));
        }
        self.claims.for_principal(&self.name, principal)
    }
}

/// `spiffe://<trust domain>/<path>` → the trust domain.
fn spiffe_trust_domain(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let domain = rest.split('/').next()?;
    (!domain.is_empty()).then_some(domain)
}

/// A pattern split on `/`; `*` matches exactly one whole segment, other segments match literally.
fn segments_match(pattern: &[String], value: &str) -> bool {
    let parts: Vec<&str> = value.split('/').collect();
    parts.len() == pattern.len()
        && pattern
            .iter()
            .zip(parts)
            .all(|(p, v)| (p == "*" && !v.is_empty()) || p == v)
}

/// The URI and DNS SANs of a URL-encoded PEM certificate; `None` when it does not parse.
fn certificate_sans(url_encoded_pem: &str) -> Option<Vec<String>> {
    let pem_text = percent_decode(url_encoded_pem)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::URI(uri) => sans.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => sans.push((*dns).to_owned()),
                _ => {}
            }
        }
    }
    Some(sans)
}

/// Whether a token's certificate binding holds for this request (RFC 8705 §3): a token whose `cnf`
/// carries `x5t#S256` is only accepted over a connection whose client certificate (Envoy's
/// `include_peer_certificate`) has that SHA-256 thumbprint. A token without the claim is unbound.
pub fn certificate_binding_holds(
    claims: &serde_json::Map<String, Value>,
    request: &RequestView<'_>,
) -> bool {
    let Some(expected) = claims.get("cnf").and_then(|cnf| cnf.get("x5t#S256")) else {
        return true;
    };
    // Present but not a string: a binding we cannot prove.
    let Some(expected) = expected.as_str() else {
        return false;
    };
    certificate_thumbprint(request.peer_certificate)
        .is_some_and(|thumbprint| thumbprint == expected)
}

/// The base64url SHA-256 of a URL-encoded PEM certificate's DER (`x5t#S256`, RFC 8705 §3.1).
fn certificate_thumbprint(url_encoded_pem: &str) -> Option<String> {
    use base64::Engine as _;
    use sha2::Digest as _;
    if url_encoded_pem.is_empty() {
        return None;
    }
    let pem_text = percent_decode(url_encoded_pem)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).ok()?;
    Some(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(&pem.contents)),
    )
}

fn percent_decode(text: &str) -> Option<String> {
    let decoded: Vec<u8> =
        url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domains_and_patterns() {
        let config: MtlsConfig = serde_yaml_ng::from_str(
            "{trust_domains: [cluster.local], san_patterns: ['spiffe://cluster.local/ns/payments/sa/*']}",
        )
        .unwrap();
        let common = ProviderConfig {
            name: "mesh".into(),
            credential: Default::default(),
            claims_mapping: Default::default(),
            deny_message: None,
            shared_location_order: false,
            kind: crate::config::ProviderKind::Mtls(config.clone()),
        };
        let mtls = Mtls::new(&common, &config);
        assert!(mtls.trusted("spiffe://cluster.local/ns/payments/sa/api"));
        assert!(!mtls.trusted("spiffe://cluster.local/ns/payments/sa/api/extra"));
        assert!(!mtls.trusted("spiffe://cluster.local/ns/billing/sa/api"));
        assert!(!mtls.trusted("spiffe://evil.example/ns/payments/sa/api"));
        assert_eq!(
            spiffe_trust_domain("spiffe://cluster.local/x"),
            Some("cluster.local")
        );
        assert_eq!(spiffe_trust_domain("dns.example"), None);
    }
}
