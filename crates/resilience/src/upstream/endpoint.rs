//! One address of an upstream.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Uri};

use crate::error::ConfigError;

/// Where one instance of an upstream listens: a scheme and an authority,
/// such as `http://10.0.0.5:8081`. Displayed without a trailing slash, which
/// is the form tonic's `Endpoint::from_shared` and reqwest both accept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    scheme: Scheme,
    authority: Authority,
    /// The `Host` of the requests sent here: the authority as configured,
    /// which an instance resolved from a name keeps (the name is what the
    /// server answers to, its address is where it listens).
    host_header: HeaderValue,
}

impl Endpoint {
    /// Parses `http[s]://host[:port]` (a trailing `/` is tolerated; any
    /// other path is refused rather than silently dropped).
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|error: http::uri::InvalidUri| invalid(&error.to_string()))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| invalid("expected http://host:port"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(invalid("the scheme must be http or https"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| invalid("expected http://host:port"))?;
        if authority.host().is_empty() {
            return Err(invalid("the host is empty"));
        }
        if authority.as_str().contains('@') {
            return Err(invalid("credentials do not belong in an upstream URL"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("an upstream URL has no path or query"));
        }
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|error| invalid(&error.to_string()))?;
        Ok(Self {
            scheme,
            authority,
            host_header,
        })
    }

    /// Parses a comma-separated list of URLs (blanks around commas are
    /// ignored), refusing duplicates: listing an instance twice would give
    /// it twice the traffic, which is never what the list's author meant.
    pub fn parse_list(urls: &str) -> Result<Vec<Self>, ConfigError> {
        let mut endpoints: Vec<Self> = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|url| !url.is_empty()) {
            let endpoint = Self::parse(url)?;
            if endpoints.contains(&endpoint) {
                return Err(ConfigError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "listed twice".to_owned(),
                });
            }
            endpoints.push(endpoint);
        }
        Ok(endpoints)
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// `host:port` as configured.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The host (a name, or an IP literal; IPv6 without brackets).
    pub fn host(&self) -> &str {
        let host = self.authority.host();
        host.strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.scheme == Scheme::HTTPS {
                443
            } else {
                80
            })
    }

    /// Whether the host is an IP address (nothing to resolve).
    pub fn is_ip(&self) -> bool {
        self.host().parse::<IpAddr>().is_ok()
    }

    /// The same scheme at `address` (a resolved IP of this endpoint's host);
    /// the requests sent there keep this endpoint's `Host`.
    pub(crate) fn at(&self, address: SocketAddr) -> Result<Self, ConfigError> {
        let authority = Authority::try_from(address.to_string().as_str()).map_err(|error| {
            ConfigError::InvalidUrl {
                url: address.to_string(),
                reason: error.to_string(),
            }
        })?;
        Ok(Self {
            scheme: self.scheme.clone(),
            authority,
            host_header: self.host_header.clone(),
        })
    }

    /// Points `request` at this endpoint: its URI keeps its path and query
    /// and takes this endpoint's scheme and authority, and its `Host` is
    /// this endpoint's (an instance resolved from a name sends the name).
    /// This is how an HTTP client shared by all instances sends each call to
    /// the instance the balancer picked.
    pub fn rebase<B>(&self, mut request: Request<B>) -> Result<Request<B>, http::Error> {
        let path_and_query = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()?;
        request.headers_mut().insert(HOST, self.host_header.clone());
        Ok(request)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_of_urls() {
        let endpoints = Endpoint::parse_list(" http://user-1:8081, http://user-2:8081/ ,").unwrap();
        let shown: Vec<_> = endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["http://user-1:8081", "http://user-2:8081"]);
        assert_eq!(endpoints[0].host(), "user-1");
        assert_eq!(endpoints[0].port(), 8081);
        assert!(!endpoints[0].is_ip());
    }

    #[test]
    fn understands_ip_literals_and_default_ports() {
        let v6 = Endpoint::parse("http://[::1]:50055").unwrap();
        assert_eq!(v6.host(), "::1");
        assert!(v6.is_ip());
        assert_eq!(Endpoint::parse("https://payment").unwrap().port(), 443);
        assert_eq!(Endpoint::parse("http://payment").unwrap().port(), 80);
    }

    #[test]
    fn refuses_what_cannot_be_an_upstream() {
        for url in [
            "user:8081",
            "ftp://user:8081",
            "http://user:8081/api",
            "http://user:8081/?x=1",
            "http://admin:secret@user:8081",
            "not a url",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url}");
        }
        assert!(Endpoint::parse_list("http://a:1,http://a:1").is_err());
    }

    #[test]
    fn rebase_keeps_the_path_and_query_and_changes_the_authority() {
        let endpoint = Endpoint::parse("http://10.0.0.5:8081").unwrap();
        let request = Request::get("/api/v1/users/me?x=1")
            .header(HOST, "gateway.example")
            .body(())
            .unwrap();
        let request = endpoint.rebase(request).unwrap();
        assert_eq!(request.uri(), "http://10.0.0.5:8081/api/v1/users/me?x=1");
        assert_eq!(request.headers()[HOST], "10.0.0.5:8081");
        assert_eq!(request.headers().get_all(HOST).iter().count(), 1);

        let named = Endpoint::parse("http://user:8081").unwrap();
        let resolved = named.at("10.0.0.9:8081".parse().unwrap()).unwrap();
        assert_eq!(resolved.to_string(), "http://10.0.0.9:8081");
        let request = resolved
            .rebase(Request::get("/").body(()).unwrap())
            .unwrap();
        assert_eq!(request.uri(), "http://10.0.0.9:8081/");
        assert_eq!(request.headers()[HOST], "user:8081");
    }
}
