//! Spending and granting credits: deductions, holds, captures, releases,
//! refunds of usage, grants and adjustments (SPEC §3). HTTP routes and NATS
//! subjects both call these functions, so the two transports share every
//! rule, error and idempotency claim.

use chrono::{DateTime, Utc};
use events::{
    AccountEvent, AccountId, CostEntry, GrantSource, LotDraw, OperationKey, ReleaseReason, Usage,
};
use ledger::account::{
    AdjustCredits, Amount, CaptureHold, DeductCredits, GrantCredits, HoldCredits, RefundDeduction,
    ReleaseHold,
};
use ledger::AccountCommand;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access;
use crate::caller::Caller;
use crate::error::AppError;
use crate::input::{Input, Key, MIN_POSITION_WAIT_MILLIS_MAX, TOKENS_MAX};
use crate::runner::{claim, written};
use crate::{now, App, Written};

/// Default time a hold lives before the ledger releases it.
pub const HOLD_TTL_SECONDS_DEFAULT: u64 = 900;
/// Longest free text (reasons, descriptions, model names) accepted.
pub const TEXT_BYTES_MAX: usize = 1_024;
/// Most keys in a deduction's `metadata` object.
pub const METADATA_KEYS_MAX: usize = 64;

/// Money arrives as a decimal string (`"0.0123"`), never a float.
fn money<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| {
        s.parse::<Decimal>()
            .map_err(|_| serde::de::Error::custom("must be a decimal string such as \"0.0123\""))
    })
    .transpose()
}

/// Free text of at most [`TEXT_BYTES_MAX`] bytes, else 422 naming `field`.
pub fn text(field: &str, value: Option<String>) -> Result<Option<String>, AppError> {
    match value {
        Some(v) if v.len() > TEXT_BYTES_MAX => Err(AppError::invalid_field(
            field,
            format!("{field} must be at most {TEXT_BYTES_MAX} bytes"),
        )),
        v => Ok(v),
    }
}

fn operation(raw: &str) -> Result<OperationKey, AppError> {
    OperationKey::parse(raw).map_err(|e| AppError::invalid_field("operation", e.reason))
}

/// The cost row in force for `op`; 422 `unknown_operation` when there is
/// none, 422 `operation_inactive` when staff turned it off.
pub async fn cost(app: &App, op: &OperationKey) -> Result<CostEntry, AppError> {
    let entry = app
        .catalog
        .cost(op)
        .await?
        .ok_or_else(|| AppError::UnknownOperation(op.to_string()))?;
    if !app.catalog.get().await.cost_details(op).is_active {
        return Err(AppError::OperationInactive(op.to_string()));
    }
    Ok(entry)
}

/// What an operation used, as the worker reports it.
struct UsageFields {
    model: Option<String>,
    tokens_input: Option<u64>,
    tokens_output: Option<u64>,
    cost_usd: Option<Decimal>,
    related_object_type: Option<String>,
    related_object_id: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl UsageFields {
    fn into_usage(self, units: u64) -> Result<Usage, AppError> {
        if let Some(c) = self.cost_usd {
            crate::input::money("cost_usd", c, false)?;
        }
        for (field, tokens) in [
            ("tokens_input", self.tokens_input),
            ("tokens_output", self.tokens_output),
        ] {
            if tokens.is_some_and(|t| t > TOKENS_MAX) {
                return Err(AppError::invalid_field(
                    field,
                    format!("{field} must be at most {TOKENS_MAX}"),
                ));
            }
        }
        if let Some(m) = &self.metadata {
            if m.len() > METADATA_KEYS_MAX {
                return Err(AppError::invalid_field(
                    "metadata",
                    format!("metadata may have at most {METADATA_KEYS_MAX} keys"),
                ));
            }
            crate::input::metadata(m)?;
        }
        Ok(Usage {
            operation: None,
            units,
            cost_version: None,
            model: text("model", self.model)?,
            tokens_input: self.tokens_input,
            tokens_output: self.tokens_output,
            cost_usd: self.cost_usd,
            related_object_type: text("related_object_type", self.related_object_type)?,
            related_object_id: text("related_object_id", self.related_object_id)?,
            metadata: self.metadata.map(serde_json::Value::Object),
        })
    }
}

/// `POST /accounts/{id}/deductions`: an operation's cost, priced from the
/// cost table.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeductRequest {
    /// An operation of the cost table (`GET /v1/admin/credit-costs`).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z][a-z0-9_]{0,63}$", max_length = 64)
    )]
    pub operation: String,
    #[serde(default = "one")]
    #[cfg_attr(
        feature = "openapi",
        schema(default = 1, minimum = 1, maximum = 1_000_000_000_u64)
    )]
    pub units: u64,
    // Flattened fields cannot be combined with deny_unknown_fields, so the
    // usage fields are repeated here.
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub model: Option<String>,
    #[cfg_attr(feature = "openapi", schema(maximum = 1_000_000_000_000_u64))]
    pub tokens_input: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(maximum = 1_000_000_000_000_u64))]
    pub tokens_output: Option<u64>,
    /// A non-negative decimal string, never a float: at most 10^12 with at
    /// most 12 decimals.
    #[serde(default, deserialize_with = "money")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "0.0123", pattern = r"^[0-9]{1,12}(\.[0-9]{1,12})?$"))]
    pub cost_usd: Option<Decimal>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub related_object_type: Option<String>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub related_object_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

