//! The role table: who may run each use case (SPEC §3's role column), one
//! constant per use case, so a route, a NATS subject and a dashboard page
//! asking the same question get the same answer. Tenant scoping (another
//! tenant's account is 404) is [`crate::caller::Caller::scope`]'s.

use crate::caller::Role;

use Role::{Admin, Developer, Editor, Owner, SystemBot, Viewer};

/// `D`: the platform (the SaaS back end, finance tooling).
pub const STAFF: &[Role] = &[Developer];
/// `D O A E V`: everyone of the account but its workers.
pub const READERS: &[Role] = &[Developer, Owner, Admin, Editor, Viewer];
/// `D O A`: who manages an account's settings.
pub const MANAGERS: &[Role] = &[Developer, Owner, Admin];
/// `D S`: who spends credits (AI workers).
pub const WORKERS: &[Role] = &[Developer, SystemBot];

// Accounts.
pub const OPEN_ACCOUNT: &[Role] = STAFF;
pub const READ_ACCOUNT: &[Role] = READERS;
pub const UPDATE_ACCOUNT: &[Role] = MANAGERS;
pub const READ_LIMITS: &[Role] = READERS;
pub const SEARCH_ACCOUNTS: &[Role] = STAFF;
pub const SUSPEND_ACCOUNT: &[Role] = STAFF;
/// Only the platform changes an account's credit limit (a risk setting).
pub const SET_CREDIT_LIMIT: &[Role] = STAFF;

// Credits.
pub const DEDUCT: &[Role] = WORKERS;
pub const HOLD: &[Role] = WORKERS;
pub const CAPTURE: &[Role] = WORKERS;
pub const RELEASE: &[Role] = WORKERS;
/// Refunds of usage are the platform's decision alone (SPEC §3: D).
pub const REFUND_USAGE: &[Role] = STAFF;
/// Tax rate and country are the seller's decision, not the customer's.
pub const SET_TAX: &[Role] = STAFF;
pub const GRANT: &[Role] = STAFF;
pub const ADJUST: &[Role] = STAFF;

// Reads: the balance is every role's of the account (system_bot included),
// within its scope; the rest are the readers'.
pub const READ_BALANCE: &[Role] = &[Developer, Owner, Admin, Editor, Viewer, SystemBot];
pub const READ_TRANSACTIONS: &[Role] = READERS;
pub const READ_USAGE: &[Role] = READERS;

// Catalog: lists are everyone's (inactive rows the platform's only).
pub const EDIT_CATALOG: &[Role] = STAFF;
pub const READ_COSTS: &[Role] = STAFF;
/// Who sees inactive plans and packages in the public lists.
pub const SEE_INACTIVE_CATALOG: &[Role] = STAFF;

// Billing.
/// Who may see and pay the account's invoices, buy packages and see the
/// payment methods.
pub const BILLING: &[Role] = &[Owner, Admin];
/// Manual payments may also be recorded by staff on the customer's behalf.
pub const PAY_MANUALLY: &[Role] = &[Owner, Admin, Developer];
pub const SUBSCRIBE: &[Role] = &[Owner, Admin, Developer];
pub const ADMIN_BILLING: &[Role] = STAFF;
pub const RUN_PERIODS: &[Role] = STAFF;
/// Pulling a Stripe object and applying what its missed webhooks would have.
pub const SYNC_STRIPE: &[Role] = STAFF;
pub const REVOKE_TOKENS: &[Role] = STAFF;
/// The account's own invoices and their PDFs.
pub const READ_INVOICES: &[Role] = BILLING;
/// Buying a credit package.
pub const BUY_PACKAGE: &[Role] = BILLING;
/// The payment methods offered to the account.
pub const READ_PAYMENT_METHODS: &[Role] = BILLING;
/// Saving, listing, choosing the default of and detaching saved cards.
pub const MANAGE_SAVED_CARDS: &[Role] = BILLING;
/// Invoice and payment lists over every tenant, void, uncollectible,
/// approval, rejection and refunds of payments.
pub const MANAGE_INVOICES: &[Role] = ADMIN_BILLING;
pub const DECIDE_PAYMENTS: &[Role] = ADMIN_BILLING;
pub const REFUND_PAYMENT: &[Role] = ADMIN_BILLING;
/// Withdrawing a pending manual payment: its account's billing roles, or
/// staff.
pub const CANCEL_PAYMENT: &[Role] = &[Owner, Admin, Developer];
/// The per-country payment method rows.
pub const CONFIGURE_PAYMENT_METHODS: &[Role] = STAFF;
pub const READ_BILLING_STATS: &[Role] = STAFF;

// Team and access (docs/adr/0017).
/// The team list: who manages the account.
pub const READ_TEAM: &[Role] = MANAGERS;
/// Invitations, role changes, removals (only owners touch `owner`).
pub const MANAGE_TEAM: &[Role] = MANAGERS;
/// Handing the account over (staff may do it for a customer).
pub const TRANSFER_OWNERSHIP: &[Role] = &[Owner, Developer];
/// Members added directly, without an invitation (sign-up flows, imports).
pub const ADD_MEMBER: &[Role] = STAFF;
/// Every member across accounts.
pub const READ_USERS: &[Role] = STAFF;
/// Counts of sites, industries and author profiles, kept by the SaaS.
pub const REPORT_COUNTS: &[Role] = WORKERS;
/// A plan limit overridden for one account.
pub const OVERRIDE_LIMITS: &[Role] = STAFF;
/// Register, list and delete outgoing webhook endpoints; read their
/// deliveries and redeliver.
pub const MANAGE_WEBHOOKS: &[Role] = STAFF;
/// Read and set the automatic top-up (issue 17).
pub const MANAGE_AUTO_TOP_UP: &[Role] = MANAGERS;
/// Read and set the monthly budget (issue 17).
pub const MANAGE_BUDGET: &[Role] = MANAGERS;
