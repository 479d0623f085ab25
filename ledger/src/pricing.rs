//! Credits for an operation: cost × ceil(units / unit size), checked.

use events::{CostEntry, OperationKey};

/// Largest number of units one command may price.
pub const UNITS_MAX: u64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("units must be between 1 and {max}, got {units}")]
    UnitsOutOfRange { units: u64, max: u64 },
    #[error("the price of {units} units of {operation} overflows")]
    Overflow { operation: OperationKey, units: u64 },
}

/// Credits that `units` of the entry's operation cost.
pub fn price(entry: &CostEntry, units: u64) -> Result<i64, PriceError> {
    if units == 0 || units > UNITS_MAX {
        return Err(PriceError::UnitsOutOfRange {
            units,
            max: UNITS_MAX,
        });
    }
    let steps = units.div_ceil(entry.unit.unit_size());
    i64::try_from(steps)
        .ok()
        .and_then(|steps| entry.cost.checked_mul(steps))
        .ok_or_else(|| PriceError::Overflow {
            operation: entry.operation.clone(),
            units,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::CostUnit;

    fn entry(cost: i64, unit: CostUnit) -> CostEntry {
        CostEntry {
            operation: OperationKey::parse("op").unwrap(),
            cost,
            unit,
            version: 1,
        }
    }

    #[test]
    fn per_100_words_rounds_partial_hundreds_up() {
        let e = entry(1, CostUnit::Per100Words);
        assert_eq!(price(&e, 1), Ok(1));
        assert_eq!(price(&e, 100), Ok(1));
        assert_eq!(price(&e, 101), Ok(2));
        assert_eq!(price(&e, 1_000), Ok(10));
    }

    #[test]
    fn per_request_multiplies_by_units() {
        assert_eq!(price(&entry(10, CostUnit::PerRequest), 3), Ok(30));
        assert_eq!(price(&entry(5, CostUnit::PerImage), 4), Ok(20));
        assert_eq!(price(&entry(1, CostUnit::Per200Words), 401), Ok(3));
    }

    #[test]
    fn zero_and_huge_unit_counts_are_refused() {
        let e = entry(1, CostUnit::PerRequest);
        assert!(matches!(
            price(&e, 0),
            Err(PriceError::UnitsOutOfRange { .. })
        ));
        assert!(matches!(
            price(&e, UNITS_MAX + 1),
            Err(PriceError::UnitsOutOfRange { .. })
        ));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let e = entry(i64::MAX / 2, CostUnit::PerRequest);
        assert!(matches!(price(&e, 3), Err(PriceError::Overflow { .. })));
    }
}