fn one() -> u64 {
    1
}

/// A recorded deduction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deduction {
    pub id: Uuid,
    pub credits: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub operation: Option<OperationKey>,
    pub units: u64,
    /// The cost-table version the price came from.
    pub cost_version: Option<u64>,
    pub balance_after: i64,
    pub available_after: i64,
    pub recorded_at: DateTime<Utc>,
    /// The event-log position this write reached (read your writes with
    /// `?min_position=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = true, value_type = i64))]
    pub position: Option<i64>,
}

/// Deducts an operation's credits. Idempotent per account and key.
pub async fn deduct(
    app: &App,
    caller: &Caller,
    account: AccountId,
    key: Key,
    input: Input<DeductRequest>,
) -> Result<Written<Deduction>, AppError> {
    let account = caller.authorize(access::DEDUCT, account)?;
    let body = input.parse()?;
    let key = key.required()?;
    let command = deduction_command(app, body.value, key.clone()).await?;
    let claim = claim(&key, "deductions", &body.canonical);
    let done = app.run(caller, account, command, Some(&claim), &[]).await?;
    deduction_written(&done)
}

/// The command of a deduction's body, priced from the cost table.
async fn deduction_command(
    app: &App,
    req: DeductRequest,
    key: events::IdempotencyKey,
) -> Result<AccountCommand, AppError> {
    let op = operation(&req.operation)?;
    let cost = cost(app, &op).await?;
    // Priced here too, so a batch's invalid items are all found, in order,
    // before any is decided (the account prices it again, with the same
    // answer).
    ledger::pricing::price(&cost, req.units)
        .map_err(|e| AppError::from(ledger::AccountError::Pricing(e)))?;
    let usage = UsageFields {
        model: req.model,
        tokens_input: req.tokens_input,
        tokens_output: req.tokens_output,
        cost_usd: req.cost_usd,
        related_object_type: req.related_object_type,
        related_object_id: req.related_object_id,
        metadata: req.metadata,
    }
    .into_usage(req.units)?;
    Ok(AccountCommand::DeductCredits(DeductCredits {
        deduction_id: Uuid::now_v7(),
        cost,
        usage,
        idempotency_key: Some(key),
        now: now(),
    }))
}

/// A deduction's answer: the new one, or the first outcome of its key.
fn deduction_written(
    done: &store::Executed<ledger::CreditAccount>,
) -> Result<Written<Deduction>, AppError> {
    written(done, true, |e, position| match e {
        AccountEvent::CreditsDeducted(d) => Some(Deduction {
            id: d.deduction_id,
            credits: d.credits,
            operation: d.usage.operation.clone(),
            units: d.usage.units,
            cost_version: d.usage.cost_version,
            balance_after: d.balance_after,
            available_after: d.available_after,
            recorded_at: d.recorded_at,
            position,
        }),
        _ => None,
    })
}

/// Most items in one batch of deductions.
pub const BATCH_ITEMS_MAX: usize = 1_000;
/// Largest body of a batch of deductions: 1,000 items of a few hundred
/// bytes each fit many times over (a single command's limit is 64 KiB).
pub const BATCH_BODY_BYTES_MAX: usize = 2 * 1024 * 1024;
/// The command name a batch's deductions are timed under.
const BATCH_COMMAND: &str = "deduct_batch";

