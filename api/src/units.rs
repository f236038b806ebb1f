//! Units as users write them in stack files and on the command line: Go durations
//! (`1m30s`), byte sizes (`512M`) and CPU counts (`0.5`). Each type parses the
//! user's spelling and always prints one canonical spelling, so that two ways of
//! writing the same value compare equal and diff as one line.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch: how the store records time (decided by the proposer
/// of a command, so every replica applies the same value).
pub type Millis = u64;

/// Why a unit value could not be read; the message says what form is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

/// A duration written the Go way, as Docker and Compose write them: `10s`, `1m30s`, `1.5h`, `300ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub const fn from_secs(secs: u64) -> Self {
        GoDuration(Duration::from_secs(secs))
    }
}

impl FromStr for GoDuration {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        let invalid = || {
            UnitError(format!(
                "invalid duration {text:?}: expected a number with a unit such as 10s, 1m30s, 500ms or 1h"
            ))
        };
        let s = text.trim();
        if s == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        if s.is_empty() || s.starts_with('-') {
            return Err(invalid());
        }
        let mut rest = s.strip_prefix('+').unwrap_or(s);
        let mut total_nanos: u128 = 0;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| {
                    UnitError(format!(
                        "invalid duration {text:?}: missing unit (add s, m, h, ms, us or ns, e.g. \"{rest}s\")"
                    ))
                })?;
            let (number, after) = rest.split_at(number_len);
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let unit_nanos: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(invalid()),
            };
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            if whole.is_empty() && fraction.is_empty() {
                return Err(invalid());
            }
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| invalid())?
            };
            let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(invalid)?;
            // Fractions are exact to the nanosecond: digits beyond that are ignored, as Go does.
            let mut scale = unit_nanos;
            for digit in fraction.chars() {
                let digit = digit.to_digit(10).ok_or_else(invalid)? as u128;
                scale /= 10;
                nanos += digit * scale;
            }
            total_nanos = total_nanos.checked_add(nanos).ok_or_else(invalid)?;
            rest = after;
        }
        // Like Go, durations are bounded by an i64 of nanoseconds (about 292 years).
        if total_nanos > i64::MAX as u128 {
            return Err(UnitError(format!("duration {text:?} is too long")));
        }
        Ok(GoDuration(Duration::from_nanos(total_nanos as u64)))
    }
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `time.Duration.String`: `0s`, `250ms`, `1m30s`, `1h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < 1_000_000_000 {
            let (unit, size) = if nanos < 1_000 {
                ("ns", 1)
            } else if nanos < 1_000_000 {
                ("µs", 1_000)
            } else {
                ("ms", 1_000_000)
            };
            return write!(f, "{}{unit}", decimal(nanos, size));
        }
        let hours = nanos / 3_600_000_000_000;
        let minutes = (nanos / 60_000_000_000) % 60;
        let second_nanos = nanos % 60_000_000_000;
        if hours > 0 {
            write!(f, "{hours}h{minutes}m")?;
        } else if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write!(f, "{}s", decimal(second_nanos, 1_000_000_000))
    }
}

/// `value / unit` as a decimal without trailing zeros.
fn decimal(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A size in bytes, written like Docker's `--memory`: `512M`, `1g`, `1.5GiB`, `1048576`.
/// Units are binary (k = 1024), as Docker reads memory sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        let invalid = || {
            UnitError(format!(
                "invalid size {text:?}: expected a number of bytes with an optional unit b, k, m, g, t (e.g. 512M, 1.5g)"
            ))
        };
        let s = text.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        let unit = unit
            .strip_suffix("ib")
            .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
            .unwrap_or(&unit);
        let multiplier: u64 = match unit {
            "" | "b" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            "t" => 1 << 40,
            "p" => 1 << 50,
            _ => return Err(invalid()),
        };
        if number.is_empty() || number.matches('.').count() > 1 || number == "." {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(UnitError(format!("size {text:?} is too large")));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly: `512MiB`, `1536KiB`, `1000B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 5] = [
            ("PiB", 1 << 50),
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A number of CPUs, stored as billionths like Docker's NanoCPUs: `0.5` is 500,000,000.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NanoCpus(pub u64);

impl FromStr for NanoCpus {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        let invalid = || {
            UnitError(format!(
                "invalid CPU count {text:?}: expected a positive decimal number such as 0.5 or 2"
            ))
        };
        let s = text.trim();
        let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
        let all_digits = |p: &str| p.chars().all(|c| c.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction)
        {
            return Err(invalid());
        }
        if fraction.len() > 9 {
            return Err(UnitError(format!(
                "invalid CPU count {text:?}: at most 9 decimal places"
            )));
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let fraction_nanos: u64 = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<9}").parse().map_err(|_| invalid())?
        };
        whole
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(fraction_nanos))
            .map(NanoCpus)
            .ok_or_else(|| UnitError(format!("CPU count {text:?} is too large")))
    }
}

