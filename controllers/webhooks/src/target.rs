//! Where berth is willing to send a webhook.
//!
//! An endpoint URL is written by a tenant, and berth calls it from inside the cluster: without a
//! policy, a tenant could aim berth at the API server, another tenant's database, or the cloud's
//! metadata service and read the answers back from status or timing (server-side request forgery).
//! So berth only calls public addresses over https, unless an operator deliberately allows more.
//!
//! The check has two halves. [`check_url`] validates the text (at admission, and before each
//! attempt) and refuses addresses written literally in it. [`resolve`] looks the host name up and
//! checks *every* address the name resolves to; the caller then connects to the address it returned,
//! never to the name again. That last rule is what closes DNS rebinding: a name that answered with a
//! public address for the check and would answer with a private one for the connection never gets a
//! second lookup.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use url::Url;

/// What a valid endpoint URL looks like, for error messages.
pub const EXAMPLE: &str = "https://hooks.example.com/berth";

/// A range of addresses, such as a cluster's Service range `10.96.0.0/12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` is in the range. An IPv4 address written as IPv6 (`::ffff:10.96.0.1`) is the
    /// IPv4 address it carries, since that is where a connection to it goes.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && network(ip, self.prefix) == self.addr
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `address/prefix`, with no bits set after the prefix: `10.96.0.1/12` is refused rather than
    /// read as `10.96.0.0/12`, because it more likely means a typo than a range.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            |why: &str| format!("{s:?} is not a CIDR range ({why}); expected e.g. 10.96.0.0/12 or fd00::/8");
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(|| bad("no /prefix"))?;
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address before the /"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad(&format!("prefix is longer than {max}")));
        }
        let masked = network(addr, prefix);
        if masked != addr {
            return Err(bad(&format!(
                "bits are set after the prefix; did you mean {masked}/{prefix}?"
            )));
        }
        Ok(Self { addr, prefix })
    }
}

/// What may be called. The default is the strict one: https to public addresses only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Accept `http://` URLs (for development clusters; bodies and signatures then travel in clear).
    pub allow_http: bool,
    /// Accept every address, including loopback, private ranges and [`Policy::denied`] (for receivers
    /// that run inside the cluster or its network).
    pub allow_private: bool,
    /// Ranges refused in addition to the built-in ones: the cluster's Service and Pod ranges, which
    /// are often public-looking and which berth cannot discover by itself.
    pub denied: Vec<Cidr>,
}

/// The host of an endpoint URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A name, to be looked up with [`resolve`]. Lower case, as the URL parser normalises it.
    Domain(String),
    /// An address written in the URL itself, already checked by [`check_url`].
    Ip(IpAddr),
}

/// An endpoint URL that passed [`check_url`]: the parts a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedUrl {
    /// The URL as the parser normalised it (without a fragment, which is never sent).
    pub url: String,
    /// True for https.
    pub tls: bool,
    pub host: Host,
    /// The port, the scheme's default when the URL names none.
    pub port: u16,
    /// The request target: path and query, e.g. `/berth?team=7`.
    pub path_and_query: String,
}