/// `POST /accounts/{id}/deductions/batch` (and `POST /deductions/batch`,
/// items naming their accounts): deductions decided in order and committed
/// together, each answered on its own.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeductBatchRequest {
    /// 1 to 1,000 items, each the body of a single deduction plus its own
    /// `idempotency_key` (and, optionally, `account_id`).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<DeductBatchItem>, min_items = 1, max_items = 1000))]
    pub items: Vec<serde_json::Value>,
    /// All items applied, or none (one account only).
    #[serde(default)]
    pub atomic: bool,
}

/// One item of a batch (documentation: items are read one by one, so a bad
/// item is that item's error, not the batch's).
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeductBatchItem {
    /// Required: the item's key, bound to the same request as a single
    /// deduction's `Idempotency-Key` with this body.
    idempotency_key: String,
    /// The account (required on `POST /v1/deductions/batch`; on the
    /// per-account route, the path's if given).
    account_id: Option<String>,
    #[schema(pattern = r"^[a-z][a-z0-9_]{0,63}$", max_length = 64)]
    operation: String,
    #[schema(default = 1, minimum = 1, maximum = 1_000_000_000_u64)]
    units: Option<u64>,
    model: Option<String>,
    tokens_input: Option<u64>,
    tokens_output: Option<u64>,
    #[schema(value_type = Option<String>, example = "0.0123")]
    cost_usd: Option<String>,
    related_object_type: Option<String>,
    related_object_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

/// A batch's answer: one result per item, in order. A success is the single
/// deduction's 201 body, an error the single request's error body, each
/// with `index`, `status`, `idempotency_key` and `account_id` added (and
/// `idempotent_replayed` on a success).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeductionBatch {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub items: Vec<serde_json::Value>,
    /// Deductions written by this batch.
    pub applied: usize,
    /// Items answered with an earlier outcome of their key.
    pub replayed: usize,
    /// Items answered with an error.
    pub failed: usize,
    /// The highest log position an item reached (for `?min_position=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

/// An item read and ready to run, or why it cannot.
struct BatchItem {
    account: Option<AccountId>,
    key: Option<String>,
    ready: Result<(store::BatchCommand, AccountId), AppError>,
}

/// Reads one item: its key and account, then the single deduction's body.
async fn batch_item(
    app: &App,
    caller: &Caller,
    ctx: &store::CommandContext,
    path_account: Option<AccountId>,
    item: serde_json::Value,
) -> BatchItem {
    let serde_json::Value::Object(mut body) = item else {
        return BatchItem {
            account: path_account,
            key: None,
            ready: Err(AppError::bad_request("a batch item must be a JSON object")),
        };
    };
    let mut take = |name: &str| match body.remove(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AppError::invalid_field(
            name,
            format!("{name} must be a string"),
        )),
    };
    let key_text = take("idempotency_key");
    let account_text = take("account_id");
    let key = key_text.as_ref().ok().cloned().flatten();
    let account = match (&account_text, path_account) {
        (Ok(Some(text)), _) => crate::input::account_id(text).ok(),
        (_, path) => path,
    };
    let ready = async {
        let key = key_text?.ok_or_else(|| {
            AppError::invalid_field("idempotency_key", "idempotency_key is required")
        })?;
        let key = events::IdempotencyKey::parse(&key).map_err(|e| {
            AppError::invalid_field("idempotency_key", format!("idempotency_key {}", e.reason))
        })?;
        let account = match (account_text?, path_account) {
            (None, Some(path)) => path,
            (None, None) => {
                return Err(AppError::invalid_field(
                    "account_id",
                    "account_id is required on each item of a batch that names no account",
                ))
            }
            (Some(text), path) => {
                let id = crate::input::account_id(&text).map_err(|_| {
                    AppError::invalid_field(
                        "account_id",
                        "account_id must be an account's id (a UUID)",
                    )
                })?;
                if path.is_some_and(|p| p != id) {
                    return Err(AppError::invalid_field(
                        "account_id",
                        "an item's account_id must be the batch's account",
                    ));
                }
                id
            }
        };
        let account = caller.scope(account)?;
        let parsed = Input::<DeductRequest>::parse_value(serde_json::Value::Object(body))?;
        let command = deduction_command(app, parsed.value, key.clone()).await?;
        let claim = claim(&key, "deductions", &parsed.canonical);
        Ok((
            store::BatchCommand {
                account_id: account.to_string(),
                command,
                ctx: ctx.clone(),
                claim: Some(claim),
            },
            account,
        ))
    }
    .await;
    BatchItem {
        account,
        key,
        ready,
    }
}

