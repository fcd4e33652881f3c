//! Page sizes, as every list of the platform takes them.
//!
//! Two readings of one rule: gRPC's `PageRequest.limit` (`common.proto`)
//! takes 0 as "the server's default" and caps larger values, as protobuf's
//! zero defaults make necessary; a REST `?limit=` is strict and refuses what
//! gRPC would adjust, so a client never gets a page of another size than it
//! asked for without being told.

use std::fmt;
use std::str::FromStr;

/// How many items one page holds: 1 to [`PageSize::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageSize(u32);

impl PageSize {
    /// A page when the client names no size.
    pub const DEFAULT: Self = Self(20);
    /// The largest page served.
    pub const MAX: Self = Self(100);

    /// gRPC's `PageRequest.limit`: 0 is [`PageSize::DEFAULT`], more than
    /// [`PageSize::MAX`] is capped.
    pub fn from_request(limit: u32) -> Self {
        match limit {
            0 => Self::DEFAULT,
            limit => Self(limit.min(Self::MAX.0)),
        }
    }

    /// A REST `?limit=`: absent or empty is [`PageSize::DEFAULT`], anything
    /// else must read as a size (see [`FromStr`]).
    pub fn from_query(text: Option<&str>) -> Result<Self, InvalidPageSize> {
        match text.map(str::trim).filter(|text| !text.is_empty()) {
            None => Ok(Self::DEFAULT),
            Some(text) => text.parse(),
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for PageSize {
    type Err = InvalidPageSize;

    /// A whole number from 1 to [`PageSize::MAX`]; nothing is adjusted.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.trim()
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=Self::MAX.0).contains(limit))
            .map(Self)
            .ok_or(InvalidPageSize)
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A `?limit=` that is not a page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be a whole number from 1 to {}", PageSize::MAX.0)]
pub struct InvalidPageSize;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn grpc_limits_default_and_cap() {
        assert_eq!(PageSize::from_request(0), PageSize::DEFAULT);
        assert_eq!(PageSize::from_request(7).get(), 7);
        assert_eq!(PageSize::from_request(5_000), PageSize::MAX);
    }

    #[test]
    fn rest_limits_default_when_absent_and_refuse_out_of_range() {
        assert_eq!(PageSize::from_query(None), Ok(PageSize::DEFAULT));
        assert_eq!(PageSize::from_query(Some(" ")), Ok(PageSize::DEFAULT));
        assert_eq!(PageSize::from_query(Some("100")), Ok(PageSize::MAX));
        for bad in ["0", "101", "100000", "-1", "ten", "1.5"] {
            assert_eq!(
                PageSize::from_query(Some(bad)),
                Err(InvalidPageSize),
                "{bad:?}"
            );
        }
        assert_eq!(
            InvalidPageSize.to_string(),
            "must be a whole number from 1 to 100"
        );
    }

    proptest! {
        #[test]
        fn every_size_reads_back_from_its_text(limit in 1u32..=100) {
            let size: PageSize = limit.to_string().parse().map_err(|e: InvalidPageSize| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(size.get(), limit);
            prop_assert_eq!(PageSize::from_request(limit), size);
        }

        #[test]
        fn grpc_sizes_are_always_servable(limit in any::<u32>()) {
            let size = PageSize::from_request(limit);
            prop_assert!((1..=PageSize::MAX.get()).contains(&size.get()));
        }
    }
}
