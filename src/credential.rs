//! Finding the credential in a request: `Authorization: Bearer <token>` (RFC 6750 §2.1).

use crate::decision::DenyReason;
use crate::request::RequestView;

/// What the `Authorization` header holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No `Authorization` header, or one with another scheme (e.g. Basic): not ours.
    None,
    /// A syntactically valid bearer token, borrowed from the request.
    Bearer(&'a str),
    /// A bearer credential that is malformed (empty, several, bad characters): `invalid_request`.
    Malformed(DenyReason),
}

/// Reads the bearer token. The scheme is case-insensitive (RFC 9110 §11.1); the token must match RFC 6750's
/// `b64token` syntax, which also catches two `Authorization` headers that Envoy joined with `,`.
pub fn bearer<'a>(request: &RequestView<'a>) -> Credential<'a> {
    let Some(value) = request.headers.get("authorization") else {
        return Credential::None;
    };
    if request.headers.count("authorization") > 1 {
        return Credential::Malformed(DenyReason::MultipleCredentials);
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Credential::None;
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Credential::Malformed(DenyReason::EmptyCredential);
    }
    if !is_b64token(token) {
        return Credential::Malformed(if token.contains(',') {
            DenyReason::MultipleCredentials
        } else {
            DenyReason::MalformedCredential
        });
    }
    Credential::Bearer(token)
}

/// RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// A compact JWS has exactly three dot-separated parts; anything else is an opaque token.
pub fn is_jws_shaped(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;

    fn read<'a>(pairs: &'a [(&'a str, &'a str)]) -> Credential<'a> {
        bearer(&RequestView::new(
            "GET",
            "/",
            "h",
            Headers::Pairs(pairs),
            "",
        ))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(
            read(&[("authorization", "Bearer abc.def.ghi")]),
            Credential::Bearer("abc.def.ghi")
        );
        assert_eq!(
            read(&[("authorization", "bearer   abc")]),
            Credential::Bearer("abc")
        );
        assert_eq!(
            read(&[("authorization", "BEARER abc==")]),
            Credential::Bearer("abc==")
        );
    }

    #[test]
    fn other_schemes_and_absence_are_not_ours() {
        assert_eq!(read(&[]), Credential::None);
        assert_eq!(
            read(&[("authorization", "Basic dXNlcjpwYXNz")]),
            Credential::None
        );
    }

    #[test]
    fn malformed_bearer_credentials_are_invalid_requests() {
        assert_eq!(
            read(&[("authorization", "Bearer")]),
            Credential::Malformed(DenyReason::EmptyCredential)
        );
        assert_eq!(
            read(&[("authorization", "Bearer a b")]),
            Credential::Malformed(DenyReason::MalformedCredential)
        );
        assert_eq!(
            read(&[("authorization", "Bearer a.b.c,Bearer d.e.f")]),
            Credential::Malformed(DenyReason::MultipleCredentials)
        );
        assert_eq!(
            read(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
            Credential::Malformed(DenyReason::MultipleCredentials)
        );
    }

    #[test]
    fn jws_shape() {
        assert!(is_jws_shaped("a.b.c"));
        assert!(!is_jws_shaped("a.b.c.d.e"));
        assert!(!is_jws_shaped("opaque"));
    }
}