/// An item's result as the answer lists it.
fn batch_result(
    index: usize,
    account: Option<AccountId>,
    key: Option<&str>,
    outcome: Result<Written<Deduction>, AppError>,
) -> serde_json::Value {
    let (status, mut body, replayed) = match outcome {
        Ok(done) => (
            crate::error::status::CREATED,
            serde_json::to_value(&done.value).unwrap_or_default(),
            Some(done.replayed),
        ),
        Err(e) => (e.status(), e.body(), None),
    };
    if let serde_json::Value::Object(map) = &mut body {
        map.insert("index".into(), index.into());
        map.insert("status".into(), status.into());
        map.insert("idempotency_key".into(), key.into());
        map.insert("account_id".into(), account.map(|a| a.to_string()).into());
        if let Some(replayed) = replayed {
            map.insert("idempotent_replayed".into(), replayed.into());
        }
    }
    body
}

/// Deducts a batch of operations' credits: each item is a single deduction
/// with its own idempotency key, decided in order and committed together;
/// each item is answered as its single request would be. With `atomic`,
/// all items are applied or none (the first refused item's error, naming
/// its index). `account` is the route's account; `None` for the
/// cross-account form, whose items name theirs.
pub async fn deduct_batch(
    app: &App,
    caller: &Caller,
    account: Option<AccountId>,
    input: Input<DeductBatchRequest>,
) -> Result<DeductionBatch, AppError> {
    caller.require(access::DEDUCT)?;
    let path_account = account
        .map(|a| caller.authorize(access::DEDUCT, a))
        .transpose()?;
    // Items are checked one by one (a bad one is that item's error).
    let req = input.parse_outer()?;
    if req.items.is_empty() || req.items.len() > BATCH_ITEMS_MAX {
        return Err(AppError::invalid_field(
            "items",
            format!(
                "a batch has 1 to {BATCH_ITEMS_MAX} items; this one has {}",
                req.items.len()
            ),
        ));
    }
    let ctx = store::CommandContext::new(caller.actor());
    let mut items = Vec::with_capacity(req.items.len());
    for item in req.items {
        items.push(batch_item(app, caller, &ctx, path_account, item).await);
    }
    if req.atomic {
        // All items on one account, every one of them readable: else the
        // batch is refused before anything runs.
        let first = items
            .iter()
            .find_map(|i| i.ready.as_ref().ok().map(|r| r.1));
        for (index, item) in items.iter_mut().enumerate() {
            let refusal = match &item.ready {
                Err(e) => Some(e.clone()),
                Ok((_, a)) if Some(*a) != first => Some(AppError::invalid_field(
                    "atomic",
                    "an atomic batch must have all its items on one account",
                )),
                Ok(_) => None,
            };
            if let Some(error) = refusal {
                return Err(AppError::InBatch {
                    index,
                    idempotency_key: item.key.take(),
                    error: Box::new(error),
                });
            }
        }
    }
    // The items that run, and where each one's answer goes.
    let mut commands = Vec::with_capacity(items.len());
    let mut outcomes: Vec<Option<Result<Written<Deduction>, AppError>>> =
        Vec::with_capacity(items.len());
    for item in &mut items {
        match std::mem::replace(&mut item.ready, Err(AppError::Internal)) {
            Ok((command, _)) => {
                commands.push(command);
                outcomes.push(None);
            }
            Err(e) => outcomes.push(Some(Err(e))),
        }
    }
    let mut results = app
        .run_batch(BATCH_COMMAND, commands, req.atomic)
        .await?
        .into_iter();
    // The first item refused in an atomic batch (then nothing was written).
    let mut refused = None;
    for (index, slot) in outcomes.iter_mut().enumerate() {
        if slot.is_some() {
            continue;
        }
        let result = results.next().ok_or(AppError::Internal);
        *slot = Some(match result {
            Ok(Ok(done)) => deduction_written(&done),
            Ok(Err(e @ store::ServiceError::NotApplied { .. })) => Err(e.into()),
            Ok(Err(e)) => {
                let e = AppError::from(e);
                if req.atomic && refused.is_none() {
                    refused = Some((index, e.clone()));
                }
                Err(e)
            }
            Err(e) => Err(e),
        });
    }
    if let Some((index, error)) = refused {
        return Err(AppError::InBatch {
            index,
            idempotency_key: items.get_mut(index).and_then(|i| i.key.take()),
            error: Box::new(error),
        });
    }
    let mut answer = DeductionBatch {
        items: Vec::with_capacity(outcomes.len()),
        applied: 0,
        replayed: 0,
        failed: 0,
        position: None,
    };
    for (index, (item, outcome)) in items.iter().zip(outcomes).enumerate() {
        let outcome = outcome.unwrap_or(Err(AppError::Internal));
        match &outcome {
            Ok(done) if done.replayed => answer.replayed += 1,
            Ok(_) => answer.applied += 1,
            Err(_) => answer.failed += 1,
        }
        if let Ok(done) = &outcome {
            answer.position = answer.position.max(done.value.position);
        }
        answer.items.push(batch_result(
            index,
            item.account,
            item.key.as_deref(),
            outcome,
        ));
    }
    Ok(answer)
}

