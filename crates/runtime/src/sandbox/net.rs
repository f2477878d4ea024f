//! The sandbox's network rules: which peers a function may reach, and which of its sends count as external
//! effects (held while its run is speculative).
//!
//! Outbound connections are allowed, as OpenWhisk actions make them. Denied by default: every loopback and
//! unspecified address, and every address of this host's own interfaces (where the store, Redis and the platform
//! listen), and link-local addresses (where a cloud's metadata service answers with the host's credentials), except
//! the API address the function is given in `__OW_API_HOST`. DNS to the resolvers of
//! `/etc/resolv.conf` is allowed and never held: a lookup reads, it changes nothing. An operator's `allow` rules
//! come first, then `deny` rules, then the defaults.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

/// One rule: an address or CIDR block, with an optional port (`10.0.0.0/8`, `127.0.0.1:8080`, `[::1]:80`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    net: IpNet,
    port: Option<u16>,
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(text: &str) -> Result<Rule, String> {
        let bad = || format!("network rule \"{text}\" is not an address, a CIDR block or address:port");
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Rule { net: IpNet::from(addr.ip()), port: Some(addr.port()) });
        }
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Rule { net, port: None });
        }
        text.parse::<IpAddr>().map(|ip| Rule { net: IpNet::from(ip), port: None }).map_err(|_| bad())
    }
}

impl Rule {
    fn matches(&self, peer: SocketAddr) -> bool {
        self.net.contains(&canonical(peer.ip())) && self.port.is_none_or(|p| p == peer.port())
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.net),
            None => write!(f, "{}", self.net),
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What the rules say about one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An ordinary outbound peer: allowed, and an external effect.
    Effect,
    /// A DNS resolver: allowed, and a read (never held).
    Lookup,
    /// Refused with `EPERM`; the reason names the rule.
    Denied(&'static str),
}

/// The rules one platform applies to every function.
#[derive(Debug, Default)]
pub struct Policy {
    /// Exceptions to the defaults and to `deny` (a test listener, an internal service a tenant may use).
    pub allow: Vec<Rule>,
    /// Denied on top of the defaults (a metadata service, a private network).
    pub deny: Vec<Rule>,
    /// The platform's API address, which functions may reach (set once the server listens).
    pub api: std::sync::RwLock<Option<SocketAddr>>,
    /// This host's own addresses.
    pub local: Vec<IpAddr>,
    /// DNS resolvers, reached on port 53.
    pub resolvers: Vec<IpAddr>,
}

impl Policy {
    /// The defaults for this host: its interface addresses and its resolvers, read now.
    pub fn for_this_host(allow: Vec<Rule>, deny: Vec<Rule>) -> Policy {
        Policy { allow, deny, api: Default::default(), local: local_addresses(), resolvers: resolvers() }
    }

    /// Where the platform's API listens: functions may reach it.
    pub fn set_api(&self, addr: SocketAddr) {
        *self.api.write().unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    pub fn judge(&self, peer: SocketAddr) -> Verdict {
        let ip = canonical(peer.ip());
        if peer.port() == 53 && self.resolvers.iter().any(|r| canonical(*r) == ip) {
            return Verdict::Lookup;
        }
        let api = *self.api.read().unwrap_or_else(|e| e.into_inner());
        if api.is_some_and(|api| canonical(api.ip()) == ip && api.port() == peer.port()) {
            return Verdict::Effect;
        }
        if self.allow.iter().any(|r| r.matches(peer)) {
            return Verdict::Effect;
        }
        if self.deny.iter().any(|r| r.matches(peer)) {
            return Verdict::Denied("a deny rule of the sandbox's network policy");
        }
        if ip.is_loopback() || ip.is_unspecified() {
            return Verdict::Denied("loopback services are the platform's");
        }
        if self.local.iter().any(|l| canonical(*l) == ip) {
            return Verdict::Denied("this host's own addresses are the platform's");
        }
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        let broadcast = match ip {
            IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast(),
            IpAddr::V6(v6) => v6.is_multicast(),
        };
        if broadcast {
            return Verdict::Denied("broadcast and multicast reach the host's own services");
        }
        if link_local {
            return Verdict::Denied("link-local addresses (the cloud metadata service) are the host's");
        }
        Verdict::Effect
    }
}

/// The addresses of this host's interfaces.
fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which is walked read-only and freed once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match (*addr).sa_family as i32 {
                    libc::AF_INET => {
                        let a = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let a = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(a.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

/// The `nameserver` lines of `/etc/resolv.conf`.
fn resolvers() -> Vec<IpAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// Reads a `sockaddr_in`/`sockaddr_in6` a function passed.
pub fn parse_sockaddr(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?) as i32;
    let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            allow: vec!["127.0.0.1:9000".parse().unwrap()],
            deny: vec!["203.0.113.0/24".parse().unwrap()],
            api: std::sync::RwLock::new(Some("127.0.0.1:3233".parse().unwrap())),
            local: vec!["10.1.2.3".parse().unwrap()],
            resolvers: vec!["127.0.0.53".parse().unwrap()],
        }
    }

    #[test]
    fn loopback_and_own_addresses_are_denied_except_the_api_and_allowed_rules() {
        let p = policy();
        let judge = |a: &str| p.judge(a.parse().unwrap());
        assert_eq!(judge("127.0.0.1:6379"), Verdict::Denied("loopback services are the platform's"));
        assert!(matches!(judge("[::1]:6379"), Verdict::Denied(_)));
        assert!(matches!(judge("[::ffff:127.0.0.1]:6379"), Verdict::Denied(_)));
        assert!(matches!(judge("0.0.0.0:6379"), Verdict::Denied(_)));
        assert!(matches!(judge("10.1.2.3:6379"), Verdict::Denied(_)));
        assert!(matches!(judge("203.0.113.7:80"), Verdict::Denied("a deny rule of the sandbox's network policy")));
        assert!(matches!(judge("169.254.169.254:80"), Verdict::Denied(_)), "the metadata service, by default");
        assert!(matches!(judge("[fe80::1]:80"), Verdict::Denied(_)));
        assert!(matches!(judge("255.255.255.255:9"), Verdict::Denied(_)));
        assert!(matches!(judge("239.1.2.3:5000"), Verdict::Denied(_)));
        assert_eq!(judge("127.0.0.1:3233"), Verdict::Effect);
        assert_eq!(judge("127.0.0.1:9000"), Verdict::Effect);
        assert_eq!(judge("93.184.216.34:443"), Verdict::Effect);
        assert_eq!(judge("127.0.0.53:53"), Verdict::Lookup);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let e = "10.0.0/8x".parse::<Rule>().unwrap_err();
        assert!(e.contains("10.0.0/8x"), "{e}");
        assert_eq!("[::1]:80".parse::<Rule>().unwrap().to_string(), "::1/128:80");
    }

    #[test]
    fn sockaddrs_parse() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(parse_sockaddr(&v4), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(parse_sockaddr(&v4[..3]), None);
    }
}
