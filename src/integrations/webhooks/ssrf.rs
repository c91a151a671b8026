//! The SSRF guard: a webhook may not make the service call into its own network.
//!
//! A URL must be `http` or `https` with a host. Its addresses, whether written as
//! an IP or resolved from a name, may not be loopback, private (RFC 1918, IPv6
//! unique-local), link-local (the cloud metadata endpoint 169.254.169.254
//! included), shared (100.64/10), unspecified, multicast or broadcast, unless the
//! configuration allows private targets (`--webhook-allow-private`; the tests allow
//! loopback). The check runs when an endpoint is created or updated (a clear error)
//! and again on every connection ([`GuardedResolver`]): a name that later resolves
//! to an internal address (DNS rebinding) is refused then.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Whether `ip` is an address a webhook may not reach.
pub fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// What the guard allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allow {
    /// Every internal address (a trusted network).
    pub private: bool,
    /// Loopback only (the tests' receivers).
    pub loopback: bool,
}

impl Allow {
    pub fn permits(&self, ip: IpAddr) -> bool {
        !internal(ip) || self.private || (self.loopback && ip.is_loopback())
    }
}

/// Checks a webhook URL: scheme, host, and (for an IP host) the address. A name is
/// resolved and checked when connecting.
pub fn check_url(url: &str, allow: Allow) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be http or https, not {}",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are not accepted".into());
    }
    match parsed.host() {
        None => return Err("the URL has no host".into()),
        Some(url::Host::Ipv4(ip)) if !allow.permits(IpAddr::V4(ip)) => {
            return Err(format!("{ip} is an internal address"))
        }
        Some(url::Host::Ipv6(ip)) if !allow.permits(IpAddr::V6(ip)) => {
            return Err(format!("{ip} is an internal address"))
        }
        Some(url::Host::Domain(name))
            if name.eq_ignore_ascii_case("localhost") && !allow.loopback && !allow.private =>
        {
            return Err("localhost is an internal address".into())
        }
        _ => {}
    }
    Ok(parsed)
}

/// Resolves names with the system resolver and keeps only the addresses the guard
/// permits: a name with none left fails to connect, naming the reason.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow: Allow,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| allow.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves only to internal addresses ({}); refused",
                    resolved
                        .iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into();
                return Err(refused);
            }
            let addrs: reqwest::dns::Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

impl GuardedResolver {
    pub fn arc(allow: Allow) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver { allow })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_targets_are_refused_unless_allowed() {
        let none = Allow::default();
        for url in [
            "ftp://example.com/x",
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://172.16.5.5/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
            "http://localhost:8080/",
            "http://user:pw@example.com/",
            "not a url",
        ] {
            assert!(check_url(url, none).is_err(), "{url} accepted");
        }
        assert!(check_url("https://hooks.example.com/a?b=c", none).is_ok());
        assert!(check_url("http://93.184.216.34/", none).is_ok());
        let loopback = Allow {
            loopback: true,
            ..Default::default()
        };
        assert!(check_url("http://127.0.0.1:9000/", loopback).is_ok());
        assert!(check_url("http://10.0.0.1/", loopback).is_err());
        let private = Allow {
            private: true,
            ..Default::default()
        };
        assert!(check_url("http://10.0.0.1/", private).is_ok());
    }
}