/// `POST /accounts/{id}/holds`: `credits`, or `operation` and `units`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// Price the hold from the cost table (with `units`, default 1); give
    /// this or `credits`, not both.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z][a-z0-9_]{0,63}$", max_length = 64)
    )]
    pub operation: Option<String>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000_000_u64))]
    pub units: Option<u64>,
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 1_000_000_000_000_i64)
    )]
    pub credits: Option<i64>,
    /// Seconds until the ledger releases the hold (default 900, at most 7
    /// days).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 604_800, default = 900)
    )]
    pub ttl_seconds: Option<u64>,
}

/// A reservation of credits.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hold {
    pub id: Uuid,
    pub credits: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub operation: Option<OperationKey>,
    pub units: Option<u64>,
    pub cost_version: Option<u64>,
    /// When the ledger releases the hold if it is not captured.
    pub expires_at: DateTime<Utc>,
    pub available_after: i64,
    pub held_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = true, value_type = i64))]
    pub position: Option<i64>,
}

/// Credits from a body that names either `credits` or an `operation` (with
/// `units`, default 1).
async fn amount(
    app: &App,
    op: Option<String>,
    units: Option<u64>,
    credits: Option<i64>,
) -> Result<Option<Amount>, AppError> {
    match (op, credits) {
        (Some(_), Some(_)) => Err(AppError::invalid_field(
            "credits",
            "give either credits or operation and units, not both",
        )),
        (Some(op), None) => {
            let op = operation(&op)?;
            Ok(Some(Amount::Priced {
                cost: cost(app, &op).await?,
                units: units.unwrap_or(1),
            }))
        }
        (None, Some(c)) => {
            if units.is_some() {
                return Err(AppError::invalid_field(
                    "units",
                    "units need an operation to price them",
                ));
            }
            Ok(Some(Amount::Credits(c)))
        }
        (None, None) => {
            if units.is_some() {
                return Err(AppError::invalid_field(
                    "operation",
                    "units need an operation to price them (the hold's, or one named here)",
                ));
            }
            Ok(None)
        }
    }
}

/// Reserves credits until captured, released or expired.
pub async fn hold(
    app: &App,
    caller: &Caller,
    account: AccountId,
    key: Key,
    input: Input<HoldRequest>,
) -> Result<Written<Hold>, AppError> {
    let account = caller.authorize(access::HOLD, account)?;
    let body = input.parse()?;
    let key = key.required()?;
    let req = body.value;
    let amount = amount(app, req.operation, req.units, req.credits)
        .await?
        .ok_or_else(|| {
            AppError::invalid_field("credits", "a hold needs credits or an operation")
        })?;
    let command = AccountCommand::HoldCredits(HoldCredits {
        hold_id: Uuid::now_v7(),
        amount,
        ttl_seconds: req.ttl_seconds.unwrap_or(HOLD_TTL_SECONDS_DEFAULT),
        idempotency_key: Some(key.clone()),
        now: now(),
    });
    let claim = claim(&key, "holds", &body.canonical);
    let done = app.run(caller, account, command, Some(&claim), &[]).await?;
    written(&done, true, |e, position| match e {
        AccountEvent::CreditsHeld(h) => Some(Hold {
            id: h.hold_id,
            credits: h.credits,
            operation: h.operation.clone(),
            units: h.units,
            cost_version: h.cost_version,
            expires_at: h.expires_at,
            available_after: h.available_after,
            held_at: h.held_at,
            position,
        }),
        _ => None,
    })
}