impl fmt::Display for NanoCpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&decimal(self.0 as u128, 1_000_000_000))
    }
}

/// The three unit types serialise as their canonical text, so state files and plans read
/// like the stack files they came from.
macro_rules! serde_as_text {
    ($($ty:ty => $unit:literal, $example:literal),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "examples": [$example], "x-swarm-unit": $unit })
            }
        }
    )*};
}

serde_as_text!(
    GoDuration => "duration", "10s",
    ByteSize => "size", "512MiB",
    NanoCpus => "cpus", "0.5"
);

/// The schema keyword that names the unit of a string field; see [`check_unit`].
pub const UNIT_KEYWORD: &str = "x-swarm-unit";

/// Checks `text` as a value of the unit a schema names with [`UNIT_KEYWORD`], so that a
/// schema-driven checker reports unit errors with the others.
pub fn check_unit(unit: &str, text: &str) -> Result<(), UnitError> {
    match unit {
        "duration" => text.parse::<GoDuration>().map(drop),
        "size" => text.parse::<ByteSize>().map(drop),
        "cpus" => text.parse::<NanoCpus>().map(drop),
        other => Err(UnitError(format!("unknown unit {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_the_go_way() {
        let cases = [
            ("0", 0),
            ("0s", 0),
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("1.5h", 5_400_000),
            ("300ms", 300),
            ("2h45m", 9_900_000),
            (".5s", 500),
        ];
        for (text, millis) in cases {
            let parsed: GoDuration = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.0.as_millis(), millis, "{text}");
        }
        assert_eq!("1500ns".parse::<GoDuration>().unwrap().0.as_nanos(), 1500);
        assert_eq!("2us".parse::<GoDuration>().unwrap().0.as_nanos(), 2000);
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for text in ["", "10", "-5s", "1x", "s", "1..5s", "99999999999h"] {
            let err = text.parse::<GoDuration>().unwrap_err().to_string();
            assert!(err.contains("duration"), "{text}: {err}");
        }
        assert!(
            "10".parse::<GoDuration>()
                .unwrap_err()
                .to_string()
                .contains("missing unit")
        );
    }

    #[test]
    fn durations_print_canonically() {
        let cases = [
            ("0s", "0s"),
            ("90s", "1m30s"),
            ("1h", "1h0m0s"),
            ("1500ms", "1.5s"),
            ("250ms", "250ms"),
            ("1.5ms", "1.5ms"),
            ("3us", "3µs"),
            ("61m", "1h1m0s"),
        ];
        for (text, canonical) in cases {
            assert_eq!(text.parse::<GoDuration>().unwrap().to_string(), canonical);
            // The canonical text reads back to the same value.
            assert_eq!(
                canonical.parse::<GoDuration>().unwrap(),
                text.parse::<GoDuration>().unwrap()
            );
        }
    }

    #[test]
    fn sizes_are_binary_and_print_canonically() {
        let cases = [
            ("512M", 512 << 20, "512MiB"),
            ("512m", 512 << 20, "512MiB"),
            ("512MB", 512 << 20, "512MiB"),
            ("1.5g", 1536 << 20, "1536MiB"),
            ("1GiB", 1 << 30, "1GiB"),
            ("1000", 1000, "1000B"),
            ("4k", 4096, "4KiB"),
            ("0", 0, "0B"),
        ];
        for (text, bytes, canonical) in cases {
            let parsed: ByteSize = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.0, bytes, "{text}");
            assert_eq!(parsed.to_string(), canonical);
            assert_eq!(canonical.parse::<ByteSize>().unwrap(), parsed);
        }
        for text in ["", "M", "12q", "1.2.3k", "-1m", "99999999p"] {
            assert!(text.parse::<ByteSize>().is_err(), "{text}");
        }
    }

    #[test]
    fn cpus_are_exact_decimals() {
        let cases = [
            ("0.5", 500_000_000, "0.5"),
            ("2", 2_000_000_000, "2"),
            (".25", 250_000_000, "0.25"),
            ("1.000", 1_000_000_000, "1"),
        ];
        for (text, nanos, canonical) in cases {
            let parsed: NanoCpus = text.parse().unwrap();
            assert_eq!(parsed.0, nanos);
            assert_eq!(parsed.to_string(), canonical);
        }
        for text in ["", ".", "-1", "1e3", "0.0000000001", "abc"] {
            assert!(text.parse::<NanoCpus>().is_err(), "{text}");
        }
    }
}
