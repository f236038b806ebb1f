//! IPv4 subnets in CIDR notation, as the cluster's address pool and nodes' subnets are
//! written.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network: an address with its host bits zero, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// `None` unless `prefix` ≤ 32 and `network` has no host bits set.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32 && u32::from(network) & !mask(prefix) == 0)
            .then_some(Ipv4Cidr { network, prefix })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix
            && u32::from(other.network) & mask(self.prefix) == u32::from(self.network)
    }

    /// The `index`th subnet of `prefix` bits inside this one, if there is one.
    pub fn subnet(&self, prefix: u8, index: u32) -> Option<Ipv4Cidr> {
        if prefix < self.prefix || prefix > 32 {
            return None;
        }
        let count = 1u64 << (prefix - self.prefix);
        if u64::from(index) >= count {
            return None;
        }
        let step = if prefix == 32 {
            1
        } else {
            1u32 << (32 - prefix)
        };
        let network = u32::from(self.network) + index * step;
        Ipv4Cidr::new(Ipv4Addr::from(network), prefix)
    }

    /// How many subnets of `prefix` bits this one holds (0 when `prefix` is shorter).
    pub fn subnets(&self, prefix: u8) -> u64 {
        if prefix < self.prefix || prefix > 32 {
            0
        } else {
            1 << (prefix - self.prefix)
        }
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text.split_once('/').ok_or_else(|| {
            format!("{text:?} is not a CIDR: expected ADDRESS/PREFIX, e.g. 10.10.0.0/16")
        })?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{text:?}: {address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to 32"))?;
        Ipv4Cidr::new(address, prefix).ok_or_else(|| {
            let network = Ipv4Addr::from(u32::from(address) & mask(prefix));
            format!("{text:?} has host bits set: did you mean {network}/{prefix}?")
        })
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_refuses() {
        let cidr: Ipv4Cidr = "198.19.0.0/16".parse().unwrap();
        assert_eq!(cidr.to_string(), "198.19.0.0/16");
        for (bad, says) in [
            ("198.19.0.0", "not a CIDR"),
            ("198.19.0.1/16", "did you mean 198.19.0.0/16"),
            ("198.19.0.0/33", "0 to 32"),
            ("nope/8", "not an IPv4 address"),
        ] {
            let error = bad.parse::<Ipv4Cidr>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn subnets_are_counted_and_indexed() {
        let pool: Ipv4Cidr = "10.0.0.0/16".parse().unwrap();
        assert_eq!(pool.subnets(24), 256);
        assert_eq!(pool.subnet(24, 0).unwrap().to_string(), "10.0.0.0/24");
        assert_eq!(pool.subnet(24, 255).unwrap().to_string(), "10.0.255.0/24");
        assert_eq!(pool.subnet(24, 256), None);
        assert_eq!(pool.subnet(8, 0), None);
        assert!(pool.contains(&pool.subnet(24, 7).unwrap()));
        assert!(!pool.contains(&"10.1.0.0/24".parse().unwrap()));
    }
}