/// `POST /accounts/{id}/holds/{hold}/capture`: the actual usage (all of
/// the hold when no amount is given).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_i64)
    )]
    pub credits: Option<i64>,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z][a-z0-9_]{0,63}$", max_length = 64)
    )]
    pub operation: Option<String>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000_000_u64))]
    pub units: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub model: Option<String>,
    #[cfg_attr(feature = "openapi", schema(maximum = 1_000_000_000_000_u64))]
    pub tokens_input: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(maximum = 1_000_000_000_000_u64))]
    pub tokens_output: Option<u64>,
    #[serde(default, deserialize_with = "money")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "0.0123", pattern = r"^[0-9]{1,12}(\.[0-9]{1,12})?$"))]
    pub cost_usd: Option<Decimal>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub related_object_type: Option<String>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub related_object_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A hold turned into a deduction of `credits`; `released` went back to
/// available.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capture {
    /// The deduction's id (refund it through `/deductions/{id}/refund`).
    pub id: Uuid,
    pub hold_id: Uuid,
    pub held: i64,
    pub credits: i64,
    pub released: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub operation: Option<OperationKey>,
    pub cost_version: Option<u64>,
    pub balance_after: i64,
    pub available_after: i64,
    pub recorded_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = true, value_type = i64))]
    pub position: Option<i64>,
}

/// Captures a hold: its actual usage becomes a deduction, the rest goes
/// back to available.
pub async fn capture(
    app: &App,
    caller: &Caller,
    account: AccountId,
    hold: &str,
    key: Key,
    input: Input<CaptureRequest>,
) -> Result<Written<Capture>, AppError> {
    let account = caller.authorize(access::CAPTURE, account)?;
    let body = input.parse()?;
    let hold_id = crate::input::path_id(hold, "hold")?;
    let key = key.required()?;
    let req = body.value;
    let units = req.units;
    // Units without an operation are the hold's operation's units.
    let mut operation = req.operation;
    if operation.is_none() && req.credits.is_none() && units.is_some() {
        let loaded = app
            .store
            .load::<ledger::CreditAccount>(&account.to_string())
            .await?;
        operation = loaded
            .aggregate
            .open_holds()
            .get(&hold_id)
            .and_then(|h| h.operation.as_ref())
            .map(|op| op.to_string());
    }
    let amount = amount(app, operation, req.units, req.credits).await?;
    let usage = UsageFields {
        model: req.model,
        tokens_input: req.tokens_input,
        tokens_output: req.tokens_output,
        cost_usd: req.cost_usd,
        related_object_type: req.related_object_type,
        related_object_id: req.related_object_id,
        metadata: req.metadata,
    }
    .into_usage(units.unwrap_or(1))?;
    let amount = match amount {
        Some(a) => a,
        // No amount: capture the whole hold.
        None => {
            let loaded = app
                .store
                .load::<ledger::CreditAccount>(&account.to_string())
                .await?;
            match loaded.aggregate.open_holds().get(&hold_id) {
                Some(h) => Amount::Credits(h.credits),
                // Let the aggregate say why (closed, unknown, or a replay).
                None => Amount::Credits(0),
            }
        }
    };
    let command = AccountCommand::CaptureHold(CaptureHold {
        hold_id,
        deduction_id: Uuid::now_v7(),
        amount,
        usage,
        idempotency_key: Some(key.clone()),
        now: now(),
    });
    let claim = claim(&key, &format!("holds/{hold_id}/capture"), &body.canonical);
    let done = app.run(caller, account, command, Some(&claim), &[]).await?;
    written(&done, false, |e, position| match e {
        AccountEvent::HoldCaptured(c) => Some(Capture {
            id: c.deduction_id,
            hold_id: c.hold_id,
            held: c.held,
            credits: c.captured,
            released: c.released,
            operation: c.usage.operation.clone(),
            cost_version: c.usage.cost_version,
            balance_after: c.balance_after,
            available_after: c.available_after,
            recorded_at: c.captured_at,
            position,
        }),
        _ => None,
    })
}

/// A body that must be empty (`{}` or nothing).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

/// A hold released.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Release {
    pub hold_id: Uuid,
    pub credits: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::ReleaseReason))]
    pub reason: ReleaseReason,
    pub available_after: i64,
    pub released_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = true, value_type = i64))]
    pub position: Option<i64>,
}