impl ParsedUrl {
    /// The `Host` header: the host as written, with the port when it is not the scheme's default.
    #[must_use]
    pub fn authority(&self) -> String {
        let host = match &self.host {
            Host::Domain(name) => name.clone(),
            Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Validates an endpoint URL against `policy`.
///
/// # Errors
/// A message that quotes the URL, says what is wrong with it and what a valid one looks like.
pub fn check_url(policy: &Policy, text: &str) -> Result<ParsedUrl, String> {
    let schemes = if policy.allow_http {
        "https:// or http://"
    } else {
        "https://"
    };
    let wrong = |why: String| format!("url {text:?} {why} (e.g. {EXAMPLE})");
    let url = Url::parse(text).map_err(|e| wrong(format!("is not a valid URL: {e}")))?;
    let tls = match url.scheme() {
        "https" => true,
        "http" if policy.allow_http => false,
        _ => return Err(wrong(format!("must start with {schemes}"))),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(wrong(
            "must not contain a user name or password; receivers authenticate berth by the webhook signature"
                .to_owned(),
        ));
    }
    let host = match url.host() {
        Some(url::Host::Domain(name)) => Host::Domain(name.to_owned()),
        Some(url::Host::Ipv4(ip)) => Host::Ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Host::Ip(IpAddr::V6(ip)),
        None => return Err(wrong("has no host".to_owned())),
    };
    if let Host::Ip(ip) = host {
        check_addr(policy, ip).map_err(|e| wrong(format!("points at {e}")))?;
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| wrong("has no port".to_owned()))?;
    let path_and_query = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    // The parser percent-encodes most of what HTTP forbids in a request target; whatever it lets
    // through is refused here, where it is a permanent error, rather than at every attempt.
    hyper::Uri::try_from(path_and_query.as_str())
        .map_err(|e| wrong(format!("has a path that cannot be sent: {e}")))?;
    let mut normalised = url;
    normalised.set_fragment(None);
    Ok(ParsedUrl {
        url: normalised.into(),
        tls,
        host,
        port,
        path_and_query,
    })
}

/// Checks one address berth is about to connect to.
///
/// # Errors
/// The address and why it is refused: a special-purpose range or one of [`Policy::denied`].
pub fn check_addr(policy: &Policy, ip: IpAddr) -> Result<(), String> {
    if policy.allow_private {
        return Ok(());
    }
    let ip = canonical(ip);
    if let Some(range) = policy.denied.iter().find(|range| range.contains(ip)) {
        return Err(format!(
            "{ip}, inside {range}, which this cluster keeps for its own Services and Pods"
        ));
    }
    match special(ip) {
        Some(kind) => Err(format!(
            "{ip}, a {kind} address; webhooks go to public addresses only"
        )),
        None => Ok(()),
    }
}

/// Picks the address to connect to from everything `url`'s host resolved to: the first, provided
/// that every one passes [`check_addr`]. A name with one refused address is refused as a whole, since
/// which address a client ends up on is not berth's choice to predict.
///
/// # Errors
/// When nothing resolved, or any address is refused.
pub fn check_resolved(policy: &Policy, url: &ParsedUrl, addrs: &[IpAddr]) -> Result<SocketAddr, String> {
    for &ip in addrs {
        check_addr(policy, ip).map_err(|e| format!("url {:?} resolves to {e}", url.url))?;
    }
    addrs
        .first()
        .map(|&ip| SocketAddr::new(canonical(ip), url.port))
        .ok_or_else(|| format!("url {:?}: its host resolves to no address", url.url))
}

/// Looks `url`'s host up and returns the checked address to connect to (see [`check_resolved`]).
/// Bounding the time a lookup takes is the caller's, as for the request itself.
///
/// # Errors
/// When the lookup fails, finds nothing, or finds a refused address.
pub async fn resolve(policy: &Policy, url: &ParsedUrl) -> Result<SocketAddr, String> {
    let addrs: Vec<IpAddr> = match &url.host {
        Host::Ip(ip) => vec![*ip],
        Host::Domain(name) => tokio::net::lookup_host((name.as_str(), url.port))
            .await
            .map_err(|e| format!("url {:?}: cannot resolve {name}: {e}", url.url))?
            .map(|addr| addr.ip())
            .collect(),
    };
    check_resolved(policy, url, &addrs)
}

/// The address a connection to `ip` really reaches: the IPv4 address inside an IPv4-mapped
/// (`::ffff:a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address, else `ip` itself. Without this,
/// `::ffff:127.0.0.1` would pass as a public IPv6 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.segments() {
            [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
                IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)))
            }
            _ => ip.to_canonical(),
        },
        IpAddr::V4(_) => ip,
    }
}

