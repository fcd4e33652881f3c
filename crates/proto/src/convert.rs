//! Domain values → their wire messages, for the conversions every service
//! needs and that cannot fail.
//!
//! - [`timestamp`]: any point in time (`std::time::SystemTime`, or a
//!   `chrono::DateTime`, which converts into one) → `google.protobuf.Timestamp`;
//! - `From<money::Money> for common::v1::Money`: the shared money kernel's
//!   amount → its wire form (`money` is the one definition of money every
//!   service uses; `common.v1.Money` is by definition its wire shape, so the
//!   conversion lives once, here, rather than in every adapter).
//!
//! The other direction (wire → domain) can fail and each service reports its
//! failures against its own request fields, so it stays in the services.

use std::time::SystemTime;

use crate::ferrishop::common::v1 as common;

/// `time` as a `google.protobuf.Timestamp`, normalised as the well-known type
/// requires: `nanos` in `0..1_000_000_000`, also before 1970 (seconds round
/// down, nanos count forwards) and for a leap second (which becomes the next
/// second's first instant).
pub fn timestamp(time: impl Into<SystemTime>) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time.into())
}

impl From<money::Money> for common::Money {
    fn from(money: money::Money) -> Self {
        Self {
            amount: money.amount(),
            currency: money.currency().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn timestamps_are_normalised_on_both_sides_of_the_epoch() {
        let at = |seconds: i64, nanos: i32| prost_types::Timestamp { seconds, nanos };
        assert_eq!(timestamp(UNIX_EPOCH), at(0, 0));
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)),
            at(1_700_000_000, 123_456_789)
        );
        assert_eq!(
            timestamp(UNIX_EPOCH - Duration::from_millis(1_500)),
            at(-2, 500_000_000)
        );
    }

    #[test]
    fn money_keeps_its_minor_units_and_code() {
        let currency = money::Currency::parse("USD").unwrap();
        let wire = common::Money::from(money::Money::new(1999, currency).unwrap());
        assert_eq!(
            wire,
            common::Money {
                amount: 1999,
                currency: "USD".to_owned()
            }
        );
    }
}