/// Releases a hold; its credits go back to available. The key is
/// optional.
pub async fn release(
    app: &App,
    caller: &Caller,
    account: AccountId,
    hold: &str,
    key: Key,
    input: Input<EmptyRequest>,
) -> Result<Written<Release>, AppError> {
    let account = caller.authorize(access::RELEASE, account)?;
    let body = input.parse()?;
    let hold_id = crate::input::path_id(hold, "hold")?;
    let claim = key
        .0
        .as_ref()
        .map(|k| claim(k, &format!("holds/{hold_id}/release"), &body.canonical));
    let command = AccountCommand::ReleaseHold(ReleaseHold {
        hold_id,
        idempotency_key: key.0,
        now: now(),
    });
    let done = app
        .run(caller, account, command, claim.as_ref(), &[])
        .await?;
    written(&done, false, |e, position| match e {
        AccountEvent::HoldReleased(r) => Some(Release {
            hold_id: r.hold_id,
            credits: r.credits,
            reason: r.reason,
            available_after: r.available_after,
            released_at: r.released_at,
            position,
        }),
        _ => None,
    })
}

/// `POST /accounts/{id}/deductions/{deduction}/refund`: all of what is
/// left, or `credits` of it.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 1_000_000_000_000_i64)
    )]
    pub credits: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub reason: Option<String>,
}

/// A refund of (part of) a deduction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Refund {
    pub id: Uuid,
    pub deduction_id: Uuid,
    pub credits: i64,
    pub reason: String,
    pub balance_after: i64,
    pub refunded_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = true, value_type = i64))]
    pub position: Option<i64>,
}

/// Refunds all or part of a deduction (or a capture's deduction).
pub async fn refund(
    app: &App,
    caller: &Caller,
    account: AccountId,
    deduction: &str,
    key: Key,
    input: Input<RefundRequest>,
) -> Result<Written<Refund>, AppError> {
    let account = caller.authorize(access::REFUND_USAGE, account)?;
    let body = input.parse()?;
    let deduction_id = crate::input::path_id(deduction, "deduction")?;
    let key = key.required()?;
    let req = body.value;
    let (deducted, draws) = match deduction_of(app, &account, deduction_id).await? {
        Some((credits, draws)) => (Some(credits), draws),
        None => (None, Vec::new()),
    };
    let command = AccountCommand::RefundDeduction(RefundDeduction {
        refund_id: Uuid::now_v7(),
        deduction_id,
        deducted,
        draws,
        credits: req.credits,
        reason: text("reason", req.reason)?.unwrap_or_default(),
        idempotency_key: Some(key.clone()),
        now: now(),
    });
    let claim = claim(
        &key,
        &format!("deductions/{deduction_id}/refund"),
        &body.canonical,
    );
    let done = app.run(caller, account, command, Some(&claim), &[]).await?;
    written(&done, true, |e, position| match e {
        AccountEvent::CreditsRefunded(r) => Some(Refund {
            id: r.refund_id,
            deduction_id: r.deduction_id,
            credits: r.credits,
            reason: r.reason.clone(),
            balance_after: r.balance_after,
            refunded_at: r.refunded_at,
            position,
        }),
        _ => None,
    })
}

/// The credits a deduction of this account took and the lots it drew
/// them from: the usage read model finds it, its event in the log says
/// which lots. A deduction the projection has not seen yet may still be in
/// flight: then the projection is brought up to the log's head (bounded
/// wait) and asked again, so only a deduction that is really absent reads
/// as `None` (404).
async fn deduction_of(
    app: &App,
    account: &AccountId,
    deduction_id: Uuid,
) -> Result<Option<(i64, Vec<LotDraw>)>, AppError> {
    let (account_text, deduction) = (account.to_string(), deduction_id.to_string());
    let lookup =
        || async { Ok::<_, AppError>(app.read_models.deduction(&account_text, &deduction).await?) };
    let found = match lookup().await? {
        Some(found) => Some(found),
        None => {
            let head = app.store.head_position().await?;
            let wait = std::time::Duration::from_millis(MIN_POSITION_WAIT_MILLIS_MAX);
            if !app.projector.wait_for(head, wait).await {
                return Err(AppError::Unavailable(
                    "the usage log is behind the ledger; retry shortly".into(),
                ));
            }
            lookup().await?
        }
    };
    let Some((credits, position)) = found else {
        return Ok(None);
    };
    let draws = app
        .store
        .read_after(position - 1, 1)
        .await?
        .into_iter()
        .find(|e| e.position == position && e.aggregate_id == account_text)
        .and_then(|e| serde_json::from_value::<AccountEvent>(e.payload).ok())
        .map(|e| match e {
            AccountEvent::CreditsDeducted(d) => d.draws,
            AccountEvent::HoldCaptured(c) => c.draws,
            _ => Vec::new(),
        })
        .unwrap_or_default();
    Ok(Some((credits, draws)))
}

