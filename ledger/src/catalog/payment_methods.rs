//! Payment method rows of the catalog (SPEC §2 "Payment method config"):
//! their bounds, their validation and the `*` defaults, and how a country's
//! effective list is chosen (docs/adr/0013-payment-methods-and-stats.md).

use events::{PaymentMethod, PaymentMethodConfig, ANY_COUNTRY};

use super::CatalogError;

/// Longest display name, in bytes.
pub const DISPLAY_NAME_BYTES_MAX: usize = 64;
/// Longest instructions text, in bytes.
pub const INSTRUCTIONS_BYTES_MAX: usize = 2_000;
/// Longest bank name, in bytes.
pub const BANK_NAME_BYTES_MAX: usize = 128;
/// Longest account number (an IBAN is at most 34), in bytes.
pub const ACCOUNT_NUMBER_BYTES_MAX: usize = 64;
/// Longest routing number (sort code, ABA, BSB …), in bytes.
pub const ROUTING_NUMBER_BYTES_MAX: usize = 64;
/// Highest sort order; lists are sorted ascending.
pub const SORT_ORDER_MAX: i32 = 10_000;

/// ISO 3166-1 alpha-2 codes, officially assigned (from tzdata's
/// `iso3166.tab`, ISO/TC 46 N1108 of 2023-04-05).
const ISO_3166_ALPHA2: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// Whether `country` may key a payment method row: an assigned ISO 3166-1
/// alpha-2 code in upper case, or `*`.
pub fn is_config_country(country: &str) -> bool {
    country == ANY_COUNTRY || ISO_3166_ALPHA2.binary_search(&country).is_ok()
}

/// The key of a row in the catalog's map.
pub(super) fn config_key(country: &str, method: PaymentMethod) -> String {
    format!("{country}/{}", method.as_str())
}

fn bounded(value: Option<&str>, field: &'static str, max_bytes: usize) -> Result<(), CatalogError> {
    match value {
        Some(v) if v.is_empty() || v.len() > max_bytes => {
            Err(CatalogError::FieldLength { field, max_bytes })
        }
        _ => Ok(()),
    }
}

/// A SWIFT/BIC code: 8 or 11 upper-case letters and digits.
fn is_swift(s: &str) -> bool {
    (s.len() == 8 || s.len() == 11)
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Checks every bound of a row; the first failure names its field.
pub fn check_config(config: &PaymentMethodConfig) -> Result<(), CatalogError> {
    if !is_config_country(&config.country) {
        return Err(CatalogError::InvalidCountry);
    }
    if config.display_name.trim().is_empty() {
        return Err(CatalogError::FieldLength {
            field: "display_name",
            max_bytes: DISPLAY_NAME_BYTES_MAX,
        });
    }
    bounded(
        Some(&config.display_name),
        "display_name",
        DISPLAY_NAME_BYTES_MAX,
    )?;
    bounded(
        config.instructions.as_deref(),
        "instructions",
        INSTRUCTIONS_BYTES_MAX,
    )?;
    bounded(
        config.bank_name.as_deref(),
        "bank_name",
        BANK_NAME_BYTES_MAX,
    )?;
    bounded(
        config.account_number.as_deref(),
        "account_number",
        ACCOUNT_NUMBER_BYTES_MAX,
    )?;
    bounded(
        config.routing_number.as_deref(),
        "routing_number",
        ROUTING_NUMBER_BYTES_MAX,
    )?;
    if config.swift.as_deref().is_some_and(|s| !is_swift(s)) {
        return Err(CatalogError::InvalidSwift);
    }
    if !(0..=SORT_ORDER_MAX).contains(&config.sort_order) {
        return Err(CatalogError::InvalidSortOrder {
            sort_order: config.sort_order,
        });
    }
    Ok(())
}

fn row(
    method: PaymentMethod,
    enabled: bool,
    display_name: &str,
    instructions: Option<&str>,
    sort_order: i32,
) -> PaymentMethodConfig {
    PaymentMethodConfig {
        country: ANY_COUNTRY.to_owned(),
        method,
        enabled,
        display_name: display_name.to_owned(),
        instructions: instructions.map(str::to_owned),
        bank_name: None,
        account_number: None,
        routing_number: None,
        swift: None,
        sort_order,
    }
}

/// The rows for every country written by the seed of version 2: card
/// payments through Stripe (available only where a key is configured),
/// bank transfer and local wallet with generic instructions, PayPal off.
pub fn default_payment_methods() -> Vec<PaymentMethodConfig> {
    vec![
        row(PaymentMethod::Stripe, true, "Card (Stripe)", None, 10),
        row(
            PaymentMethod::BankTransfer,
            true,
            "Bank transfer",
            Some(
                "Transfer {amount} {currency} to the seller's bank account with reference \
                 {reference}; it is credited once staff approve it.",
            ),
            20,
        ),
        row(
            PaymentMethod::LocalWallet,
            true,
            "Local wallet",
            Some(
                "Pay {amount} {currency} from your local wallet with reference {reference}; \
                 it is credited once staff approve it.",
            ),
            30,
        ),
        row(PaymentMethod::Paypal, false, "PayPal", None, 40),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_country_list_is_sorted_unique_and_complete() {
        assert_eq!(ISO_3166_ALPHA2.len(), 249);
        assert!(ISO_3166_ALPHA2.windows(2).all(|w| w[0] < w[1]));
        assert!(is_config_country("DE"));
        assert!(is_config_country("*"));
        assert!(!is_config_country("de"), "upper case only");
        assert!(!is_config_country("XX"), "not assigned");
        assert!(!is_config_country("USA"));
        assert!(!is_config_country(""));
    }

    #[test]
    fn every_default_row_passes_its_own_checks() {
        for c in default_payment_methods() {
            assert_eq!(check_config(&c), Ok(()), "{c:?}");
        }
    }

    #[test]
    fn swift_codes_are_eight_or_eleven_upper_case_alphanumerics() {
        assert!(is_swift("COBADEFF"));
        assert!(is_swift("COBADEFFXXX"));
        assert!(!is_swift("cobadeff"));
        assert!(!is_swift("COBADEF"));
        assert!(!is_swift("COBADEFF-XX"));
    }
}