/// The kind of special-purpose range `ip` (canonical) is in, or `None` for an ordinary public one.
fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() {
                Some("link-local (where cloud metadata services answer)")
            } else if v4.is_unspecified() || a == 0 {
                Some("\"this network\" (0.0.0.0/8)")
            } else if v4.is_private() {
                Some("private (RFC 1918)")
            } else if a == 100 && (b & 0xc0) == 64 {
                Some("shared carrier-grade NAT (100.64.0.0/10)")
            } else if v4.is_broadcast() || v4.is_multicast() {
                Some("broadcast or multicast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_unicast_link_local() {
                Some("link-local (fe80::/10)")
            } else if v6.is_unique_local() {
                Some("unique-local (fc00::/7)")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn strict() -> Policy {
        Policy {
            denied: vec![
                "203.0.113.0/24".parse().unwrap(),
                "2001:db8:42::/48".parse().unwrap(),
            ],
            ..Policy::default()
        }
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let services: Cidr = "10.96.0.0/12".parse().unwrap();
        assert_eq!(services.to_string(), "10.96.0.0/12");
        assert!(services.contains(ip("10.96.0.1")));
        assert!(services.contains(ip("10.111.255.255")));
        assert!(!services.contains(ip("10.112.0.0")));
        assert!(services.contains(ip("::ffff:10.96.0.10")), "IPv4-mapped");
        assert!(!services.contains(ip("fd00::1")), "other family");

        let pods: Cidr = "fd00:10:244::/56".parse().unwrap();
        assert!(pods.contains(ip("fd00:10:244:0:ff::1")));
        assert!(!pods.contains(ip("fd00:10:245::1")));

        let everything: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains(ip("8.8.8.8")));
        let one: Cidr = "192.0.2.7/32".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::1")));
    }

    #[test]
    fn bad_cidrs_say_what_is_expected() {
        for (text, why) in [
            ("10.96.0.0", "no /prefix"),
            ("10.96.0/12", "not an IP address"),
            ("10.96.0.0/x", "not a number"),
            ("10.96.0.0/33", "longer than 32"),
            ("fd00::/129", "longer than 128"),
            ("10.96.0.1/12", "did you mean 10.96.0.0/12?"),
        ] {
            let err = text.parse::<Cidr>().unwrap_err();
            assert!(
                err.contains(why) && err.contains(text) && err.contains("e.g."),
                "{err}"
            );
        }
    }

    #[test]
    fn a_good_url_is_taken_apart() {
        let url = check_url(&strict(), "https://Hooks.Example.com/berth/in?team=7#frag").unwrap();
        assert_eq!(
            url,
            ParsedUrl {
                url: "https://hooks.example.com/berth/in?team=7".into(),
                tls: true,
                host: Host::Domain("hooks.example.com".into()),
                port: 443,
                path_and_query: "/berth/in?team=7".into(),
            }
        );
        assert_eq!(url.authority(), "hooks.example.com");

        let url = check_url(&strict(), "https://hooks.example.com:8443").unwrap();
        assert_eq!((url.port, url.path_and_query.as_str()), (8443, "/"));
        assert_eq!(url.authority(), "hooks.example.com:8443");

        let url = check_url(&strict(), "https://[2001:db8::1]:9000/x").unwrap();
        assert_eq!(url.host, Host::Ip(ip("2001:db8::1")));
        assert_eq!(url.authority(), "[2001:db8::1]:9000");
    }

    #[test]
    fn bad_urls_are_explained() {
        let policy = strict();
        for (text, why) in [
            ("ftp://x", "must start with https://"),
            ("http://hooks.example.com/", "must start with https://"),
            ("hooks.example.com/berth", "is not a valid URL"),
            ("https://", "is not a valid URL"),
            (
                "https://user:pw@hooks.example.com/",
                "must not contain a user name or password",
            ),
            (
                "https://token@hooks.example.com/",
                "must not contain a user name or password",
            ),
            ("https://127.0.0.1/", "127.0.0.1, a loopback address"),
            (
                "https://[::ffff:169.254.169.254]/",
                "169.254.169.254, a link-local",
            ),
            ("https://203.0.113.9/", "inside 203.0.113.0/24"),
        ] {
            let err = check_url(&policy, text).unwrap_err();
            assert!(err.starts_with(&format!("url {text:?} ")), "{err}");
            assert!(
                err.contains(why) && err.ends_with(&format!("(e.g. {EXAMPLE})")),
                "{err}"
            );
        }
        assert_eq!(
            check_url(&policy, "ftp://x").unwrap_err(),
            "url \"ftp://x\" must start with https:// (e.g. https://hooks.example.com/berth)"
        );
    }

    #[test]
    fn http_only_when_allowed() {
        let policy = Policy {
            allow_http: true,
            ..strict()
        };
        let url = check_url(&policy, "http://hooks.example.com/in").unwrap();
        assert_eq!(
            (url.tls, url.port, url.authority()),
            (false, 80, "hooks.example.com".into())
        );
        let err = check_url(&policy, "ftp://x").unwrap_err();
        assert!(err.contains("https:// or http://"), "{err}");
    }

    #[test]
    fn special_addresses_are_refused() {
        let policy = strict();
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "203.0.113.200",
            "2001:db8:42:1::1",
            "::ffff:203.0.113.1",
        ] {
            assert!(
                check_addr(&policy, ip(refused)).is_err(),
                "{refused} should be refused"
            );
        }
        for allowed in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "169.255.0.1",
            "2606:4700::1111",
            "2001:db8:43::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(check_addr(&policy, ip(allowed)), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn allow_private_allows_everything_even_denied_ranges() {
        let policy = Policy {
            allow_private: true,
            ..strict()
        };
        for addr in [
            "127.0.0.1",
            "169.254.169.254",
            "10.0.0.1",
            "203.0.113.1",
            "fd00::1",
        ] {
            assert_eq!(check_addr(&policy, ip(addr)), Ok(()), "{addr}");
        }
        assert!(check_url(&policy, "https://127.0.0.1:8443/in").is_ok());
    }

    #[test]
    fn every_resolved_address_must_pass() {
        let policy = strict();
        let url = check_url(&policy, "https://hooks.example.com:8443/in").unwrap();
        assert_eq!(
            check_resolved(&policy, &url, &[ip("8.8.8.8"), ip("2606:4700::1111")]),
            Ok("8.8.8.8:8443".parse().unwrap())
        );
        let err = check_resolved(&policy, &url, &[ip("8.8.8.8"), ip("10.0.0.1")]).unwrap_err();
        assert!(
            err.contains("hooks.example.com") && err.contains("10.0.0.1, a private"),
            "{err}"
        );
        let err = check_resolved(&policy, &url, &[]).unwrap_err();
        assert!(err.contains("no address"), "{err}");
        // A mapped address is dialled as the IPv4 address it is.
        let open = Policy {
            allow_private: true,
            ..Policy::default()
        };
        assert_eq!(
            check_resolved(&open, &url, &[ip("::ffff:8.8.4.4")]),
            Ok("8.8.4.4:8443".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn resolve_checks_literal_and_looked_up_addresses() {
        let strict = strict();
        let open = Policy {
            allow_private: true,
            ..Policy::default()
        };
        let literal = check_url(&open, "https://127.0.0.1:9443/").unwrap();
        assert_eq!(
            resolve(&open, &literal).await,
            Ok("127.0.0.1:9443".parse().unwrap())
        );
        // `localhost` is a name, so only the lookup can refuse it.
        let name = check_url(&strict, "https://localhost:9443/").unwrap();
        let err = resolve(&strict, &name).await.unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        let addr = resolve(&open, &name).await.unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 9443, "{addr}");
    }
}
