//! Subscription routes (docs/adr/0012-subscriptions.md): list, create,
//! upgrade, cancel, reactivate, and the staff's `run-periods` and Stripe
//! sync (`app::stripe_events::sync`). Each handler extracts, calls
//! `app::subscriptions`, renders.

use app::subscriptions::lifecycle::{CancelRequest, CreateRequest, ListQuery, UpgradeRequest};
use app::subscriptions::periods::RunPeriodsRequest;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use utoipa::OpenApi;

use super::extract::{Body, Fresh, IdemKey, Q};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

#[derive(OpenApi)]
#[openapi(paths(list, create, upgrade, cancel, reactivate, run_periods, stripe_sync))]
pub struct Api;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/billing/subscriptions", get(list))
        .route("/billing/subscriptions/create", post(create))
        .route("/billing/subscriptions/upgrade", post(upgrade))
        .route("/billing/subscriptions/cancel", post(cancel))
        .route("/billing/subscriptions/reactivate", post(reactivate))
        .route("/admin/billing/run-periods", post(run_periods))
        .route("/admin/billing/stripe/sync", post(stripe_sync))
}

#[utoipa::path(
    get,
    path = "/v1/billing/subscriptions",
    tag = "billing",
    summary = "The account's subscriptions, the open one first, then newest first",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of subscriptions", body = doc::BillingPage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<ListQuery>,
) -> Result<Response, ApiError> {
    let page =
        app::subscriptions::lifecycle::list(&state, &principal, fresh.0, query.query()).await?;
    render::ok(&page)
}

#[utoipa::path(
    post,
    path = "/v1/billing/subscriptions/create",
    tag = "billing",
    summary = "Subscribe to a plan: incomplete with a pending first invoice (active once it is paid), or active at once on a free plan",
    params(("Idempotency-Key" = String, Header, description = "Required. A retry with the same key and body replays the first response; another body is 409 idempotency_key_reused")),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "The subscription and its first invoice; a Stripe subscription also carries `client_secret`, the first payment's secret for Stripe.js (from Stripe's latest invoice's `confirmation_secret`), and `stripe_subscription_id`", body = Object, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such active plan", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the account already has an open subscription; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: the method (stripe, paypal) is not configured", body = doc::ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    body: Body<CreateRequest>,
) -> Result<Response, ApiError> {
    let done =
        app::subscriptions::lifecycle::create(&state, &principal, key.key(), body.input()).await?;
    render::written(&done)
}

#[utoipa::path(
    post,
    path = "/v1/billing/subscriptions/upgrade",
    tag = "billing",
    summary = "Change plan: upgrade now with a prorated pending invoice, or schedule a downgrade at the period end",
    description = "A Stripe subscription's item gets the new plan's Stripe price first (`proration_behavior=create_prorations` for an upgrade, `none` for a downgrade); our prorated invoice is then paid by Stripe's `invoice.paid` like any other Stripe invoice.",
    params(("Idempotency-Key" = String, Header, description = "Required. A retry with the same key and body replays the first response; another body is 409 idempotency_key_reused")),
    request_body = UpgradeRequest,
    responses(
        (status = 200, description = "The change (`upgrade` with the proration figures and invoice, or `downgrade_scheduled`) and the subscription", body = Object, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such plan, or no open subscription", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the same plan, a downgrade already scheduled, or the subscription is not active", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
        (status = 502, description = "`unavailable`: Stripe refused to change the Stripe subscription; nothing was written", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: Stripe is unreachable or not configured, or the plan has no Stripe price; nothing was written", body = doc::ErrorBody),
    ),
)]
pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    body: Body<UpgradeRequest>,
) -> Result<Response, ApiError> {
    let done =
        app::subscriptions::lifecycle::upgrade(&state, &principal, key.key(), body.input()).await?;
    render::written(&done)
}

#[utoipa::path(
    post,
    path = "/v1/billing/subscriptions/cancel",
    tag = "billing",
    summary = "Cancel the open subscription at the period end (default) or now; the account returns to the free plan when it ends",
    request_body = CancelRequest,
    responses(
        (status = 200, description = "The subscription", body = Object),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no open subscription", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the subscription is already canceled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
        (status = 502, description = "`unavailable`: Stripe refused to cancel the Stripe subscription; nothing was written", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: Stripe is unreachable or not configured; nothing was written", body = doc::ErrorBody),
    ),
)]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<CancelRequest>,
) -> Result<Response, ApiError> {
    render::ok(&app::subscriptions::lifecycle::cancel(&state, &principal, body.input()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/billing/subscriptions/reactivate",
    tag = "billing",
    summary = "Take back a cancel scheduled for the period end: the subscription renews as before",
    description = "Nothing scheduled is not an error: the answer is the subscription as it is. A Stripe subscription is reactivated at Stripe first.",
    request_body = Option<app::subscriptions::lifecycle::ReactivateRequest>,
    responses(
        (status = 200, description = "The subscription", body = Object),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no open subscription", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the subscription is canceled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
        (status = 502, description = "`unavailable`: Stripe refused; nothing was written", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: Stripe is unreachable or not configured; nothing was written", body = doc::ErrorBody),
    ),
)]
pub async fn reactivate(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<app::subscriptions::lifecycle::ReactivateRequest>,
) -> Result<Response, ApiError> {
    render::ok(&app::subscriptions::lifecycle::reactivate(&state, &principal, body.input()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/admin/billing/run-periods",
    tag = "admin",
    summary = "Process due subscriptions at `now`: cancel at period end, apply scheduled downgrades, renew, past_due, cancel unpaid; and expire due credits",
    request_body = RunPeriodsRequest,
    responses(
        (status = 200, description = "`{processed, changed, failed, more}`", body = app::subscriptions::periods::PeriodRunAt),
        (status = 403, description = "`forbidden`: not a developer", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: `now` is not an RFC 3339 time", body = doc::ErrorBody),
    ),
)]
pub async fn run_periods(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<RunPeriodsRequest>,
) -> Result<Response, ApiError> {
    let run = app::subscriptions::periods::run_periods(&state, &principal, body.input()).await?;
    render::ok(&run)
}

#[utoipa::path(
    post,
    path = "/v1/admin/billing/stripe/sync",
    tag = "admin",
    summary = "Pull a Stripe subscription or PaymentIntent and apply what its missed webhooks would have (idempotent)",
    description = "Give exactly one of `subscription_id` and `payment_intent_id`. The object is read from Stripe and applied through the webhook handlers, only where our state lacks it: a paid latest invoice (`invoice.paid`), a status or cancel change (`customer.subscription.updated`), a succeeded or failed PaymentIntent. A second call applies nothing (`applied` is empty).",
    request_body = app::stripe_events::SyncRequest,
    responses(
        (status = 200, description = "What Stripe has and what was applied", body = app::stripe_events::Synced),
        (status = 403, description = "`forbidden`: not a developer", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: Stripe's object is not one of ours", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: not exactly one id, or not a Stripe id; `details.field` names it", body = doc::ErrorBody),
        (status = 502, description = "`unavailable`: Stripe refused (e.g. no such object); nothing was applied", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: Stripe is not configured or unreachable", body = doc::ErrorBody),
    ),
)]
pub async fn stripe_sync(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<app::stripe_events::SyncRequest>,
) -> Result<Response, ApiError> {
    render::ok(&app::stripe_events::sync(&state, &principal, body.input()).await?)
}