/// `POST /accounts/{id}/grants`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 1_000_000_000_000_i64)
    )]
    pub credits: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::GrantSource))]
    pub source: GrantSource,
    /// When the unused credits expire; in the future.
    pub expires_at: Option<DateTime<Utc>>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: Option<String>,
}

/// Credits granted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Grant {
    pub id: Uuid,
    pub credits: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::GrantSource))]
    pub source: GrantSource,
    pub expires_at: Option<DateTime<Utc>>,
    pub description: Option<String>,
    pub balance_after: i64,
    pub granted_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = true, value_type = i64))]
    pub position: Option<i64>,
}

/// Grants credits, with an optional expiry.
pub async fn grant(
    app: &App,
    caller: &Caller,
    account: AccountId,
    key: Key,
    input: Input<GrantRequest>,
) -> Result<Written<Grant>, AppError> {
    let account = caller.authorize(access::GRANT, account)?;
    let body = input.parse()?;
    let key = key.required()?;
    let req = body.value;
    let command = AccountCommand::GrantCredits(GrantCredits {
        grant_id: Uuid::now_v7(),
        credits: req.credits,
        source: req.source,
        expires_at: req.expires_at,
        description: text("description", req.description)?,
        idempotency_key: Some(key.clone()),
        now: now(),
    });
    let claim = claim(&key, "grants", &body.canonical);
    let done = app.run(caller, account, command, Some(&claim), &[]).await?;
    written(&done, true, |e, position| match e {
        AccountEvent::CreditsGranted(g) => Some(Grant {
            id: g.grant_id,
            credits: g.credits,
            source: g.source,
            expires_at: g.expires_at,
            description: g.description.clone(),
            balance_after: g.balance_after,
            granted_at: g.granted_at,
            position,
        }),
        _ => None,
    })
}

/// `POST /admin/accounts/{id}/adjust-credits`: a signed amount, not zero,
/// with a reason.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    /// Signed, not zero.
    #[cfg_attr(feature = "openapi", schema(minimum = -1_000_000_000_000_i64, maximum = 1_000_000_000_000_i64))]
    pub credits: i64,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1024, pattern = r"\S")
    )]
    pub reason: String,
}

/// A signed adjustment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Adjustment {
    pub id: Uuid,
    /// Signed.
    pub credits: i64,
    pub reason: String,
    pub balance_after: i64,
    pub adjusted_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = true, value_type = i64))]
    pub position: Option<i64>,
}

/// Adjusts the balance by a signed amount, with a reason.
pub async fn adjust(
    app: &App,
    caller: &Caller,
    account: AccountId,
    key: Key,
    input: Input<AdjustRequest>,
) -> Result<Written<Adjustment>, AppError> {
    let account = caller.authorize(access::ADJUST, account)?;
    let body = input.parse()?;
    let key = key.required()?;
    let req = body.value;
    if req.reason.trim().is_empty() {
        return Err(AppError::invalid_field(
            "reason",
            "an adjustment needs a reason",
        ));
    }
    let command = AccountCommand::AdjustCredits(AdjustCredits {
        adjustment_id: Uuid::now_v7(),
        credits: req.credits,
        reason: text("reason", Some(req.reason))?.unwrap_or_default(),
        idempotency_key: Some(key.clone()),
        now: now(),
    });
    let claim = claim(&key, "adjust-credits", &body.canonical);
    let done = app.run(caller, account, command, Some(&claim), &[]).await?;
    written(&done, true, |e, position| match e {
        AccountEvent::CreditsAdjusted(a) => Some(Adjustment {
            id: a.adjustment_id,
            credits: a.credits,
            reason: a.reason.clone(),
            balance_after: a.balance_after,
            adjusted_at: a.adjusted_at,
            position,
        }),
        _ => None,
    })
}
