//! Value types shared by events, commands and the API. Each is built through
//! `parse`/`try_from`, so a value that exists is a valid one.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParseError {
    pub field: &'static str,
    pub reason: String,
}

impl ParseError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// An account (tenant) id: a UUID, version 7 when the ledger mints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(Uuid);

impl AccountId {
    /// A new time-ordered id. Callers mint ids; aggregates never do.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| ParseError::new("account_id", "must be a UUID"))
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for AccountId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Longest idempotency key accepted, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// A caller-chosen key that makes a command apply at most once per account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::new("idempotency_key", "must not be empty"));
        }
        if s.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(ParseError::new(
                "idempotency_key",
                format!("must be at most {IDEMPOTENCY_KEY_BYTES_MAX} bytes"),
            ));
        }
        if !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ParseError::new(
                "idempotency_key",
                "must be printable ASCII without spaces",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> Self {
        k.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest operation key accepted, in bytes.
pub const OPERATION_KEY_BYTES_MAX: usize = 64;

/// The name of a priced AI operation (`clustering`, `content_generation`, ...):
/// lower-case ASCII letters, digits and underscores.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OperationKey(String);

impl OperationKey {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = !s.is_empty()
            && s.len() <= OPERATION_KEY_BYTES_MAX
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && s.as_bytes()[0].is_ascii_lowercase();
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(
                "operation",
                format!("must be 1 to {OPERATION_KEY_BYTES_MAX} characters of a-z, 0-9 and _, starting with a letter"),
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OperationKey {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<OperationKey> for String {
    fn from(k: OperationKey) -> Self {
        k.0
    }
}

impl fmt::Display for OperationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ISO 4217 currency code, upper case (`USD`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

/// Countries whose currency is not the US dollar, by ISO 3166-1 alpha-2
/// code: the currency an account of the country is billed in unless staff
/// chose another. Any other country bills in USD.
#[rustfmt::skip]
const COUNTRY_CURRENCIES: &[(&str, &str)] = &[
    ("AD", "EUR"), ("AE", "AED"), ("AR", "ARS"), ("AT", "EUR"), ("AU", "AUD"),
    ("BD", "BDT"), ("BE", "EUR"), ("BG", "BGN"), ("BR", "BRL"), ("CA", "CAD"),
    ("CH", "CHF"), ("CL", "CLP"), ("CN", "CNY"), ("CO", "COP"), ("CY", "EUR"),
    ("CZ", "CZK"), ("DE", "EUR"), ("DK", "DKK"), ("EE", "EUR"), ("EG", "EGP"),
    ("ES", "EUR"), ("FI", "EUR"), ("FR", "EUR"), ("GB", "GBP"), ("GR", "EUR"),
    ("HK", "HKD"), ("HR", "EUR"), ("HU", "HUF"), ("ID", "IDR"), ("IE", "EUR"),
    ("IL", "ILS"), ("IN", "INR"), ("IS", "ISK"), ("IT", "EUR"), ("JP", "JPY"),
    ("KE", "KES"), ("KR", "KRW"), ("LI", "CHF"), ("LK", "LKR"), ("LT", "EUR"),
    ("LU", "EUR"), ("LV", "EUR"), ("MA", "MAD"), ("MC", "EUR"), ("ME", "EUR"),
    ("MT", "EUR"), ("MX", "MXN"), ("MY", "MYR"), ("NG", "NGN"), ("NL", "EUR"),
    ("NO", "NOK"), ("NP", "NPR"), ("NZ", "NZD"), ("PE", "PEN"), ("PH", "PHP"),
    ("PK", "PKR"), ("PL", "PLN"), ("PT", "EUR"), ("RO", "RON"), ("RS", "RSD"),
    ("SA", "SAR"), ("SE", "SEK"), ("SG", "SGD"), ("SI", "EUR"), ("SK", "EUR"),
    ("SM", "EUR"), ("TH", "THB"), ("TR", "TRY"), ("TW", "TWD"), ("UA", "UAH"),
    ("VA", "EUR"), ("VN", "VND"), ("ZA", "ZAR"),
];

impl Currency {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(
                "currency",
                "must be a three-letter ISO 4217 code in upper case",
            ))
        }
    }
    pub fn usd() -> Self {
        Self("USD".to_owned())
    }
    /// The currency an account in `country` is billed in by default: the
    /// country's own where the table knows it, else USD.
    pub fn for_country(country: &CountryCode) -> Self {
        COUNTRY_CURRENCIES
            .binary_search_by(|(c, _)| (*c).cmp(country.as_str()))
            .map(|i| Self(COUNTRY_CURRENCIES[i].1.to_owned()))
            .unwrap_or_else(|_| Self::usd())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Digits after the decimal point of the currency's minor unit.
    pub fn minor_unit_digits(&self) -> u32 {
        match self.0.as_str() {
            "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "UGX" | "XAF" | "XOF" => 0,
            "BHD" | "JOD" | "KWD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.0
    }
}

/// An amount of money: a decimal, serialized as a string (`"29.00"`), and its
/// currency. Never a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Self { amount, currency }
    }
    pub fn usd(amount: Decimal) -> Self {
        Self::new(amount, Currency::usd())
    }
}

/// An ISO 3166-1 alpha-2 country code, upper case (`US`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode(String);

impl CountryCode {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(s.to_ascii_uppercase()))
        } else {
            Err(ParseError::new(
                "country",
                "must be an ISO 3166-1 alpha-2 code",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CountryCode {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<CountryCode> for String {
    fn from(c: CountryCode) -> Self {
        c.0
    }
}

/// Lifecycle status of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    #[default]
    Trial,
    Active,
    PastDue,
    Suspended,
    Cancelled,
}

impl AccountStatus {
    /// The wire name (`past_due`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trial => "trial",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Suspended => "suspended",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Where granted credits come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    Subscription,
    Purchase,
    Promotional,
    Adjustment,
    Trial,
}

/// Why a hold was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The caller released it.
    Caller,
    /// Its TTL ran out before it was captured.
    Expired,
}

/// How an operation's units are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostUnit {
    PerRequest,
    // serde's snake_case would spell these `per100_words`; the SPEC's names
    // have the underscore. The alias reads anything written the other way.
    #[serde(rename = "per_100_words", alias = "per100_words")]
    Per100Words,
    #[serde(rename = "per_200_words", alias = "per200_words")]
    Per200Words,
    PerImage,
    PerItem,
}

impl CostUnit {
    /// The wire name (`per_100_words`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerRequest => "per_request",
            Self::Per100Words => "per_100_words",
            Self::Per200Words => "per_200_words",
            Self::PerImage => "per_image",
            Self::PerItem => "per_item",
        }
    }

    /// How many units make one priced step: credits = cost × ceil(units / size).
    pub fn unit_size(self) -> u64 {
        match self {
            Self::Per100Words => 100,
            Self::Per200Words => 200,
            Self::PerRequest | Self::PerImage | Self::PerItem => 1,
        }
    }
}

/// A postal billing address, kept as entered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BillingAddress {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<CountryCode>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_refuse_empty_long_and_blank_keys() {
        assert!(IdempotencyKey::parse("job-42:try").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("a b").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
    }

    #[test]
    fn operation_keys_are_snake_case_identifiers() {
        assert!(OperationKey::parse("content_generation").is_ok());
        assert!(OperationKey::parse("Content").is_err());
        assert!(OperationKey::parse("1abc").is_err());
        assert!(OperationKey::parse("").is_err());
    }

    #[test]
    fn money_serializes_its_amount_as_a_string() {
        let m = Money::usd(Decimal::new(2900, 2));
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["amount"], "29.00");
        assert_eq!(v["currency"], "USD");
        let back: Money = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn a_country_picks_its_currency_and_any_other_bills_in_usd() {
        assert!(
            COUNTRY_CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0),
            "the table is sorted for binary search"
        );
        let of = |c: &str| Currency::for_country(&CountryCode::parse(c).unwrap());
        assert_eq!(of("DE").as_str(), "EUR");
        assert_eq!(of("gb").as_str(), "GBP");
        assert_eq!(of("JP").as_str(), "JPY");
        assert_eq!(of("US").as_str(), "USD");
        assert_eq!(of("ZZ").as_str(), "USD");
        for (_, code) in COUNTRY_CURRENCIES {
            assert!(Currency::parse(code).is_ok(), "{code}");
        }
    }

    #[test]
    fn country_and_currency_codes_are_validated() {
        assert_eq!(CountryCode::parse("de").unwrap().as_str(), "DE");
        assert!(CountryCode::parse("DEU").is_err());
        assert!(Currency::parse("usd").is_err());
        assert_eq!(Currency::parse("JPY").unwrap().minor_unit_digits(), 0);
    }

    #[test]
    fn cost_units_use_the_spec_names_and_read_the_old_spelling() {
        assert_eq!(
            serde_json::to_value(CostUnit::Per100Words).unwrap(),
            "per_100_words"
        );
        assert_eq!(
            serde_json::to_value(CostUnit::Per200Words).unwrap(),
            "per_200_words"
        );
        let old: CostUnit = serde_json::from_value("per100_words".into()).unwrap();
        assert_eq!(old, CostUnit::Per100Words);
        for u in [
            CostUnit::PerRequest,
            CostUnit::Per100Words,
            CostUnit::Per200Words,
            CostUnit::PerImage,
            CostUnit::PerItem,
        ] {
            assert_eq!(serde_json::to_value(u).unwrap(), u.as_str());
        }
        for s in [
            AccountStatus::Trial,
            AccountStatus::Active,
            AccountStatus::PastDue,
            AccountStatus::Suspended,
            AccountStatus::Cancelled,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn unit_sizes_follow_the_cost_table() {
        assert_eq!(CostUnit::Per100Words.unit_size(), 100);
        assert_eq!(CostUnit::Per200Words.unit_size(), 200);
        assert_eq!(CostUnit::PerImage.unit_size(), 1);
    }
}
