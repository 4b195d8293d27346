//! Where webhooks may go. A webhook is a request the server makes on an admin's behalf, so
//! without these checks an endpoint URL could reach the server's own network: loopback
//! services, private ranges, link-local cloud metadata (credentials). URLs are checked
//! when an endpoint is saved, and every address a name resolves to is checked again when
//! connecting (see `crate::webhooks::client`), so a name that later resolves elsewhere
//! (DNS rebinding) gets nowhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// What configuration allows beyond public https addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Loopback, private (RFC 1918, fc00::/7), shared (100.64/10) and link-local addresses.
    /// For development and tests; cloud metadata addresses stay refused even so.
    pub allow_private: bool,
    /// Plain http (production requires https unless this is set).
    pub allow_http: bool,
}

impl AddressPolicy {
    /// Production's: public https only.
    pub const STRICT: AddressPolicy = AddressPolicy { allow_private: false, allow_http: false };
}

/// The link-local addresses cloud providers serve instance metadata (and credentials) on.
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// An endpoint URL as an admin gives it, parsed and checked: http(s), a host, no
/// credentials, within `max_bytes`, and an address literal only where the policy allows.
pub fn check_url(text: &str, policy: AddressPolicy, max_bytes: usize) -> Result<Url, String> {
    if text.len() > max_bytes {
        return Err(format!("url is longer than {max_bytes} bytes"));
    }
    let url = Url::parse(text).map_err(|e| format!("url is not a valid absolute URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => return Err("url must use https (plain http is allowed only by configuration)".into()),
        other => return Err(format!("url must use https, not `{}`", crate::domain::limits::shorten(other))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        // They would be stored and listed in the clear; the signature authenticates us.
        return Err("url must not contain a user name or password".into());
    }
    if url.fragment().is_some() {
        return Err("url must not contain a fragment (#...): it is never sent".into());
    }
    match url.host() {
        None => return Err("url has no host".into()),
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), policy)?,
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), policy)?,
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if !policy.allow_private && (name == "localhost" || name.ends_with(".localhost")) {
                return Err("url points at this machine (localhost), which is refused".into());
            }
        }
    }
    Ok(url)
}

/// Whether a request may be sent to this address.
pub fn check_ip(ip: IpAddr, policy: AddressPolicy) -> Result<(), String> {
    let ip = canonical(ip);
    if is_metadata(ip) {
        return Err(format!("{ip} is a cloud metadata address, which is always refused"));
    }
    if ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip) {
        return Err(format!("{ip} cannot receive webhooks"));
    }
    if !policy.allow_private
        && let Some(kind) = internal_kind(ip)
    {
        return Err(format!("{ip} is a {kind} address, which is refused (configuration can allow it)"));
    }
    Ok(())
}

/// IPv4 addresses written as IPv6 (mapped, NAT64, 6to4) are judged as the IPv4 address
/// they reach.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    // 64:ff9b::/96, the well-known NAT64 prefix.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    }
    // 2002::/16, 6to4: the IPv4 address is the next 32 bits.
    if s[0] == 0x2002 {
        return IpAddr::V4(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    ip
}

fn is_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == METADATA_V4,
        IpAddr::V6(v6) => v6 == METADATA_V6,
    }
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// What kind of non-public address this is, if it is one.
fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (carrier-grade NAT)")
            } else if a == 0 {
                Some("\"this network\"")
            } else if a == 198 && (b == 18 || b == 19) {
                Some("benchmarking")
            } else if a >= 240 {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: AddressPolicy = AddressPolicy { allow_private: true, allow_http: true };

    fn refused(ip: &str) -> bool {
        check_ip(ip.parse().unwrap(), AddressPolicy::STRICT).is_err()
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "ff02::1",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in ["93.184.216.34", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!refused(ip), "{ip} is public");
        }
    }

    #[test]
    fn configuration_allows_private_addresses_but_never_metadata() {
        for ip in ["127.0.0.1", "::1", "10.0.0.1", "fd12::1", "fe80::1", "169.254.1.1"] {
            assert!(check_ip(ip.parse().unwrap(), OPEN).is_ok(), "{ip}");
        }
        for ip in ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "0.0.0.0", "::"] {
            assert!(check_ip(ip.parse().unwrap(), OPEN).is_err(), "{ip} stays refused");
        }
    }

    #[test]
    fn urls_need_https_a_host_and_no_credentials() {
        assert!(check_url("https://hooks.example.com/onramp", AddressPolicy::STRICT, 2048).is_ok());
        let err = |u: &str| check_url(u, AddressPolicy::STRICT, 2048).unwrap_err();
        assert!(err("http://hooks.example.com/").contains("https"));
        assert!(err("ftp://hooks.example.com/").contains("https"));
        assert!(err("https://user:pw@hooks.example.com/").contains("password"));
        assert!(err("https://hooks.example.com/#x").contains("fragment"));
        assert!(err("https://127.0.0.1/").contains("loopback"));
        assert!(err("https://[::1]:8443/").contains("loopback"));
        assert!(err("https://localhost/").contains("localhost"));
        assert!(err("https://api.localhost./").contains("localhost"));
        assert!(err("https://169.254.169.254/latest/meta-data").contains("metadata"));
        assert!(err("not a url").contains("valid"));
        assert!(err(&format!("https://example.com/{}", "a".repeat(2048))).contains("2048"));
        assert!(check_url("http://127.0.0.1:9000/hook", OPEN, 2048).is_ok());
        assert!(check_url("http://localhost:9000/hook", OPEN, 2048).is_ok());
    }
}
