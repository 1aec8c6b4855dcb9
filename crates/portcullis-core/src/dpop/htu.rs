//! The `htu` of a proof against the request URI (RFC 9449 §4.3 step 9): both without query and fragment,
//! both normalised as RFC 3986 §6.2.2 (case, percent-encoding, dot segments) and §6.2.3 (default port,
//! empty path) say, then compared as strings.

/// The normalised form of an absolute `http`/`https` URI without its query and fragment; `None` when it
/// is not one.
pub fn normalize(uri: &str) -> Option<String> {
    let mut url = url::Url::parse(uri).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    // Userinfo has no place in an htu.
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    // The url crate lower-cases scheme and host, drops the default port, removes dot segments and turns
    // an empty path into `/`; what is left of §6.2.2 is percent-encoding: unreserved characters decoded,
    // hex digits upper-case.
    let path = normalize_percent(url.path());
    let mut out = String::with_capacity(uri.len());
    out.push_str(url.scheme());
    out.push_str("://");
    out.push_str(url.host_str()?);
    if let Some(port) = url.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push_str(&path);
    Some(out)
}

/// The request URI a proof must name: `external_origin` (or Envoy's scheme and host) and the path.
/// Envoy sends no scheme in some setups; `https` is assumed then.
pub fn request_uri(
    scheme: &str,
    host: &str,
    path: &str,
    external_origin: Option<&str>,
) -> Option<String> {
    let path = if path.starts_with('/') { path } else { "/" };
    let uri = match external_origin {
        Some(origin) => format!("{origin}{path}"),
        None => {
            let scheme = if scheme.is_empty() { "https" } else { scheme };
            format!("{scheme}://{host}{path}")
        }
    };
    normalize(&uri)
}

/// RFC 3986 §2.3 and §6.2.2.1–2: `%7E` → `~`, `%2f` → `%2F`.
fn normalize_percent(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = &path[i + 1..i + 3];
            if let Ok(byte) = u8::from_str_radix(hex, 16) {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(byte as char);
                } else {
                    out.push('%');
                    out.push_str(&hex.to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_uris_normalise_alike() {
        let n = |u| normalize(u).unwrap();
        assert_eq!(
            n("HTTPS://API.Example.com:443/a/./b/../c?x=1#f"),
            "https://api.example.com/a/c"
        );
        assert_eq!(n("https://api.example.com"), "https://api.example.com/");
        assert_eq!(n("http://h:80/%7Euser/%2f"), "http://h/~user/%2F");
        assert_eq!(n("https://h:8443/x"), "https://h:8443/x");
        assert_ne!(n("https://h/x"), n("http://h/x"));
        assert_eq!(normalize("ftp://h/x"), None);
        assert_eq!(normalize("/relative"), None);
        assert_eq!(normalize("https://user@h/x"), None);
    }

    #[test]
    fn the_request_uri_comes_from_envoy_or_the_external_origin() {
        assert_eq!(
            request_uri("http", "api.example.com:80", "/a/%7e", None).as_deref(),
            Some("http://api.example.com/a/~")
        );
        assert_eq!(
            request_uri("", "api.example.com", "/a", None).as_deref(),
            Some("https://api.example.com/a")
        );
        assert_eq!(
            request_uri(
                "http",
                "10.0.0.1:8080",
                "/a",
                Some("https://api.example.com")
            )
            .as_deref(),
            Some("https://api.example.com/a")
        );
    }
}
